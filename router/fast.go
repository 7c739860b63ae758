package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/net/http/httpguts"
)

// The plain HTTP side serves the commonest request, a bodyless GET,
// HEAD or OPTIONS over HTTP/1.1 to a plain route, itself: it reads the
// request from the connection's buffer, writes it to a kept pod
// connection (syncTransport) and the answer back, in the connection's
// goroutine. net/http's server costs about as much CPU per request as
// the two sockets' system calls (a goroutine that watches for the client
// going away during each request, per-request header maps, contexts and
// response writer), where HAProxy costs little more than the system
// calls. Anything else hands the connection, with what was read of it,
// to the net/http server for good: bodies, upgrades (WebSockets),
// HTTP/1.0, a header not read whole in one read, routes with TLS
// settings, no route, no endpoints, percent-encoded paths, and any
// header the fast path does not know it may pass on (Expect, TE,
// Trailer, Proxy-*, a Connection naming other headers).
//
// The fast path forwards what net/http and ReverseProxy (with Rewrite and
// SetXForwarded) would: hop-by-hop headers removed both ways,
// X-Forwarded-For, -Host and -Proto set and the client's own Forwarded
// and X-Forwarded-* dropped, header names and values checked as net/http checks
// them (a bad one goes to net/http, which refuses it). A client that
// goes away while its pod has not answered stops the wait within about a
// second (servePlain looks), not at once as with net/http's server.

// fastHeaderMax is the most of a request header the fast path reads;
// longer ones go to net/http (MaxHeaderBytes 1 MiB).
const fastHeaderMax = 8 << 10

// idleTimeout closes a client connection with no request for this long
// (as http.Server.IdleTimeout).
const idleTimeout = 90 * time.Second

// headerTimeout is how long a new connection has to send its first
// request's header (the net/http side's ReadHeaderTimeout).
const headerTimeout = 30 * time.Second

var (
	getReq  = &http.Request{Method: http.MethodGet}
	headReq = &http.Request{Method: http.MethodHead}
)

// servePlain accepts plain HTTP connections and serves each with
// serveFast; out is the net/http server's listener for the hand-offs.
// Every second it looks at the connections that have waited for a pod's
// answer for over a second: one whose client went away stops the wait
// (as net/http's server cancels such a request). When ctx ends it closes
// the connections and stops their waits.
func (r *Router) servePlain(ctx context.Context, ln net.Listener, out *connListener) {
	defer out.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	var mu sync.Mutex
	conns := map[*plainConn]struct{}{}
	sweep := func(stop bool) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now().UnixNano()
		for pc := range conns {
			if stop {
				pc.c.Close()
			}
			// Taking kc out of waiting tells do not to send again.
			if kc := pc.waiting.Load(); kc != nil && (stop || now-pc.since.Load() > int64(time.Second) && clientGone(pc.c)) && pc.waiting.CompareAndSwap(kc, nil) {
				_ = kc.conn.SetDeadline(time.Unix(1, 0))
			}
		}
		if stop {
			conns = nil
		}
	}
	defer sweep(true)
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				sweep(false)
			}
		}
	})
	acceptEach(ctx, ln, func(c net.Conn) {
		pc := &plainConn{c: c}
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return
		}
		conns[pc] = struct{}{}
		wg.Go(func() {
			r.serveFast(pc, out)
			mu.Lock()
			delete(conns, pc)
			mu.Unlock()
		})
	})
}

// plainConn is a client connection of the plain side.
type plainConn struct {
	c       net.Conn
	waiting atomic.Pointer[keptConn] // the pod connection whose answer it waits for
	since   atomic.Int64             // when that request began, Unix ns
}

// clientGone says whether the client closed c or reset it, without
// reading from it (a peek that does not wait).
func clientGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = (n == 0 && err == nil) || (err != nil && err != syscall.EAGAIN && err != syscall.EINTR)
	})
	return gone || err != nil
}

// fastReq is one parsed request header, pointing into the read buffer.
type fastReq struct {
	head     []byte // the request line and header, through the blank line
	line     []byte // request line without CRLF
	method   string
	path     string // the target's path (before '?')
	host     []byte // Host header value
	fwd      [][]byte
	close    bool // Connection: close
	clientIP string
}

// serveFast serves c's requests while they suit the fast path, then
// hands c to the net/http server or closes it.
func (r *Router) serveFast(pc *plainConn, out *connListener) {
	c := pc.c
	st := fastStates.Get().(*fastState)
	defer fastStates.Put(st)
	br, bw, req := st.br, st.bw, &st.req
	br.Reset(c)
	bw.Reset(c)
	defer br.Reset(nil)
	defer bw.Reset(nil)
	req.clientIP = ""
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		req.clientIP = ta.IP.String()
	}
	var deadline time.Time
	for first := true; ; first = false {
		// A new connection has headerTimeout for its first request, as
		// the net/http side's ReadHeaderTimeout gives it (a client that
		// connects and sends nothing is not kept for idleTimeout). An
		// idle client is closed after idleTimeout; the deadline moves at
		// most every few seconds, not per request.
		if first {
			_ = c.SetReadDeadline(time.Now().Add(headerTimeout))
		} else if now := time.Now(); deadline.Sub(now) < idleTimeout-5*time.Second {
			deadline = now.Add(idleTimeout)
			_ = c.SetReadDeadline(deadline)
		}
		if _, err := br.Peek(1); err != nil {
			c.Close()
			return
		}
		buf, _ := br.Peek(br.Buffered())
		end := bytes.Index(buf, []byte("\r\n\r\n"))
		var rt *route
		if end >= 0 && req.parse(buf[:end+4]) {
			rt = r.fastRoute(req)
		}
		if rt == nil {
			r.handOff(c, br, out)
			return
		}
		keep := r.proxyFast(pc, bw, req, rt)
		br.Discard(end + 4)
		if !keep {
			c.Close()
			return
		}
	}
}

// fastState is a connection's buffers and request, kept for the next
// connection when it ends (as net/http pools its bufio readers and
// writers).
type fastState struct {
	br  *bufio.Reader
	bw  *bufio.Writer
	req fastReq
}

var fastStates = sync.Pool{New: func() any {
	return &fastState{br: bufio.NewReaderSize(nil, fastHeaderMax), bw: bufio.NewWriterSize(nil, 8<<10), req: fastReq{fwd: make([][]byte, 0, 16)}}
}}

// handOff gives c, with what br holds of it, to the net/http server.
func (r *Router) handOff(c net.Conn, br *bufio.Reader, out *connListener) {
	_ = c.SetReadDeadline(time.Time{})
	buffered, _ := br.Peek(br.Buffered())
	pc := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(bytes.Clone(buffered)), c)}
	if !out.put(pc) {
		c.Close()
	}
}

// fastRoute is the route for req if the fast path may serve it: a plain
// route (no TLS settings) with endpoints.
func (r *Router) fastRoute(req *fastReq) *route {
	host := req.host
	if i := bytes.LastIndexByte(host, ':'); i >= 0 && bytes.IndexByte(host, ']') < i {
		host = host[:i]
	}
	if bytes.IndexByte(host, '[') >= 0 {
		return nil // IPv6 literals: the standard way
	}
	var lower [256]byte
	if len(host) > len(lower) {
		return nil
	}
	for i, b := range host {
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		lower[i] = b
	}
	rt := r.table.Load().match(string(lower[:len(host)]), req.path)
	if rt == nil || rt.tls != nil || rt.total <= 0 {
		return nil
	}
	return rt
}

// parse reads head (the request line and header through the blank line)
// into req; false if the fast path does not take it.
func (req *fastReq) parse(head []byte) bool {
	req.head = head
	req.host, req.fwd, req.close = nil, req.fwd[:0], false
	i := bytes.Index(head, []byte("\r\n"))
	req.line = head[:i]
	rest := head[i+2 : len(head)-2] // header lines, each ending in CRLF
	m, after, ok := bytes.Cut(req.line, []byte(" "))
	if !ok {
		return false
	}
	switch string(m) {
	case http.MethodGet:
		req.method = http.MethodGet
	case http.MethodHead:
		req.method = http.MethodHead
	case http.MethodOptions:
		req.method = http.MethodOptions
	default:
		return false
	}
	target, proto, ok := bytes.Cut(after, []byte(" "))
	if !ok || string(proto) != "HTTP/1.1" || len(target) == 0 || target[0] != '/' {
		return false
	}
	for _, b := range target {
		if b <= ' ' || b >= 0x7f || b == '%' || b == '#' {
			return false
		}
	}
	path := target
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	req.path = unsafeString(path)
	sawHost := false // req.host alone cannot say: bytes.Trim makes an empty value nil
	for len(rest) > 0 {
		i := bytes.Index(rest, []byte("\r\n"))
		line := rest[:i]
		rest = rest[i+2:]
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			return false // obsolete line folding
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !httpguts.ValidHeaderFieldName(unsafeString(name)) {
			return false
		}
		value = bytes.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(unsafeString(value)) {
			return false
		}
		switch lowerName(name) {
		case "host":
			if sawHost || !httpguts.ValidHostHeader(unsafeString(value)) {
				return false // net/http refuses a second Host line, even after an empty one
			}
			sawHost, req.host = true, value
		case "connection":
			for tok := range strings.SplitSeq(unsafeString(value), ",") {
				switch strings.ToLower(strings.TrimSpace(tok)) {
				case "close":
					req.close = true
				case "keep-alive", "":
				default:
					return false // it names other headers to drop
				}
			}
		case "keep-alive", "proxy-connection", "forwarded", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-for":
			// hop-by-hop, or set by the router: the pod gets the client's
			// address alone, as the net/http side's SetXForwarded sends
			// it (a client's own X-Forwarded-For would let it choose the
			// first address a pod's allow-list or log reads)
		case "content-length", "transfer-encoding", "upgrade", "expect", "te", "trailer",
			"proxy-authenticate", "proxy-authorization", "http2-settings":
			return false
		default:
			req.fwd = append(req.fwd, line)
		}
	}
	return len(req.host) > 0
}

// lowerName is name in lower case if it is one parse looks for, else "".
func lowerName(name []byte) string {
	var b [32]byte
	if len(name) > len(b) {
		return ""
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return knownHeaders[string(b[:len(name)])]
}

var knownHeaders = map[string]string{}

func init() {
	for _, h := range []string{"host", "connection", "keep-alive", "proxy-connection", "forwarded", "x-forwarded-host",
		"x-forwarded-proto", "x-forwarded-for", "content-length", "transfer-encoding", "upgrade",
		"expect", "te", "trailer", "proxy-authenticate", "proxy-authorization", "http2-settings"} {
		knownHeaders[h] = h
	}
}

// unsafeString is b as a string without a copy; b must not change while
// the string is used.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// writeTo writes the request for the pod: the client's request line and
// headers less the hop-by-hop ones, and X-Forwarded-*.
func (req *fastReq) writeTo(w *bufio.Writer) error {
	w.Write(req.line)
	w.WriteString("\r\nHost: ")
	w.Write(req.host)
	w.WriteString("\r\n")
	for _, l := range req.fwd {
		w.Write(l)
		w.WriteString("\r\n")
	}
	w.WriteString("X-Forwarded-For: ")
	w.WriteString(req.clientIP)
	w.WriteString("\r\nX-Forwarded-Host: ")
	w.Write(req.host)
	_, err := w.WriteString("\r\nX-Forwarded-Proto: http\r\n\r\n")
	return err
}

// proxyFast sends req to one of rt's endpoints and its answer to the
// client through bw; false if the client connection is to be closed.
func (r *Router) proxyFast(pc *plainConn, bw *bufio.Writer, req *fastReq, rt *route) bool {
	start := time.Now()
	pc.since.Store(start.UnixNano())
	defer pc.waiting.Store(nil)
	pk := rt.pick()
	st, ok := rt.transport.(*syncTransport)
	if !ok || pk.b == nil {
		// Not a plain route after all (the table changed under it).
		return r.fastError(bw, req, rt, start, http.StatusServiceUnavailable, "Application is not available: route "+rt.key+" has no ready endpoints.")
	}
	kc, _, err := st.exchange(nil, &pk, &pc.waiting, pk.addr(), req.writeTo)
	if err == nil {
		// Taking kc out of waiting before it goes back to the idle pool
		// keeps the sweep for gone clients off it once another request
		// may use it; if the sweep took it first, it set kc's deadline
		// in the past, and done closes kc instead of keeping it.
		release := func() bool { return pc.waiting.CompareAndSwap(kc, nil) }
		// The commonest answer, a header read whole with a length,
		// goes from the pod's buffer as it is; anything else through
		// http.ReadResponse.
		if code, keep, ok, err := relayLength(bw, kc, req); ok {
			st.done(kc, release, err == nil && keep)
			r.metrics.observeRoute(rt, code, time.Since(start))
			return err == nil && !req.close
		}
		rr := getReq
		if req.method == http.MethodHead {
			rr = headReq
		}
		var resp *http.Response
		if resp, err = st.read(kc, rr, release); err == nil {
			keep, err := writeResponse(bw, resp, req)
			r.metrics.observeRoute(rt, resp.StatusCode, time.Since(start))
			if err != nil {
				resp.Body.Close()
				return false
			}
			return keep && !req.close
		}
	}
	slog.Debug("router: backend failed", "route", rt.key, "err", err)
	return r.fastError(bw, req, rt, start, http.StatusBadGateway, "The application is not answering: "+err.Error())
}

// relayLength passes on the pod's answer on kc if its header is already
// in kc's buffer and it is a final answer over HTTP/1.1 framed by
// Content-Length (or bodyless), with only headers it knows to pass on
// or drop; ok false (nothing read or written) otherwise. The header
// lines go as the pod wrote them, less the hop-by-hop ones, and the body
// as it comes. keep says whether kc may serve another request.
func relayLength(bw *bufio.Writer, kc *keptConn, req *fastReq) (code int, keep, ok bool, err error) {
	buf, _ := kc.br.Peek(kc.br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return 0, false, false, nil
	}
	i := bytes.Index(buf, []byte("\r\n"))
	status, head := buf[:i], buf[i+2:end+2]
	if len(status) < 12 || string(status[:9]) != "HTTP/1.1 " || (len(status) > 12 && status[12] != ' ') {
		return 0, false, false, nil
	}
	for _, d := range status[9:12] {
		if d < '0' || d > '9' {
			return 0, false, false, nil
		}
		code = code*10 + int(d-'0')
	}
	if code < 200 {
		return 0, false, false, nil // 1xx and 101: read's checks
	}
	for _, b := range status[12:] {
		if b < ' ' && b != '\t' || b == 0x7f {
			return 0, false, false, nil
		}
	}
	// Check every line before writing any.
	length, podClose := int64(-1), false
	for rest := head; len(rest) > 0; {
		i := bytes.Index(rest, []byte("\r\n"))
		line := rest[:i]
		rest = rest[i+2:]
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			return 0, false, false, nil // obsolete line folding
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		value = bytes.Trim(value, " \t")
		if !found || !httpguts.ValidHeaderFieldName(unsafeString(name)) || !httpguts.ValidHeaderFieldValue(unsafeString(value)) {
			return 0, false, false, nil
		}
		switch lowerName(name) {
		case "content-length":
			n, perr := strconv.ParseUint(unsafeString(value), 10, 63)
			if length >= 0 || perr != nil {
				return 0, false, false, nil
			}
			length = int64(n)
		case "connection":
			for tok := range strings.SplitSeq(unsafeString(value), ",") {
				switch strings.ToLower(strings.TrimSpace(tok)) {
				case "close":
					podClose = true
				case "keep-alive", "":
				default:
					return 0, false, false, nil // it names headers to drop
				}
			}
		case "transfer-encoding":
			return 0, false, false, nil
		case "content-type":
			if bytes.HasPrefix(value, []byte("text/event-stream")) {
				return 0, false, false, nil // a stream, flushed as it comes
			}
		}
	}
	noBody := req.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if length < 0 && !noBody {
		return 0, false, false, nil // ended by the pod's close
	}
	bw.Write(status)
	if len(status) == 12 {
		bw.WriteString(" ") // no reason phrase: the space stays
	}
	bw.WriteString("\r\n")
	for rest := head; len(rest) > 0; {
		i := bytes.Index(rest, []byte("\r\n"))
		line := rest[:i+2]
		rest = rest[i+2:]
		switch lowerName(line[:bytes.IndexByte(line, ':')]) {
		case "content-length", "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
			"proxy-authorization", "te", "trailer", "upgrade":
		default:
			bw.Write(line)
		}
	}
	// net/http's server drops a 204's and a 304's length; a HEAD's is
	// the GET's.
	if length >= 0 && (!noBody || req.method == http.MethodHead) && code != http.StatusNoContent && code != http.StatusNotModified {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(length, 10))
		bw.WriteString("\r\n")
	}
	if req.close {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	kc.br.Discard(end + 4)
	kc.limit.n = -1
	if !noBody && length > 0 {
		if int64(kc.br.Buffered()) >= length {
			b, _ := kc.br.Peek(int(length))
			bw.Write(b)
			kc.br.Discard(int(length))
		} else {
			buf := copyBufferPool.Get().(*[]byte)
			body := &io.LimitedReader{R: kc.br, N: length}
			err = copyBody(bw, bw, body, *buf, false)
			copyBufferPool.Put(buf)
			if err == nil && body.N > 0 {
				// The pod closed before the end: the client gets what
				// there was, then its connection closes.
				err = io.ErrUnexpectedEOF
				bw.Flush()
			}
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	return code, !podClose && err == nil, true, err
}

// fastError answers as http.Error does.
func (r *Router) fastError(bw *bufio.Writer, req *fastReq, rt *route, start time.Time, code int, msg string) bool {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteString(" ")
	bw.WriteString(http.StatusText(code))
	bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(msg) + 1))
	if req.close {
		bw.WriteString("\r\nConnection: close")
	}
	bw.WriteString("\r\n\r\n")
	if req.method != http.MethodHead {
		bw.WriteString(msg)
		bw.WriteString("\n")
	}
	err := bw.Flush()
	r.metrics.observeRoute(rt, code, time.Since(start))
	return err == nil && !req.close
}

// hopByHop are the response headers not passed on (as ReverseProxy);
// the body's framing is the router's own.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true,
}

// writeResponse writes resp to the client and reads its body to the end
// (which gives its pod connection back); false if the client connection
// is to be closed.
func writeResponse(bw *bufio.Writer, resp *http.Response, req *fastReq) (bool, error) {
	bw.WriteString("HTTP/1.1 ")
	if strings.ContainsFunc(resp.Status, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) {
		// http.ReadResponse keeps a bare CR in the reason phrase; a
		// client or proxy that ends lines at one would read what
		// follows as a header: the phrase is the router's own then.
		bw.WriteString(strconv.Itoa(resp.StatusCode))
		bw.WriteString(" ")
		bw.WriteString(http.StatusText(resp.StatusCode))
	} else {
		bw.WriteString(resp.Status)
		if len(resp.Status) == 3 {
			bw.WriteString(" ") // no reason phrase: the space stays
		}
	}
	bw.WriteString("\r\n")
	var named map[string]bool // headers the pod's Connection names
	for _, v := range resp.Header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = http.CanonicalHeaderKey(strings.TrimSpace(tok)); tok != "" {
				if named == nil {
					named = map[string]bool{}
				}
				named[tok] = true
			}
		}
	}
	for k, vs := range resp.Header {
		if hopByHop[k] || named[k] {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	if req.close {
		bw.WriteString("Connection: close\r\n")
	}
	code := resp.StatusCode
	if req.method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		// No body; a HEAD's Content-Length is the GET's (net/http's
		// server drops it from a 204 and a 304).
		if cl := resp.Header["Content-Length"]; len(cl) > 0 && req.method == http.MethodHead {
			bw.WriteString("Content-Length: ")
			bw.WriteString(cl[0])
			bw.WriteString("\r\n")
		}
		bw.WriteString("\r\n")
		resp.Body.Close()
		return true, bw.Flush()
	}
	buf := copyBufferPool.Get().(*[]byte)
	defer copyBufferPool.Put(buf)
	ct := resp.Header["Content-Type"]
	stream := len(ct) > 0 && strings.HasPrefix(ct[0], "text/event-stream")
	if resp.ContentLength >= 0 && len(resp.TransferEncoding) == 0 {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(resp.ContentLength, 10))
		bw.WriteString("\r\n\r\n")
		if err := copyBody(bw, bw, resp.Body, *buf, stream); err != nil {
			return false, err
		}
		return true, bw.Flush()
	}
	// Chunked or ended by the pod's close: chunked to the client, each
	// piece sent as it comes (a stream), trailers after.
	if len(resp.Trailer) > 0 {
		keys := make([]string, 0, len(resp.Trailer))
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		bw.WriteString("Trailer: ")
		bw.WriteString(strings.Join(keys, ", "))
		bw.WriteString("\r\n")
	}
	bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
	cw := httputil.NewChunkedWriter(bw)
	if err := copyBody(cw, bw, resp.Body, *buf, true); err != nil {
		return false, err
	}
	cw.Close()
	for k, vs := range resp.Trailer {
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
	return true, bw.Flush()
}

// copyBody copies body to w until its end, flushing bw after each piece
// if stream.
func copyBody(w io.Writer, bw *bufio.Writer, body io.Reader, buf []byte, stream bool) error {
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if stream {
				if werr := bw.Flush(); werr != nil {
					return werr
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
