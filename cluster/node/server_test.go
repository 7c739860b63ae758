package node

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Logs (whole and followed, streamed as written) and exec go through the
// handler with the server's token, and nothing goes without it.
func TestHandlerLogsAndExec(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	a, _ := startAgent(t, testConfig(s, newRuntime(t)))
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	createPod(t, ctx, s, newPod("talker",
		sh("app", img, "echo first; while [ ! -f /tmp/go ]; do sleep 0.1; done; echo second; exec sleep 3600"),
		sh("quiet", img, "echo from quiet >&2; exec sleep 3600")))
	waitPod(t, ctx, s, "talker", "Running", running)

	do := func(ctx context.Context, method, path, token, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	read := func(resp *http.Response) string {
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	const bearer = "Bearer " + testToken
	execBody := `{"command": ["sh", "-c", "echo out; echo err >&2; exit 3"]}`

	for _, tc := range []struct{ method, path, token string }{
		{"GET", "/pods/test/talker/log", ""},
		{"GET", "/pods/test/talker/log", "Bearer wrong"},
		{"GET", "/pods/test/talker/log", testToken},
		{"POST", "/pods/test/talker/exec", "Basic " + testToken},
		{"POST", "/pods/test/talker/exec", ""},
	} {
		if resp := do(ctx, tc.method, tc.path, tc.token, execBody); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s with Authorization %q = %s, want 401", tc.method, tc.path, tc.token, resp.Status)
		}
	}

	// follow streams: "second" is printed only after "first" has arrived.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp := do(fctx, "GET", "/pods/test/talker/log?follow=1", bearer, "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET log?follow=1 = %s: %s", resp.Status, read(resp))
	}
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() || lines.Text() != "first" {
		t.Fatalf("first followed line = %q, %v; want first", lines.Text(), lines.Err())
	}
	resp = do(ctx, "POST", "/pods/test/talker/exec?container=app", bearer, `{"command": ["touch", "/tmp/go"]}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("exec touch = %s: %s", resp.Status, read(resp))
	}
	if !lines.Scan() || lines.Text() != "second" {
		t.Fatalf("second followed line = %q, %v; want second", lines.Text(), lines.Err())
	}
	cancel()

	if resp := do(ctx, "GET", "/pods/test/talker/log", bearer, ""); resp.StatusCode != http.StatusOK || read(resp) != "first\nsecond\n" {
		t.Errorf("GET log (the first container) = %s", resp.Status)
	}
	if resp := do(ctx, "GET", "/pods/test/talker/log?container=quiet", bearer, ""); read(resp) != "from quiet\n" {
		t.Errorf("GET log?container=quiet = %s, want its stderr", resp.Status)
	}

	resp = do(ctx, "POST", "/pods/test/talker/exec?container=quiet", bearer, execBody)
	var res ExecResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST exec = %s, %v", resp.Status, err)
	}
	if res != (ExecResult{Stdout: "out\n", Stderr: "err\n", ExitCode: 3}) {
		t.Errorf("exec result = %+v, want out, err, 3", res)
	}

	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/pods/test/nosuch/log", "", http.StatusNotFound},
		{"GET", "/pods/other/talker/log", "", http.StatusNotFound},
		{"GET", "/pods/test/talker/log?container=nosuch", "", http.StatusNotFound},
		{"POST", "/pods/test/nosuch/exec", execBody, http.StatusNotFound},
		{"POST", "/pods/test/talker/exec", `{"command": []}`, http.StatusBadRequest},
		{"POST", "/pods/test/talker/exec", `not json`, http.StatusBadRequest},
		{"GET", "/pods/test/talker/exec", "", http.StatusMethodNotAllowed},
	} {
		if resp := do(ctx, tc.method, tc.path, bearer, tc.body); resp.StatusCode != tc.want {
			t.Errorf("%s %s = %s, want %d", tc.method, tc.path, resp.Status, tc.want)
		}
	}
}
