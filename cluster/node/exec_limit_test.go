package node

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// readFrames decodes an ExecStreamType body: the bytes of each output
// stream and the final status (nil if the stream was cut off).
func readFrames(t *testing.T, r io.Reader) (stdout, stderr int64, st *ExecStatus) {
	t.Helper()
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return stdout, stderr, st
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		switch hdr[0] {
		case StreamStdout:
			stdout += n
			io.CopyN(io.Discard, r, n)
		case StreamStderr:
			stderr += n
			io.CopyN(io.Discard, r, n)
		case StreamStatus:
			var s ExecStatus
			if err := json.NewDecoder(io.LimitReader(r, n)).Decode(&s); err != nil {
				t.Fatalf("status frame: %v", err)
			}
			st = &s
		default:
			t.Fatalf("frame of stream %d", hdr[0])
		}
	}
}

// H4: an exec's output is streamed, never collected without bound: past
// the limit the command is stopped and the caller told why, and past the
// deadline likewise. The JSON answer holds at most 1 MiB.
func TestExecOutputLimitAndDeadline(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	cfg := testConfig(s, newRuntime(t))
	cfg.ExecOutputLimit = 4 << 20
	cfg.ExecTimeout = 5 * time.Second
	a, _ := startAgent(t, cfg)
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(srv.Close)
	createPod(t, ctx, s, newPod("spew", sh("app", img, "exec sleep 3600")))
	waitPod(t, ctx, s, "spew", "Running", running)

	post := func(query string, cmd ...string) *http.Response {
		t.Helper()
		body, _ := json.Marshal(ExecRequest{Command: cmd})
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/pods/test/spew/exec"+query, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}

	for _, tc := range []struct {
		name       string
		cmd        []string
		wantOut    int64
		wantReason string
		wantExit   int
	}{
		{"H4 cat /dev/zero is stopped at the output limit", []string{"cat", "/dev/zero"}, 4 << 20, ReasonOutputLimit, 0},
		{"H4 stderr counts too", []string{"sh", "-c", "cat /dev/zero >&2"}, 4 << 20, ReasonOutputLimit, 0},
		{"H4 a command past the deadline is stopped", []string{"sleep", "3599"}, 0, ReasonTimeout, 0},
		{"output under the limit arrives whole", []string{"sh", "-c", "head -c 1000000 /dev/zero; exit 7"}, 1000000, "", 7},
	} {
		resp := post("?stream=1", tc.cmd...)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ExecStreamType {
			t.Fatalf("%s: POST exec?stream=1 = %s %q", tc.name, resp.Status, resp.Header.Get("Content-Type"))
		}
		stdout, stderr, st := readFrames(t, resp.Body)
		if st == nil {
			t.Errorf("%s: the stream ended with no status frame", tc.name)
			continue
		}
		if got := stdout + stderr; got != tc.wantOut {
			t.Errorf("%s: %d bytes of output, want %d", tc.name, got, tc.wantOut)
		}
		if st.Reason != tc.wantReason || (tc.wantReason == "") != (st.Error == "") || (tc.wantReason == "" && st.ExitCode != tc.wantExit) {
			t.Errorf("%s: status %+v, want reason %q, exit %d", tc.name, st, tc.wantReason, tc.wantExit)
		}
		t.Logf("%s: %+v", tc.name, st)
	}

	// The stopped commands do not live on in the container.
	waitFor := func(what string, cond func() (bool, string)) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		last := ""
		for time.Now().Before(deadline) {
			ok, state := cond()
			if ok {
				return
			}
			last = state
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("%s: not within 30s; last: %s", what, last)
	}
	waitFor("the stopped execs end", func() (bool, string) {
		var out, errb bytes.Buffer
		_, err := a.Exec(ctx, "test", "spew", "", []string{"ps", "-o", "args"}, &out, &errb)
		ps := out.String()
		return err == nil && !strings.Contains(ps, "cat /dev/zero") && !strings.Contains(ps, "sleep 3599"), fmt.Sprintf("%v %s%s", err, ps, errb.String())
	})

	// Without ?stream=1, the JSON answer holds at most 1 MiB, and says why.
	resp := post("", "cat", "/dev/zero")
	var res ExecResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST exec (JSON) = %s, %v", resp.Status, err)
	}
	if len(res.Stdout) != jsonExecOutputLimit || !strings.Contains(res.Error, "limit") {
		t.Errorf("JSON exec of cat /dev/zero: %d bytes of stdout, error %q; want %d and the limit named", len(res.Stdout), res.Error, jsonExecOutputLimit)
	}
}
