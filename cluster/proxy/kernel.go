package proxy

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// The nftables mode (ModeNFTables) serves the same Services as the
// userspace mode with no process on the data path: the cluster IPs stay
// on the VIPs interface (so the host's own connect() is routed locally
// and meets the output hook, and the service range's unreachable route
// still covers every address no service holds), and table NFTTable (of
// the default range; TableFor of another) DNATs each service port to its
// endpoints:
//
//	nat-prerouting, nat-output → services: daddr . proto . dport → goto svc-VIP-PORT-PROTO
//	svc-…: numgen random picks one of n endpoint chains, uniformly
//	svc-…-i: mark for masquerade when the client is that endpoint (hairpin)
//	         or a cluster IP (the host's own connect), then dnat to IP:PORT
//	nat-postrouting: marked → masquerade
//	filter-input/forward/output → no-endpoints: a port with no endpoints
//	         is refused at once (TCP reset, ICMP port unreachable)
//
// Every change rewrites the whole table in one netlink batch, one kernel
// transaction (changes that arrive together, together). Endpoint
// addresses pass Config.Endpoints at each sync, not at each connection:
// the kernel dials nothing itself. When a UDP service port changes, its
// conntrack entries that go to no current endpoint (a removed one, or
// none: sent before the rule) are deleted, so a client that keeps sending
// is balanced again instead of talking to nobody. TCP connections to a
// removed endpoint run on, as in the userspace mode. On shutdown the
// table is deleted; the cluster IPs stay, refusing at once.

// NFTTable is the nftables table (family ip) the nftables mode owns for
// the default service range. No other code writes it; other features keep
// tables of their own.
const NFTTable = "slipway-proxy"

// TableFor is the table of the proxy serving cidr: NFTTable for
// DefaultServiceCIDR, "slipway-proxy-10.43.101.0-24" for another range,
// so that proxies of distinct ranges on one machine (test clusters) never
// replace each other's rules.
func TableFor(cidr netip.Prefix) string {
	if cidr.Masked() == netip.MustParsePrefix(DefaultServiceCIDR).Masked() {
		return NFTTable
	}
	return NFTTable + "-" + cidr.Masked().Addr().String() + "-" + strconv.Itoa(cidr.Bits())
}

// MasqueradeMark is the packet-mark bit the nftables mode sets on a
// service connection that must leave with the host's address (a pod
// reaching itself through its service, or the host dialing from a cluster
// IP); postrouting masquerades it and clears the bit.
const MasqueradeMark = 0x4000

// kernelPort is one service port as the kernel serves it.
type kernelPort struct {
	key       listenKey
	name      string           // "ns/svc:port", for logs
	endpoints []netip.AddrPort // sorted; empty: rejected
}

func (a kernelPort) equal(b kernelPort) bool {
	return a.key == b.key && a.name == b.name && slices.Equal(a.endpoints, b.endpoints)
}

// newKernel probes the kernel and returns the nftables mode's writer
// (newNFTKernel); tests of the mode choice replace it.
var newKernel = newNFTKernel

// kernel is what the nftables mode needs of the kernel (nft_linux.go).
type kernel interface {
	apply(ports []kernelPort) error
	remove() error
	forgetUDP(vip netip.Addr, port uint16, keep []netip.AddrPort) (uint, error)
}

// Mode is the mode the proxy runs in: ModeNFTables or ModeUserspace.
func (p *Proxy) Mode() Mode {
	if p.kernel != nil {
		return ModeNFTables
	}
	return ModeUserspace
}

// chooseMode settles Config.Mode. ModeAuto takes nftables when the kernel
// accepts a NAT table, else userspace; both are logged with the reason.
func chooseMode(m Mode, cidr netip.Prefix) (kernel, error) {
	switch m {
	case "", ModeUserspace:
		slog.Info("proxy: userspace mode", "reason", "--proxy-mode="+string(cmp.Or(m, ModeUserspace)))
		return nil, nil
	case ModeNFTables, ModeAuto:
	default:
		return nil, fmt.Errorf("proxy: config: Mode %q: want auto, nftables or userspace", m)
	}
	var k kernel
	var err error
	if cidr.Addr().Is4() {
		k, err = newKernel(cidr)
	} else {
		err = fmt.Errorf("nftables mode: the service range %s is not IPv4 (table family ip)", cidr)
	}
	if err == nil {
		slog.Info("proxy: nftables mode", "table", "ip "+TableFor(cidr), "reason", "--proxy-mode="+string(m))
		return k, nil
	}
	if m == ModeNFTables {
		return nil, fmt.Errorf("proxy: --proxy-mode=nftables: %w (run as root with CAP_NET_ADMIN, or use --proxy-mode=auto to fall back to the userspace proxy)", err)
	}
	slog.Warn("proxy: userspace mode: nftables is not usable here", "reason", err)
	return nil, nil
}

// runKernel is Run in the nftables mode: it builds the whole table from
// the caches first, then follows the queue, and deletes the table when ctx
// ends. Changes that arrive together are written together: the table is
// written when the queue has no other key waiting (a write takes about
// 0.6 s at 1,000 service ports on a loaded machine; one per change would
// fall behind a rollout).
func (p *Proxy) runKernel(services, endpoints *store.Informer, q *store.WorkQueue) {
	p.kports = map[string]map[listenKey]kernelPort{}
	p.kforget = map[listenKey]string{}
	defer func() {
		if err := p.kernel.remove(); err != nil {
			slog.Warn("proxy: nftables table left behind; the next run replaces it", "err", err)
		} else {
			slog.Info("proxy: nftables table removed", "table", "ip "+TableFor(p.cidr))
		}
	}()
	p.mu.Lock()
	p.kdirty = true
	p.mu.Unlock()
	for _, o := range services.List("") {
		m := o.GetObjectMeta()
		p.kernelSync(m.Namespace+"/"+m.Name, services, endpoints)
	}
	p.mu.Lock()
	// Flows an earlier run left to endpoints that are gone.
	for svc, ports := range p.kports {
		for k := range ports {
			if k.proto == "UDP" {
				p.kforget[k] = svc
			}
		}
	}
	err := p.kernelApply()
	p.mu.Unlock()
	if err != nil {
		slog.Warn("proxy: services not served by nftables; will retry", "err", err)
	}
	for {
		key, ok := q.Get()
		if !ok {
			return
		}
		err := p.kernelSync(key, services, endpoints)
		if q.Len() == 0 {
			p.mu.Lock()
			err = errors.Join(err, p.kernelApply())
			p.mu.Unlock()
		}
		if err != nil && p.ctx.Err() == nil {
			slog.Warn("proxy: service not fully served; will retry", "service", key, "err", err)
		}
		q.Done(key, err)
	}
}

// kernelSync brings one Service's ports up to date in kports (the table
// follows at the next kernelApply), and notes its UDP ports that changed.
func (p *Proxy) kernelSync(key string, services, endpoints *store.Informer) error {
	ns, name, _ := strings.Cut(key, "/")
	var svc *api.Service
	if o, ok := services.Get(ns, name); ok {
		svc = o.(*api.Service)
	}
	var eps *api.Endpoints
	if o, ok := endpoints.Get(ns, name); ok {
		eps = o.(*api.Endpoints)
	}
	want := map[listenKey]kernelPort{}
	for k, w := range p.desired(key, svc, eps) {
		kp := kernelPort{key: k, name: w.name}
		for _, b := range w.backends {
			if p.allow(p.ctx, "tcp", w.name, b) != nil { // no client: the kernel path is filtered by cluster/netpol's tables
				continue
			}
			ap, _ := netip.ParseAddrPort(b)
			kp.endpoints = append(kp.endpoints, ap)
		}
		want[k] = kp
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	have := p.kports[key]
	var errs []error
	for k, kp := range want {
		if _, ok := have[k]; !ok {
			if err := p.acquireVIP(k.ip); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", kp.name, err))
				delete(want, k)
				continue
			}
			slog.Info("proxy: serving", "service", kp.name, "address", k, "endpoints", len(kp.endpoints), "mode", ModeNFTables)
		}
	}
	if !maps.EqualFunc(have, want, kernelPort.equal) {
		p.kdirty = true
	}
	for k, old := range have {
		if now, ok := want[k]; k.proto == "UDP" && (!ok || !old.equal(now)) {
			p.kforget[k] = key
		}
	}
	for k, now := range want {
		if old, ok := have[k]; k.proto == "UDP" && (!ok || !old.equal(now)) {
			p.kforget[k] = key
		}
	}
	if len(want) == 0 {
		delete(p.kports, key)
	} else {
		p.kports[key] = want
	}
	for k, kp := range have {
		if _, ok := want[k]; !ok {
			p.releaseVIP(k.ip)
			slog.Info("proxy: stopped serving", "service", kp.name, "address", k)
		}
	}
	return errors.Join(errs...)
}

// kernelApply writes the table if anything changed since the last write
// that took, then deletes the conntrack entries of UDP flows to each
// changed service port (kforget) that do not go to one of its endpoints
// now: flows to a removed endpoint, and flows that met the cluster IP
// before it had a rule (refused, but kept alive by a client that keeps
// sending). Only the first packet of a flow meets the rules; without
// this, such a client would never be balanced again. A deletion that
// fails is retried at the next write. Called with mu held.
func (p *Proxy) kernelApply() error {
	if p.kdirty {
		var all []kernelPort
		for _, ports := range p.kports {
			for _, kp := range ports {
				all = append(all, kp)
			}
		}
		slices.SortFunc(all, func(a, b kernelPort) int { return strings.Compare(a.key.String(), b.key.String()) })
		if err := p.kernel.apply(all); err != nil {
			return err
		}
		p.kdirty = false
	}
	var errs []error
	for k, svc := range p.kforget {
		vip, _ := netip.ParseAddr(k.ip)
		now := p.kports[svc][k] // zero when the port is gone: forget every flow
		n, err := p.kernel.forgetUDP(vip, uint16(k.port), now.endpoints)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		delete(p.kforget, k)
		if n > 0 {
			slog.Info("proxy: UDP flows not to a current endpoint forgotten", "service", svc, "address", k, "flows", n)
		}
	}
	return errors.Join(errs...)
}
