package proxy_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
)

// hostAddress is a non-loopback, non-link-local address of this host.
func hostAddress(t *testing.T) netip.Addr {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ip, _ := netip.AddrFromSlice(n.IP)
			ip = ip.Unmap()
			if ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip
			}
		}
	}
	t.Skip("this host has no IPv4 address but loopback")
	return netip.Addr{}
}

// C3: the proxy is root on the host network, so an Endpoints written by
// hand must not make a cluster IP a relay to what only the host reaches.
func TestHostileEndpointsPolicy(t *testing.T) {
	policy := proxy.HostileEndpoints(netip.MustParsePrefix("10.43.0.0/16"))
	host := hostAddress(t)
	for _, tc := range []struct {
		name, ip string
	}{
		{"loopback (etcd, the registry, the agent)", "127.0.0.1"},
		{"elsewhere in 127/8", "127.9.8.7"},
		{"IPv6 loopback", "::1"},
		{"IPv4-mapped loopback", "::ffff:127.0.0.1"},
		{"unspecified, which Linux dials as loopback", "0.0.0.0"},
		{"0/8", "0.1.2.3"},
		{"IPv6 unspecified", "::"},
		{"cloud metadata", "169.254.169.254"},
		{"IPv6 link-local", "fe80::1"},
		{"multicast", "224.0.0.251"},
		{"IPv6 multicast", "ff02::1"},
		{"broadcast", "255.255.255.255"},
		{"a cluster IP", "10.43.0.10"},
		{"the host's own address", host.String()},
	} {
		if err := policy(netip.MustParseAddr(tc.ip)); !errors.Is(err, proxy.ErrEndpointRefused) {
			t.Errorf("HostileEndpoints(%s) [%s] = %v, want ErrEndpointRefused", tc.ip, tc.name, err)
		}
	}
	// A routable address that is not the host's (a pod, another node).
	// Only where the host has a route to it: with none, the policy
	// refuses, as the dial would fail anyway.
	const other = "198.51.100.7"
	if out, err := exec.Command("ip", "route", "get", other).CombinedOutput(); err != nil {
		t.Logf("no route to %s here (%v: %s); not checking an allowed address", other, err, out)
	} else if err := policy(netip.MustParseAddr(other)); err != nil {
		t.Errorf("HostileEndpoints(%s) = %v, want nil (not local)", other, err)
	}
}

// The default policy applies at dial time: a Service whose Endpoints
// point at a loopback listener, or at the host's own address, gets its
// connections reset, the backend never sees one, and each refusal is
// counted.
func TestProxyRefusesHostEndpoints(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	p, err := proxy.New(proxy.Config{Store: st, VIPs: proxy.Loopback{}, ServiceCIDR: loopbackRange}) // default Endpoints policy
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })

	var hits atomic.Int64
	ln, err := net.Listen("tcp", ":0") // every address of the host
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("secret"))
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	port := int32(ln.Addr().(*net.TCPAddr).Port)

	for i, target := range []string{"127.0.0.1", hostAddress(t).String()} {
		ip := clusterIP()
		svcPort := freePort(t, ip, "tcp")
		name := "steal" + strconv.Itoa(i)
		create(t, ctx, st, api.Services, newService(name, ip, api.ServicePort{Name: "http", Port: svcPort}))
		before := p.Refused()
		create(t, ctx, st, api.EndpointsResource, &api.Endpoints{
			ObjectMeta: api.ObjectMeta{Namespace: "p", Name: name},
			Subsets: []api.EndpointSubset{{
				Addresses: []api.EndpointAddress{{IP: target}},
				Ports:     []api.ServicePort{{Name: "http", Port: port}},
			}},
		})
		addr := net.JoinHostPort(ip, strconv.Itoa(int(svcPort)))
		// Once the endpoint is known, a connection is refused and counted.
		eventually(t, "a refusal of "+target+" counted", func() error {
			body, err := get(addr)
			if err == nil {
				t.Fatalf("GET through %s (endpoint %s) = %q, want the connection reset", addr, target, body)
			}
			if p.Refused() == before {
				return errors.New("no refusal counted yet: " + err.Error())
			}
			return nil
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the host's listener got %d requests through the proxy, want 0", n)
	}
}
