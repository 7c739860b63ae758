package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// TestBinaryBuild uploads a local directory with start-build --from-dir
// and builds it; the uploaded file ends up in the image.
func TestBinaryBuild(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t))
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bin"}}); err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if err := remote.Write(mustRef(t, p.registry+"/bin/base:1"), busyboxImage(t), auth); err != nil {
		t.Fatal(err)
	}
	bc := &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "local", Namespace: "bin"},
		Spec: api.BuildConfigSpec{
			Source:   api.BuildSource{Binary: &api.BinaryBuildSource{}},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "local:latest"}},
		},
	}
	if err := admin.Create(ctx, api.BuildConfigs, bc); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "Dockerfile"), []byte("FROM base\nCOPY app/config.txt /etc/app.txt\n"), 0o644)
	os.MkdirAll(filepath.Join(src, "app"), 0o755)
	os.WriteFile(filepath.Join(src, "app", "config.txt"), []byte("uploaded\n"), 0o644)
	os.MkdirAll(filepath.Join(src, ".git"), 0o755)
	os.WriteFile(filepath.Join(src, ".git", "HEAD"), []byte("not uploaded\n"), 0o644)

	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("project", "bin")
	// Without an upload the build says how to give one.
	c.fails("failed", "start-build", "local", "--wait")
	if b := waitBuild(t, admin, "bin", "local-1"); b.Status.Reason != "NoSourceUploaded" {
		t.Errorf("local-1 reason = %q, want NoSourceUploaded", b.Status.Reason)
	}
	c.ok("start-build", "local", "--from-dir", src, "--wait")
	b := waitBuild(t, admin, "bin", "local-2")
	if b.Status.Phase != api.BuildComplete {
		t.Fatalf("local-2 = %s (%s): %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	img, err := remote.Image(mustRef(t, p.registry+"/bin/local:latest"), auth)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	if len(layers) != 2 {
		t.Errorf("output has %d layers, want the base's and the COPY's", len(layers))
	}
}
