package apiserver

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// LoginResponse is the answer of POST /oauth/token.
type LoginResponse struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// login exchanges a user name and password (HTTP Basic) for a bearer token.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	setAction(r, "login", "tokens")
	user, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="slipway"`)
		writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "send your user name and password with HTTP Basic authentication"))
		return
	}
	setUser(r, user)
	ctx := r.Context()
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ctx = identity.WithClientAddr(ctx, host) // failed logins are throttled per client too
	}
	secret, tok, err := s.authn.Login(ctx, user, pass)
	if err != nil {
		var te *identity.ThrottledError
		if errors.As(err, &te) {
			w.Header().Set("Retry-After", strconv.Itoa(te.RetryAfterSeconds()))
		}
		if errors.Is(err, identity.ErrBadPassword) {
			writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "wrong user name or password"))
			return
		}
		writeError(w, err)
		return
	}
	s.waitCache(r.Context(), api.Tokens, revisionOf(tok))
	writeJSON(w, http.StatusCreated, LoginResponse{Token: secret, User: user, ExpiresAt: tok.Spec.ExpiresAt})
}

// revoke deletes the token the request was made with.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	setAction(r, "logout", "tokens")
	tok, _ := bearer(r)
	rev, err := s.authn.Revoke(r.Context(), tok)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		writeError(w, err)
		return
	}
	s.waitCache(r.Context(), api.Tokens, rev)
	writeJSON(w, http.StatusOK, map[string]string{"status": "Success", "message": "token revoked"})
}

// whoami answers with the caller's user name and groups.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	u := identity.FromContext(r.Context())
	writeJSON(w, http.StatusOK, &api.User{
		TypeMeta:   api.TypeMeta{APIVersion: api.APIVersion, Kind: "User"},
		ObjectMeta: api.ObjectMeta{Name: u.Name},
		Groups:     u.Groups,
	})
}

// createToken serves POST .../serviceaccounts/NAME/token.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	var req api.TokenRequest
	if r.ContentLength != 0 {
		data, _, err := readBody(w, r, s.cfg.MaxBodyBytes, false)
		if err == nil {
			err = decodeStrictAny("TokenRequest", data, &req)
		}
		if err != nil {
			writeError(w, err)
			return
		}
	}
	if req.Spec.ExpirationSeconds < 0 {
		writeError(w, badField("spec.expirationSeconds", "must be a positive number of seconds, at most %d (%s); 0 means the default of %s", int64(s.authn.MaxServiceAccountTTL()/time.Second), days(s.authn.MaxServiceAccountTTL()), s.authn.ServiceAccountTTL(0)))
		return
	}
	if err := s.mayMintToken(identity.FromContext(r.Context()), info.Namespace, info.Name); err != nil {
		writeError(w, err)
		return
	}
	// As Kubernetes does with --service-account-max-token-expiration, a
	// longer request is shortened with a warning rather than refused:
	// `slipway create token --duration` (like `kubectl create token`)
	// treats the duration as a request, and the answer's expiration says
	// what was granted.
	ttl := time.Duration(0)
	if max := s.authn.MaxServiceAccountTTL(); req.Spec.ExpirationSeconds > int64(max/time.Second) {
		ttl = max
		w.Header().Add("Warning", fmt.Sprintf("299 - %q", fmt.Sprintf("requested expiration of %d seconds shortened to %d seconds (%s), the most a service account token may live; mint a new token before this one expires", req.Spec.ExpirationSeconds, int64(max/time.Second), days(max))))
	} else if req.Spec.ExpirationSeconds > 0 {
		ttl = time.Duration(req.Spec.ExpirationSeconds) * time.Second
	}
	// The count and the mint are one step on this server, and the answer
	// waits until the cache counts the new token, so a loop stops at the
	// cap. API servers running side by side may each let one through.
	s.tokenMu.Lock()
	defer s.tokenMu.Unlock()
	live, err := s.authn.LiveRequestedTokens(r.Context(), info.Namespace)
	if err != nil {
		writeError(w, err)
		return
	}
	if live >= s.cfg.MaxProjectTokens {
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "project %s holds %d live service account tokens requested through the API, the most a project may hold (%d): revoke tokens no longer used (POST /oauth/revoke with the token), delete the service accounts they belong to, or mint shorter-lived tokens and wait for some to expire", info.Namespace, live, s.cfg.MaxProjectTokens))
		return
	}
	secret, tok, err := s.authn.RequestServiceAccountToken(r.Context(), info.Namespace, info.Name, ttl, identity.FromContext(r.Context()).Name)
	if err != nil {
		writeError(w, err)
		return
	}
	s.waitCache(r.Context(), api.Tokens, revisionOf(tok))
	req.TypeMeta = api.TypeMeta{APIVersion: api.APIVersion, Kind: "TokenRequest"}
	req.Status = api.TokenRequestStatus{Token: secret, ExpirationTimestamp: tok.Spec.ExpiresAt}
	writeJSON(w, http.StatusCreated, req)
}

// PlatformServiceAccounts are the accounts the platform itself acts as in
// every project: the builder pushes builds, the deployer pulls for nodes,
// the promoter moves pipeline stage tags past their gates, the scanner
// reads images. Their rights are the platform's, so a project's users
// (editors and admins alike) may not mint their tokens; only a
// cluster-wide grant of create serviceaccounts/token (cluster-admin) may.
var PlatformServiceAccounts = []string{"builder", "deployer", "promoter", "scanner"}

// mayMintToken refuses a token for a platform account to anyone without a
// cluster-wide right to mint tokens, and a token for any account to
// someone who does not hold everything the account holds: a token is
// acting as the account, so an editor must not become a robot an admin
// granted more, here or in another project.
func (s *Server) mayMintToken(u identity.Info, project, sa string) error {
	if slices.Contains(PlatformServiceAccounts, sa) {
		if ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "create", Resource: "serviceaccounts", Subresource: "token"}); !ok {
			return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s/%s is a platform account: its tokens carry the platform's rights (pushing builds, moving promoted tags), so only a cluster admin may mint one; make your own service account (slipway create sa NAME) and grant it a role instead", project, sa)
		}
	}
	name := api.ServiceAccountUser(project, sa)
	target := identity.Info{Name: name, Groups: []string{identity.GroupAuthenticated, identity.GroupServiceAccounts, identity.GroupServiceAccounts + ":" + project}}
	if err := s.authz.CheckActAs(u, target); err != nil {
		why := err.Error()
		if len(why) > 240 {
			why = why[:240] + "…"
		}
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "a token for %s would act with permissions %s does not hold (%s); ask someone who holds them, such as the admin who granted them, to mint it", name, u.Name, why)
	}
	return nil
}

// days says a duration of whole days as "90 days".
func days(d time.Duration) string {
	if d%(24*time.Hour) != 0 {
		return d.String()
	}
	return fmt.Sprintf("%d days", d/(24*time.Hour))
}

func decodeStrictAny(kind string, data []byte, v any) error {
	return decodeStrict(&api.Resource{Kind: kind}, data, v)
}

// revokeUserTokens answers POST users/NAME/revoke-tokens: every token of
// that user is deleted, so their sessions end at once without deleting
// the user. RBAC allows it to whoever may create users/revoke-tokens:
// cluster admins. It answers how many it revoked, after this server's
// caches have seen the last deletion, so the next request with any of
// them is refused.
func (s *Server) revokeUserTokens(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	if _, err := s.store.Get(r.Context(), api.Users, "", info.Name); err != nil {
		writeError(w, err)
		return
	}
	n, rev, err := s.authn.RevokeUserTokens(r.Context(), info.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	if n > 0 {
		s.waitCache(r.Context(), api.Tokens, rev)
	}
	writeJSON(w, http.StatusOK, &api.Status{TypeMeta: api.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: "Success", Code: http.StatusOK,
		Message: "revoked " + strconv.Itoa(n) + " token(s) of user " + info.Name})
}
