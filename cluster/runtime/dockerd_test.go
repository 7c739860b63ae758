package runtime

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
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

	"slipway.dev/slipway/cluster/runtime/dockertest"
)

// The tests share one private dockerd, started on first use and stopped
// by TestMain, like e2e's: its data root, exec root (with its own
// containerd), pid file, socket and config live in one temporary
// directory. Unlike e2e's it has a network: its default bridge is
// slpwtestPID, a Linux bridge the test makes in 10.213.0.0/16, so pods get
// addresses the host reaches directly. --iptables=false, --ip-masq=false
// and --ip-forward=false leave the host's firewall and sysctls alone;
// host ports are published by docker-proxy.
//
// Images come from a registry in this process (go-containerregistry's, on
// 127.0.0.1, behind Basic auth), which the daemon pulls from over plain
// HTTP as it trusts 127.0.0.0/8. The busybox image is the host's static
// busybox, FROM scratch.

const (
	regUser = "puller"
	regPass = "s3cret"
)

// The bridge and subnet of this test process (slpwtestPID, 10.213.N.0/24).
var (
	testNet    = dockertest.PerProcess("slpwtest", "10.213")
	testSubnet = testNet.Subnet()
)

var (
	dockerOnce sync.Once
	theDockerd *dockerd
	dockerErr  error

	imageOnce  sync.Once
	testImage  string   // busybox in the test registry
	busyboxImg v1.Image // the same, to push under other tags
	regHost    string
	regServer  *httptest.Server
	imageErr   error
)

// TestMain makes the test binary the pause program when the pause image
// runs it as `/pause pause`, as `slipway pause` does in production.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "pause" {
		PauseMain()
		return
	}
	code := m.Run()
	if regServer != nil {
		regServer.Close()
	}
	if theDockerd != nil {
		if err := theDockerd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "runtime: stopping the private dockerd:", err)
			code = 1 // it must leave nothing behind
		}
	}
	os.Exit(code)
}

// dockerd is the private engine, on the bridge testNet.
type dockerd = dockertest.Daemon

const depsHint = dockertest.DepsHint

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

// busybox returns the test image's reference and the credentials to pull
// it, pushing it to the test registry once.
func busybox(t *testing.T) (ref, auth string) {
	t.Helper()
	imageOnce.Do(func() { testImage, imageErr = pushBusybox() })
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return testImage, pullAuth(regUser, regPass)
}

func pullAuth(user, pass string) string {
	a, err := authconfig.Encode(mobyregistry.AuthConfig{Username: user, Password: pass, ServerAddress: regHost})
	if err != nil {
		panic(err)
	}
	return a
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
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"sh"}, Env: []string{"PATH=/bin"}})
	if err != nil {
		return "", err
	}
	busyboxImg = img
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
