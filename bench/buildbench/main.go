// Command buildbench measures Slipway's builds on a real buildkitd, each
// against its peer in the same run on the same machine, and prints a
// Markdown table of ratios for BENCHMARKS.md:
//
//   - a Dockerfile build (RUN + COPY on a busybox base, uploaded source)
//     built the first time on a fresh buildkitd, against the same build
//     run again with nothing changed (BuildKit's cache kept);
//   - the rebase strategy: N configs with rebase: true whose images are
//     swapped onto a new base, against full BuildKit rebuilds of a sample
//     of equivalent Dockerfile builds (FROM base + COPY an app file) on the
//     same new base, with the context already in BuildKit's cache.
//
// Builds start as `slipway rebuild` starts them: through the API, with at
// most -c builds in flight, each waited for before the next starts; the
// build controller itself runs at most 4 at once.
//
//	make build && go run ./bench/buildbench [-n 1000] [-sample 10] [-c 8]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/server"
)

func main() {
	n := flag.Int("n", 1000, "build configs rebased")
	sample := flag.Int("sample", 10, "full BuildKit rebuilds the rebase is compared with")
	conc := flag.Int("c", 8, "builds in flight at once")
	rebuilds := flag.Int("rebuilds", 5, "no-change rebuilds of the Dockerfile build (the median is reported)")
	bkd := flag.String("buildkitd", "bin/buildkitd", "buildkitd binary (make build makes it)")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	log.SetFlags(0)

	bin, err := filepath.Abs(*bkd)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		log.Fatalf("buildbench: %v; run `make build` first, or pass -buildkitd", err)
	}
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		log.Fatalf("buildbench: busybox-static is missing (make test-deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "buildbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "data")
	// The all-in-one as `slipway start` runs it; it supervises buildkitd,
	// which it stops on Close (and which dies with this process anyway).
	srv, err := server.Start(ctx, server.Config{
		DataDir: dataDir, Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", Out: io.Discard, Buildkitd: bin,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	admin, err := srv.AdminClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Time builds, not buildkitd's start.
	bk, err := (&builders.Daemon{Root: filepath.Join(dataDir, "buildkit")}).Client(ctx, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	bk.Close()

	b := &bench{ctx: ctx, cl: admin, reg: srv.RegistryHost, conc: *conc,
		auth: remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})}
	for _, p := range []string{"web", "base", "team"} {
		b.must(admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}))
	}
	// The team's builds pull the shared base, as in OpenShift: image-puller
	// in the base project for the team's builder account.
	b.must(admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "team-builders-pull", Namespace: "base"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "builder", Namespace: "team"}},
	}))

	fmt.Printf("# buildbench: Dockerfile build + %d no-change rebuilds; %d rebases vs %d full builds, %d in flight; GOMAXPROCS=%d, %s\n\n",
		*rebuilds, *n, *sample, *conc, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))

	first, again := b.dockerfileBuild(*rebuilds)
	r := b.rebaseVsFull(*n, *sample)

	fmt.Println("| measurement | Slipway | peer | ratio |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| Dockerfile build (RUN + COPY): no-change rebuild, median of %d (s) / first build (s) | %.2f | %.2f | %.2f |\n",
		len(again), median(again).Seconds(), first.Seconds(), median(again).Seconds()/first.Seconds())
	fmt.Printf("| rebase of %d configs (images/s) / full BuildKit rebuild of %d on the new base (images/s) | %.1f | %.2f | %.1f |\n",
		*n, *sample, r.rebaseRate, r.fullRate, r.rebaseRate/r.fullRate)
	fmt.Printf("| time per build, p50: rebase / full BuildKit rebuild (s) | %.2f | %.2f | %.2f |\n",
		r.rebaseP50.Seconds(), r.fullP50.Seconds(), r.rebaseP50.Seconds()/r.fullP50.Seconds())
	fmt.Printf("\nBuild times run from the start of the build (API) to the watch event that shows it finished. The first build runs on a fresh buildkitd (it pulls the base); rebuilds ranged %.2f–%.2f s. Images/s is builds completed over wall time, %d in flight, at most 4 running in the build controller. The swap step a rebase build logs (from the three images in hand to the new manifest pushed, blobs mounted) took %.0f ms at p50, from the rebase builds' logs.\n",
		slices.Min(again).Seconds(), slices.Max(again).Seconds(), *conc, float64(r.swapP50.Microseconds())/1000)
}

type bench struct {
	ctx  context.Context
	cl   *client.Client
	reg  string
	auth remote.Option
	conc int
}

func (b *bench) must(err error) {
	if err != nil {
		log.Fatalf("buildbench: %v", err)
	}
}

func (b *bench) ref(s string) name.Reference {
	r, err := name.ParseReference(b.reg+"/"+s, name.Insecure)
	b.must(err)
	return r
}

// dockerfileBuild builds one config the first time, then rebuilds it
// unchanged, one build at a time.
func (b *bench) dockerfileBuild(rebuilds int) (time.Duration, []time.Duration) {
	b.must(remote.Write(b.ref("web/base:1"), busyboxImage(), b.auth))
	data := make([]byte, 1<<20)
	rand.Read(data)
	src := b.upload("web/web-source", map[string][]byte{
		"Dockerfile": []byte("FROM base\n" +
			`RUN ["/bin/busybox", "sh", "-c", "echo built > /built && /bin/busybox mkdir -p /usr/share && /bin/busybox seq 1 20000 > /usr/share/numbers"]` + "\n" +
			"COPY app/ /app/\n"),
		"app/msg":      []byte("hello from web\n"),
		"app/data.bin": data,
	})
	b.must(b.cl.Create(b.ctx, api.BuildConfigs, &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: "web"},
		Spec: api.BuildConfigSpec{
			Source:   api.BuildSource{Binary: src},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "web:latest"}},
		},
	}))
	w := b.watch("web")
	defer w.stop()
	one := func() (time.Duration, *api.Build) {
		start := time.Now()
		built := b.buildAndWait(w, "web", "web")
		return built.at.Sub(start), built.b
	}
	first, fb := one()
	if len(fb.Status.OutputDigest) == 0 {
		log.Fatalf("buildbench: web-1 pushed nothing")
	}
	var again []time.Duration
	for range rebuilds {
		d, rb := one()
		// Plain progress marks cache hits "CACHED"; without them the
		// rebuild did not use the cache and measures something else.
		if !strings.Contains(rb.Status.LogTail, "CACHED") {
			log.Printf("buildbench: warning: %s shows no cache hits:\n%s", rb.Name, rb.Status.LogTail)
		}
		again = append(again, d)
	}
	return first, again
}

// rebaseVsFull sets up n rebase configs whose images are on base v1 and
// sample ordinary Dockerfile configs built once on v1, moves the base to
// v2, and returns images/s of rebasing all n and of rebuilding the sample.
func (b *bench) rebaseVsFull(n, sample int) result {
	v1img := busyboxImage()
	b.must(remote.Write(b.ref("base/os:1"), v1img, b.auth))
	v1digest, err := v1img.Digest()
	b.must(err)
	// Read it back so the app images' pushes mount its layer from
	// base/os instead of uploading it a thousand times.
	baseV1, err := remote.Image(b.ref("base/os:1"), b.auth)
	b.must(err)
	baseName := b.reg + "/base/os"
	from := &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "os:1"}

	setupStart := time.Now()
	oldDigests := make([]string, n)
	parallel(n, b.conc, func(i int) error {
		img, err := mutate.AppendLayers(baseV1, fileLayer("app/msg", fmt.Sprintf("hello from app %d\n", i)))
		if err != nil {
			return err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		cf = cf.DeepCopy()
		cf.Config.Cmd = []string{"/bin/busybox", "cat", "/app/msg"}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return err
		}
		img = mutate.Annotations(img, map[string]string{
			builders.BaseNameAnnotation:   baseName,
			builders.BaseDigestAnnotation: v1digest.String(),
		}).(v1.Image)
		if err := remote.Write(b.ref(fmt.Sprintf("team/app-%04d:latest", i)), img, b.auth); err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		oldDigests[i] = d.String()
		return b.cl.Create(b.ctx, api.BuildConfigs, &api.BuildConfig{
			ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("app-%04d", i), Namespace: "team"},
			Spec: api.BuildConfigSpec{
				Rebase:   true,
				Source:   api.BuildSource{Dockerfile: "FROM base\nCOPY msg /app/msg\n"},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: from}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: fmt.Sprintf("app-%04d:latest", i)}},
			},
		})
	})
	// The peer: the same image made by a full build of its Dockerfile.
	fullNames := make([]string, sample)
	for i := range sample {
		fullNames[i] = fmt.Sprintf("full-%02d", i)
		src := b.upload("team/"+fullNames[i]+"-source", map[string][]byte{
			"Dockerfile": []byte("FROM base\nCOPY msg /app/msg\n"),
			"msg":        []byte(fmt.Sprintf("hello from full %d\n", i)),
		})
		b.must(b.cl.Create(b.ctx, api.BuildConfigs, &api.BuildConfig{
			ObjectMeta: api.ObjectMeta{Name: fullNames[i], Namespace: "team"},
			Spec: api.BuildConfigSpec{
				Source:   api.BuildSource{Binary: src},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: from}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: fullNames[i] + ":latest"}},
			},
		}))
	}
	w := b.watch("team")
	defer w.stop()
	// Built once on v1: the contexts and the old base are in BuildKit's
	// cache, as they are for a team that has built before.
	warm, _ := b.buildAll(w, "team", fullNames)
	log.Printf("buildbench: set up %d rebase configs and %d full-build configs (built once on v1) in %s", n, sample, time.Since(setupStart).Round(time.Millisecond))

	// The security fix: v2 is v1 plus a patch layer.
	v2img, err := mutate.AppendLayers(v1img, fileLayer("etc/patched", "patched\n"))
	b.must(err)
	b.must(remote.Write(b.ref("base/os:1"), v2img, b.auth))
	v2digest, err := v2img.Digest()
	b.must(err)

	appNames := make([]string, n)
	for i := range appNames {
		appNames[i] = fmt.Sprintf("app-%04d", i)
	}
	start := time.Now()
	rebased, rebaseTook := b.buildAll(w, "team", appNames)
	rebaseRate := float64(n) / time.Since(start).Seconds()
	var swaps []time.Duration
	for i, rb := range rebased {
		// The swap step logs its own time; the rest of a rebase build's
		// time is the controller's (queueing, status writes, token, reading
		// the three manifests).
		if m := swapTime.FindStringSubmatch(rb.Status.LogTail); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				swaps = append(swaps, d)
			}
		}
		if rb.Status.RebasedFrom != oldDigests[i] || !strings.HasSuffix(rb.Status.BaseImage, "@"+v2digest.String()) {
			log.Fatalf("buildbench: %s rebasedFrom %q on %q, want a rebase of %s onto %s\n%s", rb.Name, rb.Status.RebasedFrom, rb.Status.BaseImage, oldDigests[i], v2digest, rb.Status.LogTail)
		}
	}

	start = time.Now()
	built, fullTook := b.buildAll(w, "team", fullNames)
	fullRate := float64(sample) / time.Since(start).Seconds()
	for i, fb := range built {
		if fb.Status.RebasedFrom != "" || !strings.HasSuffix(fb.Status.BaseImage, "@"+v2digest.String()) || fb.Status.OutputDigest == warm[i].Status.OutputDigest {
			log.Fatalf("buildbench: %s was not a full build on %s: rebasedFrom %q, base %q\n%s", fb.Name, v2digest, fb.Status.RebasedFrom, fb.Status.BaseImage, fb.Status.LogTail)
		}
	}
	return result{rebaseRate, fullRate, median(rebaseTook), median(fullTook), median(swaps)}
}

// swapTime finds the rebase step's own time in a rebase build's log.
var swapTime = regexp.MustCompile(`no build run\) in (\S+)\n`)

type result struct {
	rebaseRate, fullRate float64
	rebaseP50, fullP50   time.Duration
	swapP50              time.Duration // the rebase step alone, from the build log
}

// buildAll starts a build of each config, at most b.conc in flight, and
// returns the finished builds in order with how long each took from its
// start to the event that showed it finished; a build that is not
// Complete is fatal.
func (b *bench) buildAll(w *watcher, ns string, configs []string) ([]*api.Build, []time.Duration) {
	out := make([]*api.Build, len(configs))
	took := make([]time.Duration, len(configs))
	parallel(len(configs), b.conc, func(i int) error {
		start := time.Now()
		f := b.buildAndWait(w, ns, configs[i])
		out[i], took[i] = f.b, f.at.Sub(start)
		return nil
	})
	return out, took
}

func (b *bench) buildAndWait(w *watcher, ns, config string) finished {
	bld, err := instantiate(b.ctx, b.cl, ns, config)
	b.must(err)
	f, err := w.wait(bld.Name)
	b.must(err)
	if f.b.Status.Phase != api.BuildComplete {
		log.Fatalf("buildbench: build %s = %s (%s): %s\n%s", f.b.Name, f.b.Status.Phase, f.b.Status.Reason, f.b.Status.Message, f.b.Status.LogTail)
	}
	return f
}

// upload stores files as a tar blob in repo, as start-build --from-dir
// does, and returns it as a binary source.
func (b *bench) upload(repo string, files map[string][]byte) *api.BinaryBuildSource {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	dirs := map[string]bool{}
	for _, n := range names {
		if d := filepath.Dir(n); d != "." && !dirs[d] {
			dirs[d] = true
			b.must(tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}))
		}
		b.must(tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n]))}))
		_, err := tw.Write(files[n])
		b.must(err)
	}
	b.must(tw.Close())
	layer, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	b.must(err)
	r, err := name.NewRepository(b.reg+"/"+repo, name.Insecure)
	b.must(err)
	b.must(remote.WriteLayer(r, layer, b.auth))
	d, err := layer.Digest()
	b.must(err)
	return &api.BinaryBuildSource{Repository: repo, Digest: d.String()}
}

// instantiate starts the next build of a config as `slipway start-build`
// does: bump the config's lastVersion (compare-and-swap), then create
// Build NAME-N with a copy of its spec.
func instantiate(ctx context.Context, cl *client.Client, ns, name string) (*api.Build, error) {
	for range 10 {
		o, err := cl.Get(ctx, api.BuildConfigs, ns, name)
		if err != nil {
			return nil, err
		}
		bc := o.(*api.BuildConfig)
		bc.Status.LastVersion++
		if err := cl.UpdateStatus(ctx, api.BuildConfigs, bc); api.IsConflict(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		b := &api.Build{
			ObjectMeta: api.ObjectMeta{
				Name: fmt.Sprintf("%s-%d", name, bc.Status.LastVersion), Namespace: ns,
				Labels: map[string]string{builders.BuildConfigLabel: name},
			},
			Spec: bc.Spec.BuildSpec(),
		}
		return b, cl.Create(ctx, api.Builds, b)
	}
	return nil, fmt.Errorf("build config %s/%s kept changing", ns, name)
}

// watcher records when each build of a project is first seen finished.
type watcher struct {
	mu     sync.Mutex
	cond   *sync.Cond
	done   map[string]finished
	err    error
	cancel context.CancelFunc
}

type finished struct {
	b  *api.Build
	at time.Time
}

func (b *bench) watch(ns string) *watcher {
	ctx, cancel := context.WithCancel(b.ctx)
	_, meta, err := b.cl.List(ctx, api.Builds, ns, client.ListOptions{Limit: 1})
	b.must(err)
	ch, err := b.cl.Watch(ctx, api.Builds, ns, meta.ResourceVersion, client.ListOptions{})
	b.must(err)
	w := &watcher{done: map[string]finished{}, cancel: cancel}
	w.cond = sync.NewCond(&w.mu)
	go func() {
		for ev := range ch {
			now := time.Now()
			if ev.Err != nil {
				w.fail(ev.Err)
				return
			}
			bld := ev.Object.(*api.Build)
			if ev.Type == api.Deleted || !api.IsFinished(bld.Status.Phase) {
				continue
			}
			w.mu.Lock()
			if _, ok := w.done[bld.Name]; !ok {
				w.done[bld.Name] = finished{bld, now}
				w.cond.Broadcast()
			}
			w.mu.Unlock()
		}
		w.fail(fmt.Errorf("the build watch ended: %v", ctx.Err()))
	}()
	return w
}

func (w *watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	w.cond.Broadcast()
}

func (w *watcher) wait(build string) (finished, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if f, ok := w.done[build]; ok {
			return f, nil
		}
		if w.err != nil {
			return finished{}, w.err
		}
		w.cond.Wait()
	}
}

func (w *watcher) stop() { w.cancel() }

// parallel runs op(0..n-1) on conc workers; the first error is fatal.
func parallel(n, conc int, op func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				if err := op(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		log.Fatalf("buildbench: %v", err)
	}
}

// busyboxImage is FROM scratch plus Debian's static busybox at /bin/busybox.
func busyboxImage() v1.Image {
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		log.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layerOf(map[string][]byte{"bin/busybox": bb}, 0o755))
	if err != nil {
		log.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		log.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		log.Fatal(err)
	}
	return img
}

// fileLayer is a layer holding one file.
func fileLayer(path, content string) v1.Layer {
	return layerOf(map[string][]byte{path: []byte(content)}, 0o644)
}

func layerOf(files map[string][]byte, mode int64) v1.Layer {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for path, data := range files {
		tw.WriteHeader(&tar.Header{Name: filepath.Dir(path) + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		tw.WriteHeader(&tar.Header{Name: path, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))})
		tw.Write(data)
	}
	tw.Close()
	l, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		log.Fatal(err)
	}
	return l
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// inMemory opens b as a layer's bytes. (tarball.LayerFromReader would
// copy them to a file in the temporary directory that is never removed.)
func inMemory(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
