package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
)

// TestAccessIsAskedPerClient: Config.Access sees the client's address (not
// the proxy's), the endpoint it would dial and the protocol; a client it
// refuses is reset over TCP and gets no UDP reply, while another client
// of the same service is served.
func TestAccessIsAskedPerClient(t *testing.T) {
	ctx, st := testContext(t), newStore(t)
	denied := netip.MustParseAddr("127.0.0.77")
	var mu sync.Mutex
	var asked []string
	startProxy(t, proxy.Config{Store: st, Access: func(client netip.Addr, ep netip.AddrPort, proto string) error {
		mu.Lock()
		asked = append(asked, fmt.Sprintf("%s %s %s", client, ep, proto))
		mu.Unlock()
		if client == denied {
			return errors.New("not this client")
		}
		return nil
	}})
	web, echo := httpBackend(t, "web"), newUDPBackend(t, "echo")
	ip := clusterIP()
	port, uport := freePort(t, ip, "tcp"), freePort(t, ip, "udp")
	create(t, ctx, st, api.Services, newService("web", ip,
		api.ServicePort{Name: "http", Port: port}, api.ServicePort{Name: "dns", Port: uport, Protocol: "UDP"}))
	create(t, ctx, st, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "web"}, Subsets: []api.EndpointSubset{
		subset("http", web.port, ""), subset("dns", echo.port, "UDP"),
	}})
	addr := net.JoinHostPort(ip, itoa(port))
	from := func(src string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: d.DialContext}}
	}
	getFrom := func(src string) (string, error) {
		resp, err := from(src).Get("http://" + addr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	eventually(t, "GET from an allowed client", func() error { _, err := getFrom("127.0.0.78"); return err })
	if body, err := getFrom(denied.String()); err == nil {
		t.Fatalf("GET from %s, which Access refuses = %q, want the connection reset", denied, body)
	}
	mu.Lock()
	wantTCP := fmt.Sprintf("%s 127.0.0.1:%d TCP", denied, web.port)
	found := false
	for _, a := range asked {
		found = found || a == wantTCP
	}
	mu.Unlock()
	if !found {
		t.Errorf("Access was asked %q, want among them %q", asked, wantTCP)
	}

	// UDP: a refused client's datagrams are not relayed.
	ua, _ := net.ResolveUDPAddr("udp", net.JoinHostPort(ip, itoa(uport)))
	allowed, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.78")}, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Close()
	(&udpClient{c: allowed}).askFrom(t, "hello")
	refusedConn, err := net.DialUDP("udp", &net.UDPAddr{IP: denied.AsSlice()}, ua)
	if err != nil {
		t.Fatal(err)
	}
	defer refusedConn.Close()
	for range 3 {
		if reply, err := (&udpClient{c: refusedConn}).ask("hello"); err == nil {
			t.Fatalf("a UDP client Access refuses got a reply: %q", reply)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	wantUDP := fmt.Sprintf("%s 127.0.0.1:%d UDP", denied, echo.port)
	for _, a := range asked {
		if a == wantUDP {
			return
		}
	}
	t.Errorf("Access was asked %q, want among them %q", asked, wantUDP)
}
