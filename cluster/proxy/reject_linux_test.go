package proxy_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"slipway.dev/slipway/cluster/proxy"
)

// C3: a packet for an address of the service range that holds no cluster
// IP is refused on the host, never routed out by the default route; the
// cluster IPs of the range are still served.
func TestRejectRangeRefusesAddressesWithoutService(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to add an interface and a route")
	}
	name := "slipwaytest1"
	d, err := proxy.NewDummy(name)
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("no CAP_NET_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Delete() })
	cidr := netip.MustParsePrefix("10.43.253.0/24") // e2e tests use ranges outside 10.43
	if err := d.RejectRange(cidr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, dst, _ := net.ParseCIDR(cidr.String())
		netlink.RouteDel(&netlink.Route{Dst: dst, Type: syscall.RTN_UNREACHABLE})
	})
	if err := d.RejectRange(cidr); err != nil {
		t.Errorf("second RejectRange: %v, want nil (idempotent)", err)
	}

	_, err = net.DialTimeout("tcp", "10.43.253.9:80", 10*time.Second)
	if !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("dial 10.43.253.9:80 (no service) = %v, want EHOSTUNREACH at once", err)
	}

	const vip = "10.43.253.7"
	if err := d.Add(vip); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", vip+":0")
	if err != nil {
		t.Fatalf("listen on cluster IP %s inside the rejected range: %v", vip, err)
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial the cluster IP %s inside the rejected range: %v", ln.Addr(), err)
	}
	c.Close()
}
