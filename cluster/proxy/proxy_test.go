package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/store"
)

func TestRoundRobinReachesEveryBackend(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	startProxy(t, proxy.Config{Store: st})
	a, b, c := httpBackend(t, "a"), httpBackend(t, "b"), httpBackend(t, "c")
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port, TargetPort: 8080}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: httpSubsets(a, b, c)})
	addr := net.JoinHostPort(ip, itoa(port))
	waitServed(t, addr)

	counts := map[string]int{}
	for range 30 {
		name, err := get(addr)
		if err != nil {
			t.Fatalf("GET through the proxy: %v", err)
		}
		counts[name]++
	}
	// Any 30 consecutive round-robin picks over 3 healthy endpoints hit
	// each exactly 10 times.
	if diff := cmp.Diff(map[string]int{"a": 10, "b": 10, "c": 10}, counts); diff != "" {
		t.Errorf("requests per backend (-want +got):\n%s", diff)
	}
}

func TestFailoverWhenBackendIsKilled(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	startProxy(t, proxy.Config{Store: st})
	a, b, c := httpBackend(t, "a"), httpBackend(t, "b"), httpBackend(t, "c")
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: httpSubsets(a, b, c)})
	addr := net.JoinHostPort(ip, itoa(port))
	waitServed(t, addr)

	// b dies but stays in the endpoints, as it does until the endpoints
	// controller notices.
	b.kill()
	var mu sync.Mutex
	counts, failures := map[string]int{}, []error{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 25 {
				name, err := get(addr)
				mu.Lock()
				if err != nil {
					failures = append(failures, err)
				} else {
					counts[name]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d of 200 requests failed with one backend of three dead; first: %v", len(failures), failures[0])
	}
	if counts["b"] != 0 || counts["a"] == 0 || counts["c"] == 0 {
		t.Errorf("requests per backend = %v, want a and c only", counts)
	}

	// With every endpoint dead the client is told at once.
	a.kill()
	c.kill()
	if name, err := get(addr); err == nil {
		t.Errorf("GET with every backend dead = %q, want an error", name)
	}
}

// blackhole returns an address whose SYNs go unanswered: a listener with
// a backlog of 0 whose accept queue is full, so the kernel drops new SYNs
// and a dial times out, as it would to a dead host.
func blackhole(t *testing.T) (addr string) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return addr
		}
		if err != nil {
			t.Fatalf("filling the accept queue of %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("dials to %s never timed out; cannot make a blackhole", addr)
	return ""
}

func TestFailoverOnDialTimeout(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	startProxy(t, proxy.Config{Store: st})
	a := httpBackend(t, "a")
	_, holePort, _ := net.SplitHostPort(blackhole(t))
	var hole int32
	fmt.Sscan(holePort, &hole)
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"},
		Subsets: []api.EndpointSubset{subset("http", hole, "TCP"), subset("http", a.port, "TCP")}})
	addr := net.JoinHostPort(ip, itoa(port))
	waitServed(t, addr)
	// Round robin starts every other connection at the blackhole; each
	// must time out there and land on a.
	for i := range 6 {
		name, err := get(addr)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if name != "a" {
			t.Fatalf("request %d answered by %q, want a", i, name)
		}
	}
}

func TestEndpointChangesKeepEstablishedConnections(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	startProxy(t, proxy.Config{Store: st})
	a, b, c := httpBackend(t, "a"), httpBackend(t, "b"), httpBackend(t, "c")
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: httpSubsets(a)})
	addr := net.JoinHostPort(ip, itoa(port))
	waitServed(t, addr)
	kept := dialPersistent(t, addr)
	if name, err := kept.get(); err != nil || name != "a" {
		t.Fatalf("first request on the kept connection = %q, %v; want a", name, err)
	}

	// Adding b: new connections reach it.
	setEndpoints(t, ctx, st, "web", httpSubsets(a, b))
	eventually(t, "a request reaching the added backend b", func() error {
		if name, err := get(addr); err != nil || name != "b" {
			return fmt.Errorf("answered by %q, %v", name, err)
		}
		return nil
	})

	// Replacing both with c: once c answers, nothing else does.
	setEndpoints(t, ctx, st, "web", httpSubsets(c))
	eventually(t, "a request reaching the new backend c", func() error {
		if name, err := get(addr); err != nil || name != "c" {
			return fmt.Errorf("answered by %q, %v", name, err)
		}
		return nil
	})
	for i := range 20 {
		if name, err := get(addr); err != nil || name != "c" {
			t.Fatalf("request %d after a and b were removed = %q, %v; want c", i, name, err)
		}
	}

	// The connection made before either change still reaches a.
	if name, err := kept.get(); err != nil || name != "a" {
		t.Errorf("request on the connection kept across endpoint changes = %q, %v; want a", name, err)
	}
}

func TestServicePortRemovedAndServiceDeleted(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	vips := &recordingVIPs{}
	startProxy(t, proxy.Config{Store: st, VIPs: vips})
	a := httpBackend(t, "a")
	ip := clusterIP()
	p1, p2 := freePort(t, ip, "tcp"), freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip,
		api.ServicePort{Name: "one", Port: p1}, api.ServicePort{Name: "two", Port: p2}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"},
		Subsets: []api.EndpointSubset{{
			Addresses: []api.EndpointAddress{{IP: "127.0.0.1"}},
			Ports:     []api.ServicePort{{Name: "one", Port: a.port}, {Name: "two", Port: a.port}},
		}}})
	addr1, addr2 := net.JoinHostPort(ip, itoa(p1)), net.JoinHostPort(ip, itoa(p2))
	waitServed(t, addr1)
	waitServed(t, addr2)
	kept := dialPersistent(t, addr2)
	if name, err := kept.get(); err != nil || name != "a" {
		t.Fatalf("request on port two = %q, %v; want a", name, err)
	}

	// Port two goes: its listener closes, port one stays.
	_, err := st.GuaranteedUpdate(ctx, api.Services, "p", "web", store.UpdateOptions{}, func(o api.Object) error {
		s := o.(*api.Service)
		s.Spec.Ports = s.Spec.Ports[:1]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "port two refusing connections", func() error { return refused(addr2) })
	if _, err := get(addr1); err != nil {
		t.Errorf("GET on port one after port two was removed: %v", err)
	}
	// A connection already made through port two is not cut.
	if name, err := kept.get(); err != nil || name != "a" {
		t.Errorf("request on a connection made through the removed port = %q, %v; want a", name, err)
	}
	if got, want := vips.calls(), []string{"add " + ip}; !slices.Equal(got, want) {
		t.Errorf("VIP calls with one port left = %q, want %q (the IP stays while a port uses it)", got, want)
	}

	// The service goes: port one closes and the cluster IP is released.
	if _, err := st.Delete(ctx, api.Services, "p", "web", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "port one refusing connections", func() error { return refused(addr1) })
	eventually(t, "the cluster IP released", func() error {
		if got, want := vips.calls(), []string{"add " + ip, "remove " + ip}; !slices.Equal(got, want) {
			return fmt.Errorf("VIP calls = %q, want %q", got, want)
		}
		return nil
	})
}

// refused is nil when a connection to addr is refused, that is when
// nothing listens there.
func refused(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("dial %s succeeded, want refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("dial %s: %v, want connection refused", addr, err)
	}
	return nil
}

func TestClusterIPOutsideRangeIsNotServed(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	vips := &recordingVIPs{}
	startProxy(t, proxy.Config{Store: st, VIPs: vips, ServiceCIDR: "127.0.100.0/22"})
	a := httpBackend(t, "a")
	outside := "127.0.50.7"
	create(t, ctx, st, api.Services, newService("rogue", outside, api.ServicePort{Name: "http", Port: freePort(t, outside, "tcp")}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "rogue"}, Subsets: httpSubsets(a)})
	// Keys are handled in order by one worker: once a service created
	// later is served, the rogue one has been handled.
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: httpSubsets(a)})
	waitServed(t, net.JoinHostPort(ip, itoa(port)))
	if got, want := vips.calls(), []string{"add " + ip}; !slices.Equal(got, want) {
		t.Errorf("VIP calls = %q, want %q: a cluster IP outside the range must not be made local", got, want)
	}
}

func TestStopClosesListenersAndConnections(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	p, err := proxy.New(proxy.Config{Store: st, VIPs: proxy.Loopback{}, ServiceCIDR: loopbackRange, Endpoints: proxy.AnyEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(runCtx); close(done) }()
	defer stop()
	a := httpBackend(t, "a")
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: httpSubsets(a)})
	addr := net.JoinHostPort(ip, itoa(port))
	waitServed(t, addr)
	kept := dialPersistent(t, addr)
	if _, err := kept.get(); err != nil {
		t.Fatal(err)
	}
	stop()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after its context ended")
	}
	if err := refused(addr); err != nil {
		t.Errorf("after Run returned: %v", err)
	}
	if name, err := kept.get(); err == nil {
		t.Errorf("request on a connection after Run returned = %q, want an error (the proxy closes what it relays)", name)
	}
}

func TestUDPEchoSessionsAndFailover(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	startProxy(t, proxy.Config{Store: st})
	x, y := newUDPBackend(t, "x"), newUDPBackend(t, "y")
	ip := clusterIP()
	port := freePort(t, ip, "udp")
	create(t, ctx, st, api.Services, newService("dns", ip, api.ServicePort{Name: "dns", Port: port, Protocol: "UDP"}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "dns"},
		Subsets: []api.EndpointSubset{subset("dns", x.port, "UDP"), subset("dns", y.port, "UDP")}})
	addr := net.JoinHostPort(ip, itoa(port))

	c1 := newUDPClient(t, addr)
	first := c1.askFrom(t, "hello")
	// A client's session sticks to one endpoint.
	for i := range 10 {
		reply, err := c1.ask(fmt.Sprintf("m%d", i))
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := first + fmt.Sprintf(":m%d", i); reply != want {
			t.Fatalf("reply %d = %q, want %q (same endpoint, payload echoed)", i, reply, want)
		}
	}
	// A second client gets the next endpoint.
	c2 := newUDPClient(t, addr)
	second := c2.askFrom(t, "hi")
	if second == first {
		t.Errorf("two clients both went to %q, want round robin across x and y", first)
	}
	// The first client's endpoint dies: its next datagram is refused by the
	// endpoint, the session ends, and a retry lands on the live one.
	dead := map[string]*udpBackend{"x": x, "y": y}[first]
	dead.conn.Close()
	if got := c1.askFrom(t, "again"); got != second {
		t.Errorf("after %s died, client one was answered by %q, want %q", first, got, second)
	}
	// The dead endpoint is remembered: a new client's very first datagram
	// goes to the live one, although round robin would pick the dead one
	// next for one of the two sessions started since.
	c3 := newUDPClient(t, addr)
	if reply, err := c3.ask("third"); err != nil || reply != second+":third" {
		t.Errorf("first datagram of a new client after %s died = %q, %v; want %q", first, reply, err, second+":third")
	}
}

func TestUDPSessionEndsWhenIdle(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	idle := 200 * time.Millisecond
	startProxy(t, proxy.Config{Store: st, UDPIdleTimeout: idle})
	x, y := newUDPBackend(t, "x"), newUDPBackend(t, "y")
	ip := clusterIP()
	port := freePort(t, ip, "udp")
	create(t, ctx, st, api.Services, newService("dns", ip, api.ServicePort{Name: "dns", Port: port, Protocol: "UDP"}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "dns"},
		Subsets: []api.EndpointSubset{subset("dns", x.port, "UDP"), subset("dns", y.port, "UDP")}})
	c := newUDPClient(t, net.JoinHostPort(ip, itoa(port)))
	first := c.askFrom(t, "hello")
	// After an idle pause the session is gone, and the new one goes to the
	// next endpoint.
	n := 0
	eventually(t, "a new session on the other endpoint after idling", func() error {
		time.Sleep(3 * idle)
		n++
		reply, err := c.ask(fmt.Sprintf("later%d", n))
		if err != nil {
			return err
		}
		if name := reply[:1]; name == first {
			return fmt.Errorf("still answered by %s", name)
		}
		return nil
	})
}

func TestNoEndpointsResetsConnections(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	startProxy(t, proxy.Config{Store: st})
	ip := clusterIP()
	port := freePort(t, ip, "tcp")
	create(t, ctx, st, api.Services, newService("web", ip, api.ServicePort{Name: "http", Port: port}))
	addr := net.JoinHostPort(ip, itoa(port))
	// The listener opens although nothing backs it; the client is reset.
	eventually(t, "a connection accepted and reset", func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("read = %v, want connection reset", err)
		}
		return nil
	})
}
