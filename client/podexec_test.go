package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func frame(stream byte, p string) []byte {
	hdr := make([]byte, 8, 8+len(p))
	hdr[0] = stream
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(p)))
	return append(hdr, p...)
}

// PodExecStream copies output as it comes and ends on the status frame: an
// exit code, a stop the node explains, or a stream cut short.
func TestPodExecStream(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ctype, body string
		wantOut     string
		wantErr     string
		wantStopped bool
		wantCode    int
	}{
		{"exit code", execStreamType, string(frame(1, "out")) + string(frame(2, "err")) + string(frame(3, `{"exitCode":3}`)), "out", "", false, 3},
		{"H4 stopped at the output limit", execStreamType, string(frame(1, "0000")) + string(frame(3, `{"exitCode":0,"error":"node: exec output limit reached: the command printed more than 16 MiB and was stopped","reason":"OutputLimit"}`)), "0000", "more than 16 MiB", true, 0},
		{"cut off", execStreamType, string(frame(1, "partial")), "partial", "ended before the command's exit status", false, 0},
		{"an older node's JSON", "application/json", `{"stdout":"old","stderr":"","exitCode":1}`, "old", "", false, 1},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("stream") != "1" {
				t.Errorf("%s: exec request without stream=1: %s", tc.name, r.URL)
			}
			w.Header().Set("Content-Type", tc.ctype)
			w.Write([]byte(tc.body))
		}))
		c, err := New(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code, err := c.PodExecStream(context.Background(), "p", "pod", "", []string{"x"}, &out, &errb)
		srv.Close()
		var stopped *ExecStoppedError
		switch {
		case tc.wantErr == "" && err != nil, tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: PodExecStream = %d, %v; want error containing %q", tc.name, code, err, tc.wantErr)
		case errors.As(err, &stopped) != tc.wantStopped:
			t.Errorf("%s: PodExecStream error %v is an *ExecStoppedError: %v, want %v", tc.name, err, !tc.wantStopped, tc.wantStopped)
		case code != tc.wantCode:
			t.Errorf("%s: PodExecStream = %d, want exit code %d", tc.name, code, tc.wantCode)
		}
		if out.String() != tc.wantOut {
			t.Errorf("%s: stdout %q, want %q", tc.name, out.String(), tc.wantOut)
		}
	}
}
