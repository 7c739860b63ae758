package proxy

import (
	"fmt"
	"net/netip"
)

// VIPs makes cluster IPs local addresses of the host, so the proxy can
// listen on them. Add and Remove are idempotent.
type VIPs interface {
	Add(ip string) error
	Remove(ip string) error
}

// Loopback is the VIPs of a host that serves cluster IPs from the loopback
// range (127.0.0.0/8 on Linux is local without configuration): tests, and
// a single machine that has no rights to change its interfaces. Add refuses
// any other address; Remove does nothing.
type Loopback struct{}

var _ VIPs = Loopback{}

// Add checks that ip is a loopback address.
func (Loopback) Add(ip string) error {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return fmt.Errorf("proxy: cluster IP %q: %w", ip, err)
	}
	if !a.IsLoopback() {
		return fmt.Errorf("proxy: cluster IP %s is not a loopback address", ip)
	}
	return nil
}

// Remove does nothing: loopback addresses stay local.
func (Loopback) Remove(string) error { return nil }
