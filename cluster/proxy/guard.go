package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// ErrEndpointRefused is an endpoint address the proxy will not dial.
var ErrEndpointRefused = errors.New("proxy: endpoint address refused")

// EndpointPolicy decides, just before each dial, whether the proxy may
// dial an endpoint address; an error (wrapping ErrEndpointRefused) skips
// that endpoint for that connection or UDP session.
type EndpointPolicy func(ip netip.Addr) error

// AnyEndpoint allows every address. It is for tests whose backends listen
// on loopback; a node must not use it.
func AnyEndpoint(netip.Addr) error { return nil }

// HostileEndpoints is the default EndpointPolicy for a proxy serving
// serviceCIDR. The proxy runs as root in the host's network namespace, so
// an endpoint an editor wrote by hand (or a forged pod IP) would otherwise
// make a cluster IP a relay to whatever only the host reaches. It refuses:
//   - loopback (127.0.0.0/8, ::1) and 0.0.0.0/8, which Linux dials as
//     loopback: etcd, the registry, the agent;
//   - link-local (169.254.0.0/16, fe80::/10): the cloud metadata service;
//   - unspecified, multicast and limited broadcast;
//   - the service range itself (a cluster IP is the proxy);
//   - any address the host has as its own, asked of the kernel at each
//     dial (so an address added later, or a pod IP that became the
//     host's, is caught): node addresses, the bridge gateway, cluster IPs.
//
// Pod IPs pass. A pod on the host network has the node's address, and is
// refused.
func HostileEndpoints(serviceCIDR netip.Prefix) EndpointPolicy {
	return func(ip netip.Addr) error {
		ip = ip.Unmap()
		reason := ""
		switch {
		case !ip.IsValid():
			reason = "not an IP address"
		case ip.IsLoopback(), ip.Is4() && ip.As4()[0] == 0:
			reason = "a loopback address"
		case ip.IsUnspecified():
			reason = "the unspecified address"
		case ip.IsLinkLocalUnicast():
			reason = "a link-local address"
		case ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			reason = "a multicast or broadcast address"
		case serviceCIDR.Contains(ip):
			reason = "in the service range " + serviceCIDR.String()
		default:
			local, err := isLocal(ip)
			switch {
			case err != nil:
				// Fail closed: an address that cannot be checked is not dialed.
				reason = "not checkable against the host's addresses (" + err.Error() + ")"
			case local:
				reason = "an address of this host"
			}
		}
		if reason == "" {
			return nil
		}
		return fmt.Errorf("%w: %s is %s", ErrEndpointRefused, ip, reason)
	}
}

// refusals logs and counts endpoints the policy refused. A refused
// endpoint is logged at most once a minute per service port and address,
// so a client that keeps connecting cannot flood the log.
type refusals struct {
	mu     sync.Mutex
	total  uint64
	logged map[string]time.Time // "service endpoint" → last logged
}

func (r *refusals) record(service, endpoint string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if r.logged == nil {
		r.logged = map[string]time.Time{}
	}
	key := service + " " + endpoint
	now := time.Now()
	if last, ok := r.logged[key]; ok && now.Sub(last) < time.Minute {
		return
	}
	if len(r.logged) > 4096 {
		clear(r.logged)
	}
	r.logged[key] = now
	slog.Warn("proxy: endpoint refused; not dialing it", "service", service, "endpoint", endpoint, "err", err, "refusedSoFar", r.total)
}

// Refused is how many dials the endpoint policy has refused since New.
func (p *Proxy) Refused() uint64 {
	p.refused.mu.Lock()
	defer p.refused.mu.Unlock()
	return p.refused.total
}
