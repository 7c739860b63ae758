package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"time"
)

// serveTCP accepts connections on ln until it is closed and relays each to
// an endpoint.
func (p *Proxy) serveTCP(ln net.Listener, lb *balancer) {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			slog.Warn("proxy: accept failed", "service", lb.name, "err", err, "retry", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		p.wg.Add(1)
		go p.relayTCP(c.(*net.TCPConn), lb)
	}
}

// relayTCP connects in to an endpoint and copies both ways until both
// directions end. Each direction is half-closed on EOF, so protocols that
// shut down their write side first keep working; an error in either
// direction closes both.
func (p *Proxy) relayTCP(in *net.TCPConn, lb *balancer) {
	defer p.wg.Done()
	conn, ep, err := lb.dial(withClient(p.ctx, in.RemoteAddr()), "tcp")
	if err != nil {
		// Reset rather than close cleanly: the client learns at once that
		// nothing answered, as it would from a refused connection.
		in.SetLinger(0)
		in.Close()
		if p.ctx.Err() == nil {
			slog.Warn("proxy: connection dropped", "service", lb.name, "client", in.RemoteAddr(), "err", err)
		}
		return
	}
	out := conn.(*net.TCPConn)
	if !p.track(in, out) {
		return
	}
	defer p.untrack(in, out)
	slog.Debug("proxy: connection", "service", lb.name, "client", in.RemoteAddr(), "endpoint", ep)
	done := make(chan struct{})
	go func() {
		copyHalf(out, in)
		close(done)
	}()
	copyHalf(in, out)
	<-done
	in.Close()
	out.Close()
}

// copyHalf copies src to dst. Between two TCP sockets io.Copy splices in
// the kernel, so the bytes never enter user space.
func copyHalf(dst, src *net.TCPConn) {
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		src.Close()
		return
	}
	dst.CloseWrite()
}
