package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// tenancyLimitRows are TestSecurityTenancy's rows for the limits of issue
// 11 that were left open: service-account token lifetimes and counts
// (M6), host ports (L14), watches and list pages (L15) and webhook
// secrets (L5). They run after the table's other rows, on the same
// server and users.
func tenancyLimitRows(x *tenancy) []struct {
	name   string
	attack func(t *testing.T)
} {
	ctx := context.Background()
	s := x.s
	podWithHostPort := func(ns, name string, hostPort int32) *api.Pod {
		return &api.Pod{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Spec: api.PodSpec{NodeName: "nowhere", Containers: []api.Container{{
			Name: "c", Image: "busybox", Ports: []api.ContainerPort{{ContainerPort: 8080, HostPort: hostPort}},
		}}}}
	}
	template := func(app string, hostPort int32) *api.PodTemplateSpec {
		return &api.PodTemplateSpec{ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": app}}, Spec: api.PodSpec{Containers: []api.Container{{
			Name: "c", Image: "busybox", Ports: []api.ContainerPort{{ContainerPort: 8080, HostPort: hostPort}},
		}}}}
	}
	return []struct {
		name   string
		attack func(t *testing.T)
	}{
		{"M6 a service-account token asked for 10 years lives at most 90 days, and the CLI says so", func(t *testing.T) {
			if err := x.mallory.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "ci-long", Namespace: "mal"}}); err != nil {
				t.Fatal(err)
			}
			tr, err := x.mallory.CreateToken(ctx, "mal", "ci-long", 10*365*24*time.Hour)
			if err != nil {
				t.Fatalf("mallory asks for a 10-year token: %v", err)
			}
			if most := time.Now().Add(90*24*time.Hour + time.Hour); tr.Status.ExpirationTimestamp.After(most) {
				t.Errorf("mallory's 10-year token expires %s, want at most 90 days from now (%s)", tr.Status.ExpirationTimestamp, most)
			}
			_, stderr, err := s.login("mallory", "mallorypw").run("", "create", "token", "ci-long", "-n", "mal", "--duration", "87600h")
			if err != nil || !strings.Contains(stderr, "Warning:") || !strings.Contains(stderr, "90 days") {
				t.Errorf("slipway create token --duration 87600h: err=%v stderr=%q, want a warning that the token was shortened to 90 days", err, stderr)
			}
			tr, err = x.mallory.CreateToken(ctx, "mal", "ci-long", 0)
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Until(tr.Status.ExpirationTimestamp); d > 25*time.Hour {
				t.Errorf("mallory's token with the default lifetime lives %s, want the default of 24h", d.Round(time.Hour))
			}
		}},
		{"M6 a loop minting service-account tokens stops at the project's cap; the platform's own tokens still work", func(t *testing.T) {
			if err := x.mallory.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "loop", Namespace: "mal"}}); err != nil {
				t.Fatal(err)
			}
			const tries = 400
			minted := 0
			var refusal error
			for ; minted < tries; minted++ {
				if _, err := x.mallory.CreateToken(ctx, "mal", "loop", time.Hour); err != nil {
					refusal = err
					break
				}
			}
			if refusal == nil {
				t.Fatalf("mallory minted %d tokens in a loop for mal/loop, all live: want a refusal at the project's cap", minted)
			}
			st, _ := api.StatusFor(refusal)
			// mal holds a few tokens from earlier rows; the cap is 100.
			if st == nil || st.Code != http.StatusForbidden || !strings.Contains(st.Message, "the most a project may hold (100)") || minted > 100 {
				t.Errorf("refusal after %d tokens: %v, want 403 naming the cap (100)", minted, refusal)
			} else {
				t.Logf("after %d tokens: %s", minted, st.Message)
			}
			// The platform mints its own tokens in mal (the scanner reads
			// the pushed image as mal's deployer): unaffected by the cap.
			img, _ := random.Image(256, 1)
			d, _ := img.Digest()
			if err := remote.Write(mustRef(t, s.ref("mal/capped:latest")), img, s.auth); err != nil {
				t.Fatal(err)
			}
			sc := s.waitScan("mal", d.String(), "scanned", func(sc *api.ImageScan) bool { return sc.Status.Phase == "Scanned" || sc.Status.Phase == "Failed" })
			if sc.Status.Phase != "Scanned" {
				t.Errorf("scan of mal/capped after the cap: %s %s, want Scanned (the platform's tokens are not capped)", sc.Status.Phase, sc.Status.Message)
			}
		}},
		{"L14 an editor's pod with hostPort is refused", func(t *testing.T) {
			forbidden(t, "bob (edit in prod) creates a pod with hostPort 10250", x.bob.Create(ctx, api.Pods, podWithHostPort("prod", "hp", 10250)))
			rc := &api.ReplicationController{ObjectMeta: api.ObjectMeta{Name: "hp", Namespace: "prod"}, Spec: api.ReplicationControllerSpec{
				Selector: map[string]string{"app": "hp"}, Template: template("hp", 10250)}}
			forbidden(t, "bob creates a replication controller whose template has hostPort 10250", x.bob.Create(ctx, api.ReplicationControllers, rc))
			dc := &api.DeploymentConfig{ObjectMeta: api.ObjectMeta{Name: "hp", Namespace: "prod"}, Spec: api.DeploymentConfigSpec{
				Selector: map[string]string{"app": "hp"}, Template: template("hp", 10250)}}
			forbidden(t, "bob creates a deployment config whose template has hostPort 10250", x.bob.Create(ctx, api.DeploymentConfigs, dc))
			// Adding one to a template that had none.
			dc = &api.DeploymentConfig{ObjectMeta: api.ObjectMeta{Name: "hp", Namespace: "prod"}, Spec: api.DeploymentConfigSpec{
				Selector: map[string]string{"app": "hp"}, Template: template("hp", 0)}}
			if err := x.bob.Create(ctx, api.DeploymentConfigs, dc); err != nil {
				t.Fatalf("bob creates a deployment config without host ports: %v", err)
			}
			_, err := x.bob.Patch(ctx, api.DeploymentConfigs, "prod", "hp", []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":8080,"hostPort":10250}]}]}}}}`))
			forbidden(t, "bob patches hostPort 10250 into his deployment config", err)
			for _, r := range []*api.Resource{api.Pods, api.ReplicationControllers} {
				items, _, _ := s.admin.List(ctx, r, "prod", client.ListOptions{})
				for _, o := range items {
					if strings.Contains(fmt.Sprintf("%+v", o), "HostPort:10250") {
						t.Errorf("%s %s in prod has hostPort 10250 after bob's refused writes", r.Kind, o.GetObjectMeta().Name)
					}
				}
			}
		}},
		{"L14 a cluster admin's pod and deployment config with hostPort are allowed; an editor may still scale it", func(t *testing.T) {
			if err := s.admin.Create(ctx, api.Pods, podWithHostPort("prod", "hp-admin", 18080)); err != nil {
				t.Errorf("cluster-admin creates a pod with hostPort 18080: %v", err)
			}
			dc := &api.DeploymentConfig{ObjectMeta: api.ObjectMeta{Name: "hp-admin", Namespace: "prod"}, Spec: api.DeploymentConfigSpec{
				Selector: map[string]string{"app": "hp-admin"}, Template: template("hp-admin", 18081)}}
			if err := s.admin.Create(ctx, api.DeploymentConfigs, dc); err != nil {
				t.Fatalf("cluster-admin creates a deployment config with hostPort 18081: %v", err)
			}
			if _, err := x.bob.Patch(ctx, api.DeploymentConfigs, "prod", "hp-admin", []byte(`{"spec":{"replicas":0}}`)); err != nil {
				t.Errorf("bob scales the admin's deployment config, leaving its host port as it is: %v", err)
			}
			_, err := x.bob.Patch(ctx, api.DeploymentConfigs, "prod", "hp-admin", []byte(`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox","ports":[{"containerPort":8080,"hostPort":10250}]}]}}}}`))
			forbidden(t, "bob moves the admin's deployment config to hostPort 10250", err)
		}},
		{"L5 a viewer never sees a build config's inline webhook secret", func(t *testing.T) {
			if err := x.victim.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "hooks"}}); err != nil {
				t.Fatal(err)
			}
			x.bind(x.victim, "hooks", "mallory-view", "view", "mallory")
			const secret = "inline-secret-0123456789"
			bc := webhookConfig("hooks", "inline", api.BuildTrigger{Type: "Generic", Secret: secret})
			if err := x.victim.Create(ctx, api.BuildConfigs, bc); err != nil {
				t.Fatal(err)
			}
			o, err := x.mallory.Get(ctx, api.BuildConfigs, "hooks", "inline")
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%+v", o); strings.Contains(got, secret) {
				t.Errorf("mallory (view) reads hooks/inline: %s, want the webhook secret redacted", got)
			}
			items, _, err := x.mallory.List(ctx, api.BuildConfigs, "hooks", client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := json.Marshal(items); strings.Contains(string(got), secret) {
				t.Errorf("mallory (view) lists build configs in hooks: the webhook secret is in the answer")
			}
			wctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			ch, err := x.mallory.Watch(wctx, api.BuildConfigs, "hooks", "", client.ListOptions{Name: "inline"})
			if err != nil {
				t.Fatal(err)
			}
			if ev := <-ch; ev.Object == nil || strings.Contains(fmt.Sprintf("%+v", ev.Object), secret) {
				t.Errorf("mallory (view) watches hooks/inline: %+v, want the webhook secret redacted", ev)
			}
			// Whoever may update the config still reads it back whole.
			o, err = x.victim.Get(ctx, api.BuildConfigs, "hooks", "inline")
			if err != nil || o.(*api.BuildConfig).Spec.Triggers[0].Secret != secret {
				t.Errorf("victim (admin of hooks) reads hooks/inline: %+v, %v; want the secret", o, err)
			}
		}},
		{"L5 the generic webhook takes its secret in a header, out of the URL; the old URL still works", func(t *testing.T) {
			hook := func(path string, header map[string]string) (int, string) {
				req, _ := http.NewRequest(http.MethodPost, s.p.url()+path, strings.NewReader("{}"))
				for k, v := range header {
					req.Header.Set(k, v)
				}
				resp, err := webhookClient(t, s).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			const secret = "inline-secret-0123456789"
			if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/inline/generic", map[string]string{"X-Slipway-Webhook-Secret": secret}); code != http.StatusCreated {
				t.Errorf("generic webhook with the secret in X-Slipway-Webhook-Secret: %d %s, want 201", code, body)
			}
			if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/inline/generic", map[string]string{"X-Slipway-Webhook-Secret": "wrong-secret-0123456789"}); code != http.StatusForbidden {
				t.Errorf("generic webhook with a wrong secret header: %d %s, want 403", code, body)
			}
			if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/inline/"+secret+"/generic", nil); code != http.StatusCreated {
				t.Errorf("generic webhook with the secret in the path (the old URL): %d %s, want 201", code, body)
			}
			// A trigger naming a Secret, which view cannot read.
			if err := x.victim.Create(ctx, api.Secrets, &api.Secret{ObjectMeta: api.ObjectMeta{Name: "hook", Namespace: "hooks"},
				StringData: map[string]string{api.WebHookSecretKey: "from-a-secret-0123456789"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := x.mallory.Get(ctx, api.Secrets, "hooks", "hook"); !api.IsReason(err, api.ReasonForbidden) {
				t.Errorf("mallory (view) reads secret hooks/hook: err=%v, want 403", err)
			}
			if err := x.victim.Create(ctx, api.BuildConfigs, webhookConfig("hooks", "byref", api.BuildTrigger{Type: "Generic", SecretReference: &api.SecretLocalReference{Name: "hook"}})); err != nil {
				t.Fatal(err)
			}
			if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/byref/generic", map[string]string{"X-Slipway-Webhook-Secret": "from-a-secret-0123456789"}); code != http.StatusCreated {
				t.Errorf("generic webhook of a trigger with a secretReference: %d %s, want 201", code, body)
			}
			if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/byref/generic", nil); code != http.StatusForbidden {
				t.Errorf("generic webhook without a secret: %d %s, want 403", code, body)
			}
			// GitHub's URL needs no secret: the delivery's signature proves it.
			if err := x.victim.Create(ctx, api.BuildConfigs, webhookConfig("hooks", "gh", api.BuildTrigger{Type: "GitHub", SecretReference: &api.SecretLocalReference{Name: "hook"}})); err != nil {
				t.Fatal(err)
			}
			mac := hmac.New(sha256.New, []byte("from-a-secret-0123456789"))
			mac.Write([]byte("{}"))
			signed := "sha256=" + hex.EncodeToString(mac.Sum(nil))
			if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/gh/github", map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": signed}); code != http.StatusOK || !strings.Contains(body, "pong") {
				t.Errorf("signed GitHub ping to the URL without a secret: %d %s, want 200 pong", code, body)
			}
			for what, sig := range map[string]string{"unsigned": "", "signed with another key": "sha256=" + strings.Repeat("0", 64)} {
				if code, body := hook("/webhooks/namespaces/hooks/buildconfigs/gh/github", map[string]string{"X-GitHub-Event": "ping", "X-Hub-Signature-256": sig}); code != http.StatusForbidden {
					t.Errorf("%s GitHub ping: %d %s, want 403", what, code, body)
				}
			}
		}},
		{"L15 one user's concurrent watches are capped, and a list comes in pages however large a limit it asks", func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			const most = 64
			opened := 0
			var refusal error
			for ; opened < 4*most; opened++ {
				ch, err := x.mallory.Watch(wctx, api.ServiceAccounts, "mal", "", client.ListOptions{})
				if err != nil {
					refusal = err
					break
				}
				go func() {
					for range ch {
					}
				}()
			}
			if refusal == nil {
				t.Errorf("mallory opened %d watches at once, want a refusal at %d", opened, most)
			} else if st, _ := api.StatusFor(refusal); st == nil || st.Code != http.StatusTooManyRequests || !strings.Contains(st.Message, fmt.Sprint(most)) ||
				st.Details == nil || st.Details.RetryAfterSeconds <= 0 {
				t.Errorf("watch %d: %v, want 429 saying %d are open, with retryAfterSeconds", opened+1, refusal, most)
			} else {
				t.Logf("watch %d: %s (retry after %ds)", opened+1, st.Message, st.Details.RetryAfterSeconds)
			}
			if _, err := x.victim.Watch(wctx, api.ServiceAccounts, "vic", "", client.ListOptions{}); err != nil {
				t.Errorf("victim's own watch while mallory is at her cap: %v", err)
			}
			cancel()

			const n = 520
			for i := 0; i < n; i++ {
				if err := x.mallory.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("many-%03d", i), Namespace: "mal"}}); err != nil {
					t.Fatal(err)
				}
			}
			items, meta, err := x.mallory.List(ctx, api.ServiceAccounts, "mal", client.ListOptions{Limit: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			if len(items) > 500 || meta.Continue == "" {
				t.Errorf("a list of %d+ service accounts with limit 2^30: %d items, continue %q; want at most 500 and a continue token", n, len(items), meta.Continue)
			}
			items, _, err = x.mallory.List(ctx, api.ServiceAccounts, "mal", client.ListOptions{})
			if err != nil || len(items) < n {
				t.Errorf("the client's whole list: %d items, %v; want all %d+ (it follows continue)", len(items), err, n)
			}
			out := s.login("mallory", "mallorypw").ok("get", "serviceaccounts", "-n", "mal")
			if got := strings.Count(out, "many-"); got != n {
				t.Errorf("slipway get serviceaccounts lists %d of the %d many-* accounts", got, n)
			}
		}},
	}
}

// webhookConfig is a Dockerfile build config in ns with one trigger.
func webhookConfig(ns, name string, trigger api.BuildTrigger) *api.BuildConfig {
	return &api.BuildConfig{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Spec: api.BuildConfigSpec{
		Source:   api.BuildSource{Dockerfile: "FROM scratch\n"},
		Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{}},
		Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: name + ":latest"}},
		Triggers: []api.BuildTrigger{trigger},
	}}
}

// webhookClient is an HTTP client that trusts the server's CA and sends
// no credentials, as GitHub or a CI system would.
func webhookClient(t *testing.T, s *trustServer) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(s.p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}
