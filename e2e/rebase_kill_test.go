package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/registry"
)

// TestRebaseKill9MidBatchLeavesEveryImageOldOrNew rebases 80 configs
// server-side, 64 requests in flight, and kills the server with SIGKILL
// while a group of them is half committed: its storage written for every
// image, its first etcd transaction committed, the rest not
// (SLIPWAY_TEST_REBASE_HOLD holds the group there). After a restart every
// image is either the old one or the new one, never half: a tag that moved
// has its Image, its Build (Complete, rebased from the old image) and the
// config's next version, and its manifest and config are served with the
// new base's layers; a tag that did not move still serves the old image,
// and nothing else was recorded for it. Running the rebase again then
// finishes the rest.
func TestRebaseKill9MidBatchLeavesEveryImageOldOrNew(t *testing.T) {
	t.Setenv(registry.RebaseHoldEnv, "10m")
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr)
	admin := p.admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, pr := range []string{"base", "team"} {
		if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: pr}}); err != nil {
			t.Fatal(err)
		}
	}
	token := admin.Token()
	v1img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ggcrRef(t, p.registry, "base/os:1"), v1img, ggcrOpts(ctx, token)...); err != nil {
		t.Fatal(err)
	}
	v1d, _ := v1img.Digest()
	const n = 80
	old := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			l, err := random.Layer(128, "application/vnd.oci.image.layer.v1.tar+gzip")
			if err != nil {
				errs <- err
				return
			}
			img, err := mutate.AppendLayers(v1img, l)
			if err != nil {
				errs <- err
				return
			}
			img = mutate.Annotations(img, map[string]string{builders.BaseNameAnnotation: p.registry + "/base/os", builders.BaseDigestAnnotation: v1d.String()}).(v1.Image)
			if err := remote.Write(ggcrRef(t, p.registry, fmt.Sprintf("team/app-%02d:latest", i)), img, ggcrOpts(ctx, token)...); err != nil {
				errs <- err
				return
			}
			d, _ := img.Digest()
			old[i] = d.String()
			errs <- admin.Create(ctx, api.BuildConfigs, &api.BuildConfig{
				ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("app-%02d", i), Namespace: "team"},
				Spec: api.BuildConfigSpec{Rebase: true,
					Source:   api.BuildSource{Dockerfile: "FROM base\n"},
					Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "os:1"}}},
					Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: fmt.Sprintf("app-%02d:latest", i)}}},
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	v2img, err := mutate.AppendLayers(v1img, mustLayer(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ggcrRef(t, p.registry, "base/os:1"), v2img, ggcrOpts(ctx, token)...); err != nil {
		t.Fatal(err)
	}
	v2d, _ := v2img.Digest()

	// 64 in flight, as `slipway rebuild` sends them; the first requests
	// go through alone, the rest queue up behind them into a group of
	// more than one transaction, which holds after its first.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	var answered sync.WaitGroup
	rsem := make(chan struct{}, 64)
	for i := range n {
		answered.Go(func() {
			rsem <- struct{}{}
			defer func() { <-rsem }()
			_, _ = admin.RebaseBuildConfig(rctx, "team", fmt.Sprintf("app-%02d", i))
		})
	}
	var before int
	waitFor(t, 2*time.Minute, "a rebase group holding after its first transaction", func() (bool, string) {
		builds, _, err := admin.List(ctx, api.Builds, "team", client.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		before = len(builds)
		return strings.Contains(p.out.String(), "holds after its first transaction"), fmt.Sprintf("%d builds recorded", before)
	})
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	rcancel()
	answered.Wait()
	t.Logf("killed with %d of %d rebases recorded", before, n)

	t.Setenv(registry.RebaseHoldEnv, "")
	p2 := startServer(t, dir, addr)
	logIfDied(t, p2)
	admin2 := p2.admin(t)
	token2 := admin2.Token()
	moved := 0
	v2layers, _ := v2img.Layers()
	check := func(i int) (isNew bool) {
		t.Helper()
		stream, cfg := fmt.Sprintf("app-%02d", i), fmt.Sprintf("app-%02d", i)
		o, err := admin2.Get(ctx, api.ImageStreams, "team", stream)
		if err != nil {
			t.Fatal(err)
		}
		ev, _ := imagestreams.Latest(o.(*api.ImageStream), "latest")
		bo, err := admin2.Get(ctx, api.BuildConfigs, "team", cfg)
		if err != nil {
			t.Fatal(err)
		}
		version := bo.(*api.BuildConfig).Status.LastVersion
		builds, _, err := admin2.List(ctx, api.Builds, "team", client.ListOptions{LabelSelector: builders.BuildConfigLabel + "=" + cfg})
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.NewDigest(p2.registry+"/team/"+stream+"@"+ev.Image, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref, ggcrOpts(ctx, token2)...)
		if err != nil {
			t.Errorf("%s: %s is not served after the restart: %v", stream, ev.Image, err)
			return false
		}
		if ev.Image == old[i] {
			if version != 0 || len(builds) != 0 {
				t.Errorf("%s: the tag is old, but version %d and %d builds were recorded: half a rebase", stream, version, len(builds))
			}
			return false
		}
		// New: everything recorded, and the image whole.
		if version != 1 || len(builds) != 1 {
			t.Errorf("%s: the tag moved to %s, but version %d and %d builds: half a rebase", stream, ev.Image, version, len(builds))
			return true
		}
		b := builds[0].(*api.Build)
		if b.Status.Phase != api.BuildComplete || b.Status.OutputDigest != ev.Image || b.Status.RebasedFrom != old[i] || !strings.HasSuffix(b.Status.BaseImage, "@"+v2d.String()) {
			t.Errorf("%s: build %+v does not record the move to %s", stream, b.Status, ev.Image)
		}
		if _, err := admin2.Get(ctx, api.Images, "team", ev.Image); err != nil {
			t.Errorf("%s: no Image record of %s: %v", stream, ev.Image, err)
		}
		ls, err := img.Layers()
		cf, cerr := img.ConfigFile()
		if err != nil || cerr != nil || len(ls) != len(v2layers)+1 || len(cf.RootFS.DiffIDs) != len(ls) {
			t.Errorf("%s: new image unreadable: %v %v", stream, err, cerr)
			return true
		}
		for j, l := range v2layers {
			a, _ := l.Digest()
			b, _ := ls[j].Digest()
			da, _ := l.DiffID()
			if a != b || cf.RootFS.DiffIDs[j] != da {
				t.Errorf("%s: layer %d is %s, want the new base's %s", stream, j, b, a)
			}
		}
		return true
	}
	for i := range n {
		if check(i) {
			moved++
		}
	}
	t.Logf("after the restart: %d images new, %d old, none half", moved, n-moved)
	if moved == 0 || moved == n {
		t.Errorf("the kill was not mid-batch: %d of %d images moved", moved, n)
	}
	// Again, to the end: the rest move, the moved stay.
	for i := range n {
		b, err := admin2.RebaseBuildConfig(ctx, "team", fmt.Sprintf("app-%02d", i))
		if err != nil {
			t.Fatalf("rebase again after the restart: %v", err)
		}
		if b.Status.Phase != api.BuildComplete {
			t.Errorf("%s: %+v", b.Name, b.Status)
		}
	}
	for i := range n {
		o, _ := admin2.Get(ctx, api.ImageStreams, "team", fmt.Sprintf("app-%02d", i))
		ev, _ := imagestreams.Latest(o.(*api.ImageStream), "latest")
		if ev.Image == old[i] {
			t.Errorf("app-%02d still old after the second run", i)
		}
	}
}

func mustLayer(t *testing.T) v1.Layer {
	t.Helper()
	l, err := random.Layer(256, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	return l
}
