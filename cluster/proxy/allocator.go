package proxy

import (
	"errors"
	"fmt"
	"net/netip"
)

// DefaultServiceCIDR is the range cluster IPs come from.
const DefaultServiceCIDR = "10.43.0.0/16"

// ErrRangeFull is returned when every address of the service range is taken.
var ErrRangeFull = errors.New("proxy: no free cluster IP in the service range")

// Allocator picks cluster IPs from a service range. It holds no state: the
// caller passes the addresses already taken, so any API server can
// allocate from what it reads. Two callers allocating at the same time from
// the same list get the same address; the caller must make the write that
// records the choice conditional (a compare-and-swap on whatever lists the
// taken addresses) and retry on conflict.
type Allocator struct {
	prefix netip.Prefix
}

// NewAllocator returns an allocator for cidr (DefaultServiceCIDR when empty).
func NewAllocator(cidr string) (*Allocator, error) {
	if cidr == "" {
		cidr = DefaultServiceCIDR
	}
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("proxy: service CIDR %q: %w", cidr, err)
	}
	return &Allocator{prefix: p.Masked()}, nil
}

// CIDR is the service range.
func (a *Allocator) CIDR() netip.Prefix { return a.prefix }

// Contains reports whether ip is an address the allocator could hand out:
// inside the range, and neither its network nor (IPv4) broadcast address.
// The API can use it to check a cluster IP the user asked for.
func (a *Allocator) Contains(ip string) bool {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	addr = addr.Unmap()
	return a.prefix.Contains(addr) && a.usable(addr)
}

func (a *Allocator) usable(addr netip.Addr) bool {
	if a.prefix.Bits() >= addr.BitLen()-1 {
		return true // /31 and /32 (and /127, /128) have no network or broadcast address
	}
	if addr == a.prefix.Addr() {
		return false
	}
	return !(addr.Is4() && !a.prefix.Contains(addr.Next()))
}

// AllocateClusterIP returns the lowest address of the range that is not in
// existing. Entries of existing that do not parse or lie outside the range
// are ignored. The result depends only on the range and the set of existing
// addresses. ErrRangeFull when none is free.
func (a *Allocator) AllocateClusterIP(existing []string) (string, error) {
	taken := make(map[netip.Addr]bool, len(existing))
	for _, s := range existing {
		if addr, err := netip.ParseAddr(s); err == nil {
			taken[addr.Unmap()] = true
		}
	}
	// The first free address is at most len(taken)+2 steps in, so this
	// loop is short even for an IPv6 range.
	for addr := a.prefix.Addr(); a.prefix.Contains(addr); addr = addr.Next() {
		if a.usable(addr) && !taken[addr] {
			return addr.String(), nil
		}
	}
	return "", fmt.Errorf("%s: %w", a.prefix, ErrRangeFull)
}
