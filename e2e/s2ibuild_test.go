package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
)

// s2iBuilderImage is busybox plus S2I scripts, labelled as a builder.
func s2iBuilderImage(t *testing.T) v1.Image {
	t.Helper()
	script := func(body string) string { return "#!/bin/busybox sh\n" + body + "\n" }
	files := map[string]string{
		// assemble counts builds: an incremental build finds the last
		// count in the artifacts save-artifacts kept.
		"usr/libexec/s2i/assemble": script("set -e\n/bin/busybox mkdir -p /app\n/bin/busybox cp -r /tmp/src/. /app/\necho assembled > /app/ASSEMBLED\n" +
			"n=0; [ -f /tmp/artifacts/count ] && n=$(/bin/busybox cat /tmp/artifacts/count)\necho $((n+1)) > /app/count"),
		"usr/libexec/s2i/run":            script("exec /bin/busybox cat /app/ASSEMBLED /app/greeting.txt /app/count"),
		"usr/libexec/s2i/save-artifacts": script("cd /app && exec /bin/busybox tar -cf - count"),
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"usr/", "usr/libexec/", "usr/libexec/s2i/", "tmp/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o1777})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))})
		tw.Write([]byte(body))
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(busyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = runtime.GOARCH
	cf.Config.Labels = map[string]string{"io.openshift.s2i.scripts-url": "image:///usr/libexec/s2i"}
	cf.Config.Env = []string{"PATH=/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestSourceToImageBuild runs the Source strategy (LLB on the same
// buildkitd): the builder's assemble script runs over uploaded source, and
// the output runs the builder's run script.
func TestSourceToImageBuild(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t))
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "s2i"}}); err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if err := remote.Write(mustRef(t, p.registry+"/s2i/builder:1"), s2iBuilderImage(t), auth); err != nil {
		t.Fatal(err)
	}
	bc := &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "site", Namespace: "s2i"},
		Spec: api.BuildConfigSpec{
			Source:   api.BuildSource{Binary: &api.BinaryBuildSource{}},
			Strategy: api.BuildStrategy{Type: "Source", SourceStrategy: &api.SourceBuildStrategy{Incremental: true, From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "builder:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "site:latest"}},
		},
	}
	if err := admin.Create(ctx, api.BuildConfigs, bc); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "greeting.txt"), []byte("hello from source\n"), 0o644)
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("project", "s2i")
	c.ok("start-build", "site", "--from-dir", src, "--wait")
	b := waitBuild(t, admin, "s2i", "site-1")
	if b.Status.Phase != api.BuildComplete {
		t.Fatalf("site-1 = %s (%s): %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	img, err := remote.Image(mustRef(t, p.registry+"/s2i/site:latest"), auth)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	if got := strings.Join(cf.Config.Cmd, " "); got != "/usr/libexec/s2i/run" {
		t.Errorf("output Cmd = %q, want the builder's run script", got)
	}
	if cf.Config.Labels["io.openshift.build.name"] != "site-1" {
		t.Errorf("output labels = %v, want io.openshift.build.name=site-1", cf.Config.Labels)
	}
	// Run it for real.
	d := dockerDaemon(t)
	_ = d
	dc := newDockerCLI(t)
	dc.login(p.registry, "admin", admin.Token())
	out := dc.ok("run", "--rm", "--network", "none", p.registry+"/s2i/site:latest")
	if !strings.Contains(out, "assembled") || !strings.Contains(out, "hello from source") || !strings.HasSuffix(out, "\n1\n") {
		t.Errorf("running the S2I image printed %q, want the assemble marker, the source's file and build count 1", out)
	}

	// Incremental: the second build gets the first's artifacts.
	c.ok("start-build", "site", "--from-dir", src, "--wait")
	b2 := waitBuild(t, admin, "s2i", "site-2")
	if b2.Status.Phase != api.BuildComplete || !strings.Contains(b2.Status.LogTail, "save-artifacts") {
		t.Fatalf("site-2 = %s (%s): %s\n%s", b2.Status.Phase, b2.Status.Reason, b2.Status.Message, b2.Status.LogTail)
	}
	out = dc.ok("run", "--rm", "--network", "none", p.registry+"/s2i/site@"+b2.Status.OutputDigest)
	if !strings.HasSuffix(out, "\n2\n") {
		t.Errorf("the incremental build printed %q, want build count 2 from the saved artifacts", out)
	}
}
