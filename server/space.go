package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// metrics is the registry /metrics serves: the Go and process collectors,
// the API's own metrics (registered by apiserver) and etcd's space.
func (s *Server) metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), etcd.NewSpaceCollector(s.client))
	// The election, for operators and tests: who leads, how often this
	// process led, and the writes its fence refused after it lost.
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "slipway_leader_is_leader", Help: "1 while this process leads the controllers' election."}, func() float64 {
			if s.Elector != nil && s.Elector.Leading() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slipway_leader_terms_total", Help: "Times this process became the controllers' leader."}, func() float64 {
			if s.Elector == nil {
				return 0
			}
			return float64(s.Elector.Terms())
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "slipway_store_fenced_writes_total", Help: "Writes of this process refused by its leader fence: tried after it lost the election, and kept out of etcd."}, func() float64 {
			return float64(store.FencedWrites())
		}),
	)
	return reg
}

// readyz answers GET /readyz: not ready (503) while etcd has an active
// alarm (NOSPACE: it refuses every write; CORRUPT), with what to do;
// a database past etcd.WarnFraction of its quota is reported in a ready
// answer. Otherwise the API's own readiness (its caches) answers.
func (s *Server) readyz(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || r.Method != http.MethodGet {
			api.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		sp, err := etcd.CheckSpace(ctx, s.client)
		if err != nil {
			http.Error(w, "etcd does not answer: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		msg, fatal := sp.Problem()
		if fatal {
			slog.Warn("not ready: etcd refuses writes", "problem", msg)
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		if msg == "" {
			api.ServeHTTP(w, r)
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		api.ServeHTTP(rec, r)
		if rec.code == 0 || rec.code == http.StatusOK {
			io.WriteString(w, "\nwarning: "+msg+"\n")
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}
