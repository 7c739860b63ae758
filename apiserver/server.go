// Package apiserver serves every resource over REST from one generic handler:
// authentication, RBAC, admission, audit, metrics, and watch streaming over
// the store.
package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Config configures a Server.
type Config struct {
	Store *store.Store
	// HTPasswd is an optional htpasswd file of users who may log in.
	HTPasswd string
	// Audit receives one JSON line per mutating request, in batches: a
	// line is written within 100ms of its request's end, and every
	// remaining one by Server.Close. Default: discard.
	Audit io.Writer
	// MaxBodyBytes bounds request bodies. Default 3 MiB.
	MaxBodyBytes int64
	// LoginTTL is the lifetime of login tokens. Default 24h.
	LoginTTL time.Duration
	// Metrics is where request metrics are registered. Default: a new
	// registry with the Go and process collectors.
	Metrics *prometheus.Registry
	// Webhooks, if set, serves /webhooks/ without platform
	// authentication: it checks its own secrets.
	Webhooks http.Handler
	// Pods reaches node agents for pods/log and pods/exec. Nil answers
	// 503.
	Pods PodGateway
	// Signer signs images with a project's key (signingkeys/NAME/sign).
	Signer ImageSigner
	// Rebaser rebases a build config's output server-side
	// (buildconfigs/NAME/rebase). Nil answers 503.
	Rebaser Rebaser
	// BuildLogs is the directory of full build logs (builds/NAME/log).
	BuildLogs string
	// RegistryAdmin, if set, serves /admin/v1/ (image pruning, garbage
	// collection, blob holders) for authenticated callers; it checks
	// their rights itself.
	RegistryAdmin http.Handler
	// ProjectCleaner removes what a deleted project keeps outside the
	// API's objects (the registry's repositories and referrers). Nil:
	// nothing to remove.
	ProjectCleaner ProjectCleaner
	// ServiceCIDR is the range of service ClusterIPs, which Endpoints
	// may never name. Default 10.43.0.0/16 (proxy.DefaultServiceCIDR).
	ServiceCIDR string
	// MaxProjectTokens is how many unexpired service account tokens a
	// project may hold that users asked for through the API (M6); the
	// platform's own tokens do not count. Default DefaultMaxProjectTokens.
	MaxProjectTokens int
	// MaxWatchesPerUser is how many watches one user (or service account)
	// may hold open on this server at once (L15); past it a watch answers
	// 429. Default DefaultMaxWatchesPerUser. Controllers watch the store,
	// not the API, and are not counted.
	MaxWatchesPerUser int
	// MaxListLimit is the largest page a list answers (L15): a list
	// without a limit, or with a larger one, gets this many items and a
	// continue token. Default DefaultMaxListLimit.
	MaxListLimit int64
	// MaxProjectsPerUser is how many projects one user (or service
	// account) may hold as their requester (M5): every project holds up
	// to the platform's per-kind limits, so without it one user could
	// multiply them. Cluster admins are not counted. Default
	// DefaultMaxProjectsPerUser; negative means no cap.
	MaxProjectsPerUser int
	// Nodes serves node agents in other processes: it signs their
	// certificates when they join, and answers their pods' pull
	// credentials and admission. Nil: no node joins through this server.
	Nodes NodeServices
}

// DefaultMaxProjectsPerUser is the default Config.MaxProjectsPerUser.
const DefaultMaxProjectsPerUser = 50

// Defaults of Config's limits on reads (L15). 500 is the page size
// kubectl and client-go's pager ask for; 64 watches is many times what
// the CLI holds (one per `get -w`, `logs -f` or `start-build --follow`).
const (
	DefaultMaxWatchesPerUser       = 64
	DefaultMaxListLimit      int64 = 500
)

// DefaultMaxProjectTokens is the default Config.MaxProjectTokens: enough
// for a robot per pipeline and environment with rotation overlap, while a
// loop minting tokens stops after a few hundred kilobytes of etcd.
const DefaultMaxProjectTokens = 100

// Validate fills defaults.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("apiserver: a store is required")
	}
	if c.Audit == nil {
		c.Audit = io.Discard
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = "10.43.0.0/16"
	}
	if _, _, err := net.ParseCIDR(c.ServiceCIDR); err != nil {
		return fmt.Errorf("apiserver: service CIDR: %w", err)
	}
	if c.MaxWatchesPerUser == 0 {
		c.MaxWatchesPerUser = DefaultMaxWatchesPerUser
	}
	if c.MaxListLimit == 0 {
		c.MaxListLimit = DefaultMaxListLimit
	}
	if c.MaxProjectsPerUser == 0 {
		c.MaxProjectsPerUser = DefaultMaxProjectsPerUser
	}
	if c.MaxProjectTokens == 0 {
		c.MaxProjectTokens = DefaultMaxProjectTokens
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 3 << 20
	}
	if c.Metrics == nil {
		c.Metrics = prometheus.NewRegistry()
		c.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return nil
}

// Server is the API server. It holds caches only; any number of Servers may
// share one etcd.
type Server struct {
	cfg       Config
	store     *store.Store
	authn     *identity.Authenticator
	authz     *rbac.Authorizer
	informers map[*api.Resource]*store.Informer
	audit     *slog.Logger
	auditBuf  *auditBuffer
	metrics   *metrics
	ready     chan struct{}
	runCtx    context.Context // ends at shutdown; watches end with it
	registry  atomic.Value    // host:port of the integrated registry, for /version
	mirrors   atomic.Value    // []string: the registry's pull-through mirrors, for /version
	tokenMu   sync.Mutex      // a project's token count and the mint are one step
	projectMu sync.Mutex      // a user's project count and the create are one step
	watchMu   sync.Mutex
	watching  map[string]int // open watches per user name
	watchSeq  atomic.Uint64  // numbers API watches, one etcd stream each
}

// SetRegistryHost tells clients, through /version, where the integrated
// registry is.
func (s *Server) SetRegistryHost(host string) { s.registry.Store(host) }

// SetMirrors tells clients and nodes, through /version, the names of the
// registry's pull-through mirrors (registry/mirror.go), whose
// repositories every signed-in user may pull.
func (s *Server) SetMirrors(names []string) { s.mirrors.Store(slices.Clone(names)) }

// isMirror reports whether project is in fact a mirror's name.
func (s *Server) isMirror(project string) bool {
	names, _ := s.mirrors.Load().([]string)
	return slices.Contains(names, project)
}

// New returns a Server. Call Run to start its caches and controllers.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	auditBuf := newAuditBuffer(cfg.Audit, auditFlushInterval)
	s := &Server{
		auditBuf:  auditBuf,
		cfg:       cfg,
		store:     cfg.Store,
		authz:     rbac.NewAuthorizer(cfg.Store),
		informers: map[*api.Resource]*store.Informer{},
		watching:  map[string]int{},
		audit:     slog.New(slog.NewJSONHandler(auditBuf, nil)),
		metrics:   newMetrics(cfg.Metrics),
		ready:     make(chan struct{}),
		runCtx:    context.Background(),
	}
	for _, inf := range s.authz.Informers() {
		s.addInformer(inf)
	}
	for _, r := range []*api.Resource{api.Tokens, api.ServiceAccounts, api.Projects, api.Users, api.Nodes} {
		s.addInformer(store.NewInformer(cfg.Store, r))
	}
	authn, err := identity.New(identity.Config{
		Store:           cfg.Store,
		Tokens:          s.informers[api.Tokens],
		ServiceAccounts: s.informers[api.ServiceAccounts],
		Users:           s.informers[api.Users],
		HTPasswd:        cfg.HTPasswd,
		LoginTTL:        cfg.LoginTTL,
	})
	if err != nil {
		auditBuf.Close()
		return nil, err
	}
	s.authn = authn
	return s, nil
}

// Close writes every buffered audit line to Config.Audit and stops the
// periodic flush. Call it after the HTTP server has shut down (so no
// request is still running) and before closing the audit log.
func (s *Server) Close() error { return s.auditBuf.Close() }

func (s *Server) addInformer(inf *store.Informer) { s.informers[inf.Resource()] = inf }

// Authenticator exposes the server's authenticator, for bootstrap and for
// other front ends (the registry) that accept the same tokens.
func (s *Server) Authenticator() *identity.Authenticator { return s.authn }

// Authorizer exposes the server's RBAC decisions.
func (s *Server) Authorizer() *rbac.Authorizer { return s.authz }

// Run starts the caches and the project finalizer, and returns when ctx
// ends. The server answers /readyz once every cache has synced.
func (s *Server) Run(ctx context.Context) {
	s.runCtx = ctx
	s.runProjectFinalizer(ctx)
	go s.collectExpiredTokens(ctx, 10*time.Minute)
	go s.assignUIDRanges(ctx)
	for _, inf := range s.informers {
		go inf.Run(ctx)
	}
	go func() {
		for {
			all := true
			for _, inf := range s.informers {
				all = all && inf.Synced()
			}
			if all {
				close(s.ready)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	<-ctx.Done()
}

// collectExpiredTokens deletes tokens an hour after they expire, so etcd
// does not fill with dead ones. Every API server may run it; deletes of an
// already deleted token are harmless.
func (s *Server) collectExpiredTokens(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-time.Hour)
		for _, o := range s.informers[api.Tokens].List("") {
			if tok := o.(*api.Token); tok.Spec.ExpiresAt.Before(cutoff) {
				if _, err := s.store.Delete(ctx, api.Tokens, "", tok.Name, tok.ResourceVersion); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
					slog.Warn("apiserver: deleting an expired token", "err", err)
				}
			}
		}
	}
}

// Ready is closed once every cache has synced.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if _, err := s.store.Client().Get(r.Context(), "health"); err != nil {
			http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
			io.WriteString(w, "ok")
		default:
			http.Error(w, "caches are still syncing", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		reg, _ := s.registry.Load().(string)
		v := map[string]any{"apiVersion": api.APIVersion, "registry": reg}
		if names, _ := s.mirrors.Load().([]string); len(names) > 0 {
			v["mirrors"] = names
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.Handle("GET /metrics", s.authenticated(s.requireCluster("get", "metrics", promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))))
	if s.cfg.Webhooks != nil {
		mux.Handle("/webhooks/", http.MaxBytesHandler(s.cfg.Webhooks, 1<<20))
	}
	if s.cfg.RegistryAdmin != nil {
		mux.Handle("/admin/v1/", s.authenticated(http.MaxBytesHandler(s.cfg.RegistryAdmin, 1<<16)))
	}
	mux.HandleFunc("POST /oauth/token", s.login)
	mux.HandleFunc("POST /bootstrap/nodes/{name}", s.joinNode)
	mux.Handle("POST /oauth/revoke", s.authenticated(http.HandlerFunc(s.revoke)))
	mux.Handle("GET "+APIPrefix+"/users/~", s.authenticated(http.HandlerFunc(s.whoami)))
	mux.Handle("GET "+APIPrefix, s.authenticated(http.HandlerFunc(s.discovery)))
	resources := s.authenticated(http.HandlerFunc(s.serveResource))
	// Resource paths bypass the mux, which would clean "a/../b" into a
	// redirect to another path instead of refusing the bad name.
	return s.instrument(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, APIPrefix+"/") && r.URL.Path != APIPrefix+"/users/~" {
			resources.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
}

// authenticated resolves the bearer token; a request without one, or with a
// bad one, gets 401.
func (s *Server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r)
		if !ok {
			// A node's certificate (nodes.go).
			if u, isNode, err := s.authenticateNode(r); isNode {
				if errors.Is(err, identity.ErrUnauthenticated) {
					writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "%s", strings.TrimPrefix(err.Error(), "identity: unauthenticated: ")))
					return
				}
				if err != nil {
					writeError(w, err)
					return
				}
				setUser(r, u.Name)
				next.ServeHTTP(w, r.WithContext(identity.WithInfo(r.Context(), u)))
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="slipway"`)
			writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "no credentials: log in with `slipway login` and send the token as `Authorization: Bearer TOKEN`"))
			return
		}
		u, err := s.authn.AuthenticateToken(r.Context(), tok)
		if err != nil {
			if errors.Is(err, identity.ErrUnauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="slipway", error="invalid_token"`)
				writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "%s; log in again with `slipway login`", strings.TrimPrefix(err.Error(), "identity: unauthenticated: ")))
				return
			}
			writeError(w, err)
			return
		}
		setUser(r, u.Name)
		next.ServeHTTP(w, r.WithContext(identity.WithInfo(r.Context(), u)))
	})
}

func (s *Server) requireCluster(verb, resource string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u := identity.FromContext(r.Context())
		if ok, why := s.authz.Authorize(u, rbac.Attributes{Verb: verb, Resource: resource}); !ok {
			writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", why))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	type res struct {
		Name       string   `json:"name"`
		Kind       string   `json:"kind"`
		Namespaced bool     `json:"namespaced"`
		ShortNames []string `json:"shortNames,omitempty"`
	}
	var out []res
	for _, x := range api.Resources() {
		if !x.Hidden {
			out = append(out, res{x.Name, x.Kind, x.Namespaced, x.ShortNames})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"kind": "APIResourceList", "groupVersion": api.APIVersion, "resources": out})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeStatus(w http.ResponseWriter, st *api.Status) {
	if st.TypeMeta.Kind == "" {
		st.TypeMeta = api.TypeMeta{APIVersion: "v1", Kind: "Status"}
	}
	st.Status = "Failure"
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(st.Details.RetryAfterSeconds))
	}
	writeJSON(w, st.Code, st)
}

// writeError maps errors to Status answers. This is the only place store
// and package errors become HTTP codes.
func writeError(w http.ResponseWriter, err error) {
	writeStatus(w, toStatus(err))
}

func toStatus(err error) *api.Status {
	if st, ok := api.StatusFor(err); ok {
		return st
	}
	msg := err.Error()
	for _, p := range []string{"store: ", "identity: ", "rbac: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "%s", msg)
	case errors.Is(err, store.ErrExists):
		return api.NewStatus(http.StatusConflict, api.ReasonAlreadyExists, "%s", msg)
	case errors.Is(err, store.ErrConflict):
		return api.NewStatus(http.StatusConflict, api.ReasonConflict, "%s", msg)
	case errors.Is(err, store.ErrGone):
		return api.NewStatus(http.StatusGone, api.ReasonGone, "%s", msg)
	case errors.Is(err, store.ErrTooLarge):
		return api.NewStatus(http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "%s; store large data outside the object", msg)
	case errors.Is(err, store.ErrInvalid):
		return api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "%s", msg)
	case errors.Is(err, rbac.ErrEscalation):
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", msg)
	case strings.Contains(msg, "etcdserver: no leader"), strings.Contains(msg, "etcdserver: request timed out"),
		strings.Contains(msg, "etcdserver: leader changed"):
		return api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "etcd is electing a leader; try again in a moment")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "the request timed out talking to etcd; try again")
	}
	slog.Error("apiserver: internal error", "err", err)
	return api.NewStatus(http.StatusInternalServerError, api.ReasonInternal, "internal error: %s", msg)
}

func revisionOf(o api.Object) int64 {
	n, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	return n
}
