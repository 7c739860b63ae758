package node

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
)

// ErrNotFound is a pod that is not bound to this node, or a container it
// does not have (or has not started yet).
var ErrNotFound = errors.New("node: not found")

// target resolves a pod bound here and one of its containers (the first
// when container is "") to the runtime's names.
func (a *Agent) target(ns, name, container string) (uid, ctr string, err error) {
	o, ok := a.pods.Get(ns, name)
	if !ok || o.(*api.Pod).Spec.NodeName != a.cfg.NodeName {
		return "", "", fmt.Errorf("node: pod %s/%s is not on node %s: %w", ns, name, a.cfg.NodeName, ErrNotFound)
	}
	p := o.(*api.Pod)
	if container == "" && len(p.Spec.Containers) > 0 {
		container = p.Spec.Containers[0].Name
	}
	if !slices.ContainsFunc(p.Spec.Containers, func(c api.Container) bool { return c.Name == container }) {
		return "", "", fmt.Errorf("node: pod %s/%s has no container %q: %w", ns, name, container, ErrNotFound)
	}
	return p.UID, container, nil
}

// Logs copies the stdout and stderr of a container of a pod on this node
// (the first container when container is "") to w; with follow it returns
// when the container stops or ctx ends.
func (a *Agent) Logs(ctx context.Context, ns, name, container string, follow bool, w io.Writer) error {
	uid, ctr, err := a.target(ns, name, container)
	if err != nil {
		return err
	}
	return notFound(a.rt.Logs(ctx, uid, ctr, follow, w))
}

// Exec runs cmd in a running container of a pod on this node (the first
// container when container is "") and returns its exit code.
func (a *Agent) Exec(ctx context.Context, ns, name, container string, cmd []string, stdout, stderr io.Writer) (int, error) {
	uid, ctr, err := a.target(ns, name, container)
	if err != nil {
		return 0, err
	}
	code, err := a.rt.Exec(ctx, uid, ctr, cmd, stdout, stderr)
	return code, notFound(err)
}

func notFound(err error) error {
	if errors.Is(err, runtime.ErrNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// ExecRequest is the body of POST /pods/{ns}/{name}/exec.
type ExecRequest struct {
	Command []string `json:"command"`
}

// ExecResult is its answer.
type ExecResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitCode"`
}

// Handler serves the agent's API to the API server, which proxies the
// CLI's logs and exec to it:
//
//	GET  /pods/{ns}/{name}/log?container=C&follow=1   the logs, streamed as they come with follow
//	POST /pods/{ns}/{name}/exec?container=C           body ExecRequest, answer ExecResult
//
// Every request must carry "Authorization: Bearer " + Config.ServerToken;
// others get 401. A pod not on this node or an unknown container is 404.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pods/{ns}/{name}/log", a.serveLog)
	mux.HandleFunc("POST /pods/{ns}/{name}/exec", a.serveExec)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || a.cfg.ServerToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(a.cfg.ServerToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="slipway-node"`)
			http.Error(w, "node: a valid bearer token is required", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (a *Agent) serveLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	follow, _ := strconv.ParseBool(q.Get("follow"))
	fw := &flushWriter{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	err := a.Logs(r.Context(), r.PathValue("ns"), r.PathValue("name"), q.Get("container"), follow, fw)
	if err == nil {
		return
	}
	if fw.wrote {
		slog.Warn("node: streaming logs failed", "pod", r.PathValue("ns")+"/"+r.PathValue("name"), "err", err)
		return
	}
	httpError(w, err)
}

// flushWriter sends each write to the client at once.
type flushWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	wrote bool
}

func (f *flushWriter) Write(p []byte) (int, error) {
	f.wrote = true
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "node: the body must be JSON: {\"command\": [...]}: "+err.Error(), http.StatusBadRequest)
		return
	}
	if len(req.Command) == 0 {
		http.Error(w, "node: a command is required", http.StatusBadRequest)
		return
	}
	var stdout, stderr bytes.Buffer
	code, err := a.Exec(r.Context(), r.PathValue("ns"), r.PathValue("name"), r.URL.Query().Get("container"), req.Command, &stdout, &stderr)
	if err != nil {
		httpError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code})
}

func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrNotFound) {
		code = http.StatusNotFound
	}
	http.Error(w, err.Error(), code)
}
