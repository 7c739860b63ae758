// Command gcbench measures the registry's online garbage collection and
// image pruning at scale, and what a running collection costs pushes.
//
//		go run ./bench/gcbench [-images 10000] [-garbage 0.2] [-history 100000] [-pushers 4] [-push-seconds 15] [-rounds 2]
//
//	  - GC: -images manifests (config, one layer of their own, one of 50
//	    shared layers) in 100-image repositories, plus -garbage × images
//	    whose manifests no repository links any more (as a prune leaves
//	    them), all written in distribution's storage layout before the
//	    server starts, with a touch key per blob as pushes leave them, and
//	    dated two hours back. One collection with a 1h grace: mark time
//	    (wait for holds, walk, read every manifest, read the touch keys)
//	    and sweep time (tombstone, delete, untombstone each garbage blob).
//	  - Prune: 100 image streams × 10 tags with -history entries in all,
//	    two hours old, over 1,000 Images whose manifests are linked in
//	    storage; prune with the defaults (3 revisions), dry run then
//	    --confirm.
//	  - Pushes: -pushers concurrent pushers of small images, -push-seconds
//	    per phase, phases alternating without and with collections running
//	    back to back over the -images store; p50 and p99 push latency of
//	    each, and the ratio.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server"
	"slipway.dev/slipway/store"
)

const regRoot = "docker/registry/v2"

var old = time.Now().Add(-2 * time.Hour)

// layout writes blobs and links in distribution's filesystem layout.
type layout struct {
	root  string
	blobs map[string]bool
}

func (l *layout) write(p string, b []byte) {
	full := filepath.Join(l.root, regRoot, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(full, b, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.Chtimes(full, old, old); err != nil {
		log.Fatal(err)
	}
}

func (l *layout) blob(b []byte) string {
	sum := sha256.Sum256(b)
	hx := hex.EncodeToString(sum[:])
	d := "sha256:" + hx
	if !l.blobs[d] {
		l.blobs[d] = true
		l.write("blobs/sha256/"+hx[:2]+"/"+hx+"/data", b)
	}
	return d
}

func (l *layout) link(repo, kind, d string) {
	l.write("repositories/"+repo+"/"+kind+"/sha256/"+d[len("sha256:"):]+"/link", []byte(d))
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// image writes one image's blobs and layer links into repo and returns
// the manifest digest; linked says whether the repository links the
// manifest (false: garbage, as after a prune).
func (l *layout) image(repo string, shared []byte, linked bool) string {
	cfg := l.blob([]byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Env":["N=%x"]},"rootfs":{"type":"layers","diff_ids":[]}}`, randBytes(8))))
	own := randBytes(256)
	od, sd := l.blob(own), l.blob(shared)
	man := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d},{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`, cfg, sd, len(shared), od, len(own))
	md := l.blob([]byte(man))
	for _, d := range []string{cfg, od, sd} {
		l.link(repo, "_layers", d)
	}
	if linked {
		l.link(repo, "_manifests/revisions", md)
	}
	return md
}

func main() {
	images := flag.Int("images", 10000, "images in storage for the collection")
	garbage := flag.Float64("garbage", 0.2, "unreferenced images for the collection to sweep, as a share of -images")
	history := flag.Int("history", 100000, "tag history entries for the prune (100 streams × 10 tags)")
	pushers := flag.Int("pushers", 4, "concurrent pushers")
	pushSecs := flag.Int("push-seconds", 15, "seconds per push phase")
	rounds := flag.Int("rounds", 2, "push phases of each kind (without, with, without, with, ...)")
	flag.Parse()
	log.SetFlags(0)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "gcbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "slipway")

	// Storage for the collection and the prune, before the server starts.
	l := &layout{root: filepath.Join(data, "registry", "storage"), blobs: map[string]bool{}}
	var pool [][]byte
	for range 50 {
		pool = append(pool, randBytes(1024))
	}
	for i := range *images {
		l.image(fmt.Sprintf("bench/r%03d", i/100), pool[i%len(pool)], true)
	}
	nGarbage := int(float64(*images) * *garbage)
	for i := range nGarbage {
		l.image(fmt.Sprintf("bench/r%03d", i/100), pool[i%len(pool)], false)
	}
	var histImages []string
	for i := range 1000 {
		histImages = append(histImages, l.image("hist/s000", pool[i%len(pool)], true))
	}

	srv, err := server.Start(ctx, server.Config{DataDir: data, Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", Out: io.Discard})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	admin, err := srv.AdminClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range []string{"bench", "hist", "push"} {
		if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}); err != nil {
			log.Fatal(err)
		}
	}
	// A touch key per blob, as pushes leave them, two hours old.
	cli := srv.Store.Client()
	var ops []clientv3.Op
	stamp := strconv.FormatInt(old.UnixNano(), 10)
	flush := func() {
		if len(ops) > 0 {
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				log.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	for d := range l.blobs {
		ops = append(ops, clientv3.OpPut(srv.Store.Prefix()+"registry-gc/touch/"+d, stamp))
		if len(ops) == 100 {
			flush()
		}
	}
	flush()

	fmt.Printf("# gcbench: %d images (+%d unreferenced) in %d blobs; %d history entries; %d pushers, %ds phases ×%d; %s\n\n",
		*images, nGarbage, len(l.blobs), *history, *pushers, *pushSecs, *rounds, time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | result |")
	fmt.Println("|---|---|")

	reg := srv.Registry
	rep, err := reg.GC(ctx, registry.GCOptions{Grace: time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("| GC mark, %d images (%d manifests, %d blobs, %d repositories) | %s |\n", *images, rep.Manifests, rep.Blobs, rep.Repositories, rep.MarkTime.Round(time.Millisecond))
	fmt.Printf("| GC sweep, %d blobs deleted (%d bytes) | %s (%.0f blobs/s) |\n", len(rep.Deleted), rep.BytesFreed, rep.SweepTime.Round(time.Millisecond), float64(len(rep.Deleted))/rep.SweepTime.Seconds())

	// Prune: 100 streams × 10 tags, entries spread over 1,000 images.
	if err := histStreams(ctx, srv.Store, histImages, *history); err != nil {
		log.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	popts := registry.PruneOptions{Project: "hist", KeepTagRevisions: 3, KeepYoungerThan: time.Second}
	start := time.Now()
	dry, err := reg.PruneImages(ctx, popts)
	if err != nil {
		log.Fatal(err)
	}
	dryT := time.Since(start)
	popts.Confirm = true
	start = time.Now()
	done, err := reg.PruneImages(ctx, popts)
	if err != nil {
		log.Fatal(err)
	}
	realT := time.Since(start)
	count := func(r *registry.PruneReport) (e, i int) {
		for _, it := range r.Removed {
			if it.Kind == "Image" {
				i++
			} else {
				e++
			}
		}
		return
	}
	de, di := count(dry)
	re, ri := count(done)
	fmt.Printf("| prune dry run, %d history entries: plans %d entries and %d images | %s |\n", *history, de, di, dryT.Round(time.Millisecond))
	fmt.Printf("| prune --confirm: removes %d entries and %d images (Images, manifests) | %s |\n", re, ri, realT.Round(time.Millisecond))

	// Pushes without and with collections running.
	auth := &authn.Basic{Username: "admin", Password: admin.Token()}
	var without, with []time.Duration
	var gcs int
	for r := range *rounds {
		without = append(without, pushPhase(ctx, srv.RegistryHost, auth, *pushers, time.Duration(*pushSecs)*time.Second, fmt.Sprintf("a%d", r))...)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := reg.GC(ctx, registry.GCOptions{Grace: time.Hour}); err != nil {
					log.Fatal(err)
				}
				gcs++
			}
		}()
		with = append(with, pushPhase(ctx, srv.RegistryHost, auth, *pushers, time.Duration(*pushSecs)*time.Second, fmt.Sprintf("b%d", r))...)
		close(stop)
		wg.Wait()
	}
	pa, pb := pct(without, 50), pct(with, 50)
	qa, qb := pct(without, 99), pct(with, 99)
	fmt.Printf("| pushes without GC: %d, p50 / p99 | %s / %s |\n", len(without), pa, qa)
	fmt.Printf("| pushes during GC (%d collections back to back): %d, p50 / p99 | %s / %s |\n", gcs, len(with), pb, qb)
	fmt.Printf("| p99 during GC / p99 without | **%.2f** (p50 %.2f) |\n", float64(qb)/float64(qa), float64(pb)/float64(pa))
}

func pct(xs []time.Duration, p int) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)].Round(100 * time.Microsecond)
}

// pushPhase pushes small images from n pushers for d and returns each
// push's latency.
func pushPhase(ctx context.Context, host string, auth authn.Authenticator, n int, d time.Duration, tag string) []time.Duration {
	var mu sync.Mutex
	var out []time.Duration
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref, err := name.NewTag(fmt.Sprintf("%s/push/s%d:%s", host, i, tag), name.Insecure)
			if err != nil {
				log.Fatal(err)
			}
			for time.Now().Before(end) {
				img := smallImage()
				start := time.Now()
				if err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(ctx)); err != nil {
					log.Fatal(err)
				}
				lat := time.Since(start)
				mu.Lock()
				out = append(out, lat)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// smallImage is a one-layer image whose digests are computed before the
// push is timed.
func smallImage() v1.Image {
	l, err := random.Layer(1024, types.OCIUncompressedLayer)
	if err != nil {
		log.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := img.Digest(); err != nil {
		log.Fatal(err)
	}
	if _, err := l.Digest(); err != nil {
		log.Fatal(err)
	}
	if _, err := l.DiffID(); err != nil {
		log.Fatal(err)
	}
	return img
}

// histStreams makes 100 streams of 10 tags with entries entries in all,
// two hours old, and an Image for every digest they name.
func histStreams(ctx context.Context, st *store.Store, digests []string, entries int) error {
	for _, d := range digests {
		if err := st.Create(ctx, api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: d, Namespace: "hist"}, MediaType: "application/vnd.oci.image.manifest.v1+json"}); err != nil {
			return err
		}
	}
	perTag := entries / 1000
	for s := range 100 {
		is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("s%03d", s), Namespace: "hist"}}
		if err := st.Create(ctx, api.ImageStreams, is); err != nil {
			return err
		}
		for k := range 10 {
			tg := api.NamedTagEventList{Tag: fmt.Sprintf("t%d", k)}
			for j := range perTag {
				d := digests[(j*10+k)%len(digests)]
				tg.Items = append(tg.Items, api.TagEvent{Created: old.Add(-time.Duration(j) * time.Minute), Image: d, DockerImageReference: "127.0.0.1:5000/hist/s000@" + d, Generation: int64(perTag - j)})
			}
			is.Status.Tags = append(is.Status.Tags, tg)
		}
		if err := st.Update(ctx, api.ImageStreams, is, store.UpdateOptions{Status: true}); err != nil {
			return err
		}
	}
	return nil
}
