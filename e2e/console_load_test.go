package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// TestConsoleLoad measures, in chromium, how long the console takes to
// load a project of 500 image streams and 2,000 pods, against the same
// reads through the Go client (what `slipway get` does), alternating
// rounds. It reports; it asserts nothing about time (BENCHMARKS.md).
//
// What is real: `slipway start`, the API, etcd, the console, chromium.
// What is not: the streams are API objects with a written tag history but
// no pushed images, and the pods are API objects of a server with no node
// agent (--docker-host names no engine), so they stay Pending; the
// console shows them as it shows any pod.
func TestConsoleLoad(t *testing.T) {
	chromiumPath(t)
	const streams, pods, services, rounds = 500, 2000, 10, 5
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", "none", "--docker-host", "unix://"+filepath.Join(t.TempDir(), "no-docker.sock"))
	logIfDied(t, p)
	admin := p.admin(t)
	ctx := context.Background()
	const ns = "load"
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	parallel(t, streams, func(i int) error {
		is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("stream-%03d", i), Namespace: ns}}
		if err := admin.Create(ctx, api.ImageStreams, is); err != nil {
			return err
		}
		o, err := admin.Get(ctx, api.ImageStreams, ns, is.Name)
		if err != nil {
			return err
		}
		is = o.(*api.ImageStream)
		now := time.Now().UTC()
		var items []api.TagEvent
		for g := 3; g >= 1; g-- {
			d := fmt.Sprintf("sha256:%064x", i*10+g)
			items = append(items, api.TagEvent{Created: now.Add(-time.Duration(3-g) * time.Hour), Image: d, Generation: int64(g), DockerImageReference: p.registry + "/" + ns + "/" + is.Name + "@" + d})
		}
		is.Status.Tags = []api.NamedTagEventList{{Tag: "latest", Items: items}}
		return admin.UpdateStatus(ctx, api.ImageStreams, is)
	})
	parallel(t, services, func(i int) error {
		return admin.Create(ctx, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Namespace: ns},
			Spec: api.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("svc-%d", i)}, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}}}})
	})
	parallel(t, pods, func(i int) error {
		return admin.Create(ctx, api.Pods, &api.Pod{
			ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("pod-%04d", i), Namespace: ns, Labels: map[string]string{"app": fmt.Sprintf("svc-%d", i%services)}},
			Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: p.registry + "/" + ns + "/stream-000:latest"}}},
		})
	})

	b := openBrowser(t, p, "admin")
	b.login("admin", p.adminPassword(t))
	url := b.base + "/console/#/" + ns
	// load navigates afresh (a new document) and returns the page's own
	// clock when cond first holds: milliseconds since navigation began.
	retried := 0
	// load opens route in a new document and returns when the page marked
	// it loaded (performance.mark, after the lists synced and rendered):
	// milliseconds since the navigation began, by the page's own clock.
	load := func(route, mark, cond string) float64 {
		for attempt := 0; attempt < 5; attempt++ {
			ctx, cancel := context.WithTimeout(b.ctx, time.Minute*loadFactor)
			err := chromedp.Do(ctx, chromedp.Navigate("about:blank"), chromedp.Navigate(url+route))
			ms := -1.0
			for err == nil && ms < 0 && ctx.Err() == nil {
				ms, err = chromedp.Run(ctx, chromedp.Evaluate[float64](fmt.Sprintf(`(performance.getEntriesByName(%q)[0] || {startTime: -1}).startTime`, mark)))
				if ms < 0 {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if err == nil && ms >= 0 {
				ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](cond))
				cancel()
				if err != nil || !ok {
					b.shot("failed-load")
					t.Fatalf("%s marked loaded but the page does not hold what it should (%s): %v", route, cond, err)
				}
				return ms
			}
			cancel()
			// Other tests on this machine add and remove bridges all the
			// time; chromium aborts loads when the network changes
			// (ERR_NETWORK_CHANGED). Such a round is measured again.
			t.Logf("loading %s again: %v", route, err)
			retried++
		}
		b.shot("failed-load")
		t.Fatalf("%s never loaded in 5 attempts", route)
		return 0
	}
	overview := `(() => { const s = document.querySelector('#overview-summary'); return !!s && s.dataset.synced === 'true' && s.textContent.includes('` + fmt.Sprint(pods) + ` pods') && document.querySelectorAll('[data-service]').length === ` + fmt.Sprint(services) + `; })()`
	images := `(() => { const s = document.querySelector('#images-summary'); return !!s && s.dataset.synced === 'true' && document.querySelectorAll('[data-stream]').length === ` + fmt.Sprint(streams) + `; })()`
	cliOverview := func() float64 {
		start := time.Now()
		for _, r := range []*api.Resource{api.Services, api.Pods, api.DeploymentConfigs} {
			items, _, err := admin.List(ctx, r, ns, client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if r == api.Pods && len(items) != pods {
				t.Fatalf("listed %d pods, want %d", len(items), pods)
			}
		}
		return float64(time.Since(start).Microseconds()) / 1000
	}
	cliImages := func() float64 {
		start := time.Now()
		items, _, err := admin.List(ctx, api.ImageStreams, ns, client.ListOptions{})
		if err != nil || len(items) != streams {
			t.Fatalf("listed %d streams (%v), want %d", len(items), err, streams)
		}
		return float64(time.Since(start).Microseconds()) / 1000
	}
	var ov, ovCLI, im, imCLI []float64
	for r := 0; r < rounds; r++ { // A B A B
		ov = append(ov, load("/overview", "slipway:overview-loaded", overview))
		ovCLI = append(ovCLI, cliOverview())
		im = append(im, load("/images", "slipway:images-loaded", images))
		imCLI = append(imCLI, cliImages())
	}
	b.shot("load-images")
	load("/overview", "slipway:overview-loaded", overview)
	b.shot("load-overview")
	med := func(x []float64) float64 { y := slices.Clone(x); slices.Sort(y); return y[len(y)/2] }
	report := func(what string, a, peer []float64) {
		t.Logf("%s: console %.0f ms (median of %d page loads %v), Go client list %.0f ms %v; ratio console/client %.1f",
			what, med(a), len(a), round(a), med(peer), round(peer), med(a)/med(peer))
	}
	report(fmt.Sprintf("overview, %d pods in %d services", pods, services), ov, ovCLI)
	report(fmt.Sprintf("image streams, %d streams", streams), im, imCLI)
	t.Logf("%d page loads were measured again (chromium aborts loads on a network change)", retried)
}

func round(x []float64) string {
	var s []string
	for _, v := range x {
		s = append(s, fmt.Sprintf("%.0f", v))
	}
	return "[" + strings.Join(s, " ") + "]"
}

// parallel runs f(0..n-1) on 8 goroutines and fails the test on the first
// error.
func parallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err) })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}
