package proxy

import (
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// isLocal asks the kernel how it would route to ip: a local, broadcast or
// multicast route means a dial would stay on this host. One netlink
// request, however many addresses the host has.
func isLocal(ip netip.Addr) (bool, error) {
	routes, err := netlink.RouteGet(ip.AsSlice())
	if err != nil {
		return false, err
	}
	for _, r := range routes {
		switch r.Type {
		case unix.RTN_LOCAL, unix.RTN_BROADCAST, unix.RTN_ANYCAST, unix.RTN_MULTICAST:
			return true, nil
		}
	}
	return false, nil
}
