package builders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	bk "github.com/moby/buildkit/client"
)

// Daemon supervises a buildkitd with the OCI (runc) worker: it starts it,
// restarts it when it dies, and keeps its state (and so the build cache)
// under Root across restarts.
//
// Build steps never share the host's network namespace: each RUN gets a
// namespace of its own on a bridge of this daemon's own (see network.go),
// and firewall rules drop everything from that bridge to the host itself
// (every address of it, so etcd, the API, the registry, node agents and
// service addresses) and to link-local addresses (cloud metadata). If that
// cannot be set up, buildkitd is not started and builds fail saying why:
// there is no fallback to the host network.
type Daemon struct {
	// Binary is the buildkitd to run. Default: "buildkitd" next to this
	// executable, then on PATH.
	Binary string
	// Root holds buildkitd's state and cache. Required.
	Root string
	// CNIBinDir holds the CNI plugins bridge, host-local, loopback and
	// firewall. Default: /usr/lib/cni, then /opt/cni/bin.
	CNIBinDir string
	// DenyCIDRs are more destinations build steps must not reach besides
	// the host and link-local addresses: the cluster's other nodes, an
	// external etcd.
	DenyCIDRs []string

	mu     sync.Mutex
	netErr error // why the build network could not be set up
}

// Socket is the address clients dial.
func (d *Daemon) Socket() string { return "unix://" + filepath.Join(d.Root, "buildkitd.sock") }

// FindBuildkitd locates the buildkitd binary.
func FindBuildkitd() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "buildkitd")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("buildkitd"); err == nil {
		return p, nil
	}
	return "", errors.New("builders: buildkitd not found next to slipway or on PATH; run `make build`, which builds it from the pinned module")
}

// Run keeps buildkitd running until ctx ends.
func (d *Daemon) Run(ctx context.Context) {
	if err := os.MkdirAll(d.Root, 0o700); err != nil {
		slog.Error("builders: buildkitd root", "err", err)
		return
	}
	net, err := d.setupNetwork()
	if err != nil {
		d.mu.Lock()
		d.netErr = err
		d.mu.Unlock()
		slog.Error("builds are off: their network cannot be isolated from the host", "err", err)
		return
	}
	defer net.teardown()
	backoff := time.Second
	for ctx.Err() == nil {
		// Rules may have been flushed (a firewall reload): put them back
		// before every start.
		if err := net.install(); err != nil {
			slog.Error("builders: build network firewall", "err", err)
		}
		_ = os.Remove(filepath.Join(d.Root, "buildkitd.sock"))
		log, _ := os.OpenFile(filepath.Join(d.Root, "buildkitd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		cmd := exec.CommandContext(ctx, d.Binary, "--config", net.configFile, "--root", filepath.Join(d.Root, "state"), "--addr", d.Socket(),
			"--oci-worker=true", "--containerd-worker=false")
		cmd.Stdout, cmd.Stderr = log, log
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		// If slipway dies without cleaning up (kill -9), take buildkitd
		// with it: SIGTERM, so that it still removes its bridge and
		// network namespaces. The death signal follows the thread that
		// started the child, so this goroutine keeps its thread until the
		// child ends. buildkitd gets a mount namespace of its own: its
		// mounts (network namespaces, snapshots, cache mounts) vanish with
		// it instead of staying busy under the data directory.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Unshareflags: syscall.CLONE_NEWNS}
		runtime.LockOSThread()
		cmd.WaitDelay = 10 * time.Second
		start := time.Now()
		err := cmd.Run()
		runtime.UnlockOSThread()
		if log != nil {
			log.Close()
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			backoff = time.Second
		}
		slog.Warn("builders: buildkitd exited; restarting", "err", err, "in", backoff, "log", filepath.Join(d.Root, "buildkitd.log"))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// Client waits (up to timeout) for buildkitd to answer and returns a client.
func (d *Daemon) Client(ctx context.Context, timeout time.Duration) (*bk.Client, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		d.mu.Lock()
		netErr := d.netErr
		d.mu.Unlock()
		if netErr != nil {
			return nil, fmt.Errorf("builders: builds are off because their network cannot be isolated from the host: %w", netErr)
		}
		c, err := bk.New(ctx, d.Socket())
		if err == nil {
			if _, err = c.ListWorkers(ctx); err == nil {
				return c, nil
			}
			c.Close()
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("builders: buildkitd at %s is not answering (%v); see %s", d.Socket(), lastErr, filepath.Join(d.Root, "buildkitd.log"))
}
