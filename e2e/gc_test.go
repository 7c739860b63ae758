package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"slipway.dev/slipway/registry"
)

// gcStressDuration is how long the pushers and the collector race:
// SLIPWAY_GC_STRESS (such as 5m, the full run), 30s by default so
// that the e2e suite stays short.
func gcStressDuration(t *testing.T) time.Duration {
	v := os.Getenv("SLIPWAY_GC_STRESS")
	if v == "" {
		return 30 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("SLIPWAY_GC_STRESS=%q is not a duration such as 5m", v)
	}
	return d
}

// verifyDigest pulls repo@dgst and checks it is img byte for byte: the
// manifest, the config and every layer's bytes.
func verifyDigest(ctx context.Context, reg, repo string, img v1.Image, token string) error {
	d, err := img.Digest()
	if err != nil {
		return err
	}
	ref, err := name.NewDigest(reg+"/"+repo+"@"+d.String(), name.Insecure)
	if err != nil {
		return err
	}
	opts := ggcrOpts(ctx, token)
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	want, _ := img.RawManifest()
	if !bytes.Equal(desc.Manifest, want) {
		return fmt.Errorf("%s: the manifest read back differs", ref)
	}
	got, err := desc.Image()
	if err != nil {
		return err
	}
	gotCfg, err := got.RawConfigFile()
	if err != nil {
		return fmt.Errorf("%s: config: %w", ref, err)
	}
	if wantCfg, _ := img.RawConfigFile(); !bytes.Equal(gotCfg, wantCfg) {
		return fmt.Errorf("%s: the config read back differs", ref)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		ld, _ := l.Digest()
		rl, err := remote.Layer(ref.Context().Digest(ld.String()), opts...)
		if err != nil {
			return fmt.Errorf("%s: layer %s: %w", ref, ld, err)
		}
		rc, err := rl.Compressed()
		if err != nil {
			return fmt.Errorf("%s: layer %s: %w", ref, ld, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: reading layer %s: %w", ref, ld, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != ld.String() {
			return fmt.Errorf("%s: layer %s read back as %s", ref, ld, got)
		}
	}
	return nil
}

// The GC stress test: 20 pushers push images made of layers from a small
// shared pool (so layers are re-used all the time, by blob HEAD and by
// cross-repository mount) and delete most of what they pushed (so shared
// layers keep falling out of every manifest and coming back), while the
// collector runs in a loop with a 1s grace period. Afterwards every image
// that got 201 and was not deleted pulls byte for byte, and the blobs of
// images pruned before the run are gone from storage.
func TestGCStressConcurrentPushes(t *testing.T) {
	dur := gcStressDuration(t)
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	p := startServer(t, dir, freePort(t), "--project-object-limit", "100000", "--project-object-limits", "images=100000")
	logIfDied(t, p)
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("new-project", "gc")
	token := strings.TrimSpace(c.ok("whoami", "-t"))
	admin := p.admin(t)

	// Garbage from before the run: five images in one tag's history,
	// pruned down to the newest, leave four images' blobs unreferenced.
	var garbage []string
	for i := range 5 {
		img, err := random.Image(4096, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ggcrRef(t, p.registry, "gc/old:t"), img, ggcrOpts(ctx, token)...); err != nil {
			t.Fatal(err)
		}
		if i < 4 {
			layers, _ := img.Layers()
			for _, l := range layers {
				d, _ := l.Digest()
				garbage = append(garbage, d.String())
			}
			cd, _ := img.ConfigName()
			md, _ := img.Digest()
			garbage = append(garbage, cd.String(), md.String())
		}
	}
	time.Sleep(10 * time.Millisecond)
	dry := c.ok("adm", "prune", "images", "-n", "gc", "--keep-tag-revisions", "1", "--keep-younger-than", "5ms")
	if !strings.Contains(dry, "Would remove 4 history entries") || !strings.Contains(dry, "dry run") {
		t.Fatalf("prune dry run printed:\n%s\nwant 4 history entries listed and the dry-run note", dry)
	}
	var pruned registry.PruneReport
	if err := json.Unmarshal([]byte(c.ok("adm", "prune", "images", "-n", "gc", "--keep-tag-revisions", "1", "--keep-younger-than", "5ms", "--confirm", "-o", "json")), &pruned); err != nil {
		t.Fatal(err)
	}
	if pruned.DryRun || len(pruned.Removed) < 8 {
		t.Fatalf("prune --confirm removed %d items (dry run %v), want the 4 entries and their 4 images at least", len(pruned.Removed), pruned.DryRun)
	}
	time.Sleep(1100 * time.Millisecond) // past the grace period below
	var preview registry.GCReport
	if err := json.Unmarshal([]byte(c.ok("adm", "gc", "--dry-run", "--gc-grace", "1s", "-o", "json")), &preview); err != nil {
		t.Fatal(err)
	}
	if !preview.DryRun || preview.BytesFreed == 0 || len(preview.Deleted) < len(garbage) {
		t.Fatalf("adm gc --dry-run would free %d bytes in %d blobs, want the %d blobs of the pruned images", preview.BytesFreed, len(preview.Deleted), len(garbage))
	}
	for _, g := range garbage {
		if _, err := os.Stat(blobFile(dir, g)); err != nil {
			t.Fatalf("the dry run deleted blob %s: %v", g, err)
		}
	}
	why := c.ok("adm", "gc", "why", garbage[0], "--gc-grace", "1s")
	if !strings.Contains(why, "unreferenced") {
		t.Errorf("adm gc why of a pruned layer printed %q, want it called unreferenced", why)
	}

	// The shared layer pool, pushed once to gc/base:1 so that pushers can
	// mount from there; that image is deleted right away, so the pool's
	// blobs are referenced only by what the pushers push.
	var pool []v1.Layer
	for range 64 {
		l, err := random.Layer(8192, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, l)
	}
	base, err := mutate.AppendLayers(empty.Image, pool...)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ggcrRef(t, p.registry, "gc/base:1"), base, ggcrOpts(ctx, token)...); err != nil {
		t.Fatal(err)
	}
	bd, _ := base.Digest()
	baseRef, _ := name.NewDigest(p.registry+"/gc/base@"+bd.String(), name.Insecure)
	remoteBase, err := remote.Image(baseRef, ggcrOpts(ctx, token)...)
	if err != nil {
		t.Fatal(err)
	}
	mountable, err := remoteBase.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(baseRef, ggcrOpts(ctx, token)...); err != nil {
		t.Fatalf("delete gc/base@%s: %v", bd, err)
	}

	type pushed struct {
		repo string
		img  v1.Image
	}
	var (
		mu                  sync.Mutex
		live                []pushed
		ok, failed, deleted atomic.Int64
		gcRuns, gcDeleted   atomic.Int64
		gcRereferenced      atomic.Int64
		mountRetries        atomic.Int64
		verified            atomic.Int64
		acked               = map[string]v1.Image{} // repo → the image that got 201 there, until deleted
		lost                []string
		failures            = map[string]int{}
		stop                = make(chan struct{})
		wg                  sync.WaitGroup
	)
	deadline := time.Now().Add(dur)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			var mine []pushed
			for n := 0; time.Now().Before(deadline); n++ {
				// A repository per push: a layer link the collector took
				// from it is not put back by that pusher's next upload.
				repo := fmt.Sprintf("gc/s%d-%d", i, n)
				// Two shared layers (odd pushers mount them from
				// gc/base, even ones upload or find them by HEAD) and a
				// small layer of their own.
				a, b := rng.IntN(len(pool)), rng.IntN(len(pool))
				own, err := random.Layer(512, types.OCILayer)
				if err != nil {
					t.Error(err)
					return
				}
				build := func(src []v1.Layer) v1.Image {
					img, err := mutate.AppendLayers(empty.Image, src[a], src[b], own)
					if err != nil {
						t.Error(err)
					}
					img, _ = mutate.Config(img, v1.Config{Env: []string{fmt.Sprintf("N=%d-%d", i, n)}})
					return img
				}
				img := build(pool)
				if i%2 == 1 {
					// The same image, its shared layers mounted from
					// gc/base; once a collection has taken a layer from
					// there, the push is made again with the local bytes.
					if err = remote.Write(ggcrRef(t, p.registry, repo+":t"), build(mountable), ggcrOpts(ctx, token)...); err != nil {
						mountRetries.Add(1)
						err = remote.Write(ggcrRef(t, p.registry, repo+":t"), img, ggcrOpts(ctx, token)...)
					}
				} else {
					err = remote.Write(ggcrRef(t, p.registry, repo+":t"), img, ggcrOpts(ctx, token)...)
				}
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					if len(msg) > 120 {
						msg = msg[:120]
					}
					mu.Lock()
					failures[msg]++
					mu.Unlock()
					continue
				}
				ok.Add(1)
				mine = append(mine, pushed{repo, img})
				mu.Lock()
				acked[repo] = img
				mu.Unlock()
				// Keep at most two, so that shared layers fall out of
				// every manifest now and then; what goes is pulled back
				// whole first.
				if len(mine) > 2 {
					k := rng.IntN(len(mine) - 1)
					old := mine[k]
					mu.Lock()
					delete(acked, old.repo)
					mu.Unlock()
					if err := verifyDigest(ctx, p.registry, old.repo, old.img, token); err != nil {
						mu.Lock()
						lost = append(lost, "before its deletion: "+err.Error())
						mu.Unlock()
					}
					verified.Add(1)
					d, _ := old.img.Digest()
					ref, _ := name.NewDigest(p.registry+"/"+old.repo+"@"+d.String(), name.Insecure)
					if err := remote.Delete(ref, ggcrOpts(ctx, token)...); err != nil {
						t.Errorf("delete %s: %v", ref, err)
						return
					}
					deleted.Add(1)
					mine = append(mine[:k], mine[k+1:]...)
				}
			}
			mu.Lock()
			live = append(live, mine...)
			mu.Unlock()
		}()
	}
	gcDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			var rep registry.GCReport
			if err := admin.RegistryAdmin(ctx, http.MethodPost, "gc", nil, registry.GCRequest{Grace: "1s"}, &rep); err != nil {
				gcDone <- err
				return
			}
			gcRuns.Add(1)
			gcDeleted.Add(int64(len(rep.Deleted)))
			gcRereferenced.Add(int64(rep.Rereferenced))
			// Right after the collection, before a later upload of the
			// same bytes could put them back: every image that got 201
			// and is not deleted still has all its blobs and links.
			mu.Lock()
			for repo, img := range acked {
				for _, m := range storedParts(dir, repo, img) {
					lost = append(lost, fmt.Sprintf("after collection %d: %s", gcRuns.Load(), m))
				}
			}
			mu.Unlock()
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatalf("a collection failed: %v", err)
	}
	t.Logf("%s: %d pushes got 201, %d failed, %d deleted, %d mounts retried as uploads; %d collections deleted %d blobs, %d candidates taken back by pushes", dur, ok.Load(), failed.Load(), deleted.Load(), mountRetries.Load(), gcRuns.Load(), gcDeleted.Load(), gcRereferenced.Load())
	for msg, n := range failures {
		t.Logf("push failure ×%d: %s", n, msg)
	}
	if ok.Load() == 0 || gcRuns.Load() < 2 {
		t.Fatalf("the race did not happen: %d pushes succeeded, %d collections ran", ok.Load(), gcRuns.Load())
	}
	// One more collection after the grace period: what is left must still
	// be whole.
	time.Sleep(1100 * time.Millisecond)
	var last registry.GCReport
	if err := admin.RegistryAdmin(ctx, http.MethodPost, "gc", nil, registry.GCRequest{Grace: "1s"}, &last); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lost) > 0 {
		t.Errorf("%d losses of an image that got 201:\n%s", len(lost), strings.Join(lost[:min(len(lost), 10)], "\n"))
	}
	var bad []string
	for _, pu := range live {
		if err := verifyDigest(ctx, p.registry, pu.repo, pu.img, token); err != nil {
			bad = append(bad, err.Error())
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d images that got 201 do not pull back whole:\n%s", len(bad), len(live), strings.Join(bad[:min(len(bad), 10)], "\n"))
	}
	for _, g := range garbage {
		if _, err := os.Stat(blobFile(dir, g)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("blob %s of an image pruned before the run is still stored (%v)", g, err)
		}
	}
	t.Logf("verified %d live images at the end and %d before their deletion; the final collection deleted %d blobs (%d bytes)", len(live), verified.Load(), len(last.Deleted), last.BytesFreed)
}

// storedParts lists what of img is missing from repo in the storage under
// dataDir: blob bytes, layer links, the manifest's revision link.
func storedParts(dataDir, repo string, img v1.Image) []string {
	var missing []string
	root := filepath.Join(dataDir, "registry", "storage", "docker", "registry", "v2", "repositories", repo)
	check := func(what, d, link string) {
		if _, err := os.Stat(blobFile(dataDir, d)); err != nil {
			missing = append(missing, fmt.Sprintf("%s: the bytes of %s %s are gone", repo, what, d))
		}
		if _, err := os.Stat(filepath.Join(root, link, "sha256", strings.TrimPrefix(d, "sha256:"), "link")); err != nil {
			missing = append(missing, fmt.Sprintf("%s: the link to %s %s is gone", repo, what, d))
		}
	}
	md, _ := img.Digest()
	check("manifest", md.String(), filepath.Join("_manifests", "revisions"))
	cd, _ := img.ConfigName()
	check("config", cd.String(), "_layers")
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		check("layer", d.String(), "_layers")
	}
	return missing
}
