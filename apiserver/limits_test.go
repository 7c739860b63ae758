package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/apiserver"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/server/servertest"
)

// TestLimits covers the limits of issue 11 that were left open, against a
// server of its own (its caps are per user and per project): service
// account token lifetimes and counts (M6), host ports (L14), watches and
// list pages (L15), and webhook secrets (L5).
func TestLimits(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	s := newSuite(t, env)
	s.setupTeam(t, "pa")
	t.Run("TokenLifetime", s.testTokenLifetime)
	t.Run("TokenCap", s.testTokenCap)
	t.Run("HostPorts", s.testHostPorts)
	t.Run("WatchCap", s.testWatchCap)
	t.Run("WatchStorm", s.testWatchStorm)
	t.Run("ListPages", s.testListPages)
	t.Run("WebhookSecrets", s.testWebhookSecrets)
}

type tokenRequest = api.TokenRequest

// mintToken asks for a token of pa's sa as user, living seconds.
func (s *suite) mintToken(t *testing.T, user, sa string, seconds int64) (result, tokenRequest) {
	t.Helper()
	r := s.as(user).post(t, nsPath("pa", "serviceaccounts", sa, "token"), map[string]any{"spec": map[string]any{"expirationSeconds": seconds}})
	var tr tokenRequest
	if r.Code == http.StatusCreated {
		mustDecode(t, r, &tr)
	}
	return r, tr
}

// M6: a service account token lives 24h unless asked otherwise, and at
// most 90 days; a longer request is shortened and the answer says so.
func (s *suite) testTokenLifetime(t *testing.T) {
	mustCode(t, "create sa lifetime", s.as("alice").post(t, nsPath("pa", "serviceaccounts"), serviceAccount("lifetime")), http.StatusCreated)
	for _, tc := range []struct {
		what    string
		seconds int64
		want    time.Duration
		warned  bool
	}{
		{"the default", 0, 24 * time.Hour, false},
		{"an hour", 3600, time.Hour, false},
		{"exactly the maximum", 90 * 24 * 3600, 90 * 24 * time.Hour, false},
		{"ten years", 10 * 365 * 24 * 3600, 90 * 24 * time.Hour, true},
		{"more seconds than a Duration holds", 18446744074, 90 * 24 * time.Hour, true},
	} {
		t.Run(tc.what, func(t *testing.T) {
			before := time.Now()
			r, tr := s.mintToken(t, "alice", "lifetime", tc.seconds)
			mustCode(t, "token for "+tc.what, r, http.StatusCreated)
			got := tr.Status.ExpirationTimestamp.Sub(before)
			if got < tc.want-time.Minute || got > tc.want+time.Minute {
				t.Errorf("token asked for %d seconds lives %s, want %s", tc.seconds, got.Round(time.Second), tc.want)
			}
			warning := r.Header.Get("Warning")
			if tc.warned != (warning != "") {
				t.Errorf("token asked for %d seconds: Warning header %q, want one: %v", tc.seconds, warning, tc.warned)
			}
			if tc.warned && !strings.Contains(warning, "shortened to 7776000 seconds (90 days)") {
				t.Errorf("Warning = %q, want it to say the token was shortened to 90 days", warning)
			}
		})
	}
	checkStatus(t, "negative expirationSeconds", s.as("alice").post(t, nsPath("pa", "serviceaccounts", "lifetime", "token"),
		map[string]any{"spec": map[string]any{"expirationSeconds": -1}}), http.StatusBadRequest, "", "7776000")
}

// M6: a project holds at most DefaultMaxProjectTokens live tokens minted
// through the API; the refusal says why and changes nothing; another
// project is not affected, nor are the platform's own tokens.
func (s *suite) testTokenCap(t *testing.T) {
	s.createProject(t, "alice", "capped")
	s.createProject(t, "alice", "uncapped")
	alice := s.as("alice")
	for _, p := range []string{"capped", "uncapped"} {
		mustCode(t, "create sa loop in "+p, alice.post(t, nsPath(p, "serviceaccounts"), serviceAccount("loop")), http.StatusCreated)
	}
	mint := func(p string) result {
		return alice.post(t, nsPath(p, "serviceaccounts", "loop", "token"), map[string]any{"spec": map[string]any{"expirationSeconds": 3600}})
	}
	// Platform tokens (as nodes, builds and the scanner mint them) do not
	// count, and keep working past the cap.
	auth := s.env.Server.API.Authenticator()
	for i := 0; i < 5; i++ {
		if _, _, err := auth.IssueServiceAccountToken(t.Context(), "capped", "loop", 10*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for ; n < apiserver.DefaultMaxProjectTokens; n++ {
		mustCode(t, fmt.Sprintf("token %d in capped", n+1), mint("capped"), http.StatusCreated)
	}
	st := checkStatus(t, "one token past the cap", mint("capped"), http.StatusForbidden, api.ReasonForbidden, fmt.Sprintf("holds %d live", n))
	if !strings.Contains(st.Message, "revoke") {
		t.Errorf("cap refusal %q: want it to say how to make room", st.Message)
	}
	live, err := auth.LiveRequestedTokens(t.Context(), "capped")
	if err != nil || live != n {
		t.Errorf("LiveRequestedTokens(capped) = %d, %v; want %d after the refusal", live, err, n)
	}
	checkCode(t, "a token in another project", mint("uncapped"), http.StatusCreated)
	if secret, _, err := auth.IssueServiceAccountToken(t.Context(), "capped", "loop", 10*time.Minute); err != nil {
		t.Errorf("the platform mints a token in capped past the cap: %v", err)
	} else if name, r := s.withToken(secret).whoami(t); r.Code != http.StatusOK {
		t.Errorf("the platform's token in capped: whoami %d %s", r.Code, name)
	}
}

// L14: a host port needs create pods/hostport cluster-wide; an editor
// may not add one to a pod or to a template, but may keep one that a
// cluster admin set.
func (s *suite) testHostPorts(t *testing.T) {
	carol, admin := s.as("carol"), s.as("admin")
	pod := func(name string, hostPort int) map[string]any {
		return map[string]any{"metadata": map[string]any{"name": name}, "spec": map[string]any{"containers": []map[string]any{{
			"name": "c", "image": "busybox", "ports": []map[string]any{{"containerPort": 80, "hostPort": hostPort}}}}}}
	}
	rc := func(name string, hostPort int) map[string]any {
		return map[string]any{"metadata": map[string]any{"name": name}, "spec": map[string]any{
			"replicas": 0, "selector": map[string]string{"app": name},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]string{"app": name}}, "spec": pod(name, hostPort)["spec"]}}}
	}
	checkStatus(t, "carol (edit) creates a pod with hostPort", carol.post(t, nsPath("pa", "pods"), pod("hp", 8080)), http.StatusForbidden, api.ReasonForbidden, "pods/hostport")
	checkCode(t, "the refused pod", admin.get(t, nsPath("pa", "pods", "hp")), http.StatusNotFound)
	checkStatus(t, "carol creates an RC whose template has a hostPort", carol.post(t, nsPath("pa", "replicationcontrollers"), rc("hp", 8080)), http.StatusForbidden, api.ReasonForbidden, "spec.template.spec.containers[0].ports[0].hostPort")
	checkStatus(t, "alice (project admin) creates a pod with hostPort", s.as("alice").post(t, nsPath("pa", "pods"), pod("hp", 8080)), http.StatusForbidden, api.ReasonForbidden, "cluster admin")
	mustCode(t, "carol creates an RC without host ports", carol.post(t, nsPath("pa", "replicationcontrollers"), rc("plain", 0)), http.StatusCreated)
	checkStatus(t, "carol patches a hostPort into it", carol.patch(t, nsPath("pa", "replicationcontrollers", "plain"), map[string]any{"spec": map[string]any{"template": map[string]any{"spec": pod("plain", 8080)["spec"]}}}),
		http.StatusForbidden, api.ReasonForbidden, "8080/TCP")

	mustCode(t, "cluster admin creates a pod with hostPort", admin.post(t, nsPath("pa", "pods"), pod("hp", 8080)), http.StatusCreated)
	mustCode(t, "cluster admin creates an RC with hostPort", admin.post(t, nsPath("pa", "replicationcontrollers"), rc("hp", 8081)), http.StatusCreated)
	checkCode(t, "carol scales the admin's RC", carol.patch(t, nsPath("pa", "replicationcontrollers", "hp"), map[string]any{"spec": map[string]any{"replicas": 0}}), http.StatusOK)
	checkStatus(t, "carol moves the admin's RC to another host port", carol.patch(t, nsPath("pa", "replicationcontrollers", "hp"), map[string]any{"spec": map[string]any{"template": map[string]any{"spec": pod("hp", 10250)["spec"]}}}),
		http.StatusForbidden, api.ReasonForbidden, "10250/TCP")
}

// L15: one user holds at most DefaultMaxWatchesPerUser watches on a
// server; the next answers 429 with Retry-After and how many are open,
// and a closed watch makes room. Other users are not affected.
func (s *suite) testWatchCap(t *testing.T) {
	bob := s.as("bob")
	coll := nsPath("pa", "serviceaccounts")
	var open []*watchStream
	for i := 0; i < apiserver.DefaultMaxWatchesPerUser; i++ {
		w := bob.watch(t, coll, nil)
		mustCode(t, fmt.Sprintf("bob's watch %d", i+1), w.result, http.StatusOK)
		open = append(open, w)
	}
	w := bob.watch(t, coll, nil)
	st := checkStatus(t, "bob's watch past the cap", w.result, http.StatusTooManyRequests, "TooManyRequests", fmt.Sprintf("has %d watches open", apiserver.DefaultMaxWatchesPerUser))
	if ra := w.Header.Get("Retry-After"); ra == "" || st.Details == nil || fmt.Sprint(st.Details.RetryAfterSeconds) != ra {
		t.Errorf("429 for a watch: Retry-After %q, details %+v; want both, the same", ra, st.Details)
	}
	checkCode(t, "bob still lists", bob.get(t, coll), http.StatusOK)
	other := s.as("carol").watch(t, coll, nil)
	checkCode(t, "carol's watch while bob is at his cap", other.result, http.StatusOK)
	other.close()

	// The server notices a closed stream when the request's context ends,
	// just after the client closes it.
	open[0].close()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	for {
		w := bob.watch(t, coll, nil)
		if w.Code == http.StatusOK {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("bob's watch after closing one: %d %s, want 200", w.Code, w)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, w := range open {
		w.close()
	}
}

// L15: a list answers at most DefaultMaxListLimit items, however many are
// asked for, with a continue token; the client follows it; a watch
// without a resourceVersion sends every object.
func (s *suite) testListPages(t *testing.T) {
	s.createProject(t, "alice", "big")
	n := int(apiserver.DefaultMaxListLimit) + 7
	st := s.env.Server.Store
	for i := 0; i < n; i++ {
		if err := st.Create(t.Context(), api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("sa-%04d", i), Namespace: "big"}}); err != nil {
			t.Fatal(err)
		}
	}
	alice := s.as("alice")
	coll := nsPath("big", "serviceaccounts")
	for _, q := range []string{"", "?limit=0", "?limit=100000"} {
		r := alice.get(t, coll+q)
		mustCode(t, "list "+q, r, http.StatusOK)
		var l struct {
			Metadata api.ListMeta     `json:"metadata"`
			Items    []map[string]any `json:"items"`
		}
		mustDecode(t, r, &l)
		if len(l.Items) != int(apiserver.DefaultMaxListLimit) || l.Metadata.Continue == "" {
			t.Errorf("list%s of %d: %d items, continue %q; want %d and a continue token", q, n, len(l.Items), l.Metadata.Continue, apiserver.DefaultMaxListLimit)
		}
		r = alice.get(t, coll+"?continue="+url.QueryEscape(l.Metadata.Continue))
		mustCode(t, "the second page", r, http.StatusOK)
		if got := namesOf(t, r); len(got) != n-int(apiserver.DefaultMaxListLimit) {
			t.Errorf("second page: %d items, want %d", len(got), n-int(apiserver.DefaultMaxListLimit))
		}
	}
	items, _, err := s.env.Client(t, s.tokens["alice"]).List(t.Context(), api.ServiceAccounts, "big", client.ListOptions{})
	if err != nil || len(items) != n {
		t.Errorf("client.List of %d: %d items, %v; want all (following continue)", n, len(items), err)
	}
	w := alice.watch(t, coll, nil)
	mustCode(t, "watch without a resourceVersion", w.result, http.StatusOK)
	seen := map[string]bool{}
	for len(seen) < n {
		ev := w.next(t)
		if ev.Type != "ADDED" {
			t.Fatalf("watch's initial events: got %s %s after %d, want ADDED", ev.Type, ev.Object, len(seen))
		}
		seen[ev.name(t)] = true
	}
	mustCode(t, "create one more", alice.post(t, coll, serviceAccount("later")), http.StatusCreated)
	if ev := w.next(t); ev.Type != "ADDED" || ev.name(t) != "later" {
		t.Errorf("after the initial %d: got %s %s, want ADDED later", n, ev.Type, ev.name(t))
	}
	w.close()
}

// L5: a build config's inline webhook secret is redacted for whoever may
// not update it, in gets, lists and watches; a trigger's secretReference
// names a Secret, which view cannot read.
func (s *suite) testWebhookSecrets(t *testing.T) {
	const secret = "inline-secret-0123456789"
	bc := map[string]any{"metadata": map[string]any{"name": "hooked"}, "spec": map[string]any{
		"source":   map[string]any{"dockerfile": "FROM scratch\n"},
		"strategy": map[string]any{"type": "Docker", "dockerStrategy": map[string]any{}},
		"output":   map[string]any{"to": map[string]any{"kind": "ImageStreamTag", "name": "hooked:latest"}},
		"triggers": []map[string]any{{"type": "Generic", "secret": secret}, {"type": "GitHub", "secretReference": map[string]string{"name": "hook"}}}}}
	alice, bob, carol := s.as("alice"), s.as("bob"), s.as("carol")
	mustCode(t, "alice creates bc hooked", alice.post(t, nsPath("pa", "buildconfigs"), bc), http.StatusCreated)
	path := nsPath("pa", "buildconfigs", "hooked")
	w := bob.watch(t, nsPath("pa", "buildconfigs"), nil)
	mustCode(t, "bob watches build configs", w.result, http.StatusOK)
	for _, tc := range []struct {
		user  string
		sees  bool
		reads func() []byte
	}{
		{"bob", false, func() []byte { return bob.get(t, path).Body }},
		{"bob", false, func() []byte { return bob.get(t, path+"/status").Body }},
		{"bob", false, func() []byte { return bob.get(t, nsPath("pa", "buildconfigs")).Body }},
		{"bob", false, func() []byte { return w.next(t).Object }},
		{"carol", true, func() []byte { return carol.get(t, path).Body }},
		{"alice", true, func() []byte { return alice.get(t, nsPath("pa", "buildconfigs")).Body }},
	} {
		body := string(tc.reads())
		if got := strings.Contains(body, secret); got != tc.sees {
			t.Errorf("%s reads hooked: the secret is in the answer: %v, want %v: %s", tc.user, got, tc.sees, body)
		}
		if !tc.sees && !strings.Contains(body, api.RedactedSecret) {
			t.Errorf("%s reads hooked: %s, want the secret shown as %s", tc.user, body, api.RedactedSecret)
		}
	}
	w.close()

	sec := map[string]any{"metadata": map[string]any{"name": "hook"}, "stringData": map[string]string{api.WebHookSecretKey: "from-a-secret-0123456789"}}
	checkStatus(t, "bob (view) creates a secret", bob.post(t, nsPath("pa", "secrets"), sec), http.StatusForbidden, api.ReasonForbidden, "")
	r := carol.post(t, nsPath("pa", "secrets"), sec)
	mustCode(t, "carol (edit) creates secret hook", r, http.StatusCreated)
	var stored api.Secret
	mustDecode(t, alice.get(t, nsPath("pa", "secrets", "hook")), &stored)
	if string(stored.Data[api.WebHookSecretKey]) != "from-a-secret-0123456789" || stored.StringData != nil {
		t.Errorf("stored secret: data %q, stringData %v; want stringData folded into data", stored.Data, stored.StringData)
	}
	checkStatus(t, "bob (view) reads secret hook", bob.get(t, nsPath("pa", "secrets", "hook")), http.StatusForbidden, api.ReasonForbidden, "")
	checkStatus(t, "bob (view) lists secrets", bob.get(t, nsPath("pa", "secrets")), http.StatusForbidden, api.ReasonForbidden, "")
	checkCode(t, "carol (edit) reads secret hook", carol.get(t, nsPath("pa", "secrets", "hook")), http.StatusOK)

	// A redacted secret written back is refused, not stored.
	var redacted map[string]any
	mustDecode(t, bob.get(t, path), &redacted)
	checkStatus(t, "carol writes back a redacted secret", carol.put(t, path, redacted), http.StatusBadRequest, "", "redacted")
	both := map[string]any{"type": "Generic", "secret": secret, "secretReference": map[string]string{"name": "hook"}}
	bc["metadata"] = map[string]any{"name": "both"}
	bc["spec"].(map[string]any)["triggers"] = []map[string]any{both}
	checkStatus(t, "a trigger with both secret and secretReference", alice.post(t, nsPath("pa", "buildconfigs"), bc), http.StatusBadRequest, "", "not both")
	var got api.BuildConfig
	mustDecode(t, alice.get(t, path), &got)
	if got.Spec.Triggers[0].Secret != secret {
		raw, _ := json.Marshal(got.Spec.Triggers)
		t.Errorf("hooked's triggers after refused writes: %s", raw)
	}
}

// L15: a user who opens watches up to the cap while objects change, and
// closes them all at once, again and again, must not stall the server:
// its caches still see new bindings (so a new project is usable at once)
// and other watches still get events. With the embedded etcd's
// in-process client, cancelling many watches on one shared stream
// deadlocked that stream for good (etcd-io/etcd#20716).
func (s *suite) testWatchStorm(t *testing.T) {
	s.createProject(t, "alice", "storm")
	alice, dave := s.as("alice"), s.as("dave")
	coll := nsPath("storm", "serviceaccounts")
	mustCode(t, "alice grants dave view in storm", alice.post(t, nsPath("storm", "rolebindings"), binding("dave-view", "ClusterRole", "view", user("dave"))), http.StatusCreated)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			alice.post(t, coll, serviceAccount(fmt.Sprintf("churn-%d", i)))
		}
	}()
	for round := 0; round < 8; round++ {
		var open []*watchStream
		for i := 0; i < apiserver.DefaultMaxWatchesPerUser; i++ {
			w := dave.watch(t, coll, nil)
			if w.Code != http.StatusOK {
				break // the server has not yet seen all of the last round's close
			}
			open = append(open, w)
		}
		for _, w := range open {
			w.close()
		}
	}
	close(stop)
	<-done
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("after-storm-%d", i)
		s.createProject(t, "carol", name)
		checkCode(t, "carol uses her new project at once", s.as("carol").get(t, nsPath(name, "serviceaccounts")), http.StatusOK)
	}
	w := alice.watch(t, coll, url.Values{"resourceVersion": {listRV(t, alice.get(t, coll+"?limit=1"))}})
	mustCode(t, "alice watches after the storm", w.result, http.StatusOK)
	mustCode(t, "create one more", alice.post(t, coll, serviceAccount("last")), http.StatusCreated)
	for {
		if ev := w.next(t); ev.name(t) == "last" {
			break
		}
	}
	w.close()
}
