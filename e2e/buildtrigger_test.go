package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
)

// TestBuildTriggers: a config with ConfigChange and ImageChange triggers
// builds once when created, and again, on the new digest, when its base
// tag moves; a burst of base pushes never builds one digest twice, and the
// newest base is always built.
func TestBuildTriggers(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t))
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "trg"}}); err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	pushBase := func(img v1.Image) string {
		ref, _ := name.ParseReference(p.registry+"/trg/base:1", name.Insecure)
		if err := remote.Write(ref, img, auth); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	variant := func(n int) v1.Image {
		img, err := mutate.Config(busyboxImage(t), v1.Config{Labels: map[string]string{"variant": string(rune('a' + n))}})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	first := pushBase(variant(0))
	bc := &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "trg"},
		Spec: api.BuildConfigSpec{
			Source:   api.BuildSource{Dockerfile: "FROM base\nRUN [\"/bin/busybox\", \"true\"]\n"},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}},
			Triggers: []api.BuildTrigger{{Type: "ConfigChange"}, {Type: "ImageChange"}},
		},
	}
	if err := admin.Create(ctx, api.BuildConfigs, bc); err != nil {
		t.Fatal(err)
	}
	b1 := waitBuild(t, admin, "trg", "app-1")
	if b1.Status.Phase != api.BuildComplete || b1.Status.BaseImage != p.registry+"/trg/base@"+first {
		t.Fatalf("app-1 = %s on %s, want Complete on %s\n%s", b1.Status.Phase, b1.Status.BaseImage, first, b1.Status.LogTail)
	}

	// A burst of base pushes.
	var pushed []string
	for i := 1; i <= 3; i++ {
		pushed = append(pushed, pushBase(variant(i)))
	}
	newest := pushed[len(pushed)-1]
	deadline := time.Now().Add(3 * time.Minute)
	var builds []api.Object
	for time.Now().Before(deadline) {
		var err error
		builds, _, err = admin.List(ctx, api.Builds, "trg", client.ListOptions{LabelSelector: builders.BuildConfigLabel + "=app"})
		if err != nil {
			t.Fatal(err)
		}
		done, sawNewest := true, false
		for _, o := range builds {
			b := o.(*api.Build)
			done = done && api.IsFinished(b.Status.Phase)
			sawNewest = sawNewest || b.Status.BaseImage == p.registry+"/trg/base@"+newest
		}
		if done && sawNewest {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	seen := map[string]string{}
	newestBuilt := false
	for _, o := range builds {
		b := o.(*api.Build)
		if prev, dup := seen[b.Status.BaseImage]; dup {
			t.Errorf("builds %s and %s both built base %s", prev, b.Name, b.Status.BaseImage)
		}
		seen[b.Status.BaseImage] = b.Name
		if b.Status.Phase != api.BuildComplete {
			t.Errorf("%s = %s (%s): %s", b.Name, b.Status.Phase, b.Status.Reason, b.Status.Message)
		}
		newestBuilt = newestBuilt || b.Status.BaseImage == p.registry+"/trg/base@"+newest
	}
	if !newestBuilt {
		t.Errorf("no build of the newest base %s among %d builds", newest, len(builds))
	}
	if len(builds) < 2 || len(builds) > 4 {
		t.Errorf("%d builds after creation and a burst of 3 base pushes, want 2 to 4", len(builds))
	}
}
