package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// TestSkopeoCopy copies an image between two streams of a project with
// skopeo, registry to registry, and checks that the copy is recorded under
// the same digest.
func TestSkopeoCopy(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatalf("skopeo is not installed: %s", depsHint)
	}
	p := startServer(t, t.TempDir(), freePort(t))
	logIfDied(t, p)
	admin := p.admin(t)
	ctx := context.Background()
	const project = "skop"
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
		t.Fatal(err)
	}
	token := admin.Token()
	src, err := random.Image(3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ggcrRef(t, p.registry, project+"/bb:1"), src, ggcrOpts(ctx, token)...); err != nil {
		t.Fatal(err)
	}
	srcDigest, err := src.Digest()
	if err != nil {
		t.Fatal(err)
	}

	// A policy of our own: the host's /etc/containers/policy.json may be
	// missing or strict.
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	creds := "u:" + token
	skopeo := func(args ...string) string {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, "skopeo", append([]string{"--policy", policy}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no stray auth.json or registries.d
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	srcRef := "docker://" + p.registry + "/" + project + "/bb:1"
	dstRef := "docker://" + p.registry + "/" + project + "/copy:v1"
	skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", "--src-creds", creds, "--dest-creds", creds, srcRef, dstRef)

	var inspect struct{ Digest string }
	if err := json.Unmarshal([]byte(skopeo("inspect", "--tls-verify=false", "--creds", creds, dstRef)), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != srcDigest.String() {
		t.Errorf("skopeo inspect %s: digest %s, want the source's %s", dstRef, inspect.Digest, srcDigest)
	}
	obj, err := admin.Get(ctx, api.ImageStreams, project, "copy")
	if err != nil {
		t.Fatalf("image stream copy after skopeo copy: %v", err)
	}
	if got := tagImage([]api.ImageStream{*obj.(*api.ImageStream)}, "copy", "v1"); got != srcDigest.String() {
		t.Errorf("image stream copy: tag v1 points at %q, want the source's %s\n%+v", got, srcDigest, obj.(*api.ImageStream).Status)
	}
	// The copy pulls byte for byte.
	if err := ggcrVerify(ctx, ggcrRef(t, p.registry, project+"/copy:v1"), src, token); err != nil {
		t.Error(err)
	}
}
