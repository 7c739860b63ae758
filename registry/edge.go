package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// route is what an OCI distribution path names.
type route struct {
	name      string // repository, "project/stream[/more]"
	kind      string // manifests, blobs, uploads, tags, referrers, base, catalog
	reference string // tag or digest, for manifests, blobs and referrers
}

// The grammar, as the distribution spec writes it. Requests are checked
// by the hand-written matchers below, which accept exactly these
// languages (TestMatchersAreTheGrammar, FuzzMatchers) at a tenth of the
// cost: every request checks a name and a reference.
var (
	nameComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	tagRe         = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRe      = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
	// contentRangeRe is the chunked-upload range the spec defines; 18
	// digits keep both ends within int64.
	contentRangeRe = regexp.MustCompile(`^[0-9]{1,18}-[0-9]{1,18}$`)
)

// parseRoute splits /v2/<name>/<kind>/<ref>. The name may hold slashes, so
// the kind is found from the right.
func parseRoute(path string) (route, *ociError) {
	if path == "/v2/" || path == "/v2" {
		return route{kind: "base"}, nil
	}
	if path == "/v2/_catalog" {
		return route{kind: "catalog"}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return route{}, errNotFound
	}
	var rt route
	for _, k := range []string{"/manifests/", "/blobs/uploads/", "/blobs/", "/referrers/", "/tags/list"} {
		i := strings.LastIndex(rest, k)
		if i < 0 {
			continue
		}
		rt.name, rt.reference = rest[:i], rest[i+len(k):]
		rt.kind = strings.Trim(k, "/")
		switch k {
		case "/blobs/uploads/":
			rt.kind = "uploads"
		case "/tags/list":
			rt.kind = "tags"
		}
		break
	}
	if rt.kind == "" {
		if strings.HasSuffix(rest, "/blobs/uploads") {
			rt.name, rt.kind = strings.TrimSuffix(rest, "/blobs/uploads"), "uploads"
		} else {
			return route{}, errNotFound
		}
	}
	if e := checkName(rt.name); e != nil {
		return route{}, e
	}
	switch rt.kind {
	case "manifests":
		if !isTag(rt.reference) && !isDigest(rt.reference) {
			if strings.Contains(rt.reference, ":") {
				return route{}, ociErr(http.StatusBadRequest, "DIGEST_INVALID", "%q is not a digest", trunc(rt.reference))
			}
			return route{}, ociErr(http.StatusBadRequest, "TAG_INVALID", "%q is not a valid tag: 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", trunc(rt.reference))
		}
	case "blobs", "referrers":
		if !isDigest(rt.reference) {
			return route{}, ociErr(http.StatusBadRequest, "DIGEST_INVALID", "%q is not a digest", trunc(rt.reference))
		}
	case "tags":
		if rt.reference != "" {
			return route{}, errNotFound
		}
	}
	if rt.kind == "manifests" || rt.kind == "blobs" || rt.kind == "referrers" {
		if alg, _, ok := strings.Cut(rt.reference, ":"); ok && alg != "sha256" && alg != "sha512" && isDigest(rt.reference) {
			return route{}, ociErr(http.StatusBadRequest, "DIGEST_INVALID", "digest algorithm %q is not supported; use sha256 or sha512", trunc(alg))
		}
	}
	return rt, nil
}

// checkName enforces the spec's repository grammar, and Slipway's rule
// that the first component is a project: PROJECT/STREAM, where the
// project is at most 63 characters and the stream (api.ValidateStreamName:
// the same components) at most 200.
func checkName(name string) *ociError {
	if name == "" || len(name) > 255 {
		return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository name must be 1-255 characters")
	}
	project, stream, ok := strings.Cut(name, "/")
	if !ok {
		return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository %q has no project: use PROJECT/NAME", trunc(name))
	}
	for rest := name; rest != ""; {
		var part string
		part, rest, ok = strings.Cut(rest, "/")
		if !isComponent(part) || (ok && rest == "") {
			return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository %q: each part must be lower-case letters and digits separated by '.', '_', '__' or '-'", trunc(name))
		}
	}
	if len(stream) > 200 || len(project) > 63 {
		return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository %q is not PROJECT/STREAM with a valid project", trunc(name))
	}
	return nil
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }

// isComponent matches nameComponent: runs of [a-z0-9] separated by one
// '.', one or two '_', or any number of '-'.
func isComponent(s string) bool {
	i := 0
	for {
		j := i
		for j < len(s) && isLowerAlnum(s[j]) {
			j++
		}
		if j == i {
			return false
		}
		if j == len(s) {
			return true
		}
		switch s[j] {
		case '.':
			j++
		case '_':
			j++
			if j < len(s) && s[j] == '_' {
				j++
			}
		case '-':
			for j < len(s) && s[j] == '-' {
				j++
			}
		default:
			return false
		}
		i = j
	}
}

// isTag matches tagRe.
func isTag(s string) bool {
	if len(s) == 0 || len(s) > 128 || !(isAlnum(s[0]) || s[0] == '_') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// isDigest matches digestRe: an algorithm, runs of [a-z0-9] separated by
// one of '.', '+', '_' or '-', then ':' and the encoded part.
func isDigest(s string) bool {
	alg, enc, ok := strings.Cut(s, ":")
	if !ok || enc == "" {
		return false
	}
	run := 0
	for i := 0; i < len(alg); i++ {
		switch c := alg[i]; {
		case isLowerAlnum(c):
			run++
		case (c == '.' || c == '+' || c == '_' || c == '-') && run > 0:
			run = 0
		default:
			return false
		}
	}
	if run == 0 {
		return false
	}
	for i := 0; i < len(enc); i++ {
		if c := enc[i]; !isAlnum(c) && c != '=' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}

// ociError is an error in the distribution spec's JSON shape.
type ociError struct {
	status  int
	code    string
	message string
}

func (e *ociError) Error() string { return e.code + ": " + e.message }

func ociErr(status int, code, format string, args ...any) *ociError {
	return &ociError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

var errNotFound = ociErr(http.StatusNotFound, "NAME_UNKNOWN", "no such route in the registry API")

func (e *ociError) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]any{{"code": e.code, "message": e.message}}})
}

// apiVersionHeader is Docker-Distribution-API-Version as net/http keys it.
const apiVersionHeader = "Docker-Distribution-Api-Version"

// apiVersion is its value, shared by every response: header values are
// replaced or appended to (a new array: len == cap), never written in place.
var apiVersion = []string{"registry/2.0"}

type ctxKey int

const (
	responseKey ctxKey = iota
)

// ServeHTTP is the registry's edge: authentication, authorization and the
// routes distribution lacks, before distribution's own handler.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if _, local := localIdentity(req.Context()); !local {
		r.inFlight.Add(1)
		defer r.inFlight.Add(-1)
	}
	// Location and scheme come from the request; never trust forwarded
	// headers from clients.
	req.Header.Del("Forwarded")
	req.Header.Del("X-Forwarded-Proto")
	req.Header.Del("X-Forwarded-Host")
	if req.URL.Path == "/v2/token" || req.URL.Path == "/openshift/token" {
		r.serveToken(w, req)
		return
	}
	// In canonical form: Set would canonicalize "API" into a new string
	// on every request. distribution sends its own (serveApp).
	w.Header()[apiVersionHeader] = apiVersion
	rt, oe := parseRoute(req.URL.EscapedPath())
	if oe != nil {
		oe.write(w)
		return
	}
	who, tok, err := r.authenticate(req)
	if err != nil {
		r.challenge(w, req, rt, "invalid_token", err.Error())
		return
	}
	ctx := req.Context()
	switch rt.kind {
	case "base":
		if who.IsAnonymous() {
			r.challenge(w, req, rt, "", "authentication required")
			return
		}
	case "catalog":
		ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "list", Resource: "imagestreams"})
		if tok != nil {
			ok = tok.allows("registry", "catalog", "*")
		}
		if !ok {
			r.deny(w, req, rt, who, "the catalog is for cluster administrators; list a project's streams with `slipway get is`")
			return
		}
	default:
		if m, ok := r.mirrorFor(rt.name); ok {
			r.serveMirror(w, req, rt, m, who, tok)
			return
		}
		project, _, _ := strings.Cut(rt.name, "/")
		actions := requiredActions(req.Method)
		p, err := r.cfg.Project(ctx, project)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			ociErr(http.StatusServiceUnavailable, "UNAVAILABLE", "the registry cannot read project %q right now; try again", project).write(w)
			return
		}
		if err != nil {
			// A missing project is denied like a private one, so that
			// project names cannot be probed; only those who may see
			// every project hear that it does not exist.
			if ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "get", Resource: "projects"}); ok && !who.IsAnonymous() {
				ociErr(http.StatusNotFound, "NAME_UNKNOWN", "project %q does not exist; create it with `slipway new-project %s`", project, project).write(w)
				return
			}
			r.deny(w, req, rt, who, denied(who, actions[0], rt.name))
			return
		}
		for _, a := range actions {
			if !r.allowed(who, tok, p, rt.name, a) {
				r.deny(w, req, rt, who, denied(who, a, rt.name))
				return
			}
		}
		if rt.kind == "uploads" && req.Method == http.MethodPost {
			r.checkMount(req, who, tok)
		}
		if cr := req.Header.Get("Content-Range"); cr != "" && rt.kind == "uploads" && !contentRangeRe.MatchString(cr) {
			// distribution answers 500 to a range it cannot parse.
			ociErr(http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "Content-Range %q is not START-END (byte offsets, END inclusive, such as 0-1023)", trunc(cr)).write(w)
			return
		}
		if rt.kind == "referrers" {
			if req.Method != http.MethodGet && req.Method != http.MethodHead {
				ociErr(http.StatusMethodNotAllowed, "UNSUPPORTED", "referrers are read-only").write(w)
				return
			}
			r.serveReferrers(w, req, rt)
			return
		}
	}
	if rt.kind == "manifests" && (req.Method == http.MethodGet || req.Method == http.MethodHead) {
		// Authorized above, exactly as on the slow path.
		if r.serveManifestFast(w, req, rt) {
			return
		}
		var fill func()
		w, fill = r.fillOnRead(w, req, rt)
		defer fill()
	}
	ctx = identity.WithInfo(ctx, who)
	ctx = context.WithValue(ctx, responseKey, w)
	r.serveApp(w, req.WithContext(ctx), rt)
}

// denied is the message for a refused action: the same whether or not the
// project exists.
func denied(who identity.Info, action, repo string) string {
	project, _, _ := strings.Cut(repo, "/")
	return fmt.Sprintf("requested access to the resource is denied: %s may not %s %s; ask an admin of project %q for access, or create the project with `slipway new-project %s` if it does not exist", who.Name, action, repo, project, project)
}

// requiredActions returns the actions a method needs, in a slice shared by
// every caller: do not modify it.
func requiredActions(method string) []string {
	switch method {
	case http.MethodGet, http.MethodHead:
		return pullOnly
	case http.MethodDelete:
		return deleteOnly
	}
	return pullPush
}

var (
	pullOnly   = []string{"pull"}
	deleteOnly = []string{"delete"}
	pullPush   = []string{"pull", "push"}
)

var actionVerbs = map[string]string{"pull": "get", "push": "update", "delete": "delete"}

// allowed decides one action: a registry JWT carries its grants; a
// platform token is checked against RBAC now; anonymous users may pull
// public projects.
func (r *Registry) allowed(who identity.Info, tok *claims, p *api.Project, repo, action string) bool {
	if tok != nil {
		return tok.allows("repository", repo, action)
	}
	return r.rbacAllows(who, p, action)
}

func (r *Registry) rbacAllows(who identity.Info, p *api.Project, action string) bool {
	if action == "pull" && p.Spec.Public {
		return true
	}
	if who.IsAnonymous() {
		return false
	}
	ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: actionVerbs[action], Resource: "imagestreams", Subresource: "layers", Namespace: p.Name})
	return ok
}

// checkMount turns a cross-repository mount from a repository the caller
// may not pull into a plain upload (202), so nothing leaks.
func (r *Registry) checkMount(req *http.Request, who identity.Info, tok *claims) {
	q := req.URL.Query()
	from := q.Get("from")
	if from == "" {
		return
	}
	ok := checkName(from) == nil
	if _, mirrored := r.mirrorFor(from); ok && mirrored {
		// A mirror's content is readable by every signed-in user.
		ok = !who.IsAnonymous() && (tok == nil || tok.allows("repository", from, "pull"))
	} else if ok {
		p, err := r.cfg.Project(req.Context(), strings.SplitN(from, "/", 2)[0])
		ok = err == nil && r.allowed(who, tok, p, from, "pull")
	}
	if !ok {
		q.Del("from")
		q.Del("mount")
		req.URL.RawQuery = q.Encode()
		req.Form = nil
	}
}

// authenticate reads Basic (any user, a platform token as the password) or
// Bearer (a platform token, or a registry JWT). No credentials is the
// anonymous user. A request made in this process through LocalTransport
// is its caller's identity.
func (r *Registry) authenticate(req *http.Request) (identity.Info, *claims, error) {
	if who, ok := localIdentity(req.Context()); ok {
		return who, nil, nil // an in-process request (LocalTransport)
	}
	h := req.Header.Get("Authorization")
	if h == "" {
		return identity.Anonymous, nil, nil
	}
	if _, pw, ok := req.BasicAuth(); ok {
		u, err := r.cfg.Authn.AuthenticateToken(req.Context(), pw)
		if err != nil {
			return identity.Info{}, nil, errors.New("the password must be a Slipway token: use `slipway whoami -t`")
		}
		return u, nil, nil
	}
	scheme, raw, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return identity.Info{}, nil, errors.New("unsupported authorization scheme")
	}
	raw = strings.TrimSpace(raw)
	if strings.HasPrefix(raw, identity.TokenPrefix) {
		u, err := r.cfg.Authn.AuthenticateToken(req.Context(), raw)
		if err != nil {
			return identity.Info{}, nil, errors.New("token unknown, expired or revoked")
		}
		return u, nil, nil
	}
	c, err := r.keys.verify(raw, r.cfg.Service)
	if err != nil {
		return identity.Info{}, nil, errors.New("registry token is invalid or expired")
	}
	who := identity.Info{Name: c.Subject, Groups: c.Groups}
	if c.Subject == "" {
		who = identity.Anonymous
	}
	return who, c, nil
}

func (r *Registry) realm(req *http.Request) string {
	scheme := "http"
	if req.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + req.Host + "/v2/token"
}

func scopeFor(rt route, req *http.Request) string {
	if rt.name == "" {
		if rt.kind == "catalog" {
			return "registry:catalog:*"
		}
		return ""
	}
	s := "repository:" + rt.name + ":" + strings.Join(requiredActions(req.Method), ",")
	// checkMount drops a "from" that is not a repository name, so the
	// scope names only valid ones; that also keeps the challenge a clean
	// quoted-string.
	if from := req.URL.Query().Get("from"); from != "" && rt.kind == "uploads" && checkName(from) == nil {
		s += " repository:" + from + ":pull"
	}
	return s
}

// challenge answers 401 with a Bearer challenge that names the token
// endpoint, so docker, skopeo and friends fetch a token and retry.
func (r *Registry) challenge(w http.ResponseWriter, req *http.Request, rt route, errCode, msg string) {
	c := fmt.Sprintf(`Bearer realm=%q,service=%q`, r.realm(req), r.cfg.Service)
	if s := scopeFor(rt, req); s != "" {
		c += fmt.Sprintf(`,scope=%q`, s)
	}
	if errCode != "" {
		c += fmt.Sprintf(`,error=%q`, errCode)
	}
	w.Header().Set("WWW-Authenticate", c)
	ociErr(http.StatusUnauthorized, "UNAUTHORIZED", "%s", msg).write(w)
}

// deny answers 403 to a known user, and a 401 challenge to an anonymous one
// (who may yet log in).
func (r *Registry) deny(w http.ResponseWriter, req *http.Request, rt route, who identity.Info, msg string) {
	if who.IsAnonymous() {
		r.challenge(w, req, rt, "insufficient_scope", "authentication required")
		return
	}
	ociErr(http.StatusForbidden, "DENIED", "%s", msg).write(w)
}

// serveToken is the Docker token endpoint: Basic credentials (a platform
// token as the password) or none, and scopes; it answers a short-lived JWT
// that grants what RBAC allows of what was asked.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodGet && req.Method != http.MethodPost {
		ociErr(http.StatusMethodNotAllowed, "UNSUPPORTED", "use GET").write(w)
		return
	}
	who := identity.Anonymous
	query := req.URL.Query()
	if req.Method == http.MethodPost {
		// The OAuth2 form that BuildKit and containerd use: grant_type
		// password, with a Slipway token as the password.
		req.Body = http.MaxBytesReader(w, req.Body, 64<<10)
		if err := req.ParseForm(); err != nil {
			ociErr(http.StatusBadRequest, "UNSUPPORTED", "the token request form is unreadable: %v", err).write(w)
			return
		}
		if gt := req.PostForm.Get("grant_type"); gt != "password" {
			ociErr(http.StatusBadRequest, "UNSUPPORTED", "grant_type %q is not supported; use password with a Slipway token", gt).write(w)
			return
		}
		u, err := r.cfg.Authn.AuthenticateToken(req.Context(), req.PostForm.Get("password"))
		if err != nil {
			ociErr(http.StatusUnauthorized, "UNAUTHORIZED", "the password must be a valid Slipway token: use `slipway whoami -t`").write(w)
			return
		}
		who = u
		query = url.Values{"service": {req.PostForm.Get("service")}, "scope": req.PostForm["scope"]}
	} else if _, pw, ok := req.BasicAuth(); ok {
		u, err := r.cfg.Authn.AuthenticateToken(req.Context(), pw)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="slipway-registry"`)
			ociErr(http.StatusUnauthorized, "UNAUTHORIZED", "the password must be a valid Slipway token: use `slipway whoami -t`").write(w)
			return
		}
		who = u
	} else if h := req.Header.Get("Authorization"); h != "" {
		u, tok, err := r.authenticate(req)
		if err == nil && tok != nil {
			err = errors.New("a registry token cannot be exchanged for another: authenticate with a Slipway token")
		}
		if err != nil {
			ociErr(http.StatusUnauthorized, "UNAUTHORIZED", "%s", err.Error()).write(w)
			return
		}
		who = u
	}
	if svc := query.Get("service"); svc != "" && svc != r.cfg.Service {
		ociErr(http.StatusBadRequest, "UNSUPPORTED", "service %q is not this registry (%q)", svc, r.cfg.Service).write(w)
		return
	}
	var grants []access
	for _, scope := range query["scope"] {
		for _, s := range strings.Fields(scope) {
			if g, ok := r.grant(req.Context(), who, s); ok {
				grants = append(grants, g)
			}
		}
	}
	now := r.cfg.Now()
	c := &claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    Issuer,
			Audience:  jwt.ClaimStrings{r.cfg.Service},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(r.cfg.TokenTTL)),
			ID:        uuid.NewString(),
		},
		Access: grants,
	}
	if !who.IsAnonymous() {
		c.Subject, c.Groups = who.Name, who.Groups
	}
	signed, err := r.keys.sign(c)
	if err != nil {
		ociErr(http.StatusInternalServerError, "UNKNOWN", "signing the token: %v", err).write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": signed, "access_token": signed,
		"expires_in": int(r.cfg.TokenTTL / time.Second), "issued_at": now.UTC().Format(time.RFC3339),
	})
}

// grant returns the part of one scope ("repository:p/s:pull,push") that the
// subject may have.
func (r *Registry) grant(ctx context.Context, who identity.Info, scope string) (access, bool) {
	i := strings.LastIndex(scope, ":")
	j := strings.Index(scope, ":")
	if i <= j || j < 0 {
		return access{}, false
	}
	typ, name, actions := scope[:j], scope[j+1:i], strings.Split(scope[i+1:], ",")
	if typ == "registry" && name == "catalog" {
		if ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "list", Resource: "imagestreams"}); ok {
			return access{Type: typ, Name: name, Actions: []string{"*"}}, true
		}
		return access{}, false
	}
	if typ != "repository" || checkName(name) != nil {
		return access{}, false
	}
	if _, ok := r.mirrorFor(name); ok {
		// Mirrors are pull-only, for signed-in users (mirror.go).
		if who.IsAnonymous() || !(slices.Contains(actions, "pull") || slices.Contains(actions, "*")) {
			return access{}, false
		}
		return access{Type: typ, Name: name, Actions: []string{"pull"}}, true
	}
	p, err := r.cfg.Project(ctx, strings.SplitN(name, "/", 2)[0])
	if err != nil {
		return access{}, false
	}
	g := access{Type: typ, Name: name}
	for _, a := range actions {
		want := []string{a}
		if a == "*" {
			want = []string{"pull", "push", "delete"}
		}
		for _, x := range want {
			if _, known := actionVerbs[x]; known && r.rbacAllows(who, p, x) {
				g.Actions = append(g.Actions, x)
			}
		}
	}
	return g, len(g.Actions) > 0
}
