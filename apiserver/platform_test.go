package apiserver_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/apiserver"
)

// platformAccounts are the platform's service accounts of project "pa",
// known to the suite by these names (see setupPlatformAccounts).
var platformAccounts = apiserver.PlatformServiceAccounts

// setupPlatformAccounts gives project "pa" the platform's accounts with
// the bindings the platform makes for them: builder pushes
// (system-image-builders, server.ensureBuilderAccount), deployer pulls
// (system-image-pullers, server.ensurePuller), promoter pushes into pa and
// pulls from its source stage "psrc" (system-promoter and
// system-promoter-pa, promote.Controller), and scanner holds nothing of
// its own (the scanner reads as deployer and writes SBOMs as builder).
// Their tokens are minted the platform's way, through the
// Authenticator, not the API.
func (s *suite) setupPlatformAccounts(t *testing.T) {
	t.Helper()
	s.createProject(t, "alice", "psrc")
	s.createProject(t, "dave", "pother")
	admin := s.as("admin")
	sa := func(name string) api.Subject {
		return api.Subject{Kind: api.SubjectServiceAccount, Name: name, Namespace: "pa"}
	}
	for _, name := range platformAccounts {
		mustCode(t, "create sa "+name, admin.post(t, nsPath("pa", "serviceaccounts"), serviceAccount(name)), http.StatusCreated)
	}
	for _, b := range []struct{ ns, name, role, sa string }{
		{"pa", "system-image-builders", "image-builder", "builder"},
		{"pa", "system-image-pullers", "image-puller", "deployer"},
		{"pa", "system-promoter", "image-builder", "promoter"},
		{"psrc", "system-promoter-pa", "image-puller", "promoter"},
	} {
		mustCode(t, "bind "+b.name, admin.post(t, nsPath(b.ns, "rolebindings"), binding(b.name, "ClusterRole", b.role, sa(b.sa))), http.StatusCreated)
	}
	for _, name := range platformAccounts {
		secret, _, err := s.env.Server.API.Authenticator().IssueServiceAccountToken(t.Context(), "pa", name, 0)
		if err != nil {
			t.Fatalf("the platform mints a token for pa/%s: %v", name, err)
		}
		s.tokens[name] = secret
	}
}

// testPlatformMatrix checks every verb of each platform account on the
// resources of its own project, its promoter's source project and
// someone else's project, and what the registry lets each pull and push:
// the accounts hold exactly the rights their bindings name, none writes
// another project, and none reads or writes role bindings. Every refused
// write must change nothing.
func (s *suite) testPlatformMatrix(t *testing.T) {
	admin := s.as("admin")
	resources := []string{"serviceaccounts", "rolebindings", "imagestreams", "secrets", "pods"}
	body := func(res, name string) any {
		switch res {
		case "serviceaccounts":
			return serviceAccount(name)
		case "rolebindings":
			return binding(name, "ClusterRole", "view", user("nobody"))
		case "secrets":
			return map[string]any{"metadata": map[string]any{"name": name}, "stringData": map[string]string{"k": "v"}}
		case "pods":
			return map[string]any{"metadata": map[string]any{"name": name}, "spec": map[string]any{"containers": []map[string]any{{"name": "c", "image": "busybox"}}}}
		}
		return map[string]any{"metadata": map[string]any{"name": name}}
	}
	projects := []string{"pa", "psrc", "pother"}
	for _, p := range projects {
		for _, res := range resources {
			mustCode(t, "fixture "+p+"/"+res, admin.post(t, nsPath(p, res), body(res, "pm-fixed")), http.StatusCreated)
		}
	}
	// allowed[account][project/resource] are the verbs its bindings grant.
	allowed := map[string]map[string][]string{
		"builder":  {"pa/imagestreams": {"get", "create"}},
		"promoter": {"pa/imagestreams": {"get", "create"}},
	}
	for _, acct := range platformAccounts {
		for _, p := range projects {
			for _, res := range resources {
				for _, verb := range allVerbs {
					want := slices.Contains(allowed[acct][p+"/"+res], verb)
					t.Run(fmt.Sprintf("%s_%s_%s_%s", acct, verb, p, res), func(t *testing.T) {
						s.platformCell(t, acct, verb, p, res, body, want)
					})
				}
			}
		}
	}

	// The registry's token endpoint grants pull (get imagestreams/layers)
	// and push (update imagestreams/layers) per repository.
	grants := map[string]map[string]string{
		"builder":  {"pa": "pull,push"},
		"deployer": {"pa": "pull"},
		"promoter": {"pa": "pull,push", "psrc": "pull"},
		"scanner":  {},
	}
	for _, acct := range platformAccounts {
		for _, p := range projects {
			t.Run(fmt.Sprintf("%s_registry_%s", acct, p), func(t *testing.T) {
				got := s.registryActions(t, acct, p+"/app")
				if want := grants[acct][p]; got != want {
					t.Errorf("registry token for %s on %s/app: actions %q, want %q", acct, p, got, want)
				}
			})
		}
	}
}

// platformCell does one verb as one platform account and checks the
// answer and, for writes, that a refused one took no effect.
func (s *suite) platformCell(t *testing.T, acct, verb, p, res string, body func(string, string) any, want bool) {
	c, admin := s.as(acct), s.as("admin")
	fixed := nsPath(p, res, "pm-fixed")
	var r result
	var took func() bool
	switch verb {
	case "get":
		r = c.get(t, fixed)
	case "list":
		r = c.get(t, nsPath(p, res))
	case "watch":
		w := c.watch(t, nsPath(p, res), nil)
		w.close()
		r = w.result
	case "create":
		name := "pm-" + acct
		r = c.post(t, nsPath(p, res), body(res, name))
		took = func() bool { return admin.get(t, nsPath(p, res, name)).Code == http.StatusOK }
	case "update":
		var m map[string]any
		mustDecode(t, admin.get(t, fixed), &m)
		m["metadata"].(map[string]any)["labels"] = map[string]string{"updated-by": acct}
		r = c.put(t, fixed, m)
		took = func() bool { return metaOf(t, admin.get(t, fixed)).Labels["updated-by"] == acct }
	case "patch":
		r = c.patch(t, fixed, map[string]any{"metadata": map[string]any{"labels": map[string]string{"patched-by-" + acct: "yes"}}})
		took = func() bool { return metaOf(t, admin.get(t, fixed)).Labels["patched-by-"+acct] == "yes" }
	case "delete":
		r = c.del(t, fixed)
		took = func() bool { return admin.get(t, fixed).Code == http.StatusNotFound }
	}
	what := fmt.Sprintf("pa/%s %s %s in %s", acct, verb, res, p)
	switch {
	case !want:
		checkStatus(t, what, r, http.StatusForbidden, api.ReasonForbidden, "system:serviceaccount:pa:"+acct)
	case verb == "create":
		checkCode(t, what, r, http.StatusCreated)
	default:
		checkCode(t, what, r, http.StatusOK)
	}
	if took != nil {
		if got := took(); got != want {
			t.Errorf("%s: got written=%v, want %v", what, got, want)
		}
	}
}

// registryActions asks the registry's /v2/token, with acct's token as the
// password, for pull and push on repo, and returns the actions granted
// ("" for none), sorted and comma-separated.
func (s *suite) registryActions(t *testing.T, acct, repo string) string {
	t.Helper()
	q := url.Values{"service": {"slipway-registry"}, "scope": {"repository:" + repo + ":pull,push"}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.env.Registry+"/v2/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(acct, s.tokens[acct])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/token as %s: %d, %v", acct, resp.StatusCode, err)
	}
	parts := strings.Split(out.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("registry token has %d parts, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Access []struct {
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		} `json:"access"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range claims.Access {
		if a.Name == repo {
			actions = append(actions, a.Actions...)
		}
	}
	slices.Sort(actions)
	return strings.Join(actions, ",")
}
