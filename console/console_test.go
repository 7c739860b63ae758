package console_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/console"
	"slipway.dev/slipway/server/servertest"
)

// browser is an HTTPS client with a cookie jar, as a browser would be.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func newBrowser(t *testing.T, env *servertest.Env) *browser {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(env.CA)
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: env.URL, hc: &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	Code   int
	Header http.Header
	Body   string
}

func (b *browser) do(method, path string, body any, hdr map[string]string) answer {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(out)}
}

// login logs in through the console and keeps the CSRF token.
func (b *browser) login(user, password string) answer {
	b.t.Helper()
	a := b.do(http.MethodPost, console.Prefix+"login", map[string]string{"user": user, "password": password}, nil)
	if a.Code == http.StatusOK {
		var s console.SessionInfo
		if err := json.Unmarshal([]byte(a.Body), &s); err != nil || s.CSRFToken == "" {
			b.t.Fatalf("login answer %q: %v", a.Body, err)
		}
		b.csrf = s.CSRFToken
	}
	return a
}

// post sends a state-changing request the way the console's pages do.
func (b *browser) post(path string, body any) answer {
	b.t.Helper()
	return b.do(http.MethodPost, path, body, map[string]string{console.CSRFHeader: b.csrf})
}

func mustCode(t *testing.T, what string, a answer, want int) {
	t.Helper()
	if a.Code != want {
		t.Fatalf("%s: got %d, want %d; body: %s", what, a.Code, want, a.Body)
	}
}

func apiPath(r *api.Resource, ns, name, sub string) string {
	return strings.TrimSuffix(console.Prefix, "/") + "/api" + client.Path(r, ns, name, sub)
}

func TestConsoleSession(t *testing.T) {
	env := servertest.Start(t)
	ctx := context.Background()
	admin := env.Admin
	for _, p := range []string{"dev", "prod", "secret"} {
		if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}); err != nil {
			t.Fatal(err)
		}
	}
	bind := func(ns, role, user string) {
		t.Helper()
		rb := &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: role + "-" + user, Namespace: ns},
			RoleRef: api.RoleRef{Kind: "ClusterRole", Name: role}, Subjects: []api.Subject{{Kind: api.SubjectUser, Name: user}}}
		if err := admin.Create(ctx, api.RoleBindings, rb); err != nil {
			t.Fatal(err)
		}
	}
	bind("dev", "admin", "alice")
	bind("prod", "admin", "alice")
	bind("dev", "view", "bob")
	bind("prod", "view", "bob")
	bind("secret", "admin", "carol")
	pl := &api.Pipeline{ObjectMeta: api.ObjectMeta{Name: "web", Namespace: "dev"}, Spec: api.PipelineSpec{Stream: "web", Stages: []api.PipelineStage{
		{Name: "dev", Project: "dev", Tag: "latest"}, {Name: "prod", Project: "prod", Tag: "prod", RequireApproval: true}}}}
	if err := admin.Create(ctx, api.Pipelines, pl); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, api.Promotions, &api.Promotion{ObjectMeta: api.ObjectMeta{Name: "web-prod-1", Namespace: "dev"},
		Spec: api.PromotionSpec{Pipeline: "web", To: "prod", Image: "sha256:" + strings.Repeat("a", 64)}}); err != nil {
		t.Fatal(err)
	}
	approve := apiPath(api.Promotions, "dev", "web-prod-1", "approve")

	t.Run("page", func(t *testing.T) {
		b := newBrowser(t, env)
		a := b.do(http.MethodGet, "/console", nil, nil)
		mustCode(t, "GET /console", a, http.StatusMovedPermanently)
		a = b.do(http.MethodGet, console.Prefix, nil, nil)
		mustCode(t, "GET "+console.Prefix, a, http.StatusOK)
		if !strings.Contains(a.Header.Get("Content-Type"), "text/html") || !strings.Contains(a.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("GET %s headers = %v, want HTML with a CSP", console.Prefix, a.Header)
		}
	})

	t.Run("login", func(t *testing.T) {
		b := newBrowser(t, env)
		mustCode(t, "session before login", b.do(http.MethodGet, console.Prefix+"session", nil, nil), http.StatusUnauthorized)
		mustCode(t, "API before login", b.do(http.MethodGet, apiPath(api.Projects, "", "", ""), nil, nil), http.StatusUnauthorized)
		mustCode(t, "wrong password", b.login("alice", "nope"), http.StatusUnauthorized)
		a := b.do(http.MethodPost, console.Prefix+"login", nil, nil)
		mustCode(t, "login without JSON", a, http.StatusUnsupportedMediaType)
		a = b.login("alice", servertest.Password("alice"))
		mustCode(t, "login", a, http.StatusOK)
		ck := a.Header.Get("Set-Cookie")
		for _, want := range []string{console.CookieName + "=", "HttpOnly", "Secure", "SameSite=Strict", "Path=/"} {
			if !strings.Contains(ck, want) {
				t.Errorf("Set-Cookie = %q, want %s", ck, want)
			}
		}
		a = b.do(http.MethodGet, console.Prefix+"session", nil, nil)
		mustCode(t, "session", a, http.StatusOK)
		var s console.SessionInfo
		json.Unmarshal([]byte(a.Body), &s)
		if s.User != "alice" || s.CSRFToken != b.csrf {
			t.Errorf("session = %+v, want alice with the login's CSRF token", s)
		}
		a = b.do(http.MethodGet, apiPath(api.Projects, "", "", ""), nil, nil)
		mustCode(t, "list projects", a, http.StatusOK)
		if !strings.Contains(a.Body, `"dev"`) || strings.Contains(a.Body, `"secret"`) {
			t.Errorf("alice's projects = %s, want dev and not secret", a.Body)
		}
		mustCode(t, "logout", b.post(console.Prefix+"logout", nil), http.StatusOK)
		mustCode(t, "session after logout", b.do(http.MethodGet, console.Prefix+"session", nil, nil), http.StatusUnauthorized)
	})

	t.Run("csrf", func(t *testing.T) {
		b := newBrowser(t, env)
		mustCode(t, "login", b.login("alice", servertest.Password("alice")), http.StatusOK)
		is := map[string]any{"metadata": map[string]string{"name": "forged"}}
		path := apiPath(api.ImageStreams, "dev", "", "")
		a := b.do(http.MethodPost, path, is, nil)
		mustCode(t, "POST without a CSRF token", a, http.StatusForbidden)
		a = b.do(http.MethodPost, path, is, map[string]string{console.CSRFHeader: "forged"})
		mustCode(t, "POST with a wrong CSRF token", a, http.StatusForbidden)
		a = b.do(http.MethodPost, path, is, map[string]string{console.CSRFHeader: b.csrf, "Origin": "https://evil.example"})
		mustCode(t, "POST from another origin", a, http.StatusForbidden)
		a = b.do(http.MethodPost, path, is, map[string]string{console.CSRFHeader: b.csrf, "Sec-Fetch-Site": "cross-site"})
		mustCode(t, "POST from a cross-site page", a, http.StatusForbidden)
		a = b.do(http.MethodPost, approve, map[string]string{}, nil)
		mustCode(t, "approve without a CSRF token", a, http.StatusForbidden)
		if _, err := admin.Get(ctx, api.ImageStreams, "dev", "forged"); !api.IsNotFound(err) {
			t.Fatalf("a refused POST made the stream (get: %v)", err)
		}
		o, _ := admin.Get(ctx, api.Promotions, "dev", "web-prod-1")
		if n := len(o.(*api.Promotion).Status.Approvals); n != 0 {
			t.Fatalf("a refused approve recorded %d approvals", n)
		}
		mustCode(t, "POST with the token", b.post(path, is), http.StatusCreated)
	})

	t.Run("view user", func(t *testing.T) {
		b := newBrowser(t, env)
		mustCode(t, "login", b.login("bob", servertest.Password("bob")), http.StatusOK)
		a := b.do(http.MethodGet, console.Prefix+"can?verb=promote&resource=promotions&namespace=prod", nil, nil)
		mustCode(t, "can", a, http.StatusOK)
		if !strings.Contains(a.Body, `"allowed":false`) {
			t.Errorf("can bob promote into prod = %s, want false", a.Body)
		}
		mustCode(t, "read the promotion", b.do(http.MethodGet, apiPath(api.Promotions, "dev", "web-prod-1", ""), nil, nil), http.StatusOK)
		a = b.post(approve, map[string]string{})
		mustCode(t, "view user's approve", a, http.StatusForbidden)
		o, _ := admin.Get(ctx, api.Promotions, "dev", "web-prod-1")
		if n := len(o.(*api.Promotion).Status.Approvals); n != 0 {
			t.Fatalf("a view user's approve recorded %d approvals", n)
		}

		a2 := newBrowser(t, env)
		mustCode(t, "alice login", a2.login("alice", servertest.Password("alice")), http.StatusOK)
		a = a2.do(http.MethodGet, console.Prefix+"can?verb=promote&resource=promotions&namespace=prod", nil, nil)
		if !strings.Contains(a.Body, `"allowed":true`) {
			t.Errorf("can alice promote into prod = %s, want true", a.Body)
		}
	})

	t.Run("other project", func(t *testing.T) {
		b := newBrowser(t, env)
		mustCode(t, "login", b.login("carol", servertest.Password("carol")), http.StatusOK)
		a := b.do(http.MethodGet, apiPath(api.Projects, "", "", ""), nil, nil)
		mustCode(t, "list projects", a, http.StatusOK)
		if strings.Contains(a.Body, `"dev"`) || !strings.Contains(a.Body, `"secret"`) {
			t.Errorf("carol's projects = %s, want secret only", a.Body)
		}
		for _, p := range []string{apiPath(api.Promotions, "dev", "", ""), apiPath(api.Pipelines, "dev", "web", ""), apiPath(api.ImageStreams, "dev", "", "") + "?watch=true"} {
			mustCode(t, "GET "+p, b.do(http.MethodGet, p, nil, nil), http.StatusForbidden)
		}
		mustCode(t, "approve in another project", b.post(approve, map[string]string{}), http.StatusForbidden)
		mustCode(t, "outside the API", b.do(http.MethodGet, strings.TrimSuffix(console.Prefix, "/")+"/api/metrics", nil, nil), http.StatusNotFound)
	})
}
