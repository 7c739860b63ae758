// Package proxy is the service proxy of a node: for every port of every
// Service it listens on the service's cluster IP and relays connections
// (TCP) and datagrams (UDP) to the addresses in the Endpoints of the same
// name, round robin, failing over to the next endpoint when one does not
// answer. It is the userspace proxy of Kubernetes 1.0. In ModeNFTables
// the kernel forwards instead, with the same Services, endpoints and
// service range (kernel.go); Config.Mode chooses.
//
// What it promises:
//   - A service port is served from the moment its Service has a cluster
//     IP inside the service range, until the port or the Service goes
//     away; then its listener closes.
//   - Endpoint changes apply to new connections only; established
//     connections run until either side ends them.
//   - A TCP connection tries each endpoint at most once, healthy ones
//     first, with a short dial timeout (1s by default). An endpoint whose
//     dial failed, or that refused a UDP datagram, is quarantined (5s):
//     tried only after the others, until it answers again.
//   - UDP is relayed per client address: a session sticks to one endpoint
//     and ends after an idle timeout (30s).
//   - With no endpoints, TCP connections are reset and UDP datagrams are
//     dropped.
//   - An endpoint address is checked at every dial (Config.Endpoints): by
//     default loopback, link-local, multicast, service-range and the
//     host's own addresses are never dialed, whoever wrote the Endpoints.
//     A refusal is logged and counted (Refused).
//   - On a node (Dummy), an address of the service range that no service
//     holds is unreachable on the host: refused at once, never routed out.
//
// What it does not: endpoints see the proxy's address, not the client's;
// there is no session affinity across connections; the cluster IPs stay
// on the host when the proxy stops (with no listener, a client is refused
// at once rather than routed off the host), and the next run removes those
// no service uses.
//
// Cluster IPs come from an Allocator over the service range, and pods
// learn them from ServiceEnv.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Config configures a Proxy.
type Config struct {
	// Store is where Services and Endpoints are watched. Required.
	Store store.Interface
	// VIPs makes cluster IPs local: a Dummy interface on a node, Loopback
	// in tests. Required.
	VIPs VIPs
	// ServiceCIDR is the range of cluster IPs this proxy serves; a Service
	// whose cluster IP lies outside is ignored (with a warning), so a
	// Service cannot make the node capture traffic for an arbitrary
	// address. Default DefaultServiceCIDR.
	ServiceCIDR string
	// DialTimeout bounds each dial to an endpoint. Default 1s.
	DialTimeout time.Duration
	// Quarantine is how long an endpoint that failed is tried only after
	// the others. Default 5s.
	Quarantine time.Duration
	// UDPIdleTimeout ends a UDP session with no datagram either way for
	// this long. Default 30s.
	UDPIdleTimeout time.Duration
	// Endpoints is asked before every dial to an endpoint address; the
	// addresses it refuses are skipped, logged and counted (Refused).
	// Default HostileEndpoints(ServiceCIDR): no loopback, link-local,
	// host or service addresses.
	Endpoints EndpointPolicy
	// Access is asked before every dial whether the client may reach the
	// endpoint (network policy). Nil allows every client.
	Access ClientAccess
	// Mode is how traffic is forwarded: ModeNFTables, ModeUserspace, or
	// ModeAuto (nftables when the kernel allows it). Empty is
	// ModeUserspace, so a library user never changes the host's
	// firewall unasked; the node's --proxy-mode defaults to auto.
	Mode Mode
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("proxy: config: Store is required")
	}
	if c.VIPs == nil {
		return errors.New("proxy: config: VIPs is required")
	}
	c.ServiceCIDR = cmp.Or(c.ServiceCIDR, DefaultServiceCIDR)
	if _, err := netip.ParsePrefix(c.ServiceCIDR); err != nil {
		return fmt.Errorf("proxy: config: ServiceCIDR: %w", err)
	}
	c.DialTimeout = cmp.Or(c.DialTimeout, time.Second)
	c.Quarantine = cmp.Or(c.Quarantine, 5*time.Second)
	c.UDPIdleTimeout = cmp.Or(c.UDPIdleTimeout, 30*time.Second)
	if c.Endpoints == nil {
		c.Endpoints = HostileEndpoints(netip.MustParsePrefix(c.ServiceCIDR).Masked())
	}
	if c.DialTimeout < 0 || c.Quarantine < 0 || c.UDPIdleTimeout < 0 {
		return errors.New("proxy: config: timeouts must not be negative")
	}
	return nil
}

// Proxy serves the Services of the cluster on this host.
type Proxy struct {
	cfg  Config
	cidr netip.Prefix
	ctx  context.Context // Run's; ends every dial and session
	wg   sync.WaitGroup  // listeners, relays, UDP sessions

	mu      sync.Mutex
	ports   map[string]map[listenKey]*servicePort // by Service "ns/name"
	vipRefs map[string]int                        // service ports per cluster IP
	warned  map[string]string                     // Service → cluster IP already warned about

	connMu sync.Mutex
	closed bool
	conns  map[*net.TCPConn]struct{}

	refused refusals

	kernel  kernel                              // nil: userspace mode
	kports  map[string]map[listenKey]kernelPort // nftables mode: by Service
	kdirty  bool                                // kports not yet in the kernel
	kforget map[listenKey]string                // UDP ports whose stale flows to delete, by Service
}

// listenKey is what a listener is bound to.
type listenKey struct {
	ip    string // canonical
	port  int
	proto string // TCP or UDP
}

func (k listenKey) String() string {
	return net.JoinHostPort(k.ip, strconv.Itoa(k.port)) + "/" + strings.ToLower(k.proto)
}

type servicePort struct {
	lb    *balancer
	close func()
}

// vipLister is a VIPs that can say which addresses it holds, so addresses
// left by an earlier run can be removed.
type vipLister interface {
	List() ([]string, error)
}

// rangeRejecter is a VIPs that can make the host refuse the addresses of
// the service range it does not hold (Dummy.RejectRange).
type rangeRejecter interface {
	RejectRange(cidr netip.Prefix) error
}

// New returns a proxy; Run starts it.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	k, err := chooseMode(cfg.Mode, netip.MustParsePrefix(cfg.ServiceCIDR).Masked())
	if err != nil {
		return nil, err
	}
	return &Proxy{
		kernel:  k,
		cfg:     cfg,
		cidr:    netip.MustParsePrefix(cfg.ServiceCIDR).Masked(),
		ports:   map[string]map[listenKey]*servicePort{},
		vipRefs: map[string]int{},
		warned:  map[string]string{},
		conns:   map[*net.TCPConn]struct{}{},
	}, nil
}

// Run serves until ctx ends, then closes every listener and connection
// and returns once they are all gone. Call it once.
func (p *Proxy) Run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.ctx = ctx
	services := store.NewInformer(p.cfg.Store, api.Services)
	endpoints := store.NewInformer(p.cfg.Store, api.EndpointsResource)
	q := store.NewWorkQueue()
	// An Endpoints has its Service's name, so one key covers both.
	enqueue := func(ev store.Event) {
		m := ev.Object.GetObjectMeta()
		q.Add(m.Namespace + "/" + m.Name)
	}
	services.AddHandler(enqueue)
	endpoints.AddHandler(enqueue)
	var informers sync.WaitGroup
	informers.Go(func() { services.Run(ctx) })
	informers.Go(func() { endpoints.Run(ctx) })
	defer func() {
		cancel()
		p.stop()
		informers.Wait()
	}()

	if services.WaitFor(ctx, 0) != nil || endpoints.WaitFor(ctx, 0) != nil {
		return
	}
	p.removeStaleVIPs(services)
	if r, ok := p.cfg.VIPs.(rangeRejecter); ok {
		if err := r.RejectRange(p.cidr); err != nil {
			slog.Warn("proxy: addresses of the service range that no service holds may be routed off this host", "range", p.cidr, "err", err)
		}
	}
	go func() { <-ctx.Done(); q.Shutdown() }()
	if p.kernel != nil {
		p.runKernel(services, endpoints, q)
		return
	}
	for {
		key, ok := q.Get()
		if !ok {
			return
		}
		err := p.sync(key, services, endpoints)
		if err != nil && ctx.Err() == nil {
			slog.Warn("proxy: service not fully served; will retry", "service", key, "err", err)
		}
		q.Done(key, err)
	}
}

// sync makes the listeners of one Service match its spec and endpoints.
func (p *Proxy) sync(key string, services, endpoints *store.Informer) error {
	ns, name, _ := strings.Cut(key, "/")
	var svc *api.Service
	if o, ok := services.Get(ns, name); ok {
		svc = o.(*api.Service)
	}
	var eps *api.Endpoints
	if o, ok := endpoints.Get(ns, name); ok {
		eps = o.(*api.Endpoints)
	}
	want := p.desired(key, svc, eps)

	p.mu.Lock()
	defer p.mu.Unlock()
	have := p.ports[key]
	if have == nil {
		have = map[listenKey]*servicePort{}
	}
	for k, sp := range have {
		if _, ok := want[k]; !ok {
			sp.close()
			delete(have, k)
			p.releaseVIP(k.ip)
			slog.Info("proxy: stopped serving", "service", sp.lb.name, "address", k)
		}
	}
	var errs []error
	for k, w := range want {
		sp, ok := have[k]
		if !ok {
			var err error
			if sp, err = p.open(k, w.name); err != nil {
				errs = append(errs, err)
				continue
			}
			have[k] = sp
			slog.Info("proxy: serving", "service", w.name, "address", k, "endpoints", len(w.backends))
		}
		sp.lb.set(w.backends)
	}
	if len(have) == 0 {
		delete(p.ports, key)
	} else {
		p.ports[key] = have
	}
	return errors.Join(errs...)
}

type portWant struct {
	name     string // "ns/svc:port"
	backends []string
}

// desired is what a Service should be served as: one listener per port on
// its cluster IP, each with the endpoint addresses of that port.
func (p *Proxy) desired(key string, svc *api.Service, eps *api.Endpoints) map[listenKey]portWant {
	if svc == nil {
		return nil
	}
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return nil // headless ("None"), or not allocated yet
	}
	ip = ip.Unmap()
	if !p.cidr.Contains(ip) {
		p.mu.Lock()
		if p.warned[key] != ip.String() {
			p.warned[key] = ip.String()
			slog.Warn("proxy: cluster IP outside the service range; not serving it", "service", key, "clusterIP", ip, "range", p.cidr)
		}
		p.mu.Unlock()
		return nil
	}
	want := map[listenKey]portWant{}
	for _, sp := range svc.Spec.Ports {
		proto := protocol(sp.Protocol)
		if sp.Port < 1 || sp.Port > 65535 || (proto != "TCP" && proto != "UDP") {
			continue
		}
		label := sp.Name
		if label == "" {
			label = strconv.Itoa(int(sp.Port))
		}
		want[listenKey{ip: ip.String(), port: int(sp.Port), proto: proto}] = portWant{
			name:     key + ":" + label,
			backends: backends(sp, eps),
		}
	}
	return want
}

// backends lists host:port of every endpoint address for one service
// port, sorted so that the same set in another order is no change.
//
// An endpoint port matches the service port of the same name and
// protocol. Its pod port is its TargetPort when set, else its Port: an
// Endpoints written Kubernetes' way (Port is the pod's port) and one that
// copies the ServicePort (Port is the service's, TargetPort the pod's)
// both work. A subset with no ports uses the service port's TargetPort
// (or Port).
func backends(sp api.ServicePort, eps *api.Endpoints) []string {
	if eps == nil {
		return nil
	}
	var out []string
	for _, ss := range eps.Subsets {
		port, ok := endpointPort(sp, ss.Ports)
		if !ok {
			continue
		}
		for _, a := range ss.Addresses {
			if ip, err := netip.ParseAddr(a.IP); err == nil {
				out = append(out, net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(int(port))))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func endpointPort(sp api.ServicePort, ports []api.ServicePort) (int32, bool) {
	if len(ports) == 0 {
		return cmp.Or(sp.TargetPort, sp.Port), true
	}
	for _, ep := range ports {
		if ep.Name == sp.Name && (ep.Protocol == "" || protocol(ep.Protocol) == protocol(sp.Protocol)) {
			port := cmp.Or(ep.TargetPort, ep.Port)
			return port, port > 0 && port <= 65535
		}
	}
	return 0, false
}

// open makes k's address local and listens on it. Called with mu held.
func (p *Proxy) open(k listenKey, name string) (*servicePort, error) {
	if err := p.acquireVIP(k.ip); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	lb := newBalancer(name, p.cfg.DialTimeout, p.cfg.Quarantine, p.allow)
	addr := net.JoinHostPort(k.ip, strconv.Itoa(k.port))
	var lc net.ListenConfig
	switch k.proto {
	case "TCP":
		ln, err := lc.Listen(p.ctx, "tcp", addr)
		if err != nil {
			p.releaseVIP(k.ip)
			return nil, fmt.Errorf("proxy: %s: %w", name, err)
		}
		p.wg.Add(1)
		go p.serveTCP(ln, lb)
		return &servicePort{lb: lb, close: func() { ln.Close() }}, nil
	default: // UDP
		pc, err := lc.ListenPacket(p.ctx, "udp", addr)
		if err != nil {
			p.releaseVIP(k.ip)
			return nil, fmt.Errorf("proxy: %s: %w", name, err)
		}
		u := &udpPort{p: p, conn: pc.(*net.UDPConn), lb: lb, idle: p.cfg.UDPIdleTimeout, sessions: map[netip.AddrPort]*udpSession{}}
		p.wg.Add(1)
		go u.serve()
		return &servicePort{lb: lb, close: u.close}, nil
	}
}

// allow asks the endpoint policy about one endpoint ("host:port") of a
// service port, and records a refusal.
func (p *Proxy) allow(ctx context.Context, network, service, endpoint string) error {
	ap, err := netip.ParseAddrPort(endpoint)
	if err == nil {
		err = p.cfg.Endpoints(ap.Addr())
		if err == nil {
			err = p.checkClient(ctx, ap, network)
		}
	} else {
		err = fmt.Errorf("%w: %q is not an address and port", ErrEndpointRefused, endpoint)
	}
	if err != nil {
		p.refused.record(service, endpoint, err)
	}
	return err
}

// acquireVIP and releaseVIP count the service ports on each cluster IP,
// adding it with the first and removing it with the last. Called with mu
// held.
func (p *Proxy) acquireVIP(ip string) error {
	if p.vipRefs[ip] == 0 {
		if err := p.cfg.VIPs.Add(ip); err != nil {
			return err
		}
	}
	p.vipRefs[ip]++
	return nil
}

func (p *Proxy) releaseVIP(ip string) {
	p.vipRefs[ip]--
	if p.vipRefs[ip] > 0 {
		return
	}
	delete(p.vipRefs, ip)
	if err := p.cfg.VIPs.Remove(ip); err != nil {
		slog.Warn("proxy: cluster IP not removed", "clusterIP", ip, "err", err)
	}
}

// removeStaleVIPs removes the cluster IPs an earlier run left that no
// Service has now. It runs before any listener opens.
func (p *Proxy) removeStaleVIPs(services *store.Informer) {
	l, ok := p.cfg.VIPs.(vipLister)
	if !ok {
		return
	}
	held, err := l.List()
	if err != nil {
		slog.Warn("proxy: cannot list cluster IPs left by an earlier run", "err", err)
		return
	}
	used := map[string]bool{}
	for _, o := range services.List("") {
		if ip, err := netip.ParseAddr(o.(*api.Service).Spec.ClusterIP); err == nil {
			used[ip.Unmap().String()] = true
		}
	}
	cidr, _ := netip.ParsePrefix(p.cfg.ServiceCIDR)
	for _, ip := range held {
		a, err := netip.ParseAddr(ip)
		if err != nil || !cidr.Contains(a) {
			continue // another proxy's range, on the same machine
		}
		if !used[ip] {
			if err := p.cfg.VIPs.Remove(ip); err != nil {
				slog.Warn("proxy: stale cluster IP not removed", "clusterIP", ip, "err", err)
			}
		}
	}
}

// stop closes every listener and established connection and waits for
// their goroutines.
func (p *Proxy) stop() {
	p.mu.Lock()
	for _, ports := range p.ports {
		for _, sp := range ports {
			sp.close()
		}
	}
	p.ports = map[string]map[listenKey]*servicePort{}
	p.mu.Unlock()
	p.connMu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.connMu.Unlock()
	p.wg.Wait()
}

// track records an established relay so stop can end it; false (and both
// closed) once the proxy is stopping.
func (p *Proxy) track(in, out *net.TCPConn) bool {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	if p.closed {
		in.Close()
		out.Close()
		return false
	}
	p.conns[in], p.conns[out] = struct{}{}, struct{}{}
	return true
}

func (p *Proxy) untrack(in, out *net.TCPConn) {
	p.connMu.Lock()
	defer p.connMu.Unlock()
	delete(p.conns, in)
	delete(p.conns, out)
}
