package client

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"slipway.dev/slipway/api"
)

// PodLogs copies a pod container's log to w, following it while the
// container runs when follow is set. An empty container is the pod's first.
func (c *Client) PodLogs(ctx context.Context, ns, name, container string, follow bool, w io.Writer) error {
	q := url.Values{}
	if container != "" {
		q.Set("container", container)
	}
	if follow {
		q.Set("follow", "1")
	}
	cl := c
	if follow {
		// A followed log outlives the per-request timeout, as watches do.
		cc := *c
		cc.http = &http.Client{Transport: c.http.Transport}
		cl = &cc
	}
	resp, err := cl.Do(ctx, http.MethodGet, Path(api.Pods, ns, name, "log"), q, nil, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// ExecResult is what a command run in a container printed, and its exit
// code.
type ExecResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitCode"`
}

// ExecStoppedError is a command the node stopped before its end: its
// output passed the node's limit (Reason "OutputLimit"), or it ran past
// the node's deadline ("Timeout"). The output up to then was delivered.
type ExecStoppedError struct {
	Reason  string
	Message string
}

func (e *ExecStoppedError) Error() string { return e.Message }

// PodExec runs a command in a pod's container and waits for it, holding
// its whole output (which the node caps, by default at 16 MiB).
func (c *Client) PodExec(ctx context.Context, ns, name, container string, command []string) (*ExecResult, error) {
	var stdout, stderr bytes.Buffer
	code, err := c.PodExecStream(ctx, ns, name, container, command, &stdout, &stderr)
	if err != nil {
		return nil, err
	}
	return &ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code}, nil
}

// Exec stream frames: an 8-byte header (stream, 3 zero bytes, big-endian
// uint32 length) and the payload; see node.ExecStreamType.
const (
	execStreamType = "application/vnd.slipway.exec-stream"
	streamStdout   = 1
	streamStderr   = 2
	streamStatus   = 3
)

// PodExecStream runs a command in a pod's container, copying its stdout
// and stderr to the writers as it prints, and returns its exit code. A
// command the node stopped (too much output, too long) returns an
// *ExecStoppedError after the output it printed. The node bounds how long
// an exec runs, so the client's per-request timeout does not apply.
func (c *Client) PodExecStream(ctx context.Context, ns, name, container string, command []string, stdout, stderr io.Writer) (int, error) {
	q := url.Values{"stream": {"1"}}
	if container != "" {
		q.Set("container", container)
	}
	body, err := json.Marshal(map[string][]string{"command": command})
	if err != nil {
		return 0, err
	}
	cc := *c
	cc.http = &http.Client{Transport: c.http.Transport}
	resp, err := cc.Do(ctx, http.MethodPost, Path(api.Pods, ns, name, "exec"), q, body, "application/json")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != execStreamType {
		// A node from before streaming answers with the whole result.
		var out ExecResult
		if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
			return 0, fmt.Errorf("client: decoding the exec answer: %w", err)
		}
		io.WriteString(stdout, out.Stdout)
		io.WriteString(stderr, out.Stderr)
		return out.ExitCode, nil
	}
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
			return 0, fmt.Errorf("client: the exec stream ended before the command's exit status (the connection to the server was lost?): %w", err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[4:]))
		switch hdr[0] {
		case streamStdout, streamStderr:
			w := stdout
			if hdr[0] == streamStderr {
				w = stderr
			}
			if _, err := io.CopyN(w, resp.Body, n); err != nil {
				return 0, fmt.Errorf("client: exec output: %w", err)
			}
		case streamStatus:
			var st struct {
				ExitCode int    `json:"exitCode"`
				Error    string `json:"error"`
				Reason   string `json:"reason"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, min(n, 1<<20))).Decode(&st); err != nil {
				return 0, fmt.Errorf("client: decoding the exec status: %w", err)
			}
			switch {
			case st.Error != "" && st.Reason != "":
				return 0, &ExecStoppedError{Reason: st.Reason, Message: st.Error}
			case st.Error != "":
				return 0, errors.New(st.Error)
			}
			return st.ExitCode, nil
		default:
			return 0, fmt.Errorf("client: the exec stream has a frame of unknown stream %d; is the server newer than this client?", hdr[0])
		}
	}
}
