package router

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"slipway.dev/slipway/api"
)

// metrics are the router's per-route counters; all methods are no-ops
// without a registry.
type metrics struct {
	seen     map[string]bool // routes with series
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	conns    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_router_requests_total",
			Help: "HTTP requests the router served, by route (project/name) and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "slipway_router_request_duration_seconds",
			Help:    "Time from a request's arrival at the router to its response's end, by route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"route"}),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slipway_router_passthrough_connections_total",
			Help: "TLS passthrough connections, by route and outcome (spliced, no-endpoints, dial-failed).",
		}, []string{"route", "outcome"}),
	}
	reg.MustRegister(m.requests, m.duration, m.conns)
	return m
}

// observeRoute counts a request of rt answered with code in d, with the counter of its commonest
// answer, 200, and its histogram looked up once per route and table
// rather than per request.
func (m *metrics) observeRoute(rt *route, code int, d time.Duration) {
	if m == nil {
		return
	}
	rm := rt.metrics.Load()
	if rm == nil {
		rm = &routeMetrics{ok: m.requests.WithLabelValues(rt.key, "200"), duration: m.duration.WithLabelValues(rt.key)}
		rt.metrics.Store(rm)
	}
	if code == http.StatusOK {
		rm.ok.Inc()
	} else {
		m.requests.WithLabelValues(rt.key, codeLabel(code)).Inc()
	}
	if d > 0 {
		rm.duration.Observe(d.Seconds())
	}
}

// routeMetrics are a route's series that observeRoute keeps at hand.
type routeMetrics struct {
	ok       prometheus.Counter
	duration prometheus.Observer
}

// forget drops the series of routes that are gone, so deleted routes do
// not pile up in /metrics.
func (m *metrics) forget(routes []*api.Route) {
	if m == nil {
		return
	}
	now := make(map[string]bool, len(routes))
	for _, r := range routes {
		now[routeKey(r)] = true
	}
	for k := range m.seen {
		if !now[k] {
			l := prometheus.Labels{"route": k}
			m.requests.DeletePartialMatch(l)
			m.duration.DeletePartialMatch(l)
			m.conns.DeletePartialMatch(l)
		}
	}
	m.seen = now
}

func (m *metrics) passthrough(route, outcome string) {
	if m == nil {
		return
	}
	m.conns.WithLabelValues(route, outcome).Inc()
}
