package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
)

// TestRegistryRoleScalesOut runs a second registry with `slipway registry`
// against the all-in-one's etcd and storage: a push through one replica is
// pulled through the other, and both see the same image stream.
func TestRegistryRoleScalesOut(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr)
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "scale"}}); err != nil {
		t.Fatal(err)
	}
	var etcdAddrs struct{ Client string }
	data, err := os.ReadFile(filepath.Join(dir, "etcd.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &etcdAddrs); err != nil {
		t.Fatal(err)
	}
	reg2 := freePort(t)
	cmd := exec.Command(binary(t), "registry", "--data-dir", dir, "--registry-listen", reg2, "--etcd-endpoints", "https://"+etcdAddrs.Client)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref2, _ := name.ParseReference(reg2+"/scale/app:v1", name.Insecure)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = remote.Write(ref2, img, auth)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the replica is still starting
	}
	if err != nil {
		t.Fatalf("push through the second registry: %v\n%s", err, out.String())
	}
	want, _ := img.Digest()
	ref1, _ := name.ParseReference(p.registry+"/scale/app:v1", name.Insecure)
	got, err := remote.Get(ref1, auth)
	if err != nil {
		t.Fatalf("pull through the first registry: %v", err)
	}
	if got.Digest != want {
		t.Errorf("first registry serves scale/app:v1 = %s, want %s (pushed through the second)", got.Digest, want)
	}
	o, err := admin.Get(ctx, api.ImageStreams, "scale", "app")
	if err != nil {
		t.Fatal(err)
	}
	if ev, ok := imagestreams.Latest(o.(*api.ImageStream), "v1"); !ok || ev.Image != want.String() || ev.By != "admin" {
		t.Errorf("ImageStream scale/app:v1 = %+v, %v; want %s by admin", ev, ok, want)
	}
}
