package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
)

// FuzzUploadContentRange sends a chunked upload's second PATCH with an
// arbitrary Content-Range against a real server. No 5xx; a refused chunk
// changes nothing (the upload still holds only the first chunk, and the
// right chunk then completes it); an accepted one was the right range, and
// the blob commits with the digest of exactly the bytes sent.
//
//	go test -run='^$' -fuzz=FuzzUploadContentRange -fuzztime=20s ./registry/
func FuzzUploadContentRange(f *testing.F) {
	for _, s := range []string{"6-10", "0-4", "6-", "-10", "6-9", "5-10", "7-11", "bytes=6-10", "bytes 6-10/11", "6-10/*",
		"10-6", "6-1000000000000000000000", "-1-4", "6 - 10", "", "6-10,11-12", "0x6-0xa", "+6-+10", "6-10\x00"} {
		f.Add(s)
	}
	env := servertest.Start(f)
	ctx := context.Background()
	alice := env.User(f, "alice")
	if err := alice.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "fuzz"}}); err != nil && !api.IsAlreadyExists(err) {
		f.Fatal(err)
	}
	hc := &http.Client{Timeout: hangGuard, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(t *testing.T, method, loc, contentRange string, body []byte) (int, http.Header) {
		t.Helper()
		if strings.HasPrefix(loc, "/") {
			loc = "http://" + env.Registry + loc
		}
		req, err := http.NewRequest(method, loc, bytes.NewReader(body))
		if err != nil {
			t.Skip() // a header net/http will not send
		}
		req.SetBasicAuth("alice", alice.Token())
		if body != nil {
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Content-Length", strconv.Itoa(len(body)))
		}
		if contentRange != "" {
			req.Header.Set("Content-Range", contentRange)
		}
		resp, err := hc.Do(req)
		if err != nil {
			if strings.Contains(err.Error(), "invalid header") {
				t.Skip()
			}
			t.Fatalf("%s %s: %v", method, loc, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s with Content-Range %q = %d, want no server error", method, contentRange, resp.StatusCode)
		}
		return resp.StatusCode, resp.Header
	}
	first, second := []byte("hello "), []byte("world")
	sum := sha256.Sum256(append(append([]byte(nil), first...), second...))
	want := "sha256:" + hex.EncodeToString(sum[:])
	f.Fuzz(func(t *testing.T, contentRange string) {
		code, h := do(t, http.MethodPost, "/v2/fuzz/up/blobs/uploads/", "", nil)
		if code != http.StatusAccepted {
			t.Fatalf("start upload = %d", code)
		}
		code, h = do(t, http.MethodPatch, h.Get("Location"), "0-5", first)
		if code != http.StatusAccepted {
			t.Fatalf("first chunk = %d", code)
		}
		loc := h.Get("Location")
		code, h2 := do(t, http.MethodPatch, loc, contentRange, second)
		switch {
		case code == http.StatusAccepted:
			if got := h2.Get("Range"); got != "0-10" {
				t.Fatalf("chunk with Content-Range %q accepted, Range = %q, want 0-10", contentRange, got)
			}
			loc = h2.Get("Location")
		default:
			// Refused: the upload must be as before.
			code, st := do(t, http.MethodGet, loc, "", nil)
			if code != http.StatusNoContent || st.Get("Range") != "0-5" {
				t.Fatalf("after refusing Content-Range %q, upload status = %d Range %q, want 204 0-5", contentRange, code, st.Get("Range"))
			}
			code, h2 = do(t, http.MethodPatch, loc, "6-10", second)
			if code != http.StatusAccepted {
				t.Fatalf("after refusing Content-Range %q, the right chunk = %d", contentRange, code)
			}
			loc = h2.Get("Location")
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		if code, _ := do(t, http.MethodPut, loc+sep+"digest="+want, "", nil); code != http.StatusCreated {
			t.Fatalf("commit after Content-Range %q = %d, want 201 with the digest of exactly what was sent", contentRange, code)
		}
	})
}
