package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"slipway.dev/slipway/cluster/runtime/dockertest"
)

// The docker tests share one private dockerd (cluster/runtime/dockertest),
// started on first use and stopped by TestMain. It never touches the
// machine's own daemon. Pulls and pushes are made by the daemon itself,
// which reaches the registry on 127.0.0.1 (docker trusts 127.0.0.0/8 over
// plain HTTP).

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
	if spec := os.Getenv(etcdMemberEnv); spec != "" {
		os.Exit(runEtcdMember(spec)) // a chaos test's etcd member
	}
	code := m.Run()
	if theDockerd != nil {
		if err := theDockerd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stopping the private dockerd:", err)
			code = 1 // it must leave nothing behind
		}
	}
	if binPath != "" { // binary()'s build, ~50 MB per run
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// dockerd is the package's private engine. Its default network is the
// bridge slpwe2e0 (10.215.0.1/24), which the tests make, so pods get
// addresses the host reaches directly; builds, pulls and pushes work as
// before.
type dockerd = dockertest.Daemon

const depsHint = dockertest.DepsHint

// e2e's bridge is named for the test process, so that two runs of these
// tests (and other packages' tests) can each have their own at once.
var e2eNet = dockertest.PerProcess("slpwe", "10.215")

// dockerDaemon returns the package's private dockerd, starting it once.
func dockerDaemon(t *testing.T) *dockerd {
	t.Helper()
	dockerOnce.Do(func() { theDockerd, dockerErr = dockertest.Start(e2eNet) })
	if dockerErr != nil {
		t.Fatal(dockerErr)
	}
	return theDockerd
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

// run runs docker and returns its standard output; a failure's error
// carries what it printed on standard error. The CLI prints warnings there
// (such as "IPv4 forwarding is disabled" on a machine that just booted),
// so they never mix with the output a test compares.
func (c dockerCLI) run(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", c.d.Host()}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+c.config, "DOCKER_BUILDKIT=0", "DOCKER_CLI_HINTS=false")
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w\n%s", err, errOut.String())
	}
	return out.String(), nil
}

func (c dockerCLI) ok(args ...string) string {
	c.t.Helper()
	out, err := c.run("", args...)
	if err != nil {
		c.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// fails runs docker, wants it to fail, and returns what it printed on
// both outputs.
func (c dockerCLI) fails(args ...string) string {
	c.t.Helper()
	out, err := c.run("", args...)
	if err == nil {
		c.t.Fatalf("docker %s succeeded, want a failure\n%s", strings.Join(args, " "), out)
	}
	return out + err.Error()
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
		ctxDir := filepath.Join(c.d.Dir, "base-context")
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
