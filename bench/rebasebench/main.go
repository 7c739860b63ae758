// Command rebasebench (images spread over projects of 1,000) measures the server-side rebase (buildconfigs/NAME/rebase,
// what `slipway rebuild` uses for configs with rebase: true) against full
// BuildKit rebuilds of the same kind of image, on the same machine in the
// same run, alternating A B A B:
//
//   - A: N configs whose images (busybox base + one app file) are on base
//     vK are rebased onto vK+1 (vK plus a patch layer), 256 requests in
//     flight as `slipway rebuild` sends them; images/s over wall time;
//   - B: a sample of equivalent Dockerfile configs (FROM base + COPY the
//     app file) rebuilt in full by BuildKit on vK+1, their context already
//     in BuildKit's cache; images/s.
//
// Every rebased image is verified after its round (not timed): its Build
// is Complete and rebased from the image before, the tag holds the new
// digest, and the manifest and config read back from the registry have the
// new base's layers followed by the image's own app layer, with matching
// diff IDs. One rebased image is run under Docker when a Docker engine
// answers (-docker=false to skip).
//
//	make build && go run ./bench/rebasebench [-n 10000] [-sample 4] [-rounds 2]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
	"slipway.dev/slipway/signing"
)

func main() {
	n := flag.Int("n", 10000, "build configs rebased per round")
	sample := flag.Int("sample", 4, "full BuildKit rebuilds per round, the peer")
	rounds := flag.Int("rounds", 2, "alternating rounds (rebase, then full builds)")
	conc := flag.Int("c", 256, "rebase requests in flight (slipway rebuild sends 256)")
	setupConc := flag.Int("setup-c", 16, "pushes in flight while setting up")
	bkd := flag.String("buildkitd", "bin/buildkitd", "buildkitd binary (make build makes it)")
	runDocker := flag.Bool("docker", true, "run one rebased image under Docker, if an engine answers")
	timeout := flag.Duration("timeout", 60*time.Minute, "give up after this long")
	scans := flag.Bool("scan", false, "run the scanner (rebased images' scans are then derived; setup waits until every image is scanned, which takes long at -n 10000)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the first round's rebase to this file")
	sign := flag.Bool("sign", false, "give every project a signing key: rebases are then signed and attested in the registry, the full rebuilds by their builds, and every rebased image's signature and provenance are verified")
	logFile := flag.String("log", "", "write the server's debug log (each rebase group's size and the time of its phases) to this file")
	flag.Parse()
	if *logFile != "" {
		w, err := os.Create(*logFile)
		if err != nil {
			log.Fatal(err)
		}
		defer w.Close()
		slog.SetDefault(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}
	log.SetFlags(0)

	bin, err := filepath.Abs(*bkd)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		log.Fatalf("rebasebench: %v; run `make build` first, or pass -buildkitd", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "rebasebench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dataDir := filepath.Join(dir, "data")
	srv, err := server.Start(ctx, server.Config{
		DataDir: dataDir, Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", Out: io.Discard, Buildkitd: bin, NoScanner: !*scans,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	admin, err := srv.AdminClient(ctx)
	if err != nil {
		log.Fatal(err)
	}
	bk, err := (&builders.Daemon{Root: filepath.Join(dataDir, "buildkit")}).Client(ctx, time.Minute)
	if err != nil {
		log.Fatal(err)
	}
	bk.Close()
	b := &bench{ctx: ctx, cl: admin, reg: srv.RegistryHost, conc: 8,
		auth: remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()}), signAuth: signing.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})}
	// The images are spread over projects of perProject each, under the
	// platform's per-project object limits (5,000 of a kind by default).
	projects := []string{"base", "full"}
	for i := 0; i < *n; i += perProject {
		projects = append(projects, projectOf(i))
	}
	for _, p := range projects {
		b.must(admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}))
	}
	if *sign {
		b.keys = map[string][]byte{}
		for _, p := range projects[1:] {
			b.must(admin.Create(ctx, api.SigningKeys, &api.SigningKey{ObjectMeta: api.ObjectMeta{Name: "default", Namespace: p}}))
		}
		for _, p := range projects[1:] {
			for len(b.keys[p]) == 0 {
				if o, err := admin.Get(ctx, api.SigningKeys, p, "default"); err == nil {
					b.keys[p] = []byte(o.(*api.SigningKey).PublicKey)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	b.must(admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "full-builders-pull", Namespace: "base"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "builder", Namespace: "full"}},
	}))
	signed := ""
	if *sign {
		signed = ", every project signing (rebases and full builds signed and attested)"
	}
	fmt.Printf("# rebasebench: %d server-side rebases vs %d full BuildKit rebuilds per round, %d rounds alternating%s; GOMAXPROCS=%d, %s\n\n",
		*n, *sample, *rounds, signed, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))

	// Base v1, and N app images on it.
	base := busyboxImage()
	b.must(remote.Write(b.ref("base/os:1"), base, b.auth))
	baseV1, err := remote.Image(b.ref("base/os:1"), b.auth)
	b.must(err)
	baseDigest, err := base.Digest()
	b.must(err)
	baseName := b.reg + "/base/os"
	from := &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "os:1"}
	setupStart := time.Now()
	cur := make([]string, *n)
	appLayers := make([]v1.Hash, *n) // digest of each image's own layer
	appDiffs := make([]v1.Hash, *n)
	var pushed atomic.Int64
	parallel(*n, *setupConc, func(i int) error {
		l := fileLayer("app/msg", fmt.Sprintf("hello from app %d\n", i))
		img, err := mutate.AppendLayers(baseV1, l)
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
		img = mutate.Annotations(img, map[string]string{builders.BaseNameAnnotation: baseName, builders.BaseDigestAnnotation: baseDigest.String()}).(v1.Image)
		if err := remote.Write(b.ref(fmt.Sprintf("%s/app-%05d:latest", projectOf(i), i)), img, b.auth); err != nil {
			return err
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		cur[i] = d.String()
		if appLayers[i], err = l.Digest(); err != nil {
			return err
		}
		if appDiffs[i], err = l.DiffID(); err != nil {
			return err
		}
		if err := b.cl.Create(b.ctx, api.BuildConfigs, &api.BuildConfig{
			ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("app-%05d", i), Namespace: projectOf(i)},
			Spec: api.BuildConfigSpec{
				Rebase:   true,
				Source:   api.BuildSource{Dockerfile: "FROM base\nCOPY msg /app/msg\n"},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: from}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: fmt.Sprintf("app-%05d:latest", i)}},
			},
		}); err != nil {
			return err
		}
		if k := pushed.Add(1); k%1000 == 0 {
			log.Printf("rebasebench: set up %d of %d images (%s)", k, *n, time.Since(setupStart).Round(time.Second))
		}
		return nil
	})
	fullNames := make([]string, *sample)
	for i := range *sample {
		fullNames[i] = fmt.Sprintf("full-%02d", i)
		src := b.upload("full/"+fullNames[i]+"-source", map[string][]byte{
			"Dockerfile": []byte("FROM base\nCOPY msg /app/msg\n"),
			"msg":        []byte(fmt.Sprintf("hello from full %d\n", i)),
		})
		b.must(b.cl.Create(b.ctx, api.BuildConfigs, &api.BuildConfig{
			ObjectMeta: api.ObjectMeta{Name: fullNames[i], Namespace: "full"},
			Spec: api.BuildConfigSpec{
				Source:   api.BuildSource{Binary: src},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: from}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: fullNames[i] + ":latest"}},
			},
		}))
	}
	w := b.watch("full")
	defer w.stop()
	b.buildAll(w, "full", fullNames) // warm: contexts and base in BuildKit's cache
	log.Printf("rebasebench: set up %d images and configs and %d full-build configs in %s", *n, *sample, time.Since(setupStart).Round(time.Millisecond))

	var rebaseRates, fullRates []float64
	var cpuPer []time.Duration // CPU of this whole process (server and client) per rebased image
	var lastRef string
	baseImg := v1.Image(base)
	for round := 1; round <= *rounds; round++ {
		next, err := mutate.AppendLayers(baseImg, fileLayer(fmt.Sprintf("etc/patched-%d", round), "patched\n"))
		b.must(err)
		b.must(remote.Write(b.ref("base/os:1"), next, b.auth))
		nextDigest, err := next.Digest()
		b.must(err)
		baseImg = next

		// Nothing else runs while it is timed: the scanner has scanned
		// every image and the new base (from which it derives the rebased
		// images' scans, reading no layer).
		if *scans {
			b.waitScans(cur, nextDigest.String())
		}

		// A: server-side rebase of every config.
		builds := make([]*api.Build, *n)
		if *cpuProfile != "" && round == 1 {
			f, err := os.Create(*cpuProfile)
			b.must(err)
			b.must(pprof.StartCPUProfile(f))
		}
		cpu0 := cpuTime()
		start := time.Now()
		parallel(*n, *conc, func(i int) error {
			bld, err := b.cl.RebaseBuildConfig(b.ctx, projectOf(i), fmt.Sprintf("app-%05d", i))
			builds[i] = bld
			return err
		})
		took := time.Since(start)
		cpuPer = append(cpuPer, (cpuTime()-cpu0)/time.Duration(*n))
		if *cpuProfile != "" && round == 1 {
			pprof.StopCPUProfile()
		}
		rate := float64(*n) / took.Seconds()
		rebaseRates = append(rebaseRates, rate)
		log.Printf("rebasebench: round %d: rebased %d images onto %s in %s (%.0f images/s)", round, *n, nextDigest, took.Round(time.Millisecond), rate)
		vstart := time.Now()
		b.verify(builds, cur, next, nextDigest.String(), appLayers, appDiffs)
		log.Printf("rebasebench: round %d: verified %d images in %s", round, *n, time.Since(vstart).Round(time.Millisecond))
		for i, bld := range builds {
			cur[i] = bld.Status.OutputDigest
		}
		lastRef = b.reg + "/" + projectOf(0) + "/app-00000@" + cur[0]

		// B: full BuildKit rebuilds of the sample on the same new base.
		start = time.Now()
		built, _ := b.buildAll(w, "full", fullNames)
		fullTook := time.Since(start)
		for _, fb := range built {
			if fb.Status.RebasedFrom != "" || !strings.HasSuffix(fb.Status.BaseImage, "@"+nextDigest.String()) {
				log.Fatalf("rebasebench: %s was not a full build on %s: %+v", fb.Name, nextDigest, fb.Status)
			}
		}
		fr := float64(*sample) / fullTook.Seconds()
		fullRates = append(fullRates, fr)
		log.Printf("rebasebench: round %d: %d full rebuilds in %s (%.2f images/s)", round, *sample, fullTook.Round(time.Millisecond), fr)
	}
	ran := "not run (-docker=false)"
	if *runDocker {
		ran = b.dockerRun(lastRef, "hello from app 0")
	}
	mr, mf := medianF(rebaseRates), medianF(fullRates)
	fmt.Println("| measurement | Slipway | peer | ratio |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| server-side rebase of %d images (images/s) / full BuildKit rebuild of %d (images/s)%s, median of %d alternating rounds | %.0f | %.2f | %.0f× |\n",
		*n, *sample, strings.TrimPrefix(signed, ","), *rounds, mr, mf, mr/mf)
	fmt.Printf("| time for %d images: server-side rebase / full rebuild at its rate (s) | %.1f | %.0f | %.4f |\n",
		*n, float64(*n)/mr, float64(*n)/mf, mf/mr)
	slices.Sort(cpuPer)
	cp := cpuPer[len(cpuPer)/2]
	fmt.Printf("| CPU per rebased image, whole process (server, its etcd and the client), median (ms) | %.2f | | |\n", float64(cp.Microseconds())/1000)
	fmt.Printf("| images/s that CPU allows on %d idle cores (a projection, not a measurement) | %.0f | | |\n", runtime.NumCPU(), float64(runtime.NumCPU())/cp.Seconds())
	fmt.Printf("\nLoad average at the end: %s.", loadAvg())
	fmt.Printf("\nRounds (rebase images/s): %s; full rebuilds (images/s): %s. Every rebased image verified (Build Complete and rebased from the image before, tag moved, manifest and config read back: the new base's layers then the app's own, diff IDs matching). Docker run of %s: %s.\n",
		fmtRates(rebaseRates), fmtRates(fullRates), lastRef, ran)
}

// perProject images per project: a project holds each config's image
// before and after each round, under the default limit of 5,000 images.
const perProject = 1000

func projectOf(i int) string { return fmt.Sprintf("team-%d", i/perProject) }

// cpuTime is the user and system CPU this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAvg is /proc/loadavg's first three fields: other work on the machine.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func fmtRates(r []float64) string {
	var s []string
	for _, x := range r {
		s = append(s, fmt.Sprintf("%.1f", x))
	}
	return strings.Join(s, ", ")
}

func medianF(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// waitScans waits until the app images and the base's digest are scanned.
func (b *bench) waitScans(digests []string, base string) {
	start := time.Now()
	for time.Since(start) < 15*time.Minute {
		have := map[string]bool{}
		for i := 0; i < len(digests); i += perProject {
			scans, _, err := b.cl.List(b.ctx, api.ImageScans, projectOf(i), client.ListOptions{})
			b.must(err)
			for _, o := range scans {
				if o.(*api.ImageScan).Status.Phase != "" {
					have[o.GetObjectMeta().Name] = true
				}
			}
		}
		missing := 0
		for _, d := range digests {
			if !have[d] {
				missing++
			}
		}
		_, berr := b.cl.Get(b.ctx, api.ImageScans, "base", base)
		if missing == 0 && berr == nil {
			log.Printf("rebasebench: every image scanned (waited %s)", time.Since(start).Round(time.Second))
			return
		}
		time.Sleep(2 * time.Second)
	}
	log.Printf("rebasebench: warning: the scanner is still busy after 15 minutes; timing anyway")
}

// verify checks every rebased image, reading back through the registry.
func (b *bench) verify(builds []*api.Build, before []string, base v1.Image, baseDigest string, appLayers, appDiffs []v1.Hash) {
	bl, err := base.Layers()
	b.must(err)
	var baseLayers, baseDiffs []v1.Hash
	for _, l := range bl {
		d, err := l.Digest()
		b.must(err)
		di, err := l.DiffID()
		b.must(err)
		baseLayers, baseDiffs = append(baseLayers, d), append(baseDiffs, di)
	}
	parallel(len(builds), 16, func(i int) error {
		bld := builds[i]
		if bld.Status.Phase != api.BuildComplete || bld.Status.RebasedFrom != before[i] || !strings.HasSuffix(bld.Status.BaseImage, "@"+baseDigest) {
			return fmt.Errorf("build %s: %+v, want Complete, rebased from %s onto %s", bld.Name, bld.Status, before[i], baseDigest)
		}
		ref := fmt.Sprintf("%s/app-%05d", projectOf(i), i)
		desc, err := remote.Get(b.ref(ref+":latest"), b.auth)
		if err != nil {
			return err
		}
		if desc.Digest.String() != bld.Status.OutputDigest {
			return fmt.Errorf("%s:latest is %s, the build says %s", ref, desc.Digest, bld.Status.OutputDigest)
		}
		img, err := desc.Image()
		if err != nil {
			return err
		}
		m, err := img.Manifest()
		if err != nil {
			return err
		}
		cf, err := img.ConfigFile() // fetched and its digest checked by ggcr
		if err != nil {
			return err
		}
		wantL, wantD := append(slices.Clone(baseLayers), appLayers[i]), append(slices.Clone(baseDiffs), appDiffs[i])
		if len(m.Layers) != len(wantL) || len(cf.RootFS.DiffIDs) != len(wantD) {
			return fmt.Errorf("%s: %d layers and %d diff IDs, want %d", ref, len(m.Layers), len(cf.RootFS.DiffIDs), len(wantL))
		}
		for j := range wantL {
			if m.Layers[j].Digest != wantL[j] || cf.RootFS.DiffIDs[j] != wantD[j] {
				return fmt.Errorf("%s layer %d: %s (diff ID %s), want %s (%s)", ref, j, m.Layers[j].Digest, cf.RootFS.DiffIDs[j], wantL[j], wantD[j])
			}
		}
		if b.keys != nil {
			d, err := name.NewDigest(b.reg+"/"+ref+"@"+bld.Status.OutputDigest, name.Insecure)
			if err != nil {
				return err
			}
			pub := [][]byte{b.keys[projectOf(i)]}
			if _, err := signing.Verify(b.ctx, d, pub, b.signAuth); err != nil {
				return fmt.Errorf("%s: %w", d, err)
			}
			res, err := signing.VerifyAttestation(b.ctx, d, pub, signing.PredicateSLSAProvenance, b.signAuth)
			if err != nil {
				return fmt.Errorf("%s: %w", d, err)
			}
			if !bytes.Contains(res.Statement, []byte(`"invocationId":"`+projectOf(i)+"/"+bld.Name+`"`)) {
				return fmt.Errorf("%s: the provenance does not name build %s: %s", d, bld.Name, res.Statement)
			}
		}
		return nil
	})
}

// dockerRun runs ref under the local Docker engine and checks its output.
func (b *bench) dockerRun(ref, want string) string {
	if err := exec.Command("docker", "info").Run(); err != nil {
		return "not run: no Docker engine answers (" + err.Error() + ")"
	}
	cfgDir, err := os.MkdirTemp("", "rebasebench-docker")
	b.must(err)
	defer os.RemoveAll(cfgDir)
	env := append(os.Environ(), "DOCKER_CONFIG="+cfgDir)
	login := exec.Command("docker", "login", "-u", "admin", "--password-stdin", b.reg)
	login.Env, login.Stdin = env, strings.NewReader(b.cl.Token())
	if out, err := login.CombinedOutput(); err != nil {
		log.Fatalf("rebasebench: docker login: %v\n%s", err, out)
	}
	run := exec.Command("docker", "run", "--rm", "--network", "none", ref)
	run.Env = env
	var stderr bytes.Buffer
	run.Stderr = &stderr // the pull's progress
	out, err := run.Output()
	if err != nil || !strings.Contains(string(out), want) {
		log.Fatalf("rebasebench: docker run %s: %v\n%s%s", ref, err, out, stderr.Bytes())
	}
	_ = exec.Command("docker", "rmi", ref).Run()
	return fmt.Sprintf("printed %q", strings.TrimSpace(string(out)))
}

type bench struct {
	ctx  context.Context
	cl   *client.Client
	reg  string
	auth remote.Option
	conc int
	// keys are each project's public key, with -sign; signAuth reads
	// signatures as admin.
	keys     map[string][]byte
	signAuth signing.Option
}

func (b *bench) must(err error) {
	if err != nil {
		log.Fatalf("rebasebench: %v", err)
	}
}

func (b *bench) ref(s string) name.Reference {
	r, err := name.ParseReference(b.reg+"/"+s, name.Insecure)
	b.must(err)
	return r
}

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
		log.Fatalf("rebasebench: build %s = %s (%s): %s\n%s", f.b.Name, f.b.Status.Phase, f.b.Status.Reason, f.b.Status.Message, f.b.Status.LogTail)
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
		log.Fatalf("rebasebench: %v", err)
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
