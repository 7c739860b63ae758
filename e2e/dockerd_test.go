package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The docker tests share one private dockerd, started on first use and
// stopped by TestMain. It never touches the machine's own daemon: its data
// root, exec root (with its own containerd), pid file, socket and config
// file all live in one temporary directory. --bridge=none means no docker0,
// no iptables rules and nothing shared with another dockerd on the host;
// builds and `docker run` still work (containers get only a loopback), and
// pulls and pushes are made by the daemon itself, which reaches the
// registry on 127.0.0.1 (docker trusts 127.0.0.0/8 over plain HTTP).

const baseImageRef = "slipway-e2e/busybox:base"

var (
	dockerOnce sync.Once
	theDockerd *dockerd
	dockerErr  error

	baseOnce sync.Once
	baseErr  error
)

// TestMain stops the private dockerd after the tests, and removes the
// slipway binary that binary() built. It is the package's only TestMain:
// a file that needs another must fold this in.
func TestMain(m *testing.M) {
	code := m.Run()
	if theDockerd != nil {
		if err := theDockerd.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stopping the private dockerd:", err)
		}
	}
	if binPath != "" { // binary()'s build, ~50 MB per run
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

type dockerd struct {
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan error
	log  string
}

const depsHint = "run `make test-deps` (hack/install-deps.sh test) to install docker.io, runc, skopeo and busybox-static"

// dockerDaemon returns the package's private dockerd, starting it once.
func dockerDaemon(t *testing.T) *dockerd {
	t.Helper()
	dockerOnce.Do(func() { theDockerd, dockerErr = startDockerd() })
	if dockerErr != nil {
		t.Fatal(dockerErr)
	}
	return theDockerd
}

func startDockerd() (*dockerd, error) {
	for _, tool := range []string{"dockerd", "docker", "containerd", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed: %s", tool, depsHint)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the docker tests start their own dockerd, which needs root: run them as root")
	}
	dir, err := os.MkdirTemp("", "slipway-e2e-dockerd")
	if err != nil {
		return nil, err
	}
	d := &dockerd{dir: dir, sock: filepath.Join(dir, "docker.sock"), done: make(chan error, 1), log: filepath.Join(dir, "dockerd.log")}
	// An empty config file, so that /etc/docker/daemon.json cannot clash
	// with the flags.
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	d.cmd = exec.Command("dockerd",
		"--config-file", cfg,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--host", "unix://"+d.sock,
		"--bridge=none", "--iptables=false",
	)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If the test binary dies without running TestMain's cleanup (a
	// timeout panic, a kill), the kernel stops dockerd. Pdeathsig fires
	// when the forking thread exits, so that thread stays locked to this
	// goroutine for as long as dockerd runs.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := d.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		d.done <- d.cmd.Wait()
		logf.Close()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting dockerd: %w", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-d.done:
			d.done <- err
			return nil, fmt.Errorf("dockerd exited at start: %v\n%s", err, d.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := exec.CommandContext(ctx, "docker", "-H", "unix://"+d.sock, "version", "--format", "{{.Server.Version}}").Run()
		cancel()
		if err == nil {
			return d, nil
		}
		if time.Now().After(deadline) {
			_ = d.stop()
			return nil, fmt.Errorf("dockerd did not answer `docker version` within 90s\n%s", d.logTail())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (d *dockerd) logTail() string {
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// stop shuts dockerd down gracefully (it unmounts its layers and stops
// its containerd), kills it if it takes too long, and removes its files.
func (d *dockerd) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		err = fmt.Errorf("dockerd ignored SIGTERM for 30s; killed: %v", <-d.done)
	}
	if err != nil && !isSignalExit(err) {
		return err
	}
	return os.RemoveAll(d.dir)
}

func isSignalExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && !ee.Exited()
}

// dockerCLI runs the docker CLI against the private daemon with its own
// credentials (DOCKER_CONFIG), so logins never leak between tests or into
// ~/.docker.
type dockerCLI struct {
	t      *testing.T
	d      *dockerd
	config string
}

func newDockerCLI(t *testing.T) dockerCLI {
	t.Helper()
	return dockerCLI{t: t, d: dockerDaemon(t), config: t.TempDir()}
}

func (c dockerCLI) run(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + c.d.sock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+c.config, "DOCKER_BUILDKIT=0", "DOCKER_CLI_HINTS=false")
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c dockerCLI) ok(args ...string) string {
	c.t.Helper()
	out, err := c.run("", args...)
	if err != nil {
		c.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// fails runs docker, wants it to fail, and returns its output.
func (c dockerCLI) fails(args ...string) string {
	c.t.Helper()
	out, err := c.run("", args...)
	if err == nil {
		c.t.Fatalf("docker %s succeeded, want a failure\n%s", strings.Join(args, " "), out)
	}
	return out
}

func (c dockerCLI) login(registry, user, token string) {
	c.t.Helper()
	if out, err := c.run(token, "login", "-u", user, "--password-stdin", registry); err != nil {
		c.t.Fatalf("docker login %s as %s: %v\n%s", registry, user, err, out)
	}
}

// build builds an image from a Dockerfile alone.
func (c dockerCLI) build(tag, dockerfile string) {
	c.t.Helper()
	ctxDir := c.t.TempDir()
	if err := writeBuildContext(ctxDir, dockerfile, nil); err != nil {
		c.t.Fatal(err)
	}
	c.ok("build", "-q", "-t", tag, ctxDir)
}

func writeBuildContext(dir, dockerfile string, files map[string][]byte) error {
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// baseImage builds, once, a busybox image from the host's static busybox:
// nothing can be pulled from Docker Hub here.
func baseImage(t *testing.T) string {
	t.Helper()
	c := newDockerCLI(t)
	baseOnce.Do(func() {
		bb, err := exec.LookPath("busybox")
		if err != nil {
			baseErr = fmt.Errorf("busybox is not installed: %s", depsHint)
			return
		}
		data, err := os.ReadFile(bb)
		if err != nil {
			baseErr = err
			return
		}
		ctxDir := filepath.Join(c.d.dir, "base-context")
		if err := os.MkdirAll(ctxDir, 0o755); err != nil {
			baseErr = err
			return
		}
		dockerfile := "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
		if err := writeBuildContext(ctxDir, dockerfile, map[string][]byte{"busybox": data}); err != nil {
			baseErr = err
			return
		}
		if out, err := c.run("", "build", "-q", "-t", baseImageRef, ctxDir); err != nil {
			baseErr = fmt.Errorf("building %s from %s (is it the static busybox? %s): %v\n%s", baseImageRef, bb, depsHint, err, out)
		}
	})
	if baseErr != nil {
		t.Fatal(baseErr)
	}
	return baseImageRef
}
