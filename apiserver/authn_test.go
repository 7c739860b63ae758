package apiserver_test

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
)

// testAuthentication: every kind of bad credential is 401, distinct from the
// 403 of a good credential without rights.
func (s *suite) testAuthentication(t *testing.T) {
	alice := s.as("alice")
	saList := nsPath("pa", "serviceaccounts")

	// The short-lived token is made first, and the wait for its expiry
	// overlaps the other checks.
	mustCode(t, "create shortlived", alice.post(t, saList, serviceAccount("shortlived")), http.StatusCreated)
	r := alice.post(t, nsPath("pa", "serviceaccounts", "shortlived", "token"), map[string]any{"spec": map[string]any{"expirationSeconds": 1}})
	mustCode(t, "1s token", r, http.StatusCreated)
	var short api.TokenRequest
	mustDecode(t, r, &short)
	expires := short.Status.ExpirationTimestamp
	if d := time.Until(expires); d > time.Minute {
		t.Errorf("token asked for 1s: got expiry %s from now, want the asked lifetime", d)
	}

	t.Run("bad credentials", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			c    caller
			msg  string
		}{
			{"no token", s.as(""), "no credentials"},
			{"forged token", s.withToken(randomToken()), ""},
			{"garbage token", s.withToken("not-a-token"), ""},
			{"token with our prefix but short", s.withToken("sha256~abc"), ""},
			{"token with our prefix but bad base64", s.withToken("sha256~" + strings.Repeat("*", 43)), ""},
			{"user name as token", s.withToken("alice"), ""},
			{"basic credentials", caller{s: s, header: "Basic YWxpY2U6cHctYWxpY2U="}, "no credentials"},
			{"empty bearer", caller{s: s, header: "Bearer "}, "no credentials"},
		} {
			t.Run(tc.what, func(t *testing.T) {
				for _, path := range []string{saList, prefix + "/users/~", projectPath("")} {
					r := tc.c.get(t, path)
					checkStatus(t, tc.what+" GET "+path, r, http.StatusUnauthorized, api.ReasonUnauthorized, tc.msg)
					if h := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
						t.Errorf("%s: got WWW-Authenticate %q, want a Bearer challenge", tc.what, h)
					}
				}
				checkStatus(t, tc.what+" creates", tc.c.post(t, saList, serviceAccount("by-stranger")), http.StatusUnauthorized, api.ReasonUnauthorized, "")
			})
		}
		checkCode(t, "nothing was created", s.as("admin").get(t, nsPath("pa", "serviceaccounts", "by-stranger")), http.StatusNotFound)
	})

	t.Run("401 is not 403", func(t *testing.T) {
		forbidden := s.as("dave").get(t, saList)
		unauth := s.as("").get(t, saList)
		checkStatus(t, "dave, authenticated, without rights", forbidden, http.StatusForbidden, api.ReasonForbidden, "dave")
		checkStatus(t, "no token", unauth, http.StatusUnauthorized, api.ReasonUnauthorized, "")
		if forbidden.Code == unauth.Code {
			t.Errorf("got %d for both, want 403 and 401", unauth.Code)
		}
	})

	t.Run("login", func(t *testing.T) {
		for _, tc := range []struct {
			what, user, pass string
			code             int
		}{
			{"right password", "bob", servertest.Password("bob"), http.StatusCreated},
			{"wrong password", "bob", "nope", http.StatusUnauthorized},
			{"another user's password", "bob", servertest.Password("alice"), http.StatusUnauthorized},
			{"unknown user", "mallory", "pw-mallory", http.StatusUnauthorized},
		} {
			c := caller{s: s, header: "Basic " + basic(tc.user, tc.pass)}
			r := c.post(t, "/oauth/token", nil)
			if tc.code == http.StatusCreated {
				checkCode(t, tc.what, r, tc.code)
			} else {
				checkStatus(t, tc.what, r, tc.code, api.ReasonUnauthorized, "")
			}
		}
		checkStatus(t, "login without credentials", s.as("").post(t, "/oauth/token", nil), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	})

	t.Run("revoked", func(t *testing.T) {
		r := caller{s: s, header: "Basic " + basic("bob", servertest.Password("bob"))}.post(t, "/oauth/token", nil)
		mustCode(t, "bob logs in", r, http.StatusCreated)
		var login struct{ Token string }
		mustDecode(t, r, &login)
		bob := s.withToken(login.Token)
		if name, r := bob.whoami(t); name != "bob" {
			t.Fatalf("whoami with the new token: got %q (%d %s), want bob", name, r.Code, r)
		}
		checkCode(t, "revoke", bob.post(t, "/oauth/revoke", nil), http.StatusOK)
		_, r = bob.whoami(t)
		checkStatus(t, "whoami after revoke", r, http.StatusUnauthorized, api.ReasonUnauthorized, "")
		checkStatus(t, "list after revoke", bob.get(t, saList), http.StatusUnauthorized, api.ReasonUnauthorized, "")
		checkStatus(t, "revoke again", bob.post(t, "/oauth/revoke", nil), http.StatusUnauthorized, api.ReasonUnauthorized, "")
		if name, r := s.as("bob").whoami(t); name != "bob" {
			t.Errorf("bob's other token after revoke: got %q (%d %s), want bob", name, r.Code, r)
		}
		checkStatus(t, "revoke without a token", s.as("").post(t, "/oauth/revoke", nil), http.StatusUnauthorized, api.ReasonUnauthorized, "")
	})

	t.Run("deleted service account", func(t *testing.T) {
		mustCode(t, "create ephemeral", alice.post(t, saList, serviceAccount("ephemeral")), http.StatusCreated)
		r := alice.post(t, nsPath("pa", "serviceaccounts", "ephemeral", "token"), nil)
		mustCode(t, "token for ephemeral", r, http.StatusCreated)
		var tr api.TokenRequest
		mustDecode(t, r, &tr)
		eph := s.withToken(tr.Status.Token)
		if name, r := eph.whoami(t); name != "system:serviceaccount:pa:ephemeral" {
			t.Fatalf("whoami: got %q (%d %s), want system:serviceaccount:pa:ephemeral", name, r.Code, r)
		}
		mustCode(t, "delete ephemeral", alice.del(t, nsPath("pa", "serviceaccounts", "ephemeral")), http.StatusOK)
		_, r = eph.whoami(t)
		checkStatus(t, "whoami after the service account is deleted", r, http.StatusUnauthorized, api.ReasonUnauthorized, "no longer exists")
		checkStatus(t, "token for a deleted service account", alice.post(t, nsPath("pa", "serviceaccounts", "ephemeral", "token"), nil), http.StatusNotFound, api.ReasonNotFound, "")

		// A new service account of the same name is a new identity: the
		// old one's tokens must not come back to life.
		t.Run("recreated", func(t *testing.T) {
			mustCode(t, "create ephemeral again", alice.post(t, saList, serviceAccount("ephemeral")), http.StatusCreated)
			name, r := eph.whoami(t)
			if r.Code != http.StatusUnauthorized {
				t.Errorf("the deleted service account's token after a new one of the same name is created: got %d (user %q), want 401", r.Code, name)
			}
		})
	})

	t.Run("expired", func(t *testing.T) {
		time.Sleep(time.Until(expires) + 500*time.Millisecond)
		_, r := s.withToken(short.Status.Token).whoami(t)
		checkStatus(t, "whoami with an expired token", r, http.StatusUnauthorized, api.ReasonUnauthorized, "expired")
		checkStatus(t, "negative expirationSeconds", alice.post(t, nsPath("pa", "serviceaccounts", "shortlived", "token"),
			map[string]any{"spec": map[string]any{"expirationSeconds": -5}}), http.StatusBadRequest, "", "positive")
	})

	t.Run("huge expirationSeconds", func(t *testing.T) {
		r := alice.post(t, nsPath("pa", "serviceaccounts", "shortlived", "token"), map[string]any{"spec": map[string]any{"expirationSeconds": int64(18446744074)}})
		if r.Code == http.StatusBadRequest {
			return
		}
		mustCode(t, "token for 584 years", r, http.StatusCreated)
		var tr api.TokenRequest
		mustDecode(t, r, &tr)
		if time.Until(tr.Status.ExpirationTimestamp) < 24*time.Hour {
			t.Errorf("token asked for 584 years: got expiry %s, want a refusal (400) or a long-lived token, not a wrapped-around lifetime", tr.Status.ExpirationTimestamp)
		}
	})
}

func basic(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}
