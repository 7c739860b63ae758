package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/store"
)

// The nftables tests run in a fresh network namespace each (runInNetns),
// laid out as a node:
//
//	slipway0  the cluster IPs (proxy.Dummy)
//	pods0     empty bridge, 10.99.0.2 and 10.99.0.3: the "pods" that serve
//	uplink0   veth, 10.200.0.1/24 with the default route via 10.200.0.254:
//	          whatever is not kept on the host would leave here
const (
	nftRange = "10.43.0.0/24"
	podA     = "10.99.0.2"
	podB     = "10.99.0.3"
)

// nftNode lays out the namespace and starts a proxy in the nftables mode
// until the test ends. stop ends it early and waits for Run to return.
func nftNode(t *testing.T, ctx context.Context, st *store.Store) (p *proxy.Proxy, stop func()) {
	t.Helper()
	vips, err := proxy.NewDummy("slipway0")
	if err != nil {
		t.Fatal(err)
	}
	addLink(t, &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "pods0"}}, podA+"/32", podB+"/32")
	up := addLink(t, &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "uplink0"}, PeerName: "uplink1"}, "10.200.0.1/24")
	if peer, err := netlink.LinkByName("uplink1"); err != nil || netlink.LinkSetUp(peer) != nil {
		t.Fatalf("uplink1: %v", err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Gw: net.ParseIP("10.200.0.254")}); err != nil {
		t.Fatalf("default route: %v", err)
	}
	p, err = proxy.New(proxy.Config{Store: st, VIPs: vips, ServiceCIDR: nftRange, Mode: proxy.ModeNFTables,
		Endpoints: proxy.AnyEndpoint}) // the "pods" are addresses of this namespace
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	if p.Mode() != proxy.ModeNFTables {
		t.Fatalf("Mode() = %s, want nftables", p.Mode())
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p.Run(pctx); close(done) }()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("proxy.Run did not return 30s after its context ended")
		}
	}
	t.Cleanup(stop)
	return p, stop
}

// addLink adds l (this kernel has no dummy interfaces: an empty bridge
// holds local addresses as well, a veth pair carries a route) with addrs.
func addLink(t *testing.T, l netlink.Link, addrs ...string) netlink.Link {
	t.Helper()
	name := l.Attrs().Name
	if err := netlink.LinkAdd(l); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			t.Fatalf("add %s to %s: %v", a, name, err)
		}
	}
	return l
}

// podHTTP serves its name over HTTP on ip:port.
func podHTTP(t *testing.T, name, ip string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, itoa(int32(port))))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// podUDP echoes each datagram on ip:port prefixed with "name:".
func podUDP(t *testing.T, name, ip string, port int) {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(net.JoinHostPort(ip, itoa(int32(port))))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(append([]byte(name+":"), buf[:n]...), from)
		}
	}()
}

func podSubset(port int32, proto string, ips ...string) []api.EndpointSubset {
	var addrs []api.EndpointAddress
	for _, ip := range ips {
		addrs = append(addrs, api.EndpointAddress{IP: ip})
	}
	return []api.EndpointSubset{{Addresses: addrs, Ports: []api.ServicePort{{Name: "p", Port: port, Protocol: proto}}}}
}

func createService(t *testing.T, ctx context.Context, st *store.Store, name, vip string, port int32, proto string, subsets []api.EndpointSubset) {
	t.Helper()
	create(t, ctx, st, api.Services, newService(name, vip, api.ServicePort{Name: "p", Port: port, Protocol: proto}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: name}, Subsets: subsets})
}

// waitServedUDP waits until a datagram to addr is answered.
func waitServedUDP(t *testing.T, addr string) {
	t.Helper()
	eventually(t, "UDP through "+addr, func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = (&udpClient{c: c.(*net.UDPConn)}).ask("ping")
		return err
	})
}

// namesOf makes n requests, each on a new connection (TCP) or from a new
// client address (UDP), and counts who answered.
func namesOf(t *testing.T, addr, proto string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := range n {
		var name string
		if proto == "udp" {
			name = newUDPClient(t, addr).askFrom(t, fmt.Sprint("m", i))
		} else {
			var err error
			if name, err = get(addr); err != nil {
				t.Fatalf("GET %s: %v", addr, err)
			}
		}
		seen[name]++
	}
	return seen
}

// C1: a TCP and a UDP service are served by the kernel (nothing of the
// proxy listens on the cluster IP), and new connections and new UDP
// clients are spread over both endpoints.
func TestNFTablesServesTCPAndUDPOverEndpoints(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	ctx, st := testContext(t), newStore(t)
	nftNode(t, ctx, st)
	for _, pod := range [][2]string{{"a", podA}, {"b", podB}} {
		podHTTP(t, pod[0], pod[1], 8080)
		podUDP(t, pod[0], pod[1], 5353)
	}
	createService(t, ctx, st, "web", "10.43.0.10", 80, "TCP", podSubset(8080, "TCP", podA, podB))
	createService(t, ctx, st, "dns", "10.43.0.11", 53, "UDP", podSubset(5353, "UDP", podA, podB))
	waitServed(t, "10.43.0.10:80")
	waitServedUDP(t, "10.43.0.11:53")

	// 40 picks of 2 endpoints all landing on one: 2^-39.
	if got := namesOf(t, "10.43.0.10:80", "tcp", 40); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("TCP: 40 new connections reached %v, want both a and b", got)
	}
	if got := namesOf(t, "10.43.0.11:53", "udp", 40); got["a"] == 0 || got["b"] == 0 {
		t.Errorf("UDP: 40 new clients reached %v, want both a and b", got)
	}
	// The kernel forwards: the proxy holds no socket on the cluster IP.
	ln, err := net.Listen("tcp", "10.43.0.10:80")
	if err != nil {
		t.Errorf("listen on the served 10.43.0.10:80: %v, want free (the userspace proxy would hold it)", err)
	} else {
		ln.Close()
	}
}

// C2: an endpoint taken out of the Endpoints gets no new connection, and
// a UDP client that keeps sending is moved off it (its conntrack entry is
// deleted), although the removed pod still answers.
func TestNFTablesEndpointRemovalTakesEffect(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	ctx, st := testContext(t), newStore(t)
	nftNode(t, ctx, st)
	for _, pod := range [][2]string{{"a", podA}, {"b", podB}} {
		podHTTP(t, pod[0], pod[1], 8080)
		podUDP(t, pod[0], pod[1], 5353)
	}
	createService(t, ctx, st, "web", "10.43.0.20", 80, "TCP", podSubset(8080, "TCP", podA, podB))
	createService(t, ctx, st, "dns", "10.43.0.21", 53, "UDP", podSubset(5353, "UDP", podB))
	waitServed(t, "10.43.0.20:80")
	waitServedUDP(t, "10.43.0.21:53")
	client := newUDPClient(t, "10.43.0.21:53")
	if got := client.askFrom(t, "first"); got != "b" {
		t.Fatalf("UDP reply from %q, want b (the only endpoint)", got)
	}

	setEndpoints(t, ctx, st, "web", podSubset(8080, "TCP", podA))
	setEndpoints(t, ctx, st, "dns", podSubset(5353, "UDP", podA))
	eventually(t, "UDP client moved to a", func() error {
		reply, err := client.ask("again")
		if err == nil && !strings.HasPrefix(reply, "a:") {
			err = fmt.Errorf("reply %q, want one from a", reply)
		}
		return err
	})
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		if f.Forward.DstIP.Equal(net.ParseIP("10.43.0.21")) && f.Reverse.SrcIP.Equal(net.ParseIP(podB)) {
			t.Errorf("conntrack still holds a flow to the removed endpoint: %s", f)
		}
	}
	eventually(t, "TCP: new connections reach only a", func() error {
		if got := namesOf(t, "10.43.0.20:80", "tcp", 20); got["b"] > 0 {
			return fmt.Errorf("20 new connections reached %v", got)
		}
		return nil
	})
}

// C3: a service port with no endpoints is refused at once (a TCP reset,
// ICMP port unreachable), even when a process of the host listens on
// that port on every address: the cluster IP is local, and without the
// rule it would reach that process.
func TestNFTablesRejectsServiceWithoutEndpoints(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	ctx, st := testContext(t), newStore(t)
	nftNode(t, ctx, st)
	hostTCP, err := net.Listen("tcp", "0.0.0.0:81")
	if err != nil {
		t.Fatal(err)
	}
	defer hostTCP.Close()
	go func() {
		for {
			c, err := hostTCP.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "host")
			c.Close()
		}
	}()
	podUDP(t, "host", "0.0.0.0", 54)
	createService(t, ctx, st, "empty", "10.43.0.30", 81, "TCP", nil)
	create(t, ctx, st, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "empty-udp"},
		Spec: api.ServiceSpec{ClusterIP: "10.43.0.31", Ports: []api.ServicePort{{Name: "p", Port: 54, Protocol: "UDP"}}}})

	dial := func() error {
		c, err := net.DialTimeout("tcp", "10.43.0.30:81", 10*time.Second)
		if err == nil {
			b, _ := io.ReadAll(c)
			c.Close()
			return fmt.Errorf("connected, and %q answered", b)
		}
		return err
	}
	// Until the proxy has synced, the address is not local yet: the
	// range's route refuses it (EHOSTUNREACH).
	eventually(t, "TCP to a service without endpoints refused", func() error {
		if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial: %v, want ECONNREFUSED", err)
		}
		return nil
	})
	for range 5 {
		if err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial 10.43.0.30:81 (no endpoints): %v, want ECONNREFUSED at once", err)
		}
	}
	eventually(t, "UDP to a service without endpoints refused", func() error {
		c, err := net.Dial("udp", "10.43.0.31:54")
		if err != nil {
			return err // not local yet
		}
		defer c.Close()
		// The host's own datagram is dropped in its output hook: the
		// send fails with EPERM. (A pod's gets ICMP port unreachable.)
		reply, err := (&udpClient{c: c.(*net.UDPConn)}).ask("x")
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("ask: %q, %v; want EPERM or ECONNREFUSED at once", reply, err)
		}
		return nil
	})
}

// C4: no address of the service range leaves the host. A cluster IP in
// use is local; any other address of the range has the range's
// unreachable route, where an address outside it takes the default route
// out of uplink0.
func TestNFTablesServiceRangeStaysOnHost(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	ctx, st := testContext(t), newStore(t)
	nftNode(t, ctx, st)
	podHTTP(t, "a", podA, 8080)
	createService(t, ctx, st, "web", "10.43.0.40", 80, "TCP", podSubset(8080, "TCP", podA))
	waitServed(t, "10.43.0.40:80")

	routeOf := func(ip string) (string, error) {
		rs, err := netlink.RouteGet(net.ParseIP(ip))
		if err != nil {
			return "", err
		}
		if len(rs) == 0 {
			return "", errors.New("no route")
		}
		l, _ := netlink.LinkByIndex(rs[0].LinkIndex)
		name := ""
		if l != nil {
			name = l.Attrs().Name
		}
		return fmt.Sprintf("type %d dev %s", rs[0].Type, name), nil
	}
	if r, err := routeOf("10.200.7.7"); err != nil || !strings.HasSuffix(r, "dev uplink0") {
		t.Fatalf("route to 10.200.7.7 (outside the range) = %q, %v; want the default route out of uplink0", r, err)
	}
	for _, ip := range []string{"10.43.0.200", "10.43.0.1", "10.43.0.255"} {
		if r, err := routeOf(ip); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("route to %s (in the range, no service) = %q, %v; want EHOSTUNREACH (unreachable route)", ip, r, err)
		}
		if _, err := net.DialTimeout("tcp", ip+":80", 10*time.Second); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial %s:80 = %v, want EHOSTUNREACH at once", ip, err)
		}
	}
	if r, err := routeOf("10.43.0.40"); err != nil || !strings.HasPrefix(r, fmt.Sprintf("type %d ", unix.RTN_LOCAL)) {
		t.Errorf("route to the cluster IP 10.43.0.40 = %q, %v; want local (type %d)", r, err, unix.RTN_LOCAL)
	}
}

// C5: a table left by an earlier run is replaced whole at start, and the
// table is gone after a graceful stop.
func TestNFTablesReplacesStaleTableAndRemovesItOnStop(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	table := proxy.TableFor(netip.MustParsePrefix(nftRange))
	if table != "slipway-proxy-10.43.0.0-24" {
		t.Errorf("TableFor(%s) = %q, want slipway-proxy-10.43.0.0-24", nftRange, table)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Name: table, Family: nftables.TableFamilyIPv4}
	c.AddTable(tb)
	c.AddChain(&nftables.Chain{Name: "left-by-an-earlier-run", Table: tb})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, st := testContext(t), newStore(t)
	_, stop := nftNode(t, ctx, st)
	podHTTP(t, "a", podA, 8080)
	createService(t, ctx, st, "web", "10.43.0.50", 80, "TCP", podSubset(8080, "TCP", podA))
	waitServed(t, "10.43.0.50:80")
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ch := range chains {
		if ch.Table.Name == table {
			names = append(names, ch.Name)
		}
	}
	if slices.Contains(names, "left-by-an-earlier-run") || !slices.Contains(names, "svc-10.43.0.50-80-tcp") {
		t.Errorf("chains of table %s = %v, want svc-10.43.0.50-80-tcp and not left-by-an-earlier-run", table, names)
	}

	stop()
	if tb, err := c.ListTableOfFamily(table, nftables.TableFamilyIPv4); err == nil {
		t.Errorf("table %s still there after the proxy stopped: %+v", table, tb)
	}
	// The cluster IP stays local; with no rules it refuses at once.
	if _, err := net.DialTimeout("tcp", "10.43.0.50:80", 10*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial 10.43.0.50:80 after stop = %v, want ECONNREFUSED", err)
	}
}

// C8: a UDP client that sent to a cluster IP before its service had a
// rule (refused: the address was local, nothing listened) and kept
// sending is served once the rule is there: its conntrack entry, which
// binds the flow to "no translation", is deleted when the port gets
// endpoints. Only the first packet of a flow meets the rules.
func TestNFTablesUDPClientRefusedBeforeTheRuleIsServedAfter(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	ctx, st := testContext(t), newStore(t)
	nftNode(t, ctx, st)
	podUDP(t, "a", podA, 5353)
	// Another service, so that the NAT hooks see the client's first
	// packet (as on any node that serves something).
	createService(t, ctx, st, "other", "10.43.0.81", 53, "UDP", podSubset(5353, "UDP", podA))
	waitServedUDP(t, "10.43.0.81:53")
	// 10.43.0.80 is local, as a leftover of an earlier run would be,
	// with no rule yet.
	l, err := netlink.LinkByName("slipway0")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("10.43.0.80/32")
	if err := netlink.AddrAdd(l, addr); err != nil {
		t.Fatal(err)
	}
	client := newUDPClient(t, "10.43.0.80:53")
	if reply, err := client.ask("early"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("ask before the service exists = %q, %v; want ECONNREFUSED", reply, err)
	}
	createService(t, ctx, st, "dns", "10.43.0.80", 53, "UDP", podSubset(5353, "UDP", podA))
	eventually(t, "the early client served by a", func() error {
		reply, err := client.ask("later")
		if err == nil && !strings.HasPrefix(reply, "a:") {
			err = fmt.Errorf("reply %q, want one from a", reply)
		}
		return err
	})
}
