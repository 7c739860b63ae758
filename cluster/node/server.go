package node

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

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

// ExecResult is its answer without ?stream=1.
type ExecResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	ExitCode int    `json:"exitCode"`
	// Error says why the command was stopped before its end (output
	// limit, deadline); ExitCode is then meaningless.
	Error string `json:"error,omitempty"`
}

// ExecStatus ends a streamed exec: the command's exit code, or why it was
// stopped.
type ExecStatus struct {
	ExitCode int `json:"exitCode"`
	// Error says why the command was stopped before its end; ExitCode is
	// then meaningless.
	Error string `json:"error,omitempty"`
	// Reason is ReasonOutputLimit or ReasonTimeout when Error is set.
	Reason string `json:"reason,omitempty"`
}

// ExecStreamType is the Content-Type of a streamed exec answer
// (?stream=1): frames of an 8-byte header (the stream: 1 stdout, 2
// stderr, 3 status; three zero bytes; the payload's length, big-endian
// uint32) and the payload, as in Docker's attach stream. Output comes as
// it is printed, in frames of at most 32 KiB; the last frame is stream 3,
// an ExecStatus as JSON. A stream that ends without it was cut off.
const ExecStreamType = "application/vnd.slipway.exec-stream"

// Frame streams of ExecStreamType.
const (
	StreamStdout = 1
	StreamStderr = 2
	StreamStatus = 3
)

// Reasons of an ExecStatus.
const (
	ReasonOutputLimit = "OutputLimit"
	ReasonTimeout     = "Timeout"
)

// DefaultExecOutputLimit is Config.ExecOutputLimit's default.
const DefaultExecOutputLimit = 16 << 20

// jsonExecOutputLimit caps the output an ExecResult holds: the answer is
// built in memory (and JSON may escape each byte to six), so it stays
// small; a caller that wants more asks for the stream.
const jsonExecOutputLimit = 1 << 20

// Errors that stop an exec.
var (
	ErrExecOutputLimit = errors.New("node: exec output limit reached")
	ErrExecTimeout     = errors.New("node: exec deadline passed")
)

const maxFrame = 32 << 10

// Handler serves the agent's API to the API server, which proxies the
// CLI's logs and exec to it:
//
//	GET  /pods/{ns}/{name}/log?container=C&follow=1   the logs, streamed as they come with follow
//	POST /pods/{ns}/{name}/exec?container=C           body ExecRequest, answer ExecResult (output up to 1 MiB)
//	POST /pods/{ns}/{name}/exec?container=C&stream=1  body ExecRequest, answer streamed as ExecStreamType
//
// An exec is stopped once its output passes Config.ExecOutputLimit or it
// runs past Config.ExecTimeout; the answer then carries the error.
//
// Every request must come from the API server: over TLS with a client
// certificate whose common name is APIServerCommonName, verified by the
// listener against the platform CA (the only CA its tls.Config trusts),
// or, in the API server's own process, with "Authorization: Bearer " +
// Config.ServerToken. Others get 401. A pod not on this node or an
// unknown container is 404.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /pods/{ns}/{name}/log", a.serveLog)
	mux.HandleFunc("POST /pods/{ns}/{name}/exec", a.serveExec)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fromAPIServer(r) {
			mux.ServeHTTP(w, r)
			return
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || a.cfg.ServerToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(a.cfg.ServerToken)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="slipway-node"`)
			http.Error(w, "node: a valid bearer token is required", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// APIServerCommonName is the common name of the client certificate API
// servers present to node agents.
const APIServerCommonName = "system:apiserver"

// fromAPIServer says whether r came with a verified client certificate
// of an API server.
func fromAPIServer(r *http.Request) bool {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return false
	}
	return r.TLS.VerifiedChains[0][0].Subject.CommonName == APIServerCommonName
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
	q := r.URL.Query()
	stream, _ := strconv.ParseBool(q.Get("stream"))
	limit := a.cfg.ExecOutputLimit
	if !stream {
		limit = min(limit, jsonExecOutputLimit)
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.ExecTimeout)
	defer cancel()
	lim := &outputLimit{left: limit, stop: cancel}
	run := func(stdout, stderr io.Writer) (int, error) {
		code, err := a.Exec(ctx, r.PathValue("ns"), r.PathValue("name"), q.Get("container"), req.Command, lim.wrap(stdout), lim.wrap(stderr))
		switch {
		case lim.reached():
			return code, fmt.Errorf("%w: the command printed more than %s and was stopped; write large output to a file in the container instead", ErrExecOutputLimit, sizeString(limit))
		case err != nil && r.Context().Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
			return code, fmt.Errorf("%w: the command ran longer than %s and was stopped", ErrExecTimeout, a.cfg.ExecTimeout)
		}
		return code, err
	}
	pod := r.PathValue("ns") + "/" + r.PathValue("name")
	if !stream {
		var stdout, stderr bytes.Buffer
		code, err := run(&stdout, &stderr)
		res := ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: code}
		switch {
		case stopped(err):
			slog.Warn("node: exec stopped", "pod", pod, "err", err)
			res.Error = err.Error()
		case err != nil:
			httpError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
		return
	}
	fw := &frameWriter{w: w, rc: http.NewResponseController(w)}
	code, err := run(fw.stream(StreamStdout), fw.stream(StreamStderr))
	st := ExecStatus{ExitCode: code}
	switch {
	case stopped(err):
		slog.Warn("node: exec stopped", "pod", pod, "err", err)
		st = ExecStatus{Error: err.Error(), Reason: ReasonTimeout}
		if errors.Is(err, ErrExecOutputLimit) {
			st.Reason = ReasonOutputLimit
		}
	case err != nil && !fw.started():
		httpError(w, err)
		return
	case err != nil:
		if r.Context().Err() != nil {
			return // the caller went away
		}
		st = ExecStatus{Error: err.Error()}
	}
	data, _ := json.Marshal(st)
	fw.frame(StreamStatus, data)
}

func stopped(err error) bool {
	return errors.Is(err, ErrExecOutputLimit) || errors.Is(err, ErrExecTimeout)
}

func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// outputLimit counts the output of one exec, stdout and stderr together.
// The write that passes the limit writes what fits, stops the command
// (stop cancels its context, which ends the attach and the process) and
// fails.
type outputLimit struct {
	mu   sync.Mutex
	left int64
	hit  bool
	stop context.CancelFunc
}

func (l *outputLimit) wrap(w io.Writer) io.Writer { return &limitedWriter{l: l, w: w} }

func (l *outputLimit) reached() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hit
}

type limitedWriter struct {
	l *outputLimit
	w io.Writer
}

func (lw *limitedWriter) Write(p []byte) (int, error) {
	l := lw.l
	l.mu.Lock()
	n := min(int64(len(p)), l.left)
	l.left -= n
	if n < int64(len(p)) {
		l.hit = true
	}
	hit := l.hit
	l.mu.Unlock()
	if n > 0 {
		if _, err := lw.w.Write(p[:n]); err != nil {
			return 0, err
		}
	}
	if hit {
		l.stop()
		return int(n), ErrExecOutputLimit
	}
	return len(p), nil
}

// frameWriter writes ExecStreamType frames, each sent at once. The
// response's status and type are set by the first frame, so an error
// before any output can still be a plain HTTP error.
type frameWriter struct {
	mu    sync.Mutex
	w     http.ResponseWriter
	rc    *http.ResponseController
	wrote bool
}

func (f *frameWriter) started() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wrote
}

func (f *frameWriter) frame(stream byte, p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.wrote {
		f.wrote = true
		f.w.Header().Set("Content-Type", ExecStreamType)
		f.w.Header().Set("X-Content-Type-Options", "nosniff")
	}
	var hdr [8]byte
	hdr[0] = stream
	for first := true; first || len(p) > 0; first = false {
		chunk := p[:min(len(p), maxFrame)]
		p = p[len(chunk):]
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(chunk)))
		if _, err := f.w.Write(hdr[:]); err != nil {
			return err
		}
		if _, err := f.w.Write(chunk); err != nil {
			return err
		}
	}
	return f.rc.Flush()
}

type frameStream struct {
	f  *frameWriter
	id byte
}

func (f *frameWriter) stream(id byte) io.Writer { return frameStream{f: f, id: id} }

func (s frameStream) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.f.frame(s.id, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func httpError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrNotFound) {
		code = http.StatusNotFound
	}
	http.Error(w, err.Error(), code)
}
