package server

import (
	"context"
	"log/slog"

	"slipway.dev/slipway/router"
)

// RouterConfig configures the edge router that `slipway start` runs in
// process. With neither address it still admits routes (writes their
// status) but serves nothing.
type RouterConfig struct {
	// HTTPListen and HTTPSListen are where routes are served, such as
	// ":80" and ":443". Default: not served.
	HTTPListen, HTTPSListen string
	// Disabled keeps the router out of this process: no route is
	// admitted here (another process's router does it).
	Disabled bool
}

// startRouter runs the edge router on the store, its metrics on the
// server's /metrics.
func (s *Server) startRouter(ctx context.Context) error {
	if s.cfg.Router.Disabled {
		return nil
	}
	r, err := router.New(router.Config{
		Store: s.Store, HTTPListen: s.cfg.Router.HTTPListen, HTTPSListen: s.cfg.Router.HTTPSListen,
		ServiceCIDR: s.cfg.Node.ServiceCIDR, Metrics: s.reg,
	})
	if err != nil {
		return err
	}
	if h, hs := r.Addrs(); h != nil || hs != nil {
		slog.Info("router serving routes", "http", h, "https", hs)
	}
	s.Router = r
	go r.Run(ctx)
	return nil
}
