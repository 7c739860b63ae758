package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

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

	// Both replicas now cache the manifest (the fast path fills on
	// push and on the first read). A tag moved through the second is seen
	// by the first as soon as its image-stream watch delivers the move
	// (polled, never timed); a manifest deleted through the second is
	// gone from the first at once, by digest and by tag, because every
	// cached answer re-checks distribution's revision link in the shared
	// storage.
	dgstRef1, _ := name.ParseReference(p.registry+"/scale/app@"+want.String(), name.Insecure)
	for range 2 {
		if _, err := remote.Get(dgstRef1, auth); err != nil {
			t.Fatalf("pull by digest through the first registry: %v", err)
		}
	}
	img2, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	want2, _ := img2.Digest()
	if err := remote.Write(ref2, img2, auth); err != nil {
		t.Fatalf("move scale/app:v1 through the second registry: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, err := remote.Get(ref1, auth)
		if err == nil && got.Digest == want2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first registry still serves scale/app:v1 = %v, %v; want %s, moved through the second", got, err, want2)
		}
	}
	ref2d, _ := name.ParseReference(reg2+"/scale/app@"+want2.String(), name.Insecure)
	if err := remote.Delete(ref2d, auth); err != nil {
		t.Fatalf("delete scale/app@%s through the second registry: %v", want2, err)
	}
	dgst2Ref1, _ := name.ParseReference(p.registry+"/scale/app@"+want2.String(), name.Insecure)
	for _, r := range []name.Reference{dgst2Ref1, ref1} {
		_, err := remote.Get(r, auth)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
			t.Errorf("pull %s through the first registry after the second deleted it: got %v, want 404", r, err)
		}
	}
}
