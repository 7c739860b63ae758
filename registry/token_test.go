package registry_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// mint signs claims with a fresh ES256 key, as an attacker could.
func mint(t *testing.T, kid string, claims jwt.MapClaims) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// withPayload replaces a JWT's payload, keeping its header and signature.
func withPayload(t *testing.T, tok string, payload map[string]any) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func claimsFor(sub, repo string, actions []string, exp time.Time) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": "slipway", "aud": []string{"slipway-registry"}, "sub": sub,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": exp.Unix(), "jti": "forged",
		"access": []map[string]any{{"type": "repository", "name": repo, "actions": actions}},
	}
}

func TestRegistryTokens(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "tok-a", false)
	h.project(t, "bob", "tok-pub", true)
	h.grant(t, "tok-a", "view", "carol")
	h.pushOK(t, "alice", "tok-a/app:v1", randomImage(t))
	const repo = "tok-a/app"
	const scope = "repository:" + repo + ":pull,push"

	real := h.registryToken(t, "alice", scope)
	kid, _ := jwtPart(t, real, 0)["kid"].(string)
	if kid == "" {
		t.Fatalf("a registry token has no kid: %v", jwtPart(t, real, 0))
	}

	// refused checks that a token gets a 401 invalid_token challenge, for a
	// pull and for a push.
	refused := func(t *testing.T, what, tok string) {
		t.Helper()
		for _, r := range []req{
			{method: http.MethodGet, path: "/v2/" + repo + "/manifests/v1", bearer: tok, header: http.Header{"Accept": {manifestAccept}}},
			{method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", bearer: tok},
		} {
			res := h.do(t, r)
			h.challengeOK(t, what+": "+r.method, res)
			if ch, want := res.header.Get("WWW-Authenticate"), `error="invalid_token"`; !strings.Contains(ch, want) {
				t.Errorf("%s: %s: WWW-Authenticate: got %q, want it to hold %s", what, r.method, ch, want)
			}
		}
	}

	t.Run("a real token works", func(t *testing.T) {
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/v1", bearer: real, header: http.Header{"Accept": {manifestAccept}}}); r.code != http.StatusOK {
			t.Errorf("GET with alice's registry token: got %v, want 200", r)
		}
		if r := h.do(t, req{method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", bearer: real}); r.code != http.StatusAccepted {
			t.Errorf("POST upload with alice's registry token: got %v, want 202", r)
		}
	})

	t.Run("a platform token works as a Bearer token", func(t *testing.T) {
		r := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/v1", bearer: h.token(t, "alice"), header: http.Header{"Accept": {manifestAccept}}})
		if r.code != http.StatusOK {
			t.Errorf("GET with alice's platform token as Bearer: got %v, want 200", r)
		}
		deniedOK(t, "POST upload with carol's platform token as Bearer", h.do(t, req{method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", bearer: h.token(t, "carol")}))
	})

	t.Run("forged with another key under the real kid", func(t *testing.T) {
		refused(t, "forged", mint(t, kid, claimsFor("alice", repo, []string{"pull", "push"}, time.Now().Add(time.Hour))))
	})

	t.Run("forged with an unknown kid", func(t *testing.T) {
		refused(t, "unknown kid", mint(t, "k-forged", claimsFor("alice", repo, []string{"pull", "push"}, time.Now().Add(time.Hour))))
	})

	t.Run("expired", func(t *testing.T) {
		refused(t, "expired", mint(t, kid, claimsFor("alice", repo, []string{"pull", "push"}, time.Now().Add(-time.Hour))))
		refused(t, "expired, unknown kid", mint(t, "k-old", claimsFor("alice", repo, []string{"pull", "push"}, time.Now().Add(-time.Hour))))
	})

	t.Run("real token with a tampered payload", func(t *testing.T) {
		ro := h.registryToken(t, "carol", scope)
		if got, want := grantedActions(t, ro, repo), []string{"pull"}; !slices.Equal(got, want) {
			t.Fatalf("carol's grants: got %v, want %v", got, want)
		}
		p := jwtPart(t, ro, 1)
		p["access"] = []map[string]any{{"type": "repository", "name": repo, "actions": []string{"pull", "push", "delete"}}}
		refused(t, "tampered access", withPayload(t, ro, p))
		p = jwtPart(t, real, 1)
		p["exp"] = time.Now().Add(24 * time.Hour).Unix()
		refused(t, "tampered exp", withPayload(t, real, p))
	})

	t.Run("alg none and HS256", func(t *testing.T) {
		payload := jwtPart(t, real, 1)
		pb, _ := json.Marshal(payload)
		for _, alg := range []string{"none", "None", "NONE"} {
			hb, _ := json.Marshal(map[string]any{"alg": alg, "typ": "JWT", "kid": kid})
			tok := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(pb) + "."
			refused(t, "alg="+alg, tok)
		}
		hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(payload))
		hs.Header["kid"] = kid
		s, err := hs.SignedString([]byte(""))
		if err != nil {
			t.Fatal(err)
		}
		refused(t, "alg=HS256", s)
	})

	t.Run("garbage bearer", func(t *testing.T) {
		refused(t, "garbage", "not-a-token")
		refused(t, "unknown platform token", "sha256~not-a-real-token-at-all")
	})

	t.Run("grants follow RBAC", func(t *testing.T) {
		cases := []struct {
			user, scope, repo string
			want              []string
		}{
			{"alice", scope, repo, []string{"pull", "push"}},
			{"alice", "repository:" + repo + ":*", repo, []string{"pull", "push", "delete"}},
			{"carol", scope, repo, []string{"pull"}},
			{"carol", "repository:" + repo + ":delete", repo, nil},
			{"dave", scope, repo, nil},
			{"", scope, repo, nil},
			{"", "repository:tok-pub/app:pull,push", "tok-pub/app", []string{"pull"}},
			{"alice", "repository:tok-pub/app:pull,push", "tok-pub/app", []string{"pull"}},
			{"alice", "repository:nosuch/app:pull", "nosuch/app", nil},
		}
		for _, c := range cases {
			tok := h.registryToken(t, c.user, c.scope)
			if got := grantedActions(t, tok, c.repo); !slices.Equal(got, c.want) {
				t.Errorf("token for %q asking %q: got actions %v, want %v", c.user, c.scope, got, c.want)
			}
		}
		ro := h.registryToken(t, "carol", scope)
		deniedOK(t, "POST upload with carol's pull-only token", h.do(t, req{method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", bearer: ro}))
		// A token for one repository does not open another.
		other := h.registryToken(t, "alice", "repository:tok-a/other:pull,push")
		deniedOK(t, "GET tok-a/app with a token for tok-a/other", h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/v1", bearer: other}))
	})

	t.Run("token endpoint refuses bad credentials", func(t *testing.T) {
		r := h.do(t, req{method: http.MethodGet, path: "/v2/token?service=slipway-registry&scope=" + scope,
			header: http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw-alice"))}}})
		if got, want := r.code, http.StatusUnauthorized; got != want {
			t.Errorf("token with a password instead of a token: got %v, want %d", r, want)
		}
		r = h.do(t, req{method: http.MethodGet, path: "/v2/token?service=elsewhere&scope=" + scope, user: "alice"})
		if got, want := r.code, http.StatusBadRequest; got != want {
			t.Errorf("token for another service: got %v, want %d", r, want)
		}
	})

	t.Run("a registry token does not outlive its platform token", func(t *testing.T) {
		c := h.env.User(t, "alice") // a token of its own, to revoke
		r := h.do(t, req{method: http.MethodGet, path: "/v2/token?service=slipway-registry&scope=" + scope, bearer: c.Token()})
		if r.code != http.StatusOK {
			t.Fatalf("token for a platform bearer token: got %v, want 200", r)
		}
		jwtTok := jsonField(r.body, "token")
		if err := c.Revoke(ctxT(t)); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/token?service=slipway-registry&scope=" + scope, bearer: c.Token()}); r.code != http.StatusUnauthorized {
			t.Errorf("token for a revoked platform token: got %v, want 401", r)
		}
		// The JWT itself lives out its few minutes, but it must not be
		// exchanged for fresh ones, or revocation never takes.
		r = h.do(t, req{method: http.MethodGet, path: "/v2/token?service=slipway-registry&scope=" + scope, bearer: jwtTok})
		if r.code == http.StatusOK && len(grantedActions(t, jsonField(r.body, "token"), repo)) > 0 {
			t.Errorf("a registry token minted before revocation buys a fresh one after it: got %v with grants %v, want 401", r.code, grantedActions(t, jsonField(r.body, "token"), repo))
		}
	})
}

func TestKeyRotation(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "rot", false)
	h.pushOK(t, "alice", "rot/app:v1", randomImage(t))
	const scope = "repository:rot/app:pull,push"

	works := func(t *testing.T, what, tok string) {
		t.Helper()
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/rot/app/manifests/v1", bearer: tok, header: http.Header{"Accept": {manifestAccept}}}); r.code != http.StatusOK {
			t.Errorf("%s: GET: got %v, want 200", what, r)
		}
		if r := h.do(t, req{method: http.MethodPost, path: "/v2/rot/app/blobs/uploads/", bearer: tok}); r.code != http.StatusAccepted {
			t.Errorf("%s: POST upload: got %v, want 202", what, r)
		}
	}

	old := h.registryToken(t, "alice", scope)
	oldKid, _ := jwtPart(t, old, 0)["kid"].(string)
	works(t, "before rotation", old)

	newKid, err := h.env.Server.Registry.RotateKey()
	if err != nil {
		t.Fatalf("RotateKey: %v", err)
	}
	if newKid == oldKid {
		t.Fatalf("RotateKey returned the old kid %q", newKid)
	}

	t.Run("old token still works", func(t *testing.T) { works(t, "old token", old) })
	t.Run("new token is signed with the new key and works", func(t *testing.T) {
		tok := h.registryToken(t, "alice", scope)
		if got, _ := jwtPart(t, tok, 0)["kid"].(string); got != newKid {
			t.Errorf("new token kid: got %q, want %q", got, newKid)
		}
		works(t, "new token", tok)
	})
	t.Run("a ggcr-style client works after rotation", func(t *testing.T) {
		h.pushOK(t, "alice", "rot/app:v2", randomImage(t))
	})
}
