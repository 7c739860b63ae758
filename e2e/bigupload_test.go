package e2e

import (
	"context"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// TestKill9DuringLargeUpload pushes several images with large random
// layers with ggcr, kills the server with SIGKILL halfway through the
// largest push, restarts it on the same data directory and address, and
// checks that every image whose remote.Write succeeded pulls back byte for
// byte, that the half-sent layer is not served, and that the interrupted
// push, retried, completes.
//
// The requirement is about 1 GiB in total, and that is the default: about
// 45 s on a 2-core VM, most of it random.Image making the layers in memory
// and ggcr gzipping them as it reads them. SLIPWAY_E2E_BIG=0 keeps the same
// shapes at a quarter of the size (256 MiB, about 15 s) for slower
// machines.
func TestKill9DuringLargeUpload(t *testing.T) {
	const MiB = int64(1) << 20
	scale := int64(4)
	if os.Getenv("SLIPWAY_E2E_BIG") == "0" {
		scale = 1
	}
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr)
	admin := p.admin(t)
	ctx := context.Background()
	const project = "big"
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
		t.Fatal(err)
	}

	// 64 + 192 + 256 MiB pushed before the kill, and 512 MiB in the push
	// the kill interrupts (a quarter of that when scale is 1). "shared"
	// reuses a layer of "small". The images are made, and
	// their digests computed, in parallel.
	start := time.Now()
	shapes := [][2]int64{{8, 2}, {48, 1}, {56, 1}, {128, 1}} // {MiB per layer at scale 1, layers}
	imgs := make([]v1.Image, len(shapes))
	errs := make([]error, len(shapes))
	var wg sync.WaitGroup
	for i, sh := range shapes {
		wg.Go(func() {
			if imgs[i], errs[i] = random.Image(sh[0]*MiB*scale, sh[1]); errs[i] == nil {
				_, errs[i] = imgs[i].Digest() // gzips every layer once; ggcr caches the digests
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	small := imgs[0]
	smallLayers, err := small.Layers()
	if err != nil {
		t.Fatal(err)
	}
	shared, err := mutate.AppendLayers(imgs[2], smallLayers[0])
	if err != nil {
		t.Fatal(err)
	}
	type pushed struct {
		ref repoTag
		img v1.Image
	}
	acked := []pushed{
		{repoTag{project + "/small", "1"}, small},
		{repoTag{project + "/medium", "1"}, imgs[1]},
		{repoTag{project + "/shared", "v1"}, shared},
	}
	victim := pushed{repoTag{project + "/large", "1"}, imgs[3]}
	victimLayers, err := victim.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	bigLayer := victimLayers[0]
	bigDigest, err := bigLayer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("made 4 random images, %d MiB of layers, in %v", 256*scale, time.Since(start).Round(time.Millisecond))

	token := admin.Token()
	start = time.Now()
	for _, a := range acked {
		if err := remote.Write(ggcrRef(t, p.registry, a.ref.String()), a.img, ggcrOpts(ctx, token)...); err != nil {
			t.Fatalf("pushing %s: %v", a.ref, err)
		}
	}
	t.Logf("pushed %d images before the kill in %v", len(acked), time.Since(start).Round(time.Millisecond))

	// Kill the server when half of the large image has been sent; no
	// retries, so that the push reports the kill.
	updates := make(chan v1.Update, 16)
	var killedAt v1.Update
	var killOnce sync.Once
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		for u := range updates {
			if u.Total > 0 && u.Complete >= u.Total/2 {
				killOnce.Do(func() {
					killedAt = u
					_ = p.cmd.Process.Kill()
				})
			}
		}
	}()
	start = time.Now()
	err = remote.Write(ggcrRef(t, p.registry, victim.ref.String()), victim.img,
		ggcrOpts(ctx, token, remote.WithProgress(updates), remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Steps: 1}))...)
	<-progressDone
	killOnce.Do(func() { _ = p.cmd.Process.Kill() }) // in case no update came
	<-p.done
	if err == nil {
		t.Fatalf("the push killed after %d of %d bytes succeeded", killedAt.Complete, killedAt.Total)
	}
	t.Logf("kill -9 after %d of %d MiB of %s (%v); the push failed with: %v", killedAt.Complete/MiB, killedAt.Total/MiB, victim.ref, time.Since(start).Round(time.Millisecond), err)

	start = time.Now()
	p2 := startServer(t, dir, addr)
	logIfDied(t, p2)
	admin2 := p2.admin(t)
	token2 := admin2.Token()
	t.Logf("restarted in %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	for _, a := range acked {
		if err := ggcrVerify(ctx, ggcrRef(t, p2.registry, a.ref.String()), a.img, token2); err != nil {
			t.Errorf("pushed before the kill, but after the restart: %v", err)
		}
		want, _ := a.img.Digest()
		obj, err := admin2.Get(ctx, api.ImageStreams, project, a.ref.stream(project))
		if err != nil {
			t.Errorf("image stream of %s after the restart: %v", a.ref, err)
			continue
		}
		if got := tagImage([]api.ImageStream{*obj.(*api.ImageStream)}, a.ref.stream(project), a.ref.tag); got != want.String() {
			t.Errorf("after the restart, %s points at %q, want %s", a.ref, got, want)
		}
	}
	t.Logf("verified %d images after the restart in %v", len(acked), time.Since(start).Round(time.Millisecond))

	// The half-sent layer was never committed: it must not be served.
	req, _ := http.NewRequest(http.MethodHead, "http://"+p2.registry+"/v2/"+victim.ref.repo+"/blobs/"+bigDigest.String(), nil)
	req.SetBasicAuth("x", token2)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD of the interrupted layer after the restart: %s, want 404 Not Found", resp.Status)
	}

	start = time.Now()
	ref := ggcrRef(t, p2.registry, victim.ref.String())
	if err := remote.Write(ref, victim.img, ggcrOpts(ctx, token2)...); err != nil {
		t.Fatalf("retrying the interrupted push after the restart: %v", err)
	}
	if err := ggcrVerify(ctx, ref, victim.img, token2); err != nil {
		t.Errorf("the retried push: %v", err)
	}
	t.Logf("retried and verified %s in %v", victim.ref, time.Since(start).Round(time.Millisecond))
}

// repoTag is a repository and a tag.
type repoTag struct{ repo, tag string }

func (n repoTag) String() string { return n.repo + ":" + n.tag }

// stream is the image stream a repository maps to in project.
func (n repoTag) stream(project string) string { return n.repo[len(project)+1:] }
