package router

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// syncTransport sends plain HTTP/1.1 requests without a body (GET, HEAD,
// OPTIONS) to pods, writing the request and reading the response in the
// caller's goroutine over connections it keeps per endpoint. Everything
// else (bodies, upgrades, other methods) goes to fallback, the standard
// transport.
//
// The standard transport hands each request to a connection's writer
// goroutine and its response back from a reader goroutine: two goroutine
// switches and their channels per request, which cost the router more
// CPU than reading and writing the bytes. Fast L7 proxies skip them for
// this, by far the commonest, kind of request (Traefik's fasthttp
// proxy, HAProxy). What the standard transport does besides, this keeps:
// a request that fails on a kept connection before any answer is sent
// again on a new one (they are idempotent), a connection is kept only
// after its response was read to the end and neither side asked to
// close, 1xx answers before the response are skipped, and a request
// whose client went away stops waiting at once.
type syncTransport struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback    http.RoundTripper
	maxIdle     int           // per endpoint
	idleTimeout time.Duration // a kept connection idle longer is closed

	mu    sync.Mutex
	idle  map[string][]*keptConn // by endpoint address, newest last
	swept time.Time              // when idle was last cleared of expired connections
}

type keptConn struct {
	conn      net.Conn
	addr      string       // the endpoint it reaches
	limit     *headerLimit // under br: bounds what a response's header reads
	br        *bufio.Reader
	bw        *bufio.Writer // over ww
	ww        *waitWriter
	idleSince time.Time
}

func newSyncTransport(dial func(ctx context.Context, network, addr string) (net.Conn, error), fallback http.RoundTripper, maxIdle int, idleTimeout time.Duration) *syncTransport {
	return &syncTransport{dial: dial, fallback: fallback, maxIdle: maxIdle, idleTimeout: idleTimeout, idle: map[string][]*keptConn{}}
}

// fast says whether req takes the synchronous path.
func fast(req *http.Request) bool {
	if req.URL.Scheme != "http" || (req.Body != nil && req.Body != http.NoBody) || req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	// Upgrades (WebSockets) keep the standard transport, whose 101
	// response body is the connection.
	_, upgrade := req.Header["Upgrade"]
	return !upgrade
}

func (t *syncTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !fast(req) {
		return t.fallback.RoundTrip(req)
	}
	return t.do(req.Context(), nil, nil, req.URL.Host, req, func(w *bufio.Writer) error { return req.Write(w) })
}

// do sends a bodyless request to addr, written by write, and reads its
// response (req tells ReadResponse the method). ctx, if not nil, stops
// the wait when it ends and carries the pick for a dial's failover;
// without it, pk is the pick, and waiting, if not nil, is set to the
// connection used, for the caller to stop the wait (by taking it out
// of waiting and setting its deadline).
func (t *syncTransport) do(ctx context.Context, pk *pick, waiting *atomic.Pointer[keptConn], addr string, req *http.Request, write func(*bufio.Writer) error) (*http.Response, error) {
	kc, stop, err := t.exchange(ctx, pk, waiting, addr, write)
	if err != nil {
		return nil, err
	}
	return t.read(kc, req, stop)
}

// exchange writes a request on a kept or new connection to addr and
// waits for the first byte of the answer, which the caller reads from
// kc.br (at most maxResponseHeaderBytes of header) and ends with done.
// A kept connection that fails before that byte, one the pod closed
// while it sat idle, is replaced and the request sent again, unless the
// request was given up (ctx ended, or kc taken out of waiting).
func (t *syncTransport) exchange(ctx context.Context, pk *pick, waiting *atomic.Pointer[keptConn], addr string, write func(*bufio.Writer) error) (*keptConn, func() bool, error) {
	for {
		kc, kept, err := t.get(ctx, pk, addr)
		if err != nil {
			return nil, nil, err
		}
		if waiting != nil {
			waiting.Store(kc)
		}
		// A client gone away (or a route's request ending) stops the wait.
		stop := noStop
		if ctx != nil {
			stop = context.AfterFunc(ctx, func() { kc.conn.SetDeadline(time.Unix(1, 0)) })
		}
		err = write(kc.bw)
		if err == nil {
			kc.ww.armed = true
			err = kc.bw.Flush()
			kc.ww.armed = false
		}
		if err == nil {
			// A pod is a tenant's: what it may make the router read
			// before its response's body is bounded, as the standard
			// transport bounds it (MaxResponseHeaderBytes, at most 5
			// 1xx answers).
			kc.limit.n = maxResponseHeaderBytes
			_, err = kc.br.Peek(1)
		}
		if err == nil {
			return kc, stop, nil
		}
		stop()
		kc.conn.Close()
		if !kept || (ctx != nil && ctx.Err() != nil) || (waiting != nil && waiting.Load() != kc) {
			return nil, nil, err
		}
	}
}

// get takes a kept connection to addr, or dials one (with ctx, or with
// pk for the failover when ctx is nil).
func (t *syncTransport) get(ctx context.Context, pk *pick, addr string) (*keptConn, bool, error) {
	now := time.Now()
	t.mu.Lock()
	for conns := t.idle[addr]; len(conns) > 0; conns = t.idle[addr] {
		kc := conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[addr] = conns[:len(conns)-1]
		if now.Sub(kc.idleSince) < t.idleTimeout {
			t.mu.Unlock()
			return kc, true, nil
		}
		kc.conn.Close()
	}
	t.mu.Unlock()
	if ctx == nil {
		ctx = context.WithValue(context.Background(), pickKey{}, pk)
	}
	c, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	lim := &headerLimit{r: c, n: -1}
	ww := &waitWriter{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		ww.rc, _ = sc.SyscallConn()
	}
	return &keptConn{conn: c, addr: c.RemoteAddr().String(), limit: lim, br: bufio.NewReader(lim), bw: bufio.NewWriter(ww), ww: ww}, false, nil
}

// put keeps kc for the next request to its endpoint, under the address
// the request asked for (a failed-over dial's connection goes to another
// endpoint: it is kept under the address it really reaches).
func (t *syncTransport) put(kc *keptConn) {
	if kc.br.Buffered() > 0 {
		// The pod sent more than its answer: those bytes would be
		// read as the next request's answer (http.Transport closes
		// such a connection too).
		kc.conn.Close()
		return
	}
	addr := kc.addr
	now := time.Now()
	kc.idleSince = now
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.swept) > t.idleTimeout {
		t.sweep(now)
	}
	if len(t.idle[addr]) >= t.maxIdle {
		kc.conn.Close()
		return
	}
	t.idle[addr] = append(t.idle[addr], kc)
}

// sweep closes the connections idle for longer than idleTimeout, such as
// those to pods that are gone. t.mu is held.
func (t *syncTransport) sweep(now time.Time) {
	t.swept = now
	for addr, conns := range t.idle {
		keep := conns[:0]
		for _, kc := range conns {
			if now.Sub(kc.idleSince) < t.idleTimeout {
				keep = append(keep, kc)
			} else {
				kc.conn.Close()
			}
		}
		clear(conns[len(keep):])
		if len(keep) == 0 {
			delete(t.idle, addr)
		} else {
			t.idle[addr] = keep
		}
	}
}

// read reads the response to req on kc, after exchange.
func (t *syncTransport) read(kc *keptConn, req *http.Request, stop func() bool) (*http.Response, error) {
	for informational := 0; ; informational++ {
		resp, err := http.ReadResponse(kc.br, req)
		if err != nil {
			stop()
			kc.conn.Close()
			if kc.limit.n == 0 {
				err = fmt.Errorf("router: the pod's response header is over %d bytes", maxResponseHeaderBytes)
			}
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			if informational == 5 {
				stop()
				kc.conn.Close()
				return nil, errors.New("router: the pod sent more than 5 1xx answers")
			}
			continue // 1xx before the response
		}
		kc.limit.n = -1
		if resp.StatusCode == http.StatusSwitchingProtocols {
			stop()
			kc.conn.Close()
			return nil, errors.New("router: the pod switched protocols without being asked to")
		}
		keep := !resp.Close && resp.ProtoAtLeast(1, 1)
		if resp.Body == http.NoBody || resp.Body == nil {
			t.done(kc, stop, keep)
			return resp, nil
		}
		resp.Body = &keptBody{rc: resp.Body, done: func(eof bool) { t.done(kc, stop, keep && eof) }}
		return resp, nil
	}
}

// noStop is exchange's stop without a context: there is nothing to stop.
func noStop() bool { return true }

// done ends a request on kc: kept for the next if its response was read
// to the end, keep-alive, and the request was not cancelled meanwhile.
func (t *syncTransport) done(kc *keptConn, stop func() bool, keep bool) {
	if stop() && keep {
		t.put(kc)
		return
	}
	kc.conn.Close()
}

// waitWriter writes to a pod connection. Armed (for the write that ends
// a request), it also waits until the pod has answered something, with
// the runtime's poller, before it returns: reading at once would find
// nothing yet, one failed read system call per request. The write is
// made after the poller's wait is set up, so the answer's readiness is
// not missed; a spurious one costs only that failed read.
type waitWriter struct {
	c     net.Conn
	rc    syscall.RawConn // nil: not a socket
	armed bool
}

func (w *waitWriter) Write(p []byte) (int, error) {
	if !w.armed || w.rc == nil {
		return w.c.Write(p)
	}
	w.armed = false
	n, wrote := 0, false
	var werr error
	err := w.rc.Read(func(fd uintptr) bool {
		if wrote {
			return true // readable
		}
		wrote = true
		for n < len(p) {
			m, err := syscall.Write(int(fd), p[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			n += m
		}
		return false // wait until readable
	})
	switch {
	case werr == syscall.EAGAIN:
		// The socket's buffer is full: the rest the usual way, and
		// the next read finds out whether the pod answered.
		m, err := w.c.Write(p[n:])
		return n + m, err
	case werr != nil:
		return n, &net.OpError{Op: "write", Net: "tcp", Addr: w.c.RemoteAddr(), Err: os.NewSyscallError("write", werr)}
	case err != nil && n < len(p):
		return n, err
	}
	// A wait ended by a deadline or a close shows in the next read.
	return n, nil
}

// maxResponseHeaderBytes bounds a pod's response header (and the 1xx
// answers before it), as http.Transport's default does.
const maxResponseHeaderBytes = 1 << 20

// headerLimit reads from r at most n more bytes while n >= 0, then ends
// as io.EOF; n < 0 is no limit (a body, which the client reads as it
// comes).
type headerLimit struct {
	r io.Reader
	n int64
}

func (l *headerLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.r.Read(p)
	}
	if l.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// keptBody is a response body that returns its connection when read to
// the end, or closes it when closed before.
type keptBody struct {
	rc   io.ReadCloser
	done func(eof bool)
	once sync.Once
}

func (b *keptBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.once.Do(func() { b.done(true) })
	}
	return n, err
}

func (b *keptBody) Close() error {
	err := b.rc.Close()
	b.once.Do(func() { b.done(false) })
	return err
}
