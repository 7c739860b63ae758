package apiserver

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	watches  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_apiserver_requests_total",
			Help: "API requests by verb, resource and HTTP code.",
		}, []string{"verb", "resource", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "slipway_apiserver_request_duration_seconds",
			Help:    "API request latency by verb and resource (watches excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"verb", "resource"}),
		watches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slipway_apiserver_watches",
			Help: "Open watch streams.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.watches)
	return m
}

// record is filled in as a request passes through the handlers, and read
// once at the end for metrics and audit.
type record struct {
	user, verb, resource, sub, namespace, name string
}

type recordKey struct{}

func recordOf(r *http.Request) *record { return recordOfCtx(r.Context()) }

func recordOfCtx(ctx context.Context) *record {
	if rec, ok := ctx.Value(recordKey{}).(*record); ok {
		return rec
	}
	return &record{}
}

func setUser(r *http.Request, name string) { recordOf(r).user = name }

func setInfo(r *http.Request, i *requestInfo) {
	rec := recordOf(r)
	rec.verb, rec.resource, rec.sub, rec.namespace, rec.name = i.Verb, i.Resource.Name, i.Subresource, i.Namespace, i.Name
}

func setAction(r *http.Request, verb, resource string) {
	rec := recordOf(r)
	rec.verb, rec.resource = verb, resource
}

var methodVerbs = map[string]string{
	http.MethodGet: "get", http.MethodHead: "get", http.MethodPost: "create",
	http.MethodPut: "update", http.MethodPatch: "patch", http.MethodDelete: "delete",
}

var mutating = map[string]bool{"create": true, "update": true, "patch": true, "delete": true, "login": true, "logout": true}

// instrument counts and times every request, and writes an audit line for
// every mutating one, including those that were refused.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &record{}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), recordKey{}, rec)))
		verb, res := rec.verb, rec.resource
		if verb == "" {
			// Refused before routing (bad path, no credentials): still
			// audited when it tried to write, and labelled without the
			// path, which would make metric series unbounded.
			verb, res = methodVerbs[r.Method], "other"
			if verb == "" {
				verb = "other"
			}
		}
		if rec.sub != "" {
			res += "/" + rec.sub
		}
		code := strconv.Itoa(sw.code)
		s.metrics.requests.WithLabelValues(verb, res, code).Inc()
		if verb != "watch" {
			s.metrics.latency.WithLabelValues(verb, res).Observe(time.Since(start).Seconds())
		}
		if mutating[verb] {
			user := rec.user
			if user == "" {
				user = "system:anonymous"
			}
			s.audit.LogAttrs(r.Context(), slog.LevelInfo, "audit",
				slog.String("user", user),
				slog.String("verb", verb),
				slog.String("resource", res),
				slog.String("namespace", rec.namespace),
				slog.String("name", rec.name),
				slog.Int("code", sw.code),
				slog.String("result", result(sw.code)),
				slog.String("sourceIP", r.RemoteAddr),
			)
		}
	})
}

func result(code int) string {
	switch {
	case code < 300:
		return "allowed"
	case code == http.StatusUnauthorized:
		return "unauthenticated"
	case code == http.StatusForbidden:
		return "forbidden"
	}
	return "failed"
}

type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("apiserver: hijack not supported")
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
