package proxy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// pod is a network namespace joined to the test's "node" namespace by a
// veth pair, as a container on a bridge is: 10.98.0.2/24, default route
// via the node's 10.98.0.1. Its traffic meets the node's prerouting and
// forward hooks, not output.
type pod struct {
	ns netns.NsHandle
	ip string
}

func newPod(t *testing.T) *pod {
	t.Helper()
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	addLink(t, &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vpod0"}, PeerName: "vpod1"}, "10.98.0.1/24")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	node, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	ns, err := netns.New() // and this thread is in it
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Set(node)
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(node)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	peer, err := h.LinkByName("vpod1")
	if err == nil {
		err = h.LinkSetNsFd(peer, int(ns))
	}
	if err != nil {
		t.Fatalf("move vpod1 into the pod: %v", err)
	}
	for _, name := range []string{"lo", "vpod1"} {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("pod: %s up: %v", name, err)
		}
	}
	l, _ := netlink.LinkByName("vpod1")
	addr, _ := netlink.ParseAddr("10.98.0.2/24")
	if err := netlink.AddrAdd(l, addr); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.98.0.1")}); err != nil {
		t.Fatal(err)
	}
	return &pod{ns: ns, ip: "10.98.0.2"}
}

// in runs fn on a thread in the pod's namespace: sockets fn opens belong
// to the pod for their whole life.
func (p *pod) in(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	node, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if err := netns.Set(p.ns); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(node); err != nil {
			panic(err) // the thread would serve other goroutines in the pod
		}
	}()
	fn()
}

// podGet is get from inside the pod: one new connection.
func (p *pod) get(t *testing.T, addr string) (string, error) {
	var c net.Conn
	var err error
	p.in(t, func() { c, err = net.DialTimeout("tcp", addr, 10*time.Second) })
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: svc\r\n\r\n")
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, _ := cutHTTP(string(b))
	return body, nil
}

func cutHTTP(resp string) (head, body string, ok bool) {
	for i := 0; i+4 <= len(resp); i++ {
		if resp[i:i+4] == "\r\n\r\n" {
			return resp[:i], resp[i+4:], true
		}
	}
	return resp, "", false
}

// C6: a pod reaches a service through the node's prerouting hook, is
// refused at once by a service without endpoints, and reaches itself
// through its own service (hairpin): the connection is masqueraded, so
// the pod sees it come from the node, not from itself.
func TestNFTablesServesPods(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	ctx, st := testContext(t), newStore(t)
	nftNode(t, ctx, st)
	pd := newPod(t)
	podHTTP(t, "a", podA, 8080)
	createService(t, ctx, st, "web", "10.43.0.60", 80, "TCP", podSubset(8080, "TCP", podA))
	createService(t, ctx, st, "empty", "10.43.0.61", 80, "TCP", nil)
	// The pod serves too, and says who called.
	var ln net.Listener
	pd.in(t, func() {
		var err error
		ln, err = net.Listen("tcp", pd.ip+":8080")
		if err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\n\r\nfrom %s", host)
			c.Close()
		}
	}()
	createService(t, ctx, st, "self", "10.43.0.62", 80, "TCP", podSubset(8080, "TCP", pd.ip))

	eventually(t, "the pod reaches web through 10.43.0.60:80", func() error {
		body, err := pd.get(t, "10.43.0.60:80")
		if err == nil && body != "a" {
			err = fmt.Errorf("answer %q, want a", body)
		}
		return err
	})
	eventually(t, "the pod refused at once by a service without endpoints", func() error {
		_, err := pd.get(t, "10.43.0.61:80")
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial: %v, want ECONNREFUSED", err)
		}
		return nil
	})
	eventually(t, "the pod reaches itself through its service", func() error {
		body, err := pd.get(t, "10.43.0.62:80")
		if err == nil && body != "from 10.98.0.1" {
			err = fmt.Errorf("answer %q, want %q (masqueraded to the node's address)", body, "from 10.98.0.1")
		}
		return err
	})
}
