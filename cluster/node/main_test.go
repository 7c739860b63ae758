package node

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

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

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/cluster/runtime/dockertest"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

// The tests run against one embedded etcd (each test under its own key
// prefix) and one private dockerd, started on first use: its data root,
// exec root, socket and config live in one temporary directory, and its
// default bridge is slpwnodePID, a Linux bridge the test makes in
// 10.214.0.0/16 (a /24 per process) so that pods get addresses the host
// (and so the agent's probes) reach directly. The runtime package's tests
// use slpwtestPID in 10.213.0.0/16, so both, and two runs of either, can
// run at once. --iptables=false,
// --ip-masq=false and --ip-forward=false leave the host's firewall and
// sysctls alone.
//
// Images come from a registry in this process (go-containerregistry's, on
// 127.0.0.1, behind Basic auth), which the daemon pulls from over plain
// HTTP as it trusts 127.0.0.0/8: the host's static busybox, FROM scratch.

const (
	regUser  = "puller"
	regPass  = "s3cret"
	depsHint = "run `make test-deps` (hack/install-deps.sh test) to install docker.io, runc and busybox-static"
)

// The bridge and subnet of this test process (slpwnodePID, 10.214.N.0/24).
var (
	testNet     = dockertest.PerProcess("slpwnode", "10.214")
	testSubnet  = testNet.Subnet()
	testAddress = testNet.Gateway()
)

var (
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
	code := storetest.Main(m)
	if regServer != nil {
		regServer.Close()
	}
	if theDockerd != nil {
		if err := theDockerd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "node: stopping the private dockerd:", err)
			code = 1 // it must leave nothing behind
		}
	}
	os.Exit(code)
}

var runs atomic.Int64

// newStore returns a store isolated under a prefix unique to the test,
// holding project "test" (with a UID range, which the agent runs its
// pods' containers as).
func newStore(t *testing.T) *store.Store {
	s := storetest.New(t)
	storetest.Project(t, storetest.Context(t), s, "test", 1)
	return s
}

// dockerd is the private engine, on the bridge testNet.
type dockerd = dockertest.Daemon

func dockerDaemon(t *testing.T) *dockerd {
	t.Helper()
	dockerOnce.Do(func() {
		theDockerd, dockerErr = dockertest.Start(testNet)
	})
	if dockerErr != nil {
		t.Fatal(dockerErr)
	}
	return theDockerd
}

func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	cli, err := client.New(client.WithHost(dockerDaemon(t).Host()))
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
