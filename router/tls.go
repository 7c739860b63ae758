package router

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"time"
)

// serveTLS accepts TLS connections, reads each ClientHello's SNI, and
// either splices the connection to a passthrough route's pod or
// terminates TLS and hands the connection to the HTTPS server (through
// out).
func (r *Router) serveTLS(ctx context.Context, ln net.Listener, out *connListener) {
	defer out.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	acceptEach(ctx, ln, func(c net.Conn) { wg.Go(func() { r.handleTLS(ctx, c, out) }) })
}

// acceptEach passes each connection ln accepts to handle until ctx ends
// or ln is closed; a failed accept is logged and tried again.
func acceptEach(ctx context.Context, ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			slog.Warn("router: accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		handle(c)
	}
}

func (r *Router) handleTLS(ctx context.Context, c net.Conn, out *connListener) {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	sni, hello, err := peekSNI(c)
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	pc := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(hello), c)}
	t := r.table.Load()
	if h := t.hosts[strings.ToLower(sni)]; h != nil && h.passthrough != nil {
		r.splice(ctx, pc, h.passthrough)
		return
	}
	tc := tls.Server(pc, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if h := t.hosts[strings.ToLower(hi.ServerName)]; h != nil && h.cert != nil {
				return h.cert, nil
			}
			return r.cfg.DefaultCertificate, nil
		},
	})
	if !out.put(tc) {
		c.Close()
	}
}

// splice relays a passthrough connection to one of the route's pods.
func (r *Router) splice(ctx context.Context, c net.Conn, rt *route) {
	defer c.Close()
	pk := rt.pick()
	if pk.b == nil {
		r.metrics.passthrough(rt.key, "no-endpoints")
		return
	}
	up, err := r.dial(context.WithValue(ctx, pickKey{}, &pk), "tcp", pk.addr())
	if err != nil {
		r.metrics.passthrough(rt.key, "dial-failed")
		slog.Debug("router: passthrough dial", "route", rt.key, "err", err)
		return
	}
	defer up.Close()
	r.metrics.passthrough(rt.key, "spliced")
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	select {
	case <-done:
		<-done
	case <-ctx.Done():
	}
}

// errHelloRead stops the handshake peekSNI runs once it has the hello.
var errHelloRead = errors.New("router: client hello read")

// peekSNI reads a TLS ClientHello from c and returns its server name and
// the bytes read, to be replayed.
func peekSNI(c net.Conn) (string, []byte, error) {
	var buf bytes.Buffer
	sni := ""
	got := false
	err := tls.Server(readOnlyConn{r: io.TeeReader(c, &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni, got = h.ServerName, true
			return nil, errHelloRead
		},
	}).Handshake()
	if !got {
		return "", nil, err
	}
	return sni, buf.Bytes(), nil
}

// readOnlyConn lets a tls.Server read a hello and write nothing.
type readOnlyConn struct {
	net.Conn
	r io.Reader
}

func (c readOnlyConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (readOnlyConn) Write(p []byte) (int, error)      { return 0, io.ErrClosedPipe }
func (readOnlyConn) Close() error                     { return nil }
func (readOnlyConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (readOnlyConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (readOnlyConn) SetDeadline(time.Time) error      { return nil }
func (readOnlyConn) SetReadDeadline(time.Time) error  { return nil }
func (readOnlyConn) SetWriteDeadline(time.Time) error { return nil }
func (c *prefixConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// prefixConn replays the peeked hello before the rest of the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

// connListener is a net.Listener fed with connections by serveTLS.
type connListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *connListener) put(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }

// selfSigned makes the router's default certificate: clients that reach a
// name without a certificate of its own see that it is not theirs.
func selfSigned() (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "slipway router default certificate"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
