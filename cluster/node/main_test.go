package node

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/api/pkg/authconfig"
	mobyregistry "github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// The tests run against one embedded etcd (each test under its own key
// prefix) and one private dockerd, started on first use: its data root,
// exec root, socket and config live in one temporary directory, and its
// default bridge is slpwnode0, a Linux bridge the test makes with
// 10.214.0.1/24 so that pods get addresses the host (and so the agent's
// probes) reach directly. The runtime package's tests use slpwtest0 and
// 10.213.0.0/24, so both can run at once. --iptables=false,
// --ip-masq=false and --ip-forward=false leave the host's firewall and
// sysctls alone.
//
// Images come from a registry in this process (go-containerregistry's, on
// 127.0.0.1, behind Basic auth), which the daemon pulls from over plain
// HTTP as it trusts 127.0.0.0/8: the host's static busybox, FROM scratch.

const (
	testBridge   = "slpwnode0"
	testBridgeIP = "10.214.0.1/24"
	testSubnet   = "10.214.0."
	regUser      = "puller"
	regPass      = "s3cret"
	depsHint     = "run `make test-deps` (hack/install-deps.sh test) to install docker.io, runc and busybox-static"
)

var (
	sharedClient *clientv3.Client

	dockerOnce sync.Once
	theDockerd *dockerd
	dockerErr  error

	imageOnce  sync.Once
	testImage  string
	busyboxImg v1.Image
	regHost    string
	regServer  *httptest.Server
	imageErr   error
)

// TestMain makes the test binary the pause program when the pause image
// runs it as `/pause pause`, as `slipway pause` does in production.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "pause" {
		runtime.PauseMain()
		return
	}
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "node-test-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	member, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer member.Close()
	c, err := etcd.Client(member.ClientURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	sharedClient = c
	code := m.Run()
	if regServer != nil {
		regServer.Close()
	}
	if theDockerd != nil {
		if err := theDockerd.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "node: stopping the private dockerd:", err)
		}
	}
	return code
}

var runs atomic.Int64

// newStore returns a store isolated under a prefix unique to the test.
func newStore(t *testing.T) *store.Store {
	t.Helper()
	return store.New(sharedClient, store.WithPrefix(fmt.Sprintf("/t/%d/%s/", runs.Add(1), t.Name())))
}

type dockerd struct {
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan error
	log  string
}

func dockerDaemon(t *testing.T) *dockerd {
	t.Helper()
	dockerOnce.Do(func() { theDockerd, dockerErr = startDockerd() })
	if dockerErr != nil {
		t.Fatal(dockerErr)
	}
	return theDockerd
}

func ipLink(args ...string) error {
	out, err := exec.Command("ip", append([]string{"link"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip link %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func startDockerd() (*dockerd, error) {
	for _, tool := range []string{"dockerd", "containerd", "runc", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed: %s", tool, depsHint)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the node tests start their own dockerd and bridge, which needs root: run them as root")
	}
	// A bridge left by a killed run would carry its old address.
	_ = ipLink("del", testBridge)
	if err := ipLink("add", testBridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "addr", "add", testBridgeIP, "dev", testBridge).CombinedOutput(); err != nil {
		_ = ipLink("del", testBridge)
		return nil, fmt.Errorf("ip addr add: %v: %s", err, out)
	}
	if err := ipLink("set", testBridge, "up"); err != nil {
		_ = ipLink("del", testBridge)
		return nil, err
	}
	d, err := runDockerd()
	if err != nil {
		_ = ipLink("del", testBridge)
	}
	return d, err
}

func runDockerd() (*dockerd, error) {
	dir, err := os.MkdirTemp("", "slipway-node-dockerd")
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
		"--bridge="+testBridge,
		"--iptables=false", "--ip-masq=false", "--ip6tables=false", "--ip-forward=false",
	)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If the test binary dies without TestMain's cleanup, the kernel stops
	// dockerd. Pdeathsig fires when the forking thread exits, so that
	// thread stays locked to this goroutine for as long as dockerd runs.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
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
	cli, err := client.New(client.WithHost("unix://" + d.sock))
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-d.done:
			d.done <- err
			return nil, fmt.Errorf("dockerd exited at start: %v\n%s", err, d.logTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Ping(ctx, client.PingOptions{})
		cancel()
		if err == nil {
			return d, nil
		}
		if time.Now().After(deadline) {
			_ = d.stop()
			return nil, fmt.Errorf("dockerd did not answer a ping within 90s: %v\n%s", err, d.logTail())
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

// stop shuts dockerd down gracefully, kills it if it takes too long, and
// removes its files and the bridge.
func (d *dockerd) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		err = fmt.Errorf("dockerd ignored SIGTERM for 30s; killed: %v", <-d.done)
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && !ee.Exited()) {
		return err
	}
	return errors.Join(os.RemoveAll(d.dir), ipLink("del", testBridge))
}

// dockerClient is a client of the private dockerd, for what the tests do
// behind the agent's back (killing a container).
func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.WithHost("unix://" + dockerDaemon(t).sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// busybox returns the test image's reference, pushing it once.
func busybox(t *testing.T) string {
	t.Helper()
	imageOnce.Do(func() { testImage, imageErr = pushBusybox() })
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return testImage
}

// registryAuth is Config.RegistryAuth for the test registry.
func registryAuth(context.Context, *api.Pod, string) (string, error) {
	return authconfig.Encode(mobyregistry.AuthConfig{Username: regUser, Password: regPass, ServerAddress: regHost})
}

func pushBusybox() (string, error) {
	regs := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	regServer = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != regUser || p != regPass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		regs.ServeHTTP(w, r)
	}))
	regHost = strings.TrimPrefix(regServer.URL, "http://")

	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "", fmt.Errorf("busybox is not installed: %s", depsHint)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return "", err
	}
	applets, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return "", fmt.Errorf("%s --list (is it busybox-static?): %v", bb, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755},
		{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777},
		{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(data))},
	}
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" {
			hdrs = append(hdrs, &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox"})
		}
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			return "", err
		}
		if h.Name == "bin/busybox" {
			if _, err := tw.Write(data); err != nil {
				return "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	if busyboxImg, err = mutate.Config(img, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}}); err != nil {
		return "", err
	}
	ref := regHost + "/test/busybox:1"
	return ref, push(ref)
}

// push pushes the busybox image as ref to the test registry.
func push(ref string) error {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(tag, busyboxImg, remote.WithAuth(&authn.Basic{Username: regUser, Password: regPass})); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	return nil
}
