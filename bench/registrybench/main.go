// Command registrybench measures push and pull through Slipway's registry
// (token auth, RBAC, image-stream recording) against a standalone
// distribution v3.1.2 registry built from the same module, in one run on
// one machine, and prints a Markdown table of ratios for BENCHMARKS.md.
//
//	go run ./bench/registrybench [-big-mib 512] [-small 300] [-rounds 3] [-storage FILE]
//
// With -storage (a distribution storage section, such as one for S3), both
// registries keep their storage there, each under its own rootdirectory.
//
// It is built to be fair to the peer:
//   - every digest and diff ID is computed before the clock starts (ggcr
//     hashes a layer once, lazily, so whichever side pushed first used to
//     pay the hashing for both);
//   - each measurement runs in rounds, Slipway then distribution, A B A B A
//     B, on fresh content each round, and the ratio is of the medians;
//   - the peer's turn starts only after Slipway's scanner has scanned every
//     image of the turn before, so the scanner does not run in the peer's
//     time;
//   - manifest GET has ceiling rows: the same requests against a handler
//     that only writes the manifest bytes and headers, from a plain
//     net/http client and from the registries' own (go-containerregistry),
//     in the same alternating rounds;
//   - pushes have floor rows (floor.go, -floor=false to skip): the same
//     client against a registry that only checks digests and makes each
//     blob and manifest durable, anonymous, with a token challenge, and
//     with an etcd Put per manifest, each taking its turn in every round;
//   - with strace on PATH, fsync-family system calls per small push are
//     counted for each side (strace -f -c attached to this process during
//     that side's pushes only, outside the timed rounds).
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v2"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/server"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func main() {
	bigMiB := flag.Int("big-mib", 512, "size of the large image in MiB, split into 10 layers (one per round)")
	small := flag.Int("small", 300, "small images per round")
	conc := flag.Int("c", 8, "concurrent pushes of small images")
	gets := flag.Int("gets", 5000, "manifest GETs per round")
	rounds := flag.Int("rounds", 3, "rounds per measurement (A B A B ...); the ratio is of the medians")
	fsyncN := flag.Int("fsync-pushes", 100, "small pushes per side counted under strace (0: skip)")
	storageFile := flag.String("storage", "", "YAML file with a distribution storage section both registries use, each under its own rootdirectory (default: the filesystem)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of Slipway's small-push rounds (the whole process) to this file")
	manyTags := flag.Int("stream-tags", 0, "also time tag pushes to a stream of this many tags against a stream that starts with one, Slipway only (0: skip)")
	tagProfile := flag.String("tagprofile", "", "write a CPU profile of the timed tag pushes of -stream-tags (the whole process) to this file")
	scanner := flag.Bool("scanner", true, "run Slipway's scanner (false: no scan controller, to see its share of a push's cost)")
	floor := flag.Bool("floor", true, "also push to a floor registry (floor.go: digest checked, one fdatasync and a directory fsync per blob and manifest, nothing else) in each round, to show what the push goals can reach here")
	getProfile := flag.String("getprofile", "", "write a CPU profile of each of Slipway's manifest GET rounds (the whole process: client and server) to FILE.ROUND")
	ceilProfile := flag.String("ceilprofile", "", "write a CPU profile of each manifest GET round against the ceiling handler (plain client) to FILE.ROUND")
	distProfile := flag.String("distprofile", "", "write a CPU profile of each of distribution's manifest GET rounds to FILE.ROUND")
	flag.Parse()
	log.SetFlags(0)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
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
	var slipStorage configuration.Storage
	storageName := "filesystem"
	if *storageFile != "" {
		var distStorage configuration.Storage
		distStorage, slipStorage = benchStorage(*storageFile, "dist"), benchStorage(*storageFile, "slipway")
		delete(dc.Storage, "filesystem")
		for k, v := range distStorage {
			dc.Storage[k] = v
		}
		storageName = distStorage.Type()
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
	var limits store.Limits
	if *manyTags > 0 {
		limits.TagsPerStream = max(imagestreams.DefaultTagsPerStream, *manyTags+50**rounds+1)
	}
	srv, err := server.Start(ctx, server.Config{DataDir: filepath.Join(dir, "slipway"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", RegistryStorage: slipStorage, Out: io.Discard, Limits: limits, NoScanner: !*scanner})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	admin := adminClient(srv)
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bench"}}); err != nil {
		log.Fatal(err)
	}
	slip := target{name: "Slipway", host: srv.RegistryHost, repo: "bench/app", auth: &authn.Basic{Username: "admin", Password: admin.Token()}, cl: admin, noScans: !*scanner}

	fmt.Printf("# registrybench: %d rounds (Slipway, distribution, alternating); %d MiB in 10 layers, %d small images (%d concurrent), %d manifest GETs per round; %s storage; %s\n\n",
		*rounds, *bigMiB, *small, *conc, *gets, storageName, time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | Slipway (median) | distribution (median) | ratio of medians (Slipway / distribution) |")
	fmt.Println("|---|---|---|---|")

	size := float64(*bigMiB)
	bigs := make([]v1.Image, *rounds)
	for r := range bigs {
		bigs[r] = bigImage(*bigMiB) // digests computed here, not in the timed push
	}
	var floorAnon, floorToken []*target
	if *floor {
		ec, err := etcd.ClientTLS(srv.EtcdClientTLS(), srv.EtcdEndpoints()...)
		if err != nil {
			log.Fatal(err)
		}
		defer ec.Close()
		floorAnon = []*target{startFloor(filepath.Join(dir, "floor-anonymous"), "floor, anonymous", false, nil)}
		floorToken = append([]*target{
			startFloor(filepath.Join(dir, "floor-token"), "floor, token challenge", true, nil),
			startFloor(filepath.Join(dir, "floor-etcd"), "floor, token challenge, an etcd Put per manifest", true, ec),
		}, floorAnon...)
	}
	push, pushFloor := ababFloors(*rounds, func(s *target, r int) float64 {
		d := timeIt(func() error { return s.push(bigs[r], fmt.Sprintf("big-%d", r)) })
		return size / d.Seconds()
	}, &slip, &dist, floorAnon)
	pull := abab(*rounds, func(s *target, r int) float64 {
		d := timeIt(func() error { return s.pull(fmt.Sprintf("big-%d", r)) })
		return size / d.Seconds()
	}, &slip, &dist)
	bigs = nil
	push.row("large push (MiB/s)")
	if *floor {
		fmt.Printf("| large push floor: the same client against floor.go, anonymous (MiB/s) | %.1f | %.1f | floor / distribution %.2f; Slipway at %.2f of the floor, distribution at %.2f |\n",
			pushFloor[0], pushFloor[0], pushFloor[0]/push.b, push.a/pushFloor[0], push.b/pushFloor[0])
	}
	pull.row("large pull (MiB/s)")

	var lat []time.Duration
	smalls, smallFloor := ababFloors(*rounds, func(s *target, r int) float64 {
		imgs := smallImages(*small) // digests computed before the clock
		var l []time.Duration
		if *cpuprofile != "" && s == &slip {
			f, err := os.Create(fmt.Sprintf("%s.%d", *cpuprofile, r))
			if err != nil {
				log.Fatal(err)
			}
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
		d := timeIt(func() error {
			var err error
			l, err = s.pushMany(ctx, fmt.Sprintf("r%d", r), imgs, *conc)
			return err
		})
		lat = append(lat, l...)
		return float64(*small) / d.Seconds()
	}, &slip, &dist, floorToken)
	smalls.row("small image pushes (images/s)")
	if *floor {
		fmt.Printf("| small image pushes floor: the same client against floor.go, with a token challenge / anonymous (images/s) | %.1f | %.1f | floor with tokens / distribution %.2f, anonymous floor / distribution %.2f; Slipway at %.2f of the token floor, distribution at %.2f of the anonymous one |\n",
			smallFloor[0], smallFloor[2], smallFloor[0]/smalls.b, smallFloor[2]/smalls.b, smalls.a/smallFloor[0], smalls.b/smallFloor[2])
		fmt.Printf("| small image pushes floor with a token challenge and one etcd Put per manifest put, on Slipway's etcd (images/s) | %.1f | | floor / distribution %.2f; Slipway at %.2f of it |\n",
			smallFloor[1], smallFloor[1]/smalls.b, smalls.a/smallFloor[1])
	}
	slip.printBreakdown()
	dist.printBreakdown()

	getURL := func(t *target) string { return "http://" + t.host + "/v2/" + t.repo + "-r0-0/manifests/s-0" }
	// Four turns a round, Slipway, distribution and the ceiling with
	// each client, so that every ratio is of medians taken under the
	// same conditions.
	ceil := newCeiling(getURL(&dist))
	var sg, dg, cg, cgg []float64
	for r := range *rounds {
		sg = append(sg, profiled(*getProfile, r, func() float64 { return slip.manifestGets(getURL(&slip), *gets, 16) }))
		slip.drainScans()
		dg = append(dg, profiled(*distProfile, r, func() float64 { return dist.manifestGets(getURL(&dist), *gets, 16) }))
		cg = append(cg, profiled(*ceilProfile, r, func() float64 { return ceil.gets(*gets, 16, false) }))
		cgg = append(cgg, ceil.gets(*gets, 16, true))
	}
	ceil.close()
	mget := medians{median(sg), median(dg)}
	mget.row("manifest GET (req/s)")
	c, cc := median(cg), median(cgg)
	fmt.Printf("| manifest GET ceiling: the same requests against a handler that only writes the bytes, from a plain net/http client (req/s) | %.0f | %.0f | Slipway at %.2f of the ceiling, distribution at %.2f |\n",
		c, c, mget.a/c, mget.b/c)
	fmt.Printf("| manifest GET ceiling, from the registries' own client (go-containerregistry's transport, anonymous, as distribution's turn) (req/s) | %.0f | %.0f | Slipway at %.2f of the ceiling, distribution at %.2f |\n",
		cc, cc, mget.a/cc, mget.b/cc)

	slices.Sort(lat)
	if len(lat) > 0 {
		fmt.Printf("| push → ImageStream updated, p50 (ms) | %.2f | n/a | |\n", ms(lat[len(lat)/2]))
		fmt.Printf("| push → ImageStream updated, p99 (ms) | %.2f | n/a | |\n", ms(lat[min(len(lat)-1, len(lat)*99/100)]))
	}

	if *manyTags > 0 {
		big, small := streamTagPushes(&slip, *manyTags, 50, *rounds, *tagProfile)
		fmt.Printf("| new-tag push to a stream of %d tags / to one of 1–%d tags, p50 (ms) | %.2f / %.2f | n/a | %.2f× the time |\n", *manyTags, 1+50**rounds, ms(big), ms(small), float64(big)/float64(small))
	}

	if *fsyncN > 0 {
		if _, err := exec.LookPath("strace"); err != nil {
			fmt.Printf("\nfsync per small push: skipped, strace is not installed (apt-get install strace).\n")
		} else {
			sf, df := fsyncsPerPush(ctx, &slip, *fsyncN, *conc), fsyncsPerPush(ctx, &dist, *fsyncN, *conc)
			fmt.Printf("| fsync-family calls per small push (strace -f -c) | %.1f | %.1f | %.2f |\n", sf, df, sf/df)
		}
	}
	fmt.Println("\nEach figure is the median of its rounds; rounds alternate Slipway and distribution on fresh content, with every digest computed before timing and Slipway's scanner drained before distribution's turn. Push → ImageStream updated is measured from the start of the manifest PUT to the ImageStream watch event, over the small images.")
}

// timing is, with -breakdown, each kind of request's count and total
// time over the small pushes, per side.
type timing struct {
	mu sync.Mutex
	n  map[string]int
	d  map[string]time.Duration
}

var straceLog = flag.String("strace-log", "", "with -fsync-pushes, write each side's full strace of its counted pushes to PREFIX.SIDE instead of counting them")

var fileSyscalls = flag.Bool("file-syscalls", false, "with -fsync-pushes, also print each file system call's count per small push, per side")

var breakdown = flag.Bool("breakdown", false, "print the mean time of each kind of request in the small pushes, per side")

type timedTransport struct {
	http.RoundTripper
	t *timing
}

func (tt timedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := tt.RoundTripper.RoundTrip(req)
	kind := req.Method + " "
	switch p := req.URL.Path; {
	case strings.HasSuffix(p, "/token"):
		kind += "token"
	case p == "/v2/":
		kind += "ping"
	case strings.Contains(p, "/blobs/uploads/") && req.Method == http.MethodPut:
		kind += "blob upload commit"
	case strings.Contains(p, "/blobs/uploads/"):
		kind += "blob upload"
	case strings.Contains(p, "/blobs/"):
		kind += "blob"
	case strings.Contains(p, "/manifests/sha256:"):
		kind += "manifest by digest"
	case strings.Contains(p, "/manifests/"):
		kind += "manifest by tag"
	default:
		kind += "other"
	}
	if resp != nil {
		kind += " " + strconv.Itoa(resp.StatusCode)
	}
	tt.t.mu.Lock()
	tt.t.n[kind]++
	tt.t.d[kind] += time.Since(start)
	tt.t.mu.Unlock()
	return resp, err
}

func (t *target) transport() http.RoundTripper {
	if !*breakdown {
		return remote.DefaultTransport
	}
	if t.timing == nil {
		t.timing = &timing{n: map[string]int{}, d: map[string]time.Duration{}}
	}
	return timedTransport{remote.DefaultTransport, t.timing}
}

func (t *target) printBreakdown() {
	if t.timing == nil {
		return
	}
	var kinds []string
	for k := range t.timing.n {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Printf("| %s: %s | %d | %.2f ms mean |\n", t.name, k, t.timing.n[k], ms(t.timing.d[k])/float64(t.timing.n[k]))
	}
}

type target struct {
	timing           *timing
	name, host, repo string
	auth             authn.Authenticator
	cl               *client.Client // Slipway only: to watch streams and wait for scans
	pushed           int            // images pushed so far (Slipway: scans to wait for)
	noScans          bool           // Slipway runs no scanner: nothing to wait for
}

// medians is one measurement's result: a is Slipway's median, b the peer's.
type medians struct{ a, b float64 }

func (m medians) row(what string) {
	fmt.Printf("| %s | %.1f | %.1f | %.2f |\n", what, m.a, m.b, m.a/m.b)
}

// abab runs f for Slipway then the peer, rounds times, waiting for
// Slipway's scanner to drain before each peer turn, and returns medians.
func abab(rounds int, f func(t *target, round int) float64, slip, peer *target) medians {
	var as, bs []float64
	for r := range rounds {
		as = append(as, f(slip, r))
		slip.drainScans()
		bs = append(bs, f(peer, r))
	}
	return medians{median(as), median(bs)}
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs) == 0 {
		return 0
	}
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// drainScans waits until Slipway has an ImageScan with a phase for every
// image it was given, so that the scanner is idle when the peer runs.
func (t *target) drainScans() {
	if t.cl == nil || t.noScans {
		return
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		n := 0
		if items, _, err := t.cl.List(context.Background(), api.ImageScans, "bench", client.ListOptions{}); err == nil {
			for _, o := range items {
				if p := o.(*api.ImageScan).Status.Phase; p != "" && p != "Pending" {
					n++
				}
			}
		}
		if n >= t.pushed {
			return
		}
		if time.Now().After(deadline) {
			log.Printf("warning: %d of %d scans done after 5 minutes; the peer runs with the scanner busy", n, t.pushed)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (t *target) ref(tag string) name.Reference {
	r, err := name.ParseReference(t.host+"/"+t.repo+":"+tag, name.Insecure)
	if err != nil {
		log.Fatal(err)
	}
	return r
}

func (t *target) refIn(repo, tag string) name.Reference {
	r, err := name.ParseReference(t.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		log.Fatal(err)
	}
	return r
}

func (t *target) push(img v1.Image, tag string) error {
	t.pushed++
	return remote.Write(t.ref(tag), img, remote.WithAuth(t.auth), remote.WithJobs(4))
}

func (t *target) pull(tag string) error {
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

// pushMany pushes images as tags s-0..s-n of streams REPO-PREFIX-0..19;
// on Slipway it also measures how long after the start of each tag's
// manifest PUT the tag appears in the stream.
func (t *target) pushMany(ctx context.Context, prefix string, imgs []v1.Image, conc int) ([]time.Duration, error) {
	started := make([]atomic.Int64, len(imgs))
	var lat []time.Duration
	var latMu sync.Mutex
	done := make(chan struct{})
	streamPrefix := strings.TrimPrefix(t.repo, "bench/") + "-" + prefix + "-"
	if t.cl != nil {
		_, meta, err := t.cl.List(ctx, api.ImageStreams, "bench", client.ListOptions{})
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		ch, err := t.cl.Watch(wctx, api.ImageStreams, "bench", meta.ResourceVersion, client.ListOptions{})
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
				is := ev.Object.(*api.ImageStream)
				if !strings.HasPrefix(is.Name, streamPrefix) {
					continue
				}
				for _, tg := range is.Status.Tags {
					var i int
					key := is.Name + ":" + tg.Tag
					if seen[key] || !strings.HasPrefix(tg.Tag, "s-") {
						continue
					}
					seen[key] = true
					fmt.Sscanf(tg.Tag, "s-%d", &i)
					if i < len(started) {
						latMu.Lock()
						lat = append(lat, time.Duration(now-started[i].Load()))
						latMu.Unlock()
					}
				}
				if len(seen) == len(imgs) {
					return
				}
			}
		}()
	} else {
		close(done)
	}
	t.pushed += len(imgs)
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
				// 20 streams, as before tags had keys of their own (when
				// a tag move rewrote the whole stream): the figures stay
				// comparable with earlier runs. -stream-tags measures
				// one stream of many tags.
				ref := t.refIn(fmt.Sprintf("%s-%s-%d", t.repo, prefix, i%20), fmt.Sprintf("s-%d", i))
				if err := remote.Write(ref.Context().Digest(mustDigest(imgs[i]).String()), imgs[i], remote.WithAuth(t.auth), remote.WithTransport(t.transport())); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				started[i].Store(time.Now().UnixNano())
				if err := remote.Tag(ref.Context().Tag(ref.Identifier()), imgs[i], remote.WithAuth(t.auth), remote.WithTransport(t.transport())); err != nil {
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
	if t.cl != nil {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}
	latMu.Lock()
	defer latMu.Unlock()
	return slices.Clone(lat), nil
}

// manifestGets runs n GETs of url from conc clients that reuse one token,
// as real clients do, and returns requests per second.
func (t *target) manifestGets(url string, n, conc int) float64 {
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conc
	defer tr.CloseIdleConnections()
	repo, err := name.NewRepository(t.host+"/"+t.repo+"-r0-0", name.Insecure)
	if err != nil {
		log.Fatal(err)
	}
	rt, err := transport.NewWithContext(context.Background(), repo.Registry, t.auth, tr, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		log.Fatal(err)
	}
	return getLoop(&http.Client{Transport: rt}, url, n, conc, t.name)
}

func getLoop(hc *http.Client, url string, n, conc int, who string) float64 {
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
					log.Fatalf("%s: manifest GET = %d", who, resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds()
}

// ceiling serves the manifest that distribution answers at url, with its
// headers, from a handler that does nothing else: what any registry could
// reach on this machine with this client.
type ceiling struct {
	ln  net.Listener
	url string
}

func newCeiling(url string) *ceiling {
	resp, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hdr := resp.Header.Clone()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.Write(body)
	}))
	return &ceiling{ln: ln, url: "http://" + ln.Addr().String() + "/v2/x/manifests/s-0"}
}

// gets measures n GETs from conc clients over a transport of their own,
// as each registry's turn has: net/http's alone, or wrapped as
// go-containerregistry wraps it for a registry that asks for no
// credentials (user agent, scheme, ping), as for distribution's turn.
func (c *ceiling) gets(n, conc int, ggcr bool) float64 {
	tr := remote.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conc
	defer tr.CloseIdleConnections()
	var rt http.RoundTripper = tr
	if ggcr {
		reg, err := name.NewRegistry(c.ln.Addr().String(), name.Insecure)
		if err != nil {
			log.Fatal(err)
		}
		if rt, err = transport.NewWithContext(context.Background(), reg, authn.Anonymous, tr, nil); err != nil {
			log.Fatal(err)
		}
	}
	return getLoop(&http.Client{Transport: rt}, c.url, n, conc, "ceiling")
}

func (c *ceiling) close() { c.ln.Close() }

// profiled runs f, with a CPU profile of the whole process written to
// FILE.ROUND when file is set.
func profiled(file string, round int, f func() float64) float64 {
	if file == "" {
		return f()
	}
	out, err := os.Create(fmt.Sprintf("%s.%d", file, round))
	if err != nil {
		log.Fatal(err)
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		log.Fatal(err)
	}
	defer pprof.StopCPUProfile()
	return f()
}

// streamTagPushes fills stream bench/many with n tags (one image), then
// times pushes of new tags to it and to a stream that starts with one
// tag, m of each per round, alternating, and returns the two medians of
// a push's time.
func streamTagPushes(t *target, n, m, rounds int, profile string) (big, small time.Duration) {
	img := smallImages(1)[0]
	ref := func(repo, tag string) name.Reference { return t.refIn(repo, tag) }
	if err := remote.Write(ref(t.repo+"-many", "t-0").Context().Digest(mustDigest(img).String()), img, remote.WithAuth(t.auth)); err != nil {
		log.Fatal(err)
	}
	if err := remote.Write(ref(t.repo+"-one", "t-0").Context().Digest(mustDigest(img).String()), img, remote.WithAuth(t.auth)); err != nil {
		log.Fatal(err)
	}
	// One token for every tag push, as a client pushing many tags has.
	tagOnce := func(repo, tag string) time.Duration {
		start := time.Now()
		if err := remote.Tag(ref(repo, tag).Context().Tag(tag), img, remote.WithAuth(t.auth)); err != nil {
			log.Fatal(err)
		}
		return time.Since(start)
	}
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)); i < n; i = int(next.Add(1)) {
				tagOnce(t.repo+"-many", fmt.Sprintf("t-%d", i))
			}
		}()
	}
	wg.Wait()
	tagOnce(t.repo+"-one", "t-0")
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	var bigs, smalls []float64
	for r := range rounds {
		for i := range m {
			// A new tag each time: the many-tag stream grows past n by m per round.
			bigs = append(bigs, float64(tagOnce(t.repo+"-many", fmt.Sprintf("u-%d-%d", r, i))))
			// And to the small stream, which grows from 1 tag by m per round.
			smalls = append(smalls, float64(tagOnce(t.repo+"-one", fmt.Sprintf("u-%d-%d", r, i))))
		}
	}
	return time.Duration(median(bigs)), time.Duration(median(smalls))
}

// fsyncsPerPush counts fsync, fdatasync, sync_file_range and sync calls of
// this whole process while t takes n small pushes, with strace attached
// only for that time, after waiting for Slipway's scanner to go idle.
func fsyncsPerPush(ctx context.Context, t *target, n, conc int) float64 {
	imgs := smallImages(n)
	out := filepath.Join(os.TempDir(), fmt.Sprintf("registrybench-strace-%d.txt", os.Getpid()))
	defer os.Remove(out)
	set := "trace=fsync,fdatasync,sync_file_range,sync,syncfs"
	if *fileSyscalls {
		set = "trace=%file,fsync,fdatasync,sync_file_range,sync,syncfs,getdents64,ftruncate"
	}
	args := []string{"-f", "-c", "-e", set, "-o", out, "-p", strconv.Itoa(os.Getpid())}
	if *straceLog != "" {
		args = []string{"-f", "-e", set, "-o", *straceLog + "." + t.name, "-p", strconv.Itoa(os.Getpid())}
	}
	cmd := exec.Command("strace", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	time.Sleep(2 * time.Second) // strace attaches to every thread
	if _, err := t.pushMany(ctx, fmt.Sprintf("fsync%d", t.pushed), imgs, conc); err != nil {
		log.Fatal(err)
	}
	t.drainScans()
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if *straceLog != "" {
		return 0
	}
	f, err := os.Open(out)
	if err != nil {
		log.Fatalf("strace: %v: %s", err, stderr.String())
	}
	defer f.Close()
	calls := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// % time  seconds  usecs/call  calls  errors  syscall
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		if *fileSyscalls {
			if c, err := strconv.Atoi(fs[3]); err == nil {
				fmt.Printf("%s: %s per small push: %.1f\n", t.name, fs[len(fs)-1], float64(c)/float64(n))
			}
		}
		switch fs[len(fs)-1] {
		case "fsync", "fdatasync", "sync_file_range", "sync", "syncfs":
			if c, err := strconv.Atoi(fs[3]); err == nil {
				calls += c
			}
		}
	}
	return float64(calls) / float64(n)
}

// bigImage is mib MiB of random data in 10 uncompressed layers, with every
// digest and diff ID computed now, so no push pays for hashing.
func bigImage(mib int) v1.Image {
	img := empty.Image
	per := mib << 20 / 10
	for range 10 {
		l, err := random.Layer(int64(per), types.OCIUncompressedLayer)
		if err != nil {
			log.Fatal(err)
		}
		img, err = mutate.AppendLayers(img, l)
		if err != nil {
			log.Fatal(err)
		}
	}
	return hashed(img)
}

func smallImages(n int) []v1.Image {
	out := make([]v1.Image, n)
	for i := range out {
		l, err := random.Layer(1024, types.OCIUncompressedLayer)
		if err != nil {
			log.Fatal(err)
		}
		img, err := mutate.AppendLayers(empty.Image, l)
		if err != nil {
			log.Fatal(err)
		}
		out[i] = hashed(img)
	}
	return out
}

// hashed computes (and so caches) every digest ggcr would compute during a
// push: each layer's digest and diff ID, the config's and the manifest's.
func hashed(img v1.Image) v1.Image {
	layers, err := img.Layers()
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range layers {
		if _, err := l.Digest(); err != nil {
			log.Fatal(err)
		}
		if _, err := l.DiffID(); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := img.ConfigName(); err != nil {
		log.Fatal(err)
	}
	mustDigest(img)
	return img
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchStorage reads a distribution storage section from file and puts
// its driver's rootdirectory under sub, so that the two registries never
// share keys.
func benchStorage(file, sub string) configuration.Storage {
	data, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	var st configuration.Storage
	if err := yaml.Unmarshal(data, &st); err != nil {
		log.Fatalf("%s is not a storage configuration: %v", file, err)
	}
	params := configuration.Parameters{}
	for k, v := range st.Parameters() {
		params[k] = v
	}
	root, _ := params["rootdirectory"].(string)
	params["rootdirectory"] = strings.TrimSuffix(root, "/") + "/registrybench-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "/" + sub
	return configuration.Storage{st.Type(): params}
}
