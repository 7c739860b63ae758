// Package console serves the web console at /console/ on the API's
// listener. It holds no rights of its own: a session is a platform login
// token kept in an HttpOnly cookie, and every read and write the console
// makes goes through the API's own handler with that token, so a user sees
// and changes in the browser exactly what `slipway get` and the other
// commands would let them, no more.
//
// Routes, all under Prefix:
//
//	GET  /                  the single-page app (or a page saying to run `make build`)
//	POST login              {"user","password"} → session cookie + {"user","csrfToken","expiresAt"}
//	POST logout             revokes the session's token
//	GET  session            {"user","groups","csrfToken"}, or 401
//	GET  can                ?verb=&resource=&namespace=[&subresource=&name=] → {"allowed"}
//	GET  lineage            ?namespace=&target= → {"root","graph"}: `slipway trace` as the user
//	*    api/apis/...       the API itself, as the logged-in user (watches stream)
//
// Every request that is not GET or HEAD must come from the console's own
// origin (Origin and Sec-Fetch-Site, when the browser sends them), and,
// once logged in, carry the session's CSRF token in the X-CSRF-Token
// header: a token derived from the session's secret, which a page of
// another origin can neither read nor compute.
package console

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/lineage"
	"slipway.dev/slipway/rbac"
)

// Prefix is where the console is served.
const Prefix = "/console/"

// CookieName is the session cookie. The __Host- prefix makes browsers
// refuse it unless it is Secure, has no Domain and has Path=/, so no other
// host or path can plant or read one.
const CookieName = "__Host-slipway-console"

// CSRFHeader carries the session's CSRF token on every non-GET request.
const CSRFHeader = "X-CSRF-Token"

// Authorizer answers whether a user may do something; the console asks it
// only to show or hide actions (the approve button). The API refuses what
// the user may not do whatever the page shows.
type Authorizer interface {
	Authorize(u identity.Info, at rbac.Attributes) (bool, string)
}

// Config configures a Console.
type Config struct {
	// API is the API server's handler (apiserver.Server.Handler). Every
	// read and write of the console goes through it with the user's
	// token. Required.
	API http.Handler
	// Authorizer is the API's RBAC (apiserver.Server.Authorizer).
	// Required.
	Authorizer Authorizer
	// RegistryTransport reaches the integrated registry for an image's
	// referrers (signatures, attestations, SBOMs), which the lineage page
	// reads with the user's token. Off loopback the registry serves TLS
	// with the platform's certificate, so it must trust the platform CA.
	// Default http.DefaultTransport.
	RegistryTransport http.RoundTripper
}

// Validate says what is missing.
func (c *Config) Validate() error {
	if c.API == nil {
		return errors.New("console: the API handler is required")
	}
	if c.Authorizer == nil {
		return errors.New("console: an authorizer is required")
	}
	if c.RegistryTransport == nil {
		c.RegistryTransport = http.DefaultTransport
	}
	return nil
}

// Console is the web console's handler.
type Console struct {
	cfg Config
	mux *http.ServeMux
}

// New returns the console.
func New(cfg Config) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, mux: http.NewServeMux()}
	static := staticHandler()
	c.mux.Handle("GET "+Prefix, static)
	c.mux.HandleFunc("POST "+Prefix+"login", c.login)
	c.mux.HandleFunc("POST "+Prefix+"logout", c.logout)
	c.mux.HandleFunc("GET "+Prefix+"session", c.session)
	c.mux.HandleFunc("GET "+Prefix+"can", c.can)
	c.mux.HandleFunc("GET "+Prefix+"lineage", c.lineage)
	return c, nil
}

// ServeHTTP serves everything under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	if !safeMethod(r.Method) {
		if why := crossOrigin(r); why != "" {
			writeMessage(w, http.StatusForbidden, api.ReasonForbidden, why)
			return
		}
	}
	// The API's paths bypass the mux, which would clean "a/../b" into a
	// redirect instead of letting the API refuse the bad name.
	if strings.HasPrefix(r.URL.Path, Prefix+"api/") {
		c.proxy(w, r)
		return
	}
	c.mux.ServeHTTP(w, r)
}

func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// crossOrigin says why a state-changing request did not come from the
// console's own pages, or "" when it did (or the client is not a browser
// that says where it comes from, which a cross-site page cannot make it).
func crossOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" && o != "https://"+r.Host {
		return "the request comes from " + o + ", not from the console at https://" + r.Host + "; open the console and act from there"
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
		return "the request comes from a " + s + " page, not from the console; open the console and act from there"
	}
	return ""
}

// csrfToken is the session's CSRF token: an HMAC keyed with the session's
// secret, which only the HttpOnly cookie holds.
func csrfToken(session string) string {
	m := hmac.New(sha256.New, []byte(session))
	io.WriteString(m, "slipway console csrf v1")
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF refuses a non-GET request without the session's token.
func checkCSRF(w http.ResponseWriter, r *http.Request, session string) bool {
	if safeMethod(r.Method) {
		return true
	}
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		writeMessage(w, http.StatusForbidden, api.ReasonForbidden, "missing "+CSRFHeader+" header: the console sends the token GET "+Prefix+"session gives; reload the console")
		return false
	}
	if !hmac.Equal([]byte(got), []byte(csrfToken(session))) {
		writeMessage(w, http.StatusForbidden, api.ReasonForbidden, "wrong "+CSRFHeader+" token for this session; reload the console")
		return false
	}
	return true
}

// sessionToken is the platform token the request's cookie holds.
func sessionToken(r *http.Request) (string, bool) {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return "", false
	}
	return ck.Value, true
}

func setSession(w http.ResponseWriter, token string, expires time.Time) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: token, Path: "/", Expires: expires,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func clearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// callAPI serves one request of the API's handler in process, as the
// holder of token ("" for none), keeping the browser's address (the API
// throttles failed logins per client).
func (c *Console) callAPI(ctx context.Context, from *http.Request, method, path, token string, hdr http.Header) *httptest.ResponseRecorder {
	req := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Body: http.NoBody}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return inProcess{c.cfg.API, from}.serve(req.WithContext(ctx))
}

// inProcess is an http.RoundTripper that serves each request with the
// API's handler in this process, as if it came from the browser's request
// from (its client address, for the API's throttling and audit): the
// console's Go client of the API, acting with the user's token.
type inProcess struct {
	api  http.Handler
	from *http.Request
}

func (t inProcess) serve(req *http.Request) *httptest.ResponseRecorder {
	r := t.from.Clone(req.Context())
	r.Method, r.RequestURI = req.Method, ""
	r.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	r.Header = req.Header.Clone()
	r.Body, r.ContentLength = req.Body, req.ContentLength
	if r.Body == nil {
		r.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.api.ServeHTTP(rec, r)
	return rec
}

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.serve(req).Result(), nil
}

// relay copies an API answer that is not a success to the browser.
func relay(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for _, k := range []string{"Content-Type", "Retry-After", "Www-Authenticate"} {
		if v := rec.Header().Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// SessionInfo is what login and session answer.
type SessionInfo struct {
	User      string    `json:"user"`
	Groups    []string  `json:"groups,omitempty"`
	CSRFToken string    `json:"csrfToken"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// login exchanges a user name and password for a session, through the
// API's own POST /oauth/token (its throttling, audit and token lifetime).
// It takes JSON only: a cross-site form cannot send that without a CORS
// preflight, which the console never grants.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeMessage(w, http.StatusUnsupportedMediaType, api.ReasonBadRequest, "send {\"user\": ..., \"password\": ...} as application/json")
		return
	}
	var req loginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.User == "" {
		writeMessage(w, http.StatusBadRequest, api.ReasonBadRequest, "send {\"user\": ..., \"password\": ...} as application/json")
		return
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(req.User+":"+req.Password)))
	rec := c.callAPI(r.Context(), r, http.MethodPost, "/oauth/token", "", hdr)
	if rec.Code != http.StatusCreated {
		relay(w, rec)
		return
	}
	var out struct {
		Token     string    `json:"token"`
		User      string    `json:"user"`
		ExpiresAt time.Time `json:"expiresAt"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Token == "" {
		writeMessage(w, http.StatusInternalServerError, api.ReasonInternal, "the API's login answer could not be read")
		return
	}
	setSession(w, out.Token, out.ExpiresAt)
	writeJSON(w, http.StatusOK, SessionInfo{User: out.User, CSRFToken: csrfToken(out.Token), ExpiresAt: out.ExpiresAt})
}

// logout revokes the session's token at the API and clears the cookie.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	tok, ok := sessionToken(r)
	if !ok {
		clearSession(w)
		writeJSON(w, http.StatusOK, map[string]string{"message": "logged out"})
		return
	}
	if !checkCSRF(w, r, tok) {
		return
	}
	c.callAPI(r.Context(), r, http.MethodPost, "/oauth/revoke", tok, nil)
	clearSession(w)
	writeJSON(w, http.StatusOK, map[string]string{"message": "logged out"})
}

// whoami authenticates the session through the API. On failure it has
// answered the request (401 and a cleared cookie for a bad session).
func (c *Console) whoami(w http.ResponseWriter, r *http.Request) (string, identity.Info, bool) {
	tok, ok := sessionToken(r)
	if !ok {
		writeMessage(w, http.StatusUnauthorized, api.ReasonUnauthorized, "not logged in: log in with your Slipway user name and password")
		return "", identity.Info{}, false
	}
	rec := c.callAPI(r.Context(), r, http.MethodGet, "/apis/"+api.Group+"/"+api.Version+"/users/~", tok, nil)
	if rec.Code != http.StatusOK {
		if rec.Code == http.StatusUnauthorized {
			clearSession(w)
		}
		relay(w, rec)
		return "", identity.Info{}, false
	}
	var u api.User
	if err := json.Unmarshal(rec.Body.Bytes(), &u); err != nil {
		writeMessage(w, http.StatusInternalServerError, api.ReasonInternal, "the API's whoami answer could not be read")
		return "", identity.Info{}, false
	}
	return tok, identity.Info{Name: u.Name, Groups: u.Groups}, true
}

func (c *Console) session(w http.ResponseWriter, r *http.Request) {
	tok, u, ok := c.whoami(w, r)
	if !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, SessionInfo{User: u.Name, Groups: u.Groups, CSRFToken: csrfToken(tok)})
}

// can answers whether the logged-in user may do one thing, so a page
// shows only the actions the user has.
func (c *Console) can(w http.ResponseWriter, r *http.Request) {
	_, u, ok := c.whoami(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	at := rbac.Attributes{Verb: q.Get("verb"), Resource: q.Get("resource"), Subresource: q.Get("subresource"), Namespace: q.Get("namespace"), Name: q.Get("name")}
	if at.Verb == "" || at.Resource == "" {
		writeMessage(w, http.StatusBadRequest, api.ReasonBadRequest, "name a verb and a resource: can?verb=promote&resource=promotions&namespace=PROJECT")
		return
	}
	allowed, _ := c.cfg.Authorizer.Authorize(u, at)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]bool{"allowed": allowed})
}

// LineageAnswer is what GET lineage answers: the graph `slipway trace
// -o json` prints, and the id of the target's node in it.
type LineageAnswer struct {
	Root  string         `json:"root"`
	Graph *lineage.Graph `json:"graph"`
}

// lineageTimeout bounds one trace: its reads of the API and the registry.
const lineageTimeout = time.Minute

// lineage traces an image, pod/NAME or dc/NAME of a project as `slipway
// trace` does, reading the API and the registry's referrers with the
// session's token, never the server's: a hop the user may not read is a
// node saying so. An image's graph also has the project's pods that run
// it.
func (c *Console) lineage(w http.ResponseWriter, r *http.Request) {
	tok, _, ok := c.whoami(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	ns, target := q.Get("namespace"), q.Get("target")
	if ns == "" || target == "" {
		writeMessage(w, http.StatusBadRequest, api.ReasonBadRequest, "name a project and what to trace: lineage?namespace=PROJECT&target=STREAM:TAG (or STREAM@DIGEST, a digest, pod/NAME, dc/NAME)")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), lineageTimeout)
	defer cancel()
	cl, err := client.New("https://"+r.Host, client.WithToken(tok), client.WithTransport(inProcess{c.cfg.API, r}))
	if err != nil {
		writeMessage(w, http.StatusInternalServerError, api.ReasonInternal, err.Error())
		return
	}
	var refs lineage.Referrers
	host, err := cl.RegistryHost(ctx)
	if err == nil {
		refs = lineage.RegistryReferrers(host, tok, remote.WithTransport(c.cfg.RegistryTransport))
	}
	t := lineage.New(cl, host, refs)
	root, err := t.Trace(ctx, ns, target)
	if err != nil {
		st, isStatus := api.StatusFor(err)
		switch {
		case lineage.Forbidden(err) || root != "" && t.Graph().Node(root).NotVisible:
			// Nothing of what was refused comes back, not even why.
			writeMessage(w, http.StatusForbidden, api.ReasonForbidden, target+" in "+ns+" is "+lineage.NotVisibleMessage)
		case isStatus:
			writeMessage(w, int(st.Code), st.Reason, st.Message)
		default:
			writeMessage(w, http.StatusBadRequest, api.ReasonBadRequest, err.Error())
		}
		return
	}
	if n := t.Graph().Node(root); n.Kind == "Image" {
		t.Pods(ctx, ns, n.Digest)
	}
	g := t.Graph()
	if g.Nodes == nil {
		g.Nodes = []lineage.Node{}
	}
	if g.Edges == nil {
		g.Edges = []lineage.Edge{}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, LineageAnswer{Root: root, Graph: g})
}

// proxy serves the API to the console's pages as the logged-in user: the
// cookie's token becomes the bearer token, and the API's own
// authentication, RBAC, admission and audit decide. Only the resource
// API and /version are reachable this way.
func (c *Console) proxy(w http.ResponseWriter, r *http.Request) {
	tok, ok := sessionToken(r)
	if !ok {
		writeMessage(w, http.StatusUnauthorized, api.ReasonUnauthorized, "not logged in: log in with your Slipway user name and password")
		return
	}
	if !checkCSRF(w, r, tok) {
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, Prefix+"api")
	if !strings.HasPrefix(rest, "/apis/") && rest != "/version" {
		writeMessage(w, http.StatusNotFound, api.ReasonNotFound, "the console reaches only the resource API (/apis/...) and /version")
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.RequestURI = rest, ""
	if r.URL.RawPath != "" {
		r2.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, Prefix+"api")
	}
	r2.Header.Del("Cookie")
	r2.Header.Del(CSRFHeader)
	r2.Header.Set("Authorization", "Bearer "+tok)
	w.Header().Set("Cache-Control", "no-store")
	c.cfg.API.ServeHTTP(w, r2)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeMessage answers with a Status, as the API does.
func writeMessage(w http.ResponseWriter, code int, reason, msg string) {
	st := api.NewStatus(code, reason, "%s", msg)
	st.TypeMeta = api.TypeMeta{APIVersion: "v1", Kind: "Status"}
	st.Status = "Failure"
	writeJSON(w, code, st)
}
