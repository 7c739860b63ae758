package router_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/router"
	"slipway.dev/slipway/store/storetest"
)

// TestRouterPlainHTTP1: what the plain side's own HTTP/1.1 path (bodyless
// GET, HEAD, OPTIONS) passes on and what it does not, as net/http and
// ReverseProxy do: X-Forwarded-* set and the client's forged ones dropped,
// hop-by-hop headers removed both ways (and those the pod's Connection
// names), lengths kept and a body cut short by the pod cut short for the
// client too, a HEAD's length and a 304's header kept, a streamed answer sent as it comes
// with its trailer, an answer ended by the pod's close; and one client
// connection mixing such requests with a POST and a bad header,
// pipelined, answered in order (upgrades: TestRouterHTTP); a client that hangs up before
// the pod answers ends the pod's request.
func TestRouterPlainHTTP1(t *testing.T) {
	ctx := storetest.Context(t)
	st := storetest.New(t)
	sent := make(chan struct{})
	cancelled := make(chan struct{}, 1)
	var slow atomic.Int64
	pod := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/headers":
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "Keep-Alive", "X-Mine"} {
				fmt.Fprintf(w, "%s=%s\n", h, strings.Join(r.Header[h], "|"))
			}
		case "/len":
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		case "/cached":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		case "/stream":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "one\n")
			w.(http.Flusher).Flush()
			select { // the rest only once the client has the first part
			case <-sent:
			case <-time.After(10 * time.Second):
			}
			io.WriteString(w, "two\n")
			w.Header().Set("X-Sum", "2")
		case "/close":
			c, brw, _ := http.NewResponseController(w).Hijack()
			brw.WriteString("HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: s\r\nX-Kept: k\r\nKeep-Alive: timeout=5\r\n\r\nall of it")
			brw.Flush()
			c.Close()
		case "/slow":
			slow.Add(1)
			select { // until the router gives up the request
			case <-r.Context().Done():
				cancelled <- struct{}{}
			case <-time.After(time.Minute):
			}
		case "/podclose":
			c, brw, _ := http.NewResponseController(w).Hijack()
			brw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\nok")
			brw.Flush()
			c.Close()
		case "/short":
			c, brw, _ := http.NewResponseController(w).Hijack()
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
			brw.Flush()
			c.Close()
		case "/big":
			w.Write([]byte(strings.Repeat("0123456789", 100_000)))
		case "/noreason":
			c, brw, _ := http.NewResponseController(w).Hijack()
			brw.WriteString("HTTP/1.1 299\r\nContent-Length: 2\r\n\r\nhi")
			brw.Flush()
			c.Close()
		case "/post":
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s got %d bytes", r.Method, len(b))
		default:
			fmt.Fprintf(w, "%s %s", r.Method, r.URL.RequestURI())
		}
	}))
	t.Cleanup(pod.Close)
	_, addr, _ := startRouter(t, ctx, st, router.Config{})
	if err := st.Create(ctx, api.EndpointsResource, endpoints("fp", "svc", pod.Listener.Addr().String())); err != nil {
		t.Fatal(err)
	}
	route(t, ctx, st, rt("fp", "web", "fp.example.com", "", at(1)))
	storetest.Eventually(t, ctx, "the route to serve", func() bool {
		code, _ := get(t, addr, "fp.example.com", "/")
		return code == 200
	})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	read := func(method string) (*http.Response, string) {
		t.Helper()
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("reading the answer to a %s: %v", method, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading the body of the answer to a %s: %v", method, err)
		}
		return resp, string(b)
	}

	io.WriteString(c, "GET /headers HTTP/1.1\r\nHost: fp.example.com\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: https\r\n"+
		"X-Forwarded-Host: forged.example.com\r\nForwarded: for=192.0.2.2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Mine: yes\r\n\r\n")
	want := "X-Forwarded-For=127.0.0.1\nX-Forwarded-Host=fp.example.com\nX-Forwarded-Proto=http\nForwarded=\nKeep-Alive=\nX-Mine=yes\n"
	if _, body := read("GET"); body != want {
		t.Errorf("the pod saw the headers\n%s\nwant\n%s", body, want)
	}

	io.WriteString(c, "HEAD /len HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if resp, body := read("HEAD"); resp.StatusCode != 200 || resp.ContentLength != 5 || body != "" {
		t.Errorf("HEAD /len = %d, length %d, body %q; want 200, 5, none", resp.StatusCode, resp.ContentLength, body)
	}
	io.WriteString(c, "GET /cached HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if resp, body := read("GET"); resp.StatusCode != http.StatusNotModified || resp.Header.Get("ETag") != `"v1"` || body != "" {
		t.Errorf("GET /cached = %d, ETag %q, body %q; want 304, \"v1\", none", resp.StatusCode, resp.Header.Get("ETag"), body)
	}

	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n') // the first chunk holds just this line
	if line != "one\n" {
		t.Fatalf("the first part of a stream = %q %v, want it before the pod sends the rest", line, err)
	}
	close(sent)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "two\n" || resp.Trailer.Get("X-Sum") != "2" {
		t.Errorf("the rest of the stream = %q, trailer %v; want %q and X-Sum 2", rest, resp.Trailer, "two\n")
	}

	io.WriteString(c, "GET /close HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if resp, body := read("GET"); body != "all of it" || resp.Header.Get("X-Secret") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Kept") != "k" {
		t.Errorf("an answer ended by the pod's close = %q with %v; want %q, X-Kept and neither X-Secret (its Connection names it) nor Keep-Alive", body, resp.Header, "all of it")
	}

	io.WriteString(c, "GET /noreason HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if resp, body := read("GET"); resp.StatusCode != 299 || body != "hi" {
		t.Errorf("an answer without a reason phrase = %d %q, want 299 %q", resp.StatusCode, body, "hi")
	}

	io.WriteString(c, "GET /podclose HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if resp, body := read("GET"); body != "ok" || resp.Header.Get("X-Kept") != "k" || resp.Close {
		t.Errorf("an answer with the pod's Connection: close = %q with %v (close %v); want %q with X-Kept, the client's connection kept", body, resp.Header, resp.Close, "ok")
	}
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if _, body := read("GET"); body != strings.Repeat("0123456789", 100_000) {
		t.Errorf("GET /big: %d bytes, want the pod's 1,000,000", len(body))
	}

	// Pipelined in one write: fast, a body (handed to net/http), fast
	// again on the same connection.
	io.WriteString(c, "OPTIONS /a?x=1 HTTP/1.1\r\nHost: FP.example.com:80\r\n\r\n"+
		"POST /post HTTP/1.1\r\nHost: fp.example.com\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /b HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	for i, want := range []string{"OPTIONS /a?x=1", "POST got 3 bytes", "GET /b"} {
		if resp, body := read(strings.Fields(want)[0]); resp.StatusCode != 200 || body != want {
			t.Errorf("pipelined answer %d = %d %q, want 200 %q", i, resp.StatusCode, body, want)
		}
	}
	// A header net/http refuses is refused.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: fp.example.com\r\nBad Name: x\r\n\r\n")
	if resp, _ := read("GET"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a header name with a space = %d, want 400", resp.StatusCode)
	}

	// Connection: close is answered and the connection closed.
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c2, "GET /x HTTP/1.1\r\nHost: fp.example.com\r\nConnection: close\r\n\r\n")
	all, _ := io.ReadAll(c2)
	if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") || !strings.Contains(string(all), "\r\nConnection: close\r\n") || !strings.HasSuffix(string(all), "\r\n\r\nGET /x") {
		t.Errorf("GET with Connection: close = %q, want a 200 saying close, then the connection closed", all)
	}

	// A pod that closes before the end of its Content-Length: the
	// client sees the answer cut short, not a complete one.
	c4, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	c4.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c4, "GET /short HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c4), nil); err != nil {
		t.Errorf("GET /short: %v, want its header and 3 bytes", err)
	} else if b, err := io.ReadAll(resp.Body); err == nil || string(b) != "abc" {
		t.Errorf("GET /short read %q (%v), want %q cut short (the pod sent 3 of 10 bytes)", b, err, "abc")
	}

	// A client that hangs up before its pod answers: the router stops
	// waiting and lets the pod's connection go.
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c3, "GET /slow HTTP/1.1\r\nHost: fp.example.com\r\n\r\n")
	time.Sleep(100 * time.Millisecond) // the request on its way to the pod
	c3.Close()
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second):
		t.Errorf("the pod's request went on 20s after its client hung up, want it ended")
	}
	time.Sleep(2 * time.Second) // a second sweep, which would find a request sent again
	if n := slow.Load(); n != 1 {
		t.Errorf("the pod got the abandoned request %d times, want once (not sent again once given up)", n)
	}
}
