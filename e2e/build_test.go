package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/signing"
)

// buildkitd returns the repository's bin/buildkitd, building it from the
// pinned module if `make build` has not.
func buildkitd(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../bin/buildkitd")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		out, err := exec.Command("go", "build", "-o", p, "github.com/moby/buildkit/cmd/buildkitd").CombinedOutput()
		if err != nil {
			t.Fatalf("building buildkitd: %v\n%s", err, out)
		}
	}
	return p
}

// busyboxImage is FROM scratch plus Debian's static busybox at /bin/busybox.
func busyboxImage(t *testing.T) v1.Image {
	t.Helper()
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static is missing (make test-deps installs it): %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	tw.Close()
	layer, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH, RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(t, img)}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustDiffIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs
}

func waitBuild(t *testing.T, cl *client.Client, ns, name string) *api.Build {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		o, err := cl.Get(context.Background(), api.Builds, ns, name)
		if err != nil && !api.IsNotFound(err) {
			t.Fatal(err)
		}
		if err == nil && api.IsFinished(o.(*api.Build).Status.Phase) {
			return o.(*api.Build)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("build %s did not finish in 3 minutes", name)
	return nil
}

// TestDockerfileBuild runs a Dockerfile with a RUN step on the supervised
// buildkitd, on a base resolved from an image stream tag, and checks where
// the result went and what it records; then a failing build.
func TestDockerfileBuild(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t))
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bld"}}); err != nil {
		t.Fatal(err)
	}
	base := busyboxImage(t)
	baseRef, _ := name.ParseReference(p.registry+"/bld/base:1", name.Insecure)
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if err := remote.Write(baseRef, base, auth); err != nil {
		t.Fatal(err)
	}
	baseDigest, _ := base.Digest()

	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("project", "bld")
	// With a "default" signing key, builds sign and attest their output.
	if err := admin.Create(ctx, api.SigningKeys, &api.SigningKey{ObjectMeta: api.ObjectMeta{Name: "default", Namespace: "bld"}}); err != nil {
		t.Fatal(err)
	}
	var pub []byte
	for deadline := time.Now().Add(30 * time.Second); len(pub) == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if o, err := admin.Get(ctx, api.SigningKeys, "bld", "default"); err == nil {
			pub = []byte(o.(*api.SigningKey).PublicKey)
		}
	}
	if len(pub) == 0 {
		t.Fatal("the signing key got no key pair")
	}
	bc := filepath.Join(t.TempDir(), "bc.yaml")
	os.WriteFile(bc, []byte(`kind: BuildConfig
metadata: {name: web}
spec:
  source:
    dockerfile: |
      FROM example.invalid/replaced-by-the-base
      RUN ["/bin/busybox", "sh", "-c", "echo built > /built"]
  strategy:
    type: Docker
    dockerStrategy:
      from: {kind: ImageStreamTag, name: "base:1"}
  output:
    to: {kind: ImageStreamTag, name: "web:latest"}
---
kind: BuildConfig
metadata: {name: broken}
spec:
  source:
    dockerfile: |
      FROM scratch
      RUN ["/bin/busybox", "false"]
  strategy:
    type: Docker
    dockerStrategy:
      from: {kind: ImageStreamTag, name: "base:1"}
  output:
    to: {kind: ImageStreamTag, name: "broken:latest"}
---
kind: BuildConfig
metadata: {name: tested}
spec:
  source:
    dockerfile: |
      FROM scratch
      RUN ["/bin/busybox", "sh", "-c", "echo built > /built"]
      USER 1001
  postCommit:
    command: ["/bin/busybox", "sh", "-c", "test -f /built && echo hook-saw-built"]
  strategy:
    type: Docker
    dockerStrategy:
      from: {kind: ImageStreamTag, name: "base:1"}
  output:
    to: {kind: ImageStreamTag, name: "tested:latest"}
---
kind: BuildConfig
metadata: {name: untested}
spec:
  source:
    dockerfile: |
      FROM scratch
      RUN ["/bin/busybox", "sh", "-c", "echo built > /built"]
  postCommit:
    command: ["/bin/busybox", "sh", "-c"]
    args: ["echo hook-says-no; exit 3"]
  strategy:
    type: Docker
    dockerStrategy:
      from: {kind: ImageStreamTag, name: "base:1"}
  output:
    to: {kind: ImageStreamTag, name: "untested:latest"}
`), 0o600)
	c.ok("apply", "-f", bc)
	out := c.ok("start-build", "web", "--follow")
	if !strings.Contains(out, "resolved to "+p.registry+"/bld/base@"+baseDigest.String()) {
		t.Errorf("build log does not show the base resolved to its digest:\n%s", out)
	}
	b := waitBuild(t, admin, "bld", "web-1")
	if b.Status.Phase != api.BuildComplete {
		t.Fatalf("web-1 = %s (%s): %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	// The output is signed, with SLSA provenance naming the base digest.
	outRef, err := name.NewDigest(b.Status.OutputDockerImageReference, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	signAuth := signing.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if _, err := signing.Verify(ctx, outRef, [][]byte{pub}, signAuth); err != nil {
		t.Errorf("the build's output is not signed by the project's default key: %v\n%s", err, b.Status.LogTail)
	}
	if _, err := signing.VerifyAttestation(ctx, outRef, [][]byte{pub}, signing.PredicateSLSAProvenance, signAuth); err != nil {
		t.Errorf("the build's output has no signed provenance: %v", err)
	}
	if !strings.Contains(b.Status.LogTail, "Signed "+b.Status.OutputDockerImageReference+" and attached its SLSA provenance") {
		t.Errorf("the build log does not say it signed the output:\n%s", b.Status.LogTail)
	}
	// Its Dockerfile sets no USER: the build warns that restricted pods
	// will not run it as root, in the log and in the status.
	if len(b.Status.Warnings) != 1 || !strings.Contains(b.Status.Warnings[0], "the image runs as root (its config sets no USER)") ||
		!strings.Contains(out, "Warning: the image runs as root") {
		t.Errorf("a build of an image without USER: warnings %q; followed output:\n%s\nwant the root warning in both", b.Status.Warnings, out)
	}
	// The whole log is kept after the build.
	if full := c.ok("logs", "build/web-1"); !strings.Contains(full, "Base image base:1 resolved to") || len(full) < len(b.Status.LogTail) {
		t.Errorf("logs build/web-1 (%d bytes) is not the whole log:\n%s", len(full), full)
	}
	o, err := admin.Get(ctx, api.ImageStreams, "bld", "web")
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), "latest")
	if !ok || ev.Image != b.Status.OutputDigest || ev.By != "system:serviceaccount:bld:builder" {
		t.Errorf("web:latest = %+v, want %s pushed by the builder account", ev, b.Status.OutputDigest)
	}
	webRef, _ := name.ParseReference(p.registry+"/bld/web:latest", name.Insecure)
	img, err := remote.Image(webRef, auth)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Annotations["org.opencontainers.image.base.digest"]; got != baseDigest.String() {
		t.Errorf("output annotation base.digest = %q, want %s", got, baseDigest)
	}
	cfg, _ := img.ConfigFile()
	if cfg.Config.Labels["io.openshift.build.name"] != "web-1" {
		t.Errorf("output label io.openshift.build.name = %q, want web-1", cfg.Config.Labels["io.openshift.build.name"])
	}
	layers, _ := img.Layers()
	if len(layers) != 2 {
		t.Errorf("output has %d layers, want the base's and the RUN step's", len(layers))
	}

	// A failing RUN fails the build with its reason and keeps the log.
	_, errOut, err := c.run("", "start-build", "broken", "--wait")
	if err == nil || !strings.Contains(errOut, "failed") {
		t.Errorf("start-build broken --wait: err=%v stderr=%q, want a failure", err, errOut)
	}
	bb := waitBuild(t, admin, "bld", "broken-1")
	if bb.Status.Phase != api.BuildFailed || bb.Status.Reason != "BuildFailed" || !strings.Contains(bb.Status.LogTail, "error") {
		t.Errorf("broken-1 = %s/%s, log %q; want Failed/BuildFailed with the error in the log", bb.Status.Phase, bb.Status.Reason, bb.Status.LogTail)
	}
	if _, err := admin.Get(ctx, api.ImageStreams, "bld", "broken"); !api.IsNotFound(err) {
		t.Errorf("a failed build created its output stream: %v", err)
	}
	if got := c.ok("get", "builds"); !strings.Contains(got, "Complete") || !strings.Contains(got, "Failed") {
		t.Errorf("get builds = %q", got)
	}

	// The postCommit hook runs in the new image before the push: passing,
	// the image is pushed; failing, the build fails and nothing is pushed.
	c.ok("start-build", "tested", "--wait")
	tb := waitBuild(t, admin, "bld", "tested-1")
	if tb.Status.Phase != api.BuildComplete || !strings.Contains(tb.Status.LogTail, "hook-saw-built") {
		t.Errorf("tested-1 = %s (%s), log:\n%s\nwant Complete with the hook's output", tb.Status.Phase, tb.Status.Message, tb.Status.LogTail)
	}
	if len(tb.Status.Warnings) != 0 { // USER 1001
		t.Errorf("tested-1, an image with USER 1001, has warnings %q", tb.Status.Warnings)
	}
	c.run("", "start-build", "untested", "--wait")
	ub := waitBuild(t, admin, "bld", "untested-1")
	if ub.Status.Phase != api.BuildFailed || ub.Status.Reason != "PostCommitHookFailed" || !strings.Contains(ub.Status.LogTail, "hook-says-no") {
		t.Errorf("untested-1 = %s/%s: %s, log:\n%s\nwant Failed/PostCommitHookFailed with the hook's output", ub.Status.Phase, ub.Status.Reason, ub.Status.Message, ub.Status.LogTail)
	}
	if _, err := admin.Get(ctx, api.ImageStreams, "bld", "untested"); !api.IsNotFound(err) {
		t.Errorf("a build whose hook failed pushed its output: %v", err)
	}
}

// inMemory opens b as a layer's bytes. (tarball.LayerFromReader would
// copy them to a file in the temporary directory that is never removed.)
func inMemory(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
