package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) {
	setupTestNetns()
	os.Exit(storetest.Main(m))
}

// newStore returns a store isolated under a prefix unique to the test.
func newStore(t *testing.T) *store.Store { return storetest.New(t) }

// clusterIP hands each use its own loopback address, so tests never share
// a listener.
var lastIP atomic.Int32

func clusterIP() string {
	n := lastIP.Add(1)
	return fmt.Sprintf("127.0.%d.%d", 100+n/250, 1+n%250)
}

// loopbackRange is the service range of tests that serve from loopback.
const loopbackRange = "127.0.0.0/8"

// recordingVIPs is Loopback that remembers each call, in order.
type recordingVIPs struct {
	mu  sync.Mutex
	ops []string
}

func (r *recordingVIPs) Add(ip string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, "add "+ip)
	return proxy.Loopback{}.Add(ip)
}

func (r *recordingVIPs) Remove(ip string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, "remove "+ip)
	return proxy.Loopback{}.Remove(ip)
}

func (r *recordingVIPs) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// startProxy runs a proxy over st until the test ends, serving the
// loopback range and dialing any endpoint unless cfg says otherwise. The cleanup fails the test if
// Run does not return once stopped.
func startProxy(t *testing.T, cfg proxy.Config) {
	t.Helper()
	if cfg.VIPs == nil {
		cfg.VIPs = proxy.Loopback{}
	}
	if cfg.ServiceCIDR == "" {
		cfg.ServiceCIDR = loopbackRange
	}
	if cfg.Endpoints == nil {
		cfg.Endpoints = proxy.AnyEndpoint // the backends listen on loopback
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatalf("proxy.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		p.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("proxy.Run did not return 30s after its context ended")
		}
	})
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually retries fn until it succeeds; after 30s it fails the test
// with fn's last error. It waits for a condition, it does not time one.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 30s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePort returns a port free on ip for proto ("tcp" or "udp").
func freePort(t *testing.T, ip, proto string) int32 {
	t.Helper()
	var port int
	if proto == "udp" {
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port = c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
	} else {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	return int32(port)
}

// backend is an HTTP server on 127.0.0.1 that answers with its name.
type backend struct {
	name string
	srv  *httptest.Server
	port int32
}

func httpBackend(t *testing.T, name string) *backend {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	return &backend{name: name, srv: srv, port: int32(srv.Listener.Addr().(*net.TCPAddr).Port)}
}

// kill stops the backend: its port refuses connections from now on.
func (b *backend) kill() { b.srv.Close() }

// subset is one endpoint address on port, the way an endpoints controller
// writes a ready pod.
func subset(portName string, port int32, protocol string) api.EndpointSubset {
	return api.EndpointSubset{
		Addresses: []api.EndpointAddress{{IP: "127.0.0.1"}},
		Ports:     []api.ServicePort{{Name: portName, Port: port, Protocol: protocol}},
	}
}

func httpSubsets(bs ...*backend) []api.EndpointSubset {
	var out []api.EndpointSubset
	for _, b := range bs {
		out = append(out, subset("http", b.port, ""))
	}
	return out
}

func newService(name, ip string, ports ...api.ServicePort) *api.Service {
	return &api.Service{
		ObjectMeta: api.ObjectMeta{Namespace: "p", Name: name},
		Spec:       api.ServiceSpec{Selector: map[string]string{"app": name}, ClusterIP: ip, Ports: ports},
	}
}

func create(t *testing.T, ctx context.Context, st *store.Store, r *api.Resource, o api.Object) {
	t.Helper()
	if err := st.Create(ctx, r, o); err != nil {
		t.Fatalf("Create(%s %q) = %v, want nil", r.Kind, o.GetObjectMeta().Name, err)
	}
}

func setEndpoints(t *testing.T, ctx context.Context, st *store.Store, name string, subsets []api.EndpointSubset) {
	t.Helper()
	_, err := st.GuaranteedUpdate(ctx, api.EndpointsResource, "p", name, store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.Endpoints).Subsets = subsets
		return nil
	})
	if err != nil {
		t.Fatalf("update endpoints %q: %v", name, err)
	}
}

// newConnClient opens a new connection for every request.
var newConnClient = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

func get(addr string) (string, error) {
	resp, err := newConnClient.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", addr, resp.Status)
	}
	return string(body), nil
}

// waitServed waits until a request through addr is answered.
func waitServed(t *testing.T, addr string) {
	t.Helper()
	eventually(t, "GET through "+addr, func() error { _, err := get(addr); return err })
}

// persistentConn is one HTTP/1.1 connection kept open across requests.
type persistentConn struct {
	c  net.Conn
	br *bufio.Reader
}

func dialPersistent(t *testing.T, addr string) *persistentConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &persistentConn{c: c, br: bufio.NewReader(c)}
}

func (p *persistentConn) get() (string, error) {
	p.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(p.c, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// udpBackend echoes each datagram prefixed with its name and ":".
type udpBackend struct {
	name string
	conn *net.UDPConn
	port int32
}

func newUDPBackend(t *testing.T, name string) *udpBackend {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
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
	return &udpBackend{name: name, conn: c, port: int32(c.LocalAddr().(*net.UDPAddr).Port)}
}

// udpClient is one client address talking to a service.
type udpClient struct{ c *net.UDPConn }

func newUDPClient(t *testing.T, addr string) *udpClient {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", nil, ua)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpClient{c: c}
}

// ask sends msg and returns the reply, or an error when none came within
// half a second (UDP: the caller retries).
func (u *udpClient) ask(msg string) (string, error) {
	if _, err := u.c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 65535)
	for {
		u.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := u.c.Read(buf)
		if err != nil {
			return "", err
		}
		reply := string(buf[:n])
		// A late reply to an earlier, retried datagram is skipped.
		if strings.HasSuffix(reply, ":"+msg) {
			return reply, nil
		}
	}
}

// askFrom asks until a reply comes, and returns the name of the backend
// that answered.
func (u *udpClient) askFrom(t *testing.T, msg string) string {
	t.Helper()
	var reply string
	eventually(t, "UDP reply to "+msg, func() error {
		var err error
		reply, err = u.ask(msg)
		return err
	})
	name, _, _ := strings.Cut(reply, ":")
	return name
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
