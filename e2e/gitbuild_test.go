package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// gitServer serves the repositories under root over smart HTTP with git's
// own http-backend, on loopback.
func gitServer(t *testing.T, root string) string {
	t.Helper()
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git is missing (make test-deps installs it): %v", err)
	}
	srv := httptest.NewServer(&cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}})
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestGitBuildAndWebhooks builds from a git repository served on loopback,
// records the commit, and starts builds from signed GitHub push events;
// unsigned, mis-signed or wrong-secret deliveries start nothing, and a
// repository on a host off the allow-list is not fetched.
func TestGitBuildAndWebhooks(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "app.git")
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	os.MkdirAll(filepath.Join(work, "svc"), 0o755)
	os.WriteFile(filepath.Join(work, "svc", "Dockerfile"), []byte("FROM base\nCOPY hello.txt /hello.txt\n"), 0o644)
	os.WriteFile(filepath.Join(work, "svc", "hello.txt"), []byte("hello from git\n"), 0o644)
	git(t, work, "add", ".")
	git(t, work, "commit", "-q", "-m", "first")
	commit := git(t, work, "rev-parse", "HEAD")
	git(t, root, "clone", "-q", "--bare", work, repo)
	host := gitServer(t, root)

	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t), "--import-allow", host, "--import-allow-cidr", "127.0.0.0/8")
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "gb"}}); err != nil {
		t.Fatal(err)
	}
	baseRef, _ := name.ParseReference(p.registry+"/gb/base:1", name.Insecure)
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if err := remote.Write(baseRef, busyboxImage(t), auth); err != nil {
		t.Fatal(err)
	}
	const secret = "0123456789abcdef-webhook"
	mk := func(name, uri string) *api.BuildConfig {
		return &api.BuildConfig{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: "gb"},
			Spec: api.BuildConfigSpec{
				Source:   api.BuildSource{Git: &api.GitBuildSource{URI: uri, Ref: "main"}, ContextDir: "svc"},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: name + ":latest"}},
				Triggers: []api.BuildTrigger{{Type: "GitHub", Secret: secret}},
			},
		}
	}
	if err := admin.Create(ctx, api.BuildConfigs, mk("app", "http://"+host+"/app.git")); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("project", "gb")
	c.ok("start-build", "app", "--wait")
	b := waitBuild(t, admin, "gb", "app-1")
	if b.Status.Phase != api.BuildComplete || b.Status.Revision != commit {
		t.Fatalf("app-1 = %s at %q, want Complete at %s\n%s", b.Status.Phase, b.Status.Revision, commit, b.Status.LogTail)
	}
	img, err := remote.Image(mustRef(t, p.registry+"/gb/app:latest"), auth)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	if m.Annotations["org.opencontainers.image.revision"] != commit || m.Annotations["org.opencontainers.image.source"] != "http://"+host+"/app.git" {
		t.Errorf("output annotations = %v, want the source and commit", m.Annotations)
	}

	// GitHub webhooks.
	ca, _ := os.ReadFile(p.caFile())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	push, _ := json.Marshal(map[string]string{"ref": "refs/heads/main", "after": commit})
	sign := func(key string, body []byte) string {
		h := hmac.New(sha256.New, []byte(key))
		h.Write(body)
		return "sha256=" + hex.EncodeToString(h.Sum(nil))
	}
	deliver := func(urlSecret, sig string) int {
		req, _ := http.NewRequest(http.MethodPost, p.url()+"/webhooks/namespaces/gb/buildconfigs/app/"+urlSecret+"/github", bytes.NewReader(push))
		req.Header.Set("X-GitHub-Event", "push")
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		what      string
		urlSecret string
		sig       string
	}{
		{"no signature", secret, ""},
		{"signed with another key", secret, sign("not-the-secret-at-all", push)},
		{"wrong secret in the URL", "wrong-secret-0123456789", sign(secret, push)},
	} {
		if got := deliver(tc.urlSecret, tc.sig); got != http.StatusForbidden {
			t.Errorf("webhook with %s = %d, want 403", tc.what, got)
		}
	}
	if _, err := admin.Get(ctx, api.Builds, "gb", "app-2"); !api.IsNotFound(err) {
		t.Fatalf("a refused webhook started a build: %v", err)
	}
	if got := deliver(secret, sign(secret, push)); got != http.StatusCreated {
		t.Fatalf("signed push webhook = %d, want 201", got)
	}
	b2 := waitBuild(t, admin, "gb", "app-2")
	if b2.Status.Phase != api.BuildComplete || b2.Status.Revision != commit || b2.Annotations["slipway.dev/build-cause"] != "GitHubWebhook" {
		t.Errorf("app-2 = %s at %q cause %q, want Complete at %s from GitHubWebhook", b2.Status.Phase, b2.Status.Revision, b2.Annotations["slipway.dev/build-cause"], commit)
	}

	// A repository on a host that is not allowed is never fetched.
	other := gitServer(t, root)
	if err := admin.Create(ctx, api.BuildConfigs, mk("offlist", "http://localhost:"+other[strings.LastIndex(other, ":")+1:]+"/app.git")); err != nil {
		t.Fatal(err)
	}
	c.fails("failed", "start-build", "offlist", "--wait")
	bo := waitBuild(t, admin, "gb", "offlist-1")
	if bo.Status.Reason != "FetchSourceFailed" || !strings.Contains(bo.Status.Message, "allow-list") {
		t.Errorf("offlist-1 = %s/%s: %s; want FetchSourceFailed naming the allow-list", bo.Status.Phase, bo.Status.Reason, bo.Status.Message)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
