// Command registrybench measures push and pull through Slipway's registry
// (token auth, RBAC, image-stream recording) against a standalone
// distribution v3.1.2 registry built from the same module, in one run on
// one machine, and prints a Markdown table of ratios for BENCHMARKS.md.
//
//	go run ./bench/registrybench [-big-mib 1024] [-small 1000]
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/server"
)

func main() {
	bigMiB := flag.Int("big-mib", 1024, "size of the large image in MiB, split into 10 layers")
	small := flag.Int("small", 1000, "number of small images")
	conc := flag.Int("c", 8, "concurrent pushes of small images")
	gets := flag.Int("gets", 5000, "manifest GETs")
	flag.Parse()
	log.SetFlags(0)
	ctx := context.Background()

	dir, err := os.MkdirTemp("", "registrybench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Standalone distribution, filesystem storage, no auth.
	logrus.SetLevel(logrus.FatalLevel)
	dc := &configuration.Configuration{}
	dc.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": filepath.Join(dir, "dist")},
		"delete":      configuration.Parameters{"enabled": true},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		"cache":       configuration.Parameters{"blobdescriptor": "inmemory"},
	}
	dc.HTTP.Secret = "bench"
	dc.HTTP.RelativeURLs = true
	distLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(distLn, handlers.NewApp(ctx, dc))
	dist := target{name: "distribution v3.1.2", host: distLn.Addr().String(), repo: "bench/app", auth: authn.Anonymous}

	// Slipway all-in-one.
	srv, err := server.Start(ctx, server.Config{DataDir: filepath.Join(dir, "slipway"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", Out: io.Discard})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	admin := adminClient(srv)
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bench"}}); err != nil {
		log.Fatal(err)
	}
	slip := target{name: "Slipway", host: srv.RegistryHost, repo: "bench/app", auth: &authn.Basic{Username: "admin", Password: admin.Token()}}

	fmt.Printf("# registrybench: %d MiB in 10 layers, %d small images (%d concurrent), %d manifest GETs; %s\n\n", *bigMiB, *small, *conc, *gets, time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | Slipway | distribution | ratio (Slipway / distribution) |")
	fmt.Println("|---|---|---|---|")

	big := bigImage(*bigMiB)
	size := float64(*bigMiB)
	// Alternate the order so neither side always gets a warm page cache.
	dPush := timeIt(func() error { return dist.push(big, "big") })
	sPush := timeIt(func() error { return slip.push(big, "big") })
	sPull := timeIt(func() error { return slip.pull("big") })
	dPull := timeIt(func() error { return dist.pull("big") })
	row("large push (MiB/s)", size/sPush.Seconds(), size/dPush.Seconds())
	row("large pull (MiB/s)", size/sPull.Seconds(), size/dPull.Seconds())

	imgs := smallImages(*small)
	var lat []time.Duration
	sSmall := timeIt(func() error {
		var err error
		lat, err = slip.pushMany(ctx, imgs, *conc, admin)
		return err
	})
	dSmall := timeIt(func() error { _, err := dist.pushMany(ctx, imgs, *conc, nil); return err })
	row("small image pushes (images/s)", float64(*small)/sSmall.Seconds(), float64(*small)/dSmall.Seconds())

	sGet := slip.manifestGets(*gets, 16)
	dGet := dist.manifestGets(*gets, 16)
	row("manifest GET (req/s)", sGet, dGet)

	slices.Sort(lat)
	if len(lat) > 0 {
		fmt.Printf("| push → ImageStream updated, p50 (ms) | %.2f | n/a | |\n", ms(lat[len(lat)/2]))
		fmt.Printf("| push → ImageStream updated, p99 (ms) | %.2f | n/a | |\n", ms(lat[min(len(lat)-1, len(lat)*99/100)]))
	}
	fmt.Println("\nPush → ImageStream updated is measured from the start of the manifest PUT to the ImageStream watch event, over the small images.")
}

type target struct {
	name, host, repo string
	auth             authn.Authenticator
}

func (t target) ref(tag string) name.Reference {
	r, err := name.ParseReference(t.host+"/"+t.repo+":"+tag, name.Insecure)
	if err != nil {
		log.Fatal(err)
	}
	return r
}

func (t target) refIn(repo, tag string) name.Reference {
	r, err := name.ParseReference(t.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		log.Fatal(err)
	}
	return r
}

func (t target) push(img v1.Image, tag string) error {
	return remote.Write(t.ref(tag), img, remote.WithAuth(t.auth), remote.WithJobs(4))
}

func (t target) pull(tag string) error {
	img, err := remote.Image(t.ref(tag), remote.WithAuth(t.auth))
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(layers))
	for _, l := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rc, err := l.Compressed()
			if err != nil {
				errs <- err
				return
			}
			defer rc.Close()
			_, err = io.Copy(io.Discard, rc)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// pushMany pushes images as tags s-0..s-n; with a client it also measures
// how long after the start of each push its tag appears in the stream.
func (t target) pushMany(ctx context.Context, imgs []v1.Image, conc int, cl *client.Client) ([]time.Duration, error) {
	started := make([]atomic.Int64, len(imgs))
	var lat []time.Duration
	var latMu sync.Mutex
	done := make(chan struct{})
	if cl != nil {
		_, meta, err := cl.List(ctx, api.ImageStreams, "bench", client.ListOptions{})
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := cl.Watch(wctx, api.ImageStreams, "bench", meta.ResourceVersion, client.ListOptions{})
		if err != nil {
			return nil, err
		}
		go func() {
			defer close(done)
			seen := map[string]bool{}
			for ev := range ch {
				if ev.Err != nil {
					return
				}
				now := time.Now().UnixNano()
				for _, tg := range ev.Object.(*api.ImageStream).Status.Tags {
					var i int
					if seen[tg.Tag] || !strings.HasPrefix(tg.Tag, "s-") {
						continue
					}
					seen[tg.Tag] = true
					fmt.Sscanf(tg.Tag, "s-%d", &i)
					latMu.Lock()
					lat = append(lat, time.Duration(now-started[i].Load()))
					latMu.Unlock()
				}
				if len(seen) == len(imgs) {
					return
				}
			}
		}()
	} else {
		close(done)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(imgs) {
					return
				}
				// Blobs first, then time only the manifest PUT that moves
				// the tag, which is what updates the stream.
				// 20 streams of 50 tags: a stream's whole tag list is
				// rewritten on every tag move, so one stream of 1,000 tags
				// would measure that instead (see BENCHMARKS.md).
				ref := t.refIn(fmt.Sprintf("%s-%d", t.repo, i%20), fmt.Sprintf("s-%d", i))
				if err := remote.Write(ref.Context().Digest(mustDigest(imgs[i]).String()), imgs[i], remote.WithAuth(t.auth)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				started[i].Store(time.Now().UnixNano())
				if err := remote.Tag(ref.Context().Tag(ref.Identifier()), imgs[i], remote.WithAuth(t.auth)); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		return nil, err.(error)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	latMu.Lock()
	defer latMu.Unlock()
	return slices.Clone(lat), nil
}

func (t target) manifestGets(n, conc int) float64 {
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conc
	rt, err := transportFor(t, tr)
	if err != nil {
		log.Fatal(err)
	}
	hc := &http.Client{Transport: rt}
	url := "http://" + t.host + "/v2/" + t.repo + "-0/manifests/s-0"
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Accept", string(types.OCIManifestSchema1)+","+string(types.DockerManifestSchema2))
				resp, err := hc.Do(req)
				if err != nil {
					log.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					log.Fatalf("%s: manifest GET = %d", t.name, resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// transportFor does the registry token dance once and returns a transport
// that reuses the token, as real clients do.
func transportFor(t target, base http.RoundTripper) (http.RoundTripper, error) {
	repo, err := name.NewRepository(t.host+"/"+t.repo+"-0", name.Insecure)
	if err != nil {
		return nil, err
	}
	return transportNew(repo, t.auth, base)
}

func bigImage(mib int) v1.Image {
	img := empty.Image
	per := mib << 20 / 10
	for i := range 10 {
		b := make([]byte, per)
		rand.Read(b)
		var err error
		img, err = mutate.AppendLayers(img, static.NewLayer(b, types.OCIUncompressedLayer))
		if err != nil {
			log.Fatal(err)
		}
		_ = i
	}
	return img
}

func smallImages(n int) []v1.Image {
	out := make([]v1.Image, n)
	for i := range out {
		b := make([]byte, 1024)
		rand.Read(b)
		img, err := mutate.AppendLayers(empty.Image, static.NewLayer(b, types.OCIUncompressedLayer))
		if err != nil {
			log.Fatal(err)
		}
		out[i] = img
	}
	return out
}

func mustDigest(img v1.Image) v1.Hash {
	d, err := img.Digest()
	if err != nil {
		log.Fatal(err)
	}
	return d
}

func adminClient(srv *server.Server) *client.Client {
	c, err := srv.AdminClient(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	return c
}

func timeIt(f func() error) time.Duration {
	start := time.Now()
	if err := f(); err != nil {
		log.Fatal(err)
	}
	return time.Since(start)
}

func row(what string, s, d float64) {
	fmt.Printf("| %s | %.1f | %.1f | %.2f |\n", what, s, d, s/d)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func transportNew(repo name.Repository, auth authn.Authenticator, base http.RoundTripper) (http.RoundTripper, error) {
	return transport.NewWithContext(context.Background(), repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
}
