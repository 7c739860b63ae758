package router

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// FuzzFastParse: every request header the plain side's own parser takes
// is one net/http's server reads the same way: the same method, Host and
// path, no body, the same Connection: close, and every header the fast
// path passes on is one net/http also sees (a request the two read
// differently could be routed by one meaning and served by another:
// request smuggling). What the fast path refuses goes to net/http.
func FuzzFastParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET /x?y=1 HTTP/1.1\r\nHost: a.test:80\r\nConnection: close\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
		"HEAD /h HTTP/1.1\r\nhost: A.test\r\nAccept: */*\r\n\r\n",
		"OPTIONS / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: \r\nHost: b.test\r\n\r\n", // an empty Host trims to nil
		"GET / HTTP/1.1\r\nHost: a.test\r\n X-Folded: y\r\n\r\n",
		"GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a.test\nX: y\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		end := strings.Index(s, "\r\n\r\n")
		if end < 0 {
			return
		}
		head := []byte(s[:end+4])
		req := &fastReq{fwd: make([][]byte, 0, 16)}
		if !req.parse(head) {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("the fast path takes %q, net/http refuses it: %v", head, err)
		}
		if r.Method != req.method || r.Host != string(req.host) || r.URL.Path != req.path {
			t.Fatalf("%q: fast path reads %s %q host %q, net/http %s %q host %q", head, req.method, req.path, req.host, r.Method, r.URL.Path, r.Host)
		}
		if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
			t.Fatalf("%q: net/http sees a body (length %d, %v), the fast path none", head, r.ContentLength, r.TransferEncoding)
		}
		if r.Close != req.close {
			t.Fatalf("%q: Connection close: fast path %v, net/http %v", head, req.close, r.Close)
		}
		for _, l := range req.fwd {
			name, value, _ := bytes.Cut(l, []byte(":"))
			if !contains(r.Header.Values(string(name)), strings.Trim(string(value), " \t")) {
				t.Fatalf("%q: the fast path passes on %q, net/http has %q: %q", head, l, name, r.Header.Values(string(name)))
			}
		}
	})
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}
