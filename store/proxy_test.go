package store_test

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// proxy is a TCP proxy in front of etcd that a test can cut and restore, to
// disconnect one client while others keep writing. Connections accepted
// while it is cut wait until it is restored.
type proxy struct {
	l      net.Listener
	target string
	done   chan struct{}

	mu    sync.Mutex
	open  bool
	gate  chan struct{} // closed on restore
	conns []net.Conn
}

func newProxy(t *testing.T, targetURL string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	p := &proxy{l: l, target: strings.TrimPrefix(targetURL, "http://"), done: make(chan struct{}), open: true, gate: make(chan struct{})}
	close(p.gate)
	go p.serve()
	t.Cleanup(func() {
		close(p.done)
		l.Close()
		p.mu.Lock()
		p.closeConns()
		p.mu.Unlock()
	})
	return p
}

func (p *proxy) URL() string { return "http://" + p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *proxy) handle(c net.Conn) {
	for {
		p.mu.Lock()
		if p.open {
			b, err := net.Dial("tcp", p.target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				return
			}
			p.conns = append(p.conns, c, b)
			p.mu.Unlock()
			go pipe(b, c)
			go pipe(c, b)
			return
		}
		gate := p.gate
		p.mu.Unlock()
		select {
		case <-gate:
		case <-p.done:
			c.Close()
			return
		}
	}
}

func pipe(dst, src net.Conn) {
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut drops every connection and holds new ones.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = false
	p.gate = make(chan struct{})
	p.closeConns()
}

// restore lets connections through again.
func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open = true
	close(p.gate)
}

func (p *proxy) closeConns() {
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
