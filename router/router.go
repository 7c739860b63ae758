// Package router is the edge router: it serves Routes to clients outside
// the cluster, by host name and path, straight to the ready endpoints of
// the routes' services (not through their cluster IPs).
//
// What it promises:
//   - A route change, or an endpoint change behind a route, applies by
//     swapping one immutable routing table (atomic.Pointer): there is no
//     reload, and connections and requests in flight finish on the table
//     they started with.
//   - Plain HTTP by host and longest path prefix (whole segments), to
//     the route's backends by weight (spec.to and alternateBackends),
//     round robin among a backend's endpoints, failing over to the next
//     endpoint when a dial fails. Upgrades (WebSockets) pass through.
//     Bodyless GET, HEAD and OPTIONS over HTTP/1.1 to plain routes are
//     proxied by the router's own loop (fast.go), everything else by
//     net/http's server and ReverseProxy, on the same connection.
//   - HTTPS: edge and reencrypt routes are terminated with the route's
//     certificate, chosen by SNI (default: the router's own), with HTTP/2
//     by ALPN; reencrypt verifies the pod's certificate against
//     destinationCACertificate for the name SERVICE.PROJECT.svc.
//     Passthrough routes are chosen by the SNI of the ClientHello, and the
//     TCP connection is spliced to a pod unchanged.
//   - Admission (Admit): the oldest route claims a host for its project;
//     the router writes each route's status.ingress (Admitted, or False
//     with HostAlreadyClaimed naming the owner) and serves only admitted
//     routes.
//   - Endpoint addresses are checked at every dial with the service
//     proxy's policy (default proxy.HostileEndpoints): no loopback,
//     link-local or host addresses, whoever wrote the Endpoints.
//   - Per-route metrics: slipway_router_requests_total{route,code} and
//     slipway_router_request_duration_seconds{route}, and
//     slipway_router_passthrough_connections_total{route}.
//
// What it does not (yet): wildcard hosts, sticky sessions, HTTP/2 to the
// pods, rate limits, the client's address in X-Forwarded-For on
// passthrough.
package router

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/store"
)

// DefaultName is the router name in routes' status.ingress.
const DefaultName = "default"

// Config configures a Router.
type Config struct {
	// Store is where Routes and Endpoints are watched and route status
	// written. Required.
	Store store.Interface
	// Name is this router's name in status.ingress. Default DefaultName.
	Name string
	// HTTPListen and HTTPSListen are the addresses served; empty serves
	// none (the router still admits routes); port 0 picks a free port.
	HTTPListen, HTTPSListen string
	// DefaultCertificate is served for TLS routes without a certificate
	// and for unknown names. Default: a self-signed one made at start.
	DefaultCertificate *tls.Certificate
	// Endpoints is asked before every dial to an endpoint address.
	// Default proxy.HostileEndpoints(ServiceCIDR).
	Endpoints proxy.EndpointPolicy
	// ServiceCIDR is the cluster IP range, refused as endpoints. Default
	// proxy.DefaultServiceCIDR.
	ServiceCIDR string
	// DialTimeout bounds each dial to an endpoint. Default 1s.
	DialTimeout time.Duration
	// Metrics, if set, gets the router's metrics.
	Metrics prometheus.Registerer
	// NoStatus keeps the router from writing route status (a second
	// router with the same name, say).
	NoStatus bool
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("router: config: Store is required")
	}
	c.Name = cmp.Or(c.Name, DefaultName)
	c.ServiceCIDR = cmp.Or(c.ServiceCIDR, proxy.DefaultServiceCIDR)
	cidr, err := netip.ParsePrefix(c.ServiceCIDR)
	if err != nil {
		return fmt.Errorf("router: config: ServiceCIDR: %w", err)
	}
	if c.Endpoints == nil {
		c.Endpoints = proxy.HostileEndpoints(cidr.Masked())
	}
	c.DialTimeout = cmp.Or(c.DialTimeout, time.Second)
	if c.DefaultCertificate == nil {
		cert, err := selfSigned()
		if err != nil {
			return fmt.Errorf("router: default certificate: %w", err)
		}
		c.DefaultCertificate = cert
	}
	return nil
}

// Router serves routes; Run starts it.
type Router struct {
	cfg     Config
	table   atomic.Pointer[table]
	b       builder
	metrics *metrics

	httpLn, httpsLn net.Listener
	ready           chan struct{}
}

// New checks cfg and opens the listeners, so their addresses are known
// (Addrs) before Run.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, ready: make(chan struct{}), metrics: newMetrics(cfg.Metrics)}
	r.table.Store(&table{hosts: map[string]*host{}})
	r.b.plain = newSyncTransport(r.dial, r.transport(nil), 1024, 30*time.Second)
	r.b.reencrypt = func(pool *x509.CertPool, serverName string) http.RoundTripper {
		return r.transport(&tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12})
	}
	var err error
	if cfg.HTTPListen != "" {
		if r.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return nil, fmt.Errorf("router: listen on %s (--router-http-listen): %w", cfg.HTTPListen, err)
		}
	}
	if cfg.HTTPSListen != "" {
		if r.httpsLn, err = net.Listen("tcp", cfg.HTTPSListen); err != nil {
			if r.httpLn != nil {
				r.httpLn.Close()
			}
			return nil, fmt.Errorf("router: listen on %s (--router-https-listen): %w", cfg.HTTPSListen, err)
		}
	}
	return r, nil
}

// Addrs are the HTTP and HTTPS addresses served; nil for one not served.
func (r *Router) Addrs() (httpAddr, httpsAddr net.Addr) {
	if r.httpLn != nil {
		httpAddr = r.httpLn.Addr()
	}
	if r.httpsLn != nil {
		httpsAddr = r.httpsLn.Addr()
	}
	return httpAddr, httpsAddr
}

// Ready is closed once the first table from synced caches is serving.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// transport is the HTTP client side towards the pods; tc is TLS for
// reencrypt. It dials only endpoint addresses the policy allows.
func (r *Router) transport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:     r.dial,
		TLSClientConfig: tc,
		// As many idle connections per pod as requests in flight to it
		// (below this, a busy pod's connections are closed and dialed
		// again under load).
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 0,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false,
	}
}

// dial dials addr, or, if that fails, the chosen backend's other
// endpoints in turn (from the request's pick).
func (r *Router) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := r.dialEndpoint(ctx, addr)
	if err == nil {
		return c, nil
	}
	errs := []error{err}
	if pk, ok := ctx.Value(pickKey{}).(*pick); ok {
		for _, a := range pk.others() {
			c, err := r.dialEndpoint(ctx, a)
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
	}
	return nil, errors.Join(errs...)
}

func (r *Router) dialEndpoint(ctx context.Context, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("router: endpoint %q: %w", addr, err)
	}
	if err := r.cfg.Endpoints(ap.Addr()); err != nil {
		slog.Warn("router: endpoint refused; not dialing it", "endpoint", addr, "err", err)
		return nil, err
	}
	d := net.Dialer{Timeout: r.cfg.DialTimeout}
	return d.DialContext(ctx, "tcp", addr)
}

// Run watches routes and endpoints, serves, and writes route status
// until ctx ends; then it closes the listeners and returns.
func (r *Router) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	routes := store.NewInformer(r.cfg.Store, api.Routes)
	endpoints := store.NewInformer(r.cfg.Store, api.EndpointsResource)
	changed := make(chan struct{}, 1)
	poke := func(store.Event) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	routes.AddHandler(poke)
	endpoints.AddHandler(poke)
	var wg sync.WaitGroup
	wg.Go(func() { routes.Run(ctx) })
	wg.Go(func() { endpoints.Run(ctx) })
	var servers []*http.Server
	if r.httpLn != nil {
		srv := r.server(false)
		servers = append(servers, srv)
		plainLn := newConnListener(r.httpLn.Addr())
		wg.Go(func() { _ = srv.Serve(plainLn) })
		wg.Go(func() { r.servePlain(ctx, r.httpLn, plainLn) })
	}
	if r.httpsLn != nil {
		srv := r.server(true)
		servers = append(servers, srv)
		tlsLn := newConnListener(r.httpsLn.Addr())
		wg.Go(func() { _ = srv.Serve(tlsLn) })
		wg.Go(func() { r.serveTLS(ctx, r.httpsLn, tlsLn) })
	}
	defer func() {
		cancel()
		if r.httpLn != nil {
			r.httpLn.Close()
		}
		if r.httpsLn != nil {
			r.httpsLn.Close()
		}
		for _, s := range servers {
			s.Close()
		}
		wg.Wait()
	}()
	if routes.WaitFor(ctx, 0) != nil || endpoints.WaitFor(ctx, 0) != nil {
		return
	}
	first := true
	for {
		var rs []*api.Route
		for _, o := range routes.List("") {
			rs = append(rs, o.(*api.Route))
		}
		verdicts := Admit(rs)
		r.table.Store(r.b.build(rs, verdicts, func(ns, name string) *api.Endpoints {
			if o, ok := endpoints.Get(ns, name); ok {
				return o.(*api.Endpoints)
			}
			return nil
		}))
		if first {
			close(r.ready)
			first = false
		}
		r.metrics.forget(rs)
		var retry <-chan time.Time
		if !r.cfg.NoStatus && !r.writeStatus(ctx, rs, verdicts) {
			retry = time.After(time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// writeStatus records each route's verdict where it changed; false if a
// write failed (logged), so the caller tries again.
func (r *Router) writeStatus(ctx context.Context, routes []*api.Route, verdicts map[string]Verdict) bool {
	ok := true
	now := time.Now().UTC().Truncate(time.Second)
	for _, rt := range routes {
		want, changed := ingress(rt, r.cfg.Name, verdicts[routeKey(rt)], now)
		if !changed {
			continue
		}
		_, err := r.cfg.Store.GuaranteedUpdate(ctx, api.Routes, rt.Namespace, rt.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
			cur := o.(*api.Route)
			var out []api.RouteIngress
			for _, in := range cur.Status.Ingress {
				if in.RouterName != r.cfg.Name {
					out = append(out, in)
				}
			}
			cur.Status.Ingress = append(out, want)
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
			slog.Warn("router: writing route status; retrying", "route", routeKey(rt), "err", err)
			ok = false
		}
	}
	return ok
}
