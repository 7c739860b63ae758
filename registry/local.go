package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"slipway.dev/slipway/identity"
)

// localKey carries the identity of an in-process request (LocalTransport).
// It is a context value: nothing that arrives over the network can set it.
type localKey struct{}

// LocalTransport is an http.RoundTripper that serves each request in this
// process through the registry's own handler (ServeHTTP) as who: no
// connection, no TLS and no token minted, but every request authorized as
// who, per project, exactly as the same request from the network would be.
// The server's own clients that speak the registry API (signing) use it
// where the registry runs in their process. Whatever host a request names
// is ignored.
//
// The response body streams: the handler writes into a pipe the caller
// reads, so the caller must read or close it.
func (r *Registry) LocalTransport(who identity.Info) http.RoundTripper {
	return &localTransport{r: r, who: who}
}

type localTransport struct {
	r   *Registry
	who identity.Info
}

// localIdentity is the identity an in-process request carries, if any.
func localIdentity(ctx context.Context) (identity.Info, bool) {
	who, ok := ctx.Value(localKey{}).(identity.Info)
	return who, ok
}

func (t *localTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(context.WithValue(req.Context(), localKey{}, t.who))
	in := req.Clone(ctx) // a RoundTripper must not change req
	if in.Body == nil {
		in.Body = http.NoBody
	}
	if in.Host == "" {
		in.Host = req.URL.Host
	}
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "in-process"
	pr, pw := io.Pipe()
	w := &localWriter{header: http.Header{}, body: pw, head: req.Method == http.MethodHead, ready: make(chan struct{})}
	finished := make(chan struct{})
	go func() {
		// A caller that gives up unblocks a handler writing to the pipe.
		select {
		case <-req.Context().Done():
			pr.CloseWithError(req.Context().Err())
		case <-finished:
		}
	}()
	go func() {
		defer close(finished)
		defer cancel()
		defer in.Body.Close()
		defer func() {
			if p := recover(); p != nil {
				w.WriteHeader(http.StatusInternalServerError)
				pw.CloseWithError(fmt.Errorf("registry: in-process %s %s: the handler panicked: %v", req.Method, req.URL.Path, p))
				return
			}
			w.WriteHeader(http.StatusOK) // a handler that wrote nothing
			pw.Close()
		}()
		t.r.ServeHTTP(w, in)
	}()
	select {
	case <-w.ready:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	resp := &http.Response{
		Status:     strconv.Itoa(w.code) + " " + http.StatusText(w.code),
		StatusCode: w.code,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        w.sent,
		Body:          pr,
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	if w.head {
		resp.Body = http.NoBody
		pr.Close()
	}
	return resp, nil
}

// WaitQuiet waits until no request from the network is in flight, or
// until max has passed or ctx ends, whichever is first. Background work
// that goes through the registry itself (the scanner) calls it first, so
// that it yields the cores to pushes and pulls instead of competing with
// them; max bounds how far it falls behind under a steady load.
func (r *Registry) WaitQuiet(ctx context.Context, max time.Duration) {
	deadline := time.Now().Add(max)
	for r.inFlight.Load() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// localWriter is the handler's side of a LocalTransport round trip.
type localWriter struct {
	header http.Header
	sent   http.Header // header as it was at WriteHeader
	code   int
	body   *io.PipeWriter
	head   bool // a HEAD: the body is dropped, as net/http's server drops it
	once   sync.Once
	ready  chan struct{}
}

func (w *localWriter) Header() http.Header { return w.header }

func (w *localWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 {
		return // informational: not the response
	}
	w.once.Do(func() {
		w.code, w.sent = code, w.header.Clone()
		close(w.ready)
	})
}

func (w *localWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.head {
		return len(p), nil
	}
	return w.body.Write(p)
}

// Flush: the pipe holds nothing back.
func (w *localWriter) Flush() {}
