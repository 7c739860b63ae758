package proxy_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
)

// TestDummyVIPs serves a service from a cluster IP on a real dummy
// interface. It needs root (CAP_NET_ADMIN); the interface is deleted at
// the end. Traffic stays on the host: the cluster IP is local while it is
// on the interface, and nothing dials it after it is removed.
func TestDummyVIPs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a dummy interface")
	}
	// Never slipway0, even when it is absent: a cluster started on this
	// host meanwhile (an e2e test) would put its cluster IPs on the
	// interface this test deletes at the end.
	const name = "slipwaytest0"
	d, err := proxy.NewDummy(name)
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("no CAP_NET_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Delete(); err != nil {
			t.Errorf("Delete: %v", err)
		}
		if _, err := net.InterfaceByName(name); err == nil {
			t.Errorf("interface %s still exists after Delete", name)
		}
	})
	iface, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatalf("interface %s after NewDummy: %v", name, err)
	}
	if iface.Flags&net.FlagUp == 0 {
		t.Errorf("interface %s is down, want up", name)
	}
	// An address left by an earlier run, which no service has.
	const stale, vip = "10.43.255.9", "10.43.255.7"
	if err := d.Add(stale); err != nil {
		t.Fatal(err)
	}
	if err := d.Add(stale); err != nil {
		t.Errorf("second Add of the same address: %v, want nil (idempotent)", err)
	}

	ctx, st := testContext(t), newStore(t)
	// The proxy adds a reject route for the range, which outlives it on
	// a node; the test removes it.
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", "unreachable", proxy.DefaultServiceCIDR).Run() })
	startProxy(t, proxy.Config{Store: st, VIPs: d, ServiceCIDR: proxy.DefaultServiceCIDR})
	a := httpBackend(t, "a")
	port := freePort(t, "127.0.0.1", "tcp")
	create(t, ctx, st, api.Services, newService("web", vip, api.ServicePort{Name: "http", Port: port}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: httpSubsets(a)})
	addr := net.JoinHostPort(vip, itoa(port))
	waitServed(t, addr)
	if name, err := get(addr); err != nil || name != "a" {
		t.Errorf("GET through %s on %s = %q, %v; want a", addr, d.Name(), name, err)
	}
	if got := addrsOf(t, name); !slices.Contains(got, vip+"/32") || slices.Contains(got, stale+"/32") {
		t.Errorf("addresses of %s while serving = %q, want %s/32 and not the stale %s/32", name, got, vip, stale)
	}

	if _, err := st.Delete(ctx, api.Services, "p", "web", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cluster IP removed from "+name, func() error {
		if got := addrsOf(t, name); slices.Contains(got, vip+"/32") {
			return fmt.Errorf("addresses = %q", got)
		}
		return nil
	})
	if err := d.Remove(vip); err != nil {
		t.Errorf("Remove of an address already gone: %v, want nil", err)
	}
}

// addrsOf lists an interface's addresses as the kernel reports them,
// independently of the netlink code under test.
func addrsOf(t *testing.T, name string) []string {
	t.Helper()
	iface, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := iface.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

func TestDummyRefusesARealInterface(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := proxy.NewDummy("lo"); err == nil {
		t.Error("NewDummy(lo) = nil error, want a refusal: lo is not a dummy interface")
	}
}
