package client

import (
	"context"
	"encoding/json"
	"io"
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

// PodExec runs a command in a pod's container and waits for it.
func (c *Client) PodExec(ctx context.Context, ns, name, container string, command []string) (*ExecResult, error) {
	q := url.Values{}
	if container != "" {
		q.Set("container", container)
	}
	body, err := json.Marshal(map[string][]string{"command": command})
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(ctx, http.MethodPost, Path(api.Pods, ns, name, "exec"), q, body, "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out ExecResult
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&out); err != nil {
		return nil, err
	}
	return &out, nil
}
