package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultInterface is the dummy interface that holds cluster IPs.
const DefaultInterface = "slipway0"

// Dummy is the VIPs of a Linux node: each cluster IP is a host address
// (/32, or /128) on a dummy interface, which makes it local to the host, so
// processes and containers on the node reach it, while the interface
// itself carries no traffic. It needs CAP_NET_ADMIN.
//
// On a kernel built without the dummy driver (some VM kernels, where
// creating one fails with "operation not supported") the interface is a
// bridge with no ports instead: it holds local addresses the same way, as
// docker0 does before any container joins it.
//
// It talks netlink directly (github.com/vishvananda/netlink, the library
// CNI plugins, Docker and kube-proxy's IPVS mode use), rather than running
// ip(8): no dependency on iproute2 being installed, no process per
// address, and errors arrive as errno values (EEXIST, EADDRNOTAVAIL)
// instead of text to parse.
type Dummy struct {
	name string
	mu   sync.Mutex
}

var _ VIPs = (*Dummy)(nil)

// NewDummy returns the dummy interface called name (DefaultInterface when
// empty), creating it and setting it up if it is missing. An existing
// interface of that name that is not a dummy is an error, so a typo never
// puts addresses on a real NIC.
func NewDummy(name string) (*Dummy, error) {
	if name == "" {
		name = DefaultInterface
	}
	d := &Dummy{name: name}
	if _, err := d.link(); err != nil {
		return nil, err
	}
	return d, nil
}

// Name is the interface's name.
func (d *Dummy) Name() string { return d.name }

// link looks the interface up by name on every call, creating it again if
// something deleted it since.
func (d *Dummy) link() (netlink.Link, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, err := netlink.LinkByName(d.name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		attrs := netlink.LinkAttrs{Name: d.name}
		err = netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
		if errors.Is(err, syscall.EOPNOTSUPP) {
			slog.Info("proxy: the kernel has no dummy interfaces; holding cluster IPs on an empty bridge", "interface", d.name)
			err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
		}
		if err != nil && !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("proxy: create interface %s: %w", d.name, err)
		}
		l, err = netlink.LinkByName(d.name)
	}
	if err != nil {
		return nil, fmt.Errorf("proxy: interface %s: %w", d.name, err)
	}
	if err := checkHolder(l); err != nil {
		return nil, err
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("proxy: set %s up: %w", d.name, err)
		}
	}
	return l, nil
}

// checkHolder refuses an interface that may carry traffic: anything but a
// dummy, or a bridge with no ports.
func checkHolder(l netlink.Link) error {
	switch l.Type() {
	case "dummy":
		return nil
	case "bridge":
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("proxy: list interfaces: %w", err)
		}
		for _, o := range links {
			if o.Attrs().MasterIndex == l.Attrs().Index {
				return fmt.Errorf("proxy: interface %s is a bridge with port %s; refusing to put cluster IPs on it", l.Attrs().Name, o.Attrs().Name)
			}
		}
		return nil
	}
	return fmt.Errorf("proxy: interface %s is a %s, not a dummy; refusing to put cluster IPs on it", l.Attrs().Name, l.Type())
}

func hostAddr(ip string) (*netlink.Addr, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("proxy: cluster IP %q: %w", ip, err)
	}
	a = a.Unmap()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		// Without it the address is tentative for a second or two of
		// duplicate address detection, and binding it fails.
		addr.Flags = unix.IFA_F_NODAD
	}
	return addr, nil
}

// Add puts ip on the interface.
func (d *Dummy) Add(ip string) error {
	addr, err := hostAddr(ip)
	if err != nil {
		return err
	}
	l, err := d.link()
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("proxy: add %s to %s: %w", ip, d.name, err)
	}
	return nil
}

// Remove takes ip off the interface; an address that is not there is not
// an error.
func (d *Dummy) Remove(ip string) error {
	addr, err := hostAddr(ip)
	if err != nil {
		return err
	}
	l, err := d.link()
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(l, addr); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Errorf("proxy: remove %s from %s: %w", ip, d.name, err)
	}
	return nil
}

// List returns the addresses on the interface, so the proxy can remove
// those no service uses any more (left by an earlier run).
func (d *Dummy) List() ([]string, error) {
	l, err := d.link()
	if err != nil {
		return nil, err
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("proxy: list addresses of %s: %w", d.name, err)
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			out = append(out, ip.Unmap().String())
		}
	}
	return out, nil
}

// RejectRange makes the kernel refuse, on this host, traffic to every
// address of cidr that is not local: an "unreachable" route for the range
// in the main table. Cluster IPs on the interface are local addresses,
// found in the local table first, so they are served; any other address
// of the range (a service that was deleted, or never was) fails at once
// with "no route to host", for host processes and for pods whose packets
// the host would forward, instead of leaving the node by the default
// route. The route outlives the interface and the proxy, as the cluster
// IPs do. Idempotent.
func (d *Dummy) RejectRange(cidr netip.Prefix) error {
	cidr = cidr.Masked()
	r := &netlink.Route{
		Dst:  &net.IPNet{IP: cidr.Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), cidr.Addr().BitLen())},
		Type: unix.RTN_UNREACHABLE,
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("proxy: reject route for the service range %s: %w", cidr, err)
	}
	return nil
}

// Delete removes the interface and every address on it.
func (d *Dummy) Delete() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, err := netlink.LinkByName(d.name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("proxy: interface %s: %w", d.name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("proxy: delete interface %s: %w", d.name, err)
	}
	return nil
}
