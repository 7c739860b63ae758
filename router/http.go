package router

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"slipway.dev/slipway/api"
)

// server is the HTTP server of the plain or the TLS side.
func (r *Router) server(secure bool) *http.Server {
	proxy := &httputil.ReverseProxy{
		Rewrite:   r.rewrite,
		Transport: roundTripper{},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			name := ""
			if pk, ok := req.Context().Value(pickKey{}).(*pick); ok {
				name = pk.route.key
			}
			slog.Debug("router: backend failed", "route", name, "err", err)
			http.Error(w, "The application is not answering: "+err.Error(), http.StatusBadGateway)
		},
		ErrorLog:   slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
		BufferPool: copyBuffers{},
	}
	return &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.serveHTTP(w, req, secure, proxy) }),
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
}

// pickKey carries a request's *pick from serveHTTP to the proxy's
// rewrite, transport and dial.
type pickKey struct{}

// serveHTTP finds the route in the current table and proxies to it.
func (r *Router) serveHTTP(w http.ResponseWriter, req *http.Request, secure bool, proxy *httputil.ReverseProxy) {
	hostName := strings.ToLower(req.Host)
	if h, _, err := net.SplitHostPort(hostName); err == nil {
		hostName = h
	}
	t := r.table.Load()
	rt := t.match(hostName, req.URL.Path)
	if rt != nil && !secure && rt.tls != nil {
		switch rt.tls.InsecureEdgeTerminationPolicy {
		case api.InsecurePolicyAllow:
		case api.InsecurePolicyRedirect:
			u := *req.URL
			u.Scheme, u.Host = "https", req.Host
			if h, _, err := net.SplitHostPort(req.Host); err == nil {
				u.Host = h
			}
			http.Redirect(w, req, u.String(), http.StatusFound)
			r.metrics.observeRoute(rt, http.StatusFound, 0)
			return
		default:
			rt = nil
		}
	}
	if rt != nil && secure && rt.tls == nil {
		rt = nil // plain routes are not served over HTTPS
	}
	if rt == nil {
		http.Error(w, fmt.Sprintf("Application is not available: no route serves %s%s on %s.", hostName, req.URL.Path, map[bool]string{false: "http", true: "https"}[secure]), http.StatusServiceUnavailable)
		return
	}
	pk := rt.pick()
	if pk.b == nil {
		http.Error(w, fmt.Sprintf("Application is not available: route %s has no ready endpoints.", rt.key), http.StatusServiceUnavailable)
		r.metrics.observeRoute(rt, http.StatusServiceUnavailable, 0)
		return
	}
	start := time.Now()
	ctx := context.WithValue(req.Context(), pickKey{}, &pk)
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	proxy.ServeHTTP(sw, req.WithContext(ctx))
	r.metrics.observeRoute(rt, sw.code, time.Since(start))
}

// rewrite aims the outgoing request at the chosen endpoint.
func (r *Router) rewrite(pr *httputil.ProxyRequest) {
	pk := pr.In.Context().Value(pickKey{}).(*pick)
	pr.Out.URL.Scheme = "http"
	if t := pk.route.tls; t != nil && t.Termination == api.TLSTerminationReencrypt {
		pr.Out.URL.Scheme = "https"
	}
	pr.Out.URL.Host = pk.addr()
	pr.Out.Host = pr.In.Host
	pr.SetXForwarded()
}

// copyBuffers lends the proxy its 32 KiB copy buffers: without a pool
// it allocates one per response, which made garbage collection a fifth
// of the router's CPU under load.
type copyBuffers struct{}

var copyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (copyBuffers) Get() []byte { return *copyBufferPool.Get().(*[]byte) }

func (copyBuffers) Put(b []byte) { copyBufferPool.Put(&b) }

// roundTripper sends a request with its route's transport.
type roundTripper struct{}

func (roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	return req.Context().Value(pickKey{}).(*pick).route.transport.RoundTrip(req)
}

// statusWriter remembers the response code, for metrics. It passes
// Flush, Hijack (upgrades) and the rest on through Unwrap.
type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Hijack is how the reverse proxy takes over an upgraded connection: the
// answer is a 101, which it writes itself.
func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if !s.wrote {
		s.code, s.wrote = http.StatusSwitchingProtocols, true
	}
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

func (s *statusWriter) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

// codeLabel is a status code as a metric label.
func codeLabel(code int) string { return strconv.Itoa(code) }
