//go:build !linux

package proxy

import (
	"net"
	"net/netip"
)

// isLocal reports whether ip is one of the host's interface addresses.
func isLocal(ip netip.Addr) (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if h, ok := netip.AddrFromSlice(n.IP); ok && h.Unmap() == ip {
				return true, nil
			}
		}
	}
	return false, nil
}
