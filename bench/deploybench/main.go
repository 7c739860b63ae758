// Command deploybench measures push-to-serving: how long after a push to
// the tag a DeploymentConfig follows the new image answers through the
// service. It runs the all-in-one as `slipway start` does (embedded etcd,
// registry, controllers, the node agent on Docker and the service proxy on
// slipway0) in this process, on a private dockerd whose bridge gives pods
// addresses the host reaches, and prints a Markdown table for
// BENCHMARKS.md.
//
// Each push is a new image (its own digest) of a busybox httpd serving its
// own version string; the clock starts when the registry has answered the
// manifest PUT and stops at the first answer with the new version through
// the service's cluster IP, from a client that opens a new connection
// every 10ms. Two series of -n pushes: "settled", where each push waits
// until the previous revision's containers have stopped, and
// "back-to-back", where it waits only until the previous rollout
// completed. The steps in between (the revision made, and its first pod
// created, bound, running and ready) are timed from the same start.
//
// It needs root (the bridge, slipway0), dockerd, runc and busybox-static.
//
//	go run ./bench/deploybench [-n 10] [-replicas 2]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/cluster/runtime/dockertest"
	"slipway.dev/slipway/server"
)

const (
	project = "bench"
	prefix  = "deploybench" // container prefix of the node agent
)

func main() {
	// The node agent makes its pods' pause image from this executable and
	// runs it as `EXE pause`, as it runs `slipway pause`.
	if len(os.Args) == 2 && os.Args[1] == "pause" {
		runtime.PauseMain()
		return
	}
	n := flag.Int("n", 10, "pushes measured")
	replicas := flag.Int("replicas", 2, "replicas of the deployment config")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	log.SetFlags(0)
	slog.SetLogLoggerLevel(slog.LevelWarn)
	if err := run(*n, int32(*replicas), *timeout); err != nil {
		log.Fatal("deploybench: ", err)
	}
}

func run(n int, replicas int32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static is missing (%s): %w", dockertest.DepsHint, err)
	}
	d, err := dockertest.Start(dockertest.Options{Bridge: "slpwbench0", CIDR: "10.216.0.1/24"})
	if err != nil {
		return err
	}
	defer func() {
		if err := d.Stop(); err != nil {
			log.Print("stopping the private dockerd: ", err)
		}
	}()
	dir, err := os.MkdirTemp("", "deploybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := server.Start(ctx, server.Config{
		DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0",
		Buildkitd: "none", Out: io.Discard,
		Node: server.NodeConfig{DockerHost: d.Host(), Name: "bench", ContainerPrefix: prefix, ServiceCIDR: "10.43.250.0/24"},
	})
	if err != nil {
		return err
	}
	defer func() {
		srv.Close()
		// The agent leaves its pods running when it stops.
		if out, err := exec.Command("sh", "-c", "docker -H "+d.Host()+" ps -aq --filter label=io.slipway.runtime="+prefix+" | xargs -r docker -H "+d.Host()+" rm -f -v").CombinedOutput(); err != nil {
			log.Printf("removing the pods' containers: %v: %s", err, out)
		}
	}()
	cl, err := srv.AdminClient(ctx)
	if err != nil {
		return err
	}
	if err := cl.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
		return err
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: cl.Token()})
	ref, err := name.NewTag(srv.RegistryHost+"/"+project+"/web:latest", name.Insecure)
	if err != nil {
		return err
	}
	push := func(version string) error {
		img, err := webImage(bb, version)
		if err != nil {
			return err
		}
		return remote.Write(ref, img, auth, remote.WithContext(ctx))
	}

	if err := push("v0"); err != nil {
		return err
	}
	if err := deployWeb(ctx, cl, replicas); err != nil {
		return err
	}
	url, err := serviceURL(ctx, cl)
	if err != nil {
		return err
	}
	if _, err := untilServing(ctx, url, "v0"); err != nil {
		return err
	}
	if err := untilComplete(ctx, cl, 1); err != nil {
		return err
	}

	version := 0
	// measure pushes n new images one after the other; settled waits,
	// before each push, until the previous revision's containers have
	// stopped, not only until its rollout completed.
	measure := func(settled bool) ([]steps, error) {
		var out []steps
		for range n {
			if settled {
				if err := untilSettled(ctx, d.Host(), 2*int(replicas)); err != nil {
					return nil, err
				}
			}
			version++
			v := fmt.Sprintf("v%d", version)
			if err := push(v); err != nil {
				return nil, err
			}
			start := time.Now()
			rev := int64(version + 1)
			stepsc := watchSteps(ctx, cl, rev, start)
			at, err := untilServing(ctx, url, v)
			if err != nil {
				return nil, err
			}
			if err := untilComplete(ctx, cl, rev); err != nil {
				return nil, err
			}
			s := <-stepsc
			s.serving = at.Sub(start)
			out = append(out, s)
			log.Printf("push %d (settled %v): revision %s, pod created %s, bound %s, running %s, ready %s, serving %s",
				version, settled, ms(s.revision), ms(s.created), ms(s.bound), ms(s.running), ms(s.ready), ms(s.serving))
		}
		return out, nil
	}
	settled, err := measure(true)
	if err != nil {
		return err
	}
	busy, err := measure(false)
	if err != nil {
		return err
	}

	fmt.Printf("# deploybench: %d + %d pushes, %d replicas, readiness probe every 1s, GOMAXPROCS=%d, %s\n\n", n, n, replicas, goruntime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| from the push to | settled p50 (ms) | settled p99 (ms) | back-to-back p50 (ms) | back-to-back p99 (ms) |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range []struct {
		what string
		get  func(steps) time.Duration
	}{
		{"the new revision made", func(s steps) time.Duration { return s.revision }},
		{"its first pod created", func(s steps) time.Duration { return s.created }},
		{"… bound to the node", func(s steps) time.Duration { return s.bound }},
		{"… running (containers started)", func(s steps) time.Duration { return s.running }},
		{"… ready (probe passed)", func(s steps) time.Duration { return s.ready }},
		{"**the first new answer through the service**", func(s steps) time.Duration { return s.serving }},
	} {
		a50, a99 := percentiles(settled, r.get)
		b50, b99 := percentiles(busy, r.get)
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.0f |\n", r.what, a50, a99, b50, b99)
	}
	fmt.Printf("\nThe clock starts when the manifest PUT is answered. Settled: each push waits until the previous revision's containers have stopped; back-to-back: only until its rollout completed, so the old pods are still stopping (busybox httpd as PID 1 ignores SIGTERM and is killed after the 10s stop timeout). p99 of %d samples is their maximum.\n", n)
	return nil
}

// untilSettled waits until exactly want of the agent's containers run.
func untilSettled(ctx context.Context, host string, want int) error {
	last := ""
	for {
		out, err := exec.CommandContext(ctx, "docker", "-H", host, "ps", "-q", "--filter", "label=io.slipway.runtime="+prefix, "--filter", "status=running").Output()
		if err == nil && len(strings.Fields(string(out))) == want {
			return nil
		}
		last = fmt.Sprintf("%d running, %v", len(strings.Fields(string(out))), err)
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("the old revision's containers did not stop: %s", last)
		}
	}
}

// webImage is FROM scratch, a static busybox, and an index.html holding
// version served by httpd on 8080.
func webImage(bb []byte, version string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	tw.Write(bb)
	tw.WriteHeader(&tar.Header{Name: "www/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "www/index.html", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(version))})
	tw.Write([]byte(version))
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Config.Cmd = []string{"/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"}
	return mutate.ConfigFile(img, cf)
}

// deployWeb makes the DeploymentConfig web, following web:latest, and the
// Service web in front of it.
func deployWeb(ctx context.Context, cl *client.Client, replicas int32) error {
	labels := map[string]string{"app": "web"}
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: project},
		Spec: api.DeploymentConfigSpec{
			Replicas: replicas,
			Selector: labels,
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: labels},
				Spec: api.PodSpec{Containers: []api.Container{{
					Name: "web", Image: "web:latest",
					Ports:          []api.ContainerPort{{ContainerPort: 8080}},
					ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 8080}, PeriodSeconds: 1},
				}}},
			},
			Triggers: []api.DeploymentTrigger{
				{Type: "ConfigChange"},
				{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
					Automatic: true, ContainerNames: []string{"web"},
					From: api.ObjectReference{Kind: "ImageStreamTag", Name: "web:latest"},
				}},
			},
		},
	}
	if err := cl.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		return err
	}
	svc := &api.Service{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: project},
		Spec:       api.ServiceSpec{Selector: labels, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}}},
	}
	return cl.Create(ctx, api.Services, svc)
}

func serviceURL(ctx context.Context, cl *client.Client) (string, error) {
	for {
		o, err := cl.Get(ctx, api.Services, project, "web")
		if err != nil {
			return "", err
		}
		if ip := o.(*api.Service).Spec.ClusterIP; ip != "" {
			return "http://" + ip + ":80/", nil
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return "", errors.New("the service got no cluster IP")
		}
	}
}

// untilServing GETs url on a new connection every 10ms until it answers
// want, and returns when it did.
func untilServing(ctx context.Context, url, want string) (time.Time, error) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	last := ""
	for {
		resp, err := hc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(body)) == want {
				return time.Now(), nil
			}
			last = fmt.Sprintf("%s %q", resp.Status, body)
		} else {
			last = err.Error()
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return time.Time{}, fmt.Errorf("%s never answered %s; last: %s", url, want, last)
		}
	}
}

func revision(ctx context.Context, cl *client.Client, rev int64) (*api.ReplicationController, error) {
	o, err := cl.Get(ctx, api.ReplicationControllers, project, fmt.Sprintf("web-%d", rev))
	if err != nil {
		return nil, err
	}
	return o.(*api.ReplicationController), nil
}

// untilComplete waits for revision rev to finish rolling out.
func untilComplete(ctx context.Context, cl *client.Client, rev int64) error {
	for {
		rc, err := revision(ctx, cl, rev)
		if err != nil && !api.IsNotFound(err) {
			return err
		}
		if rc != nil {
			switch rc.Annotations[api.DeploymentPhaseAnnotation] {
			case api.DeploymentComplete:
				return nil
			case api.DeploymentFailed:
				return fmt.Errorf("revision %d failed: %s", rev, rc.Annotations[api.DeploymentReasonAnnotation])
			}
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("revision %d did not complete", rev)
		}
	}
}

// steps are the moments of one rollout, counted from the push: the
// revision made, then its first pod created, bound to the node, running
// (containers started, as the agent reports) and ready.
type steps struct{ revision, created, bound, running, ready, serving time.Duration }

// watchSteps polls revision rev and its pods every 20ms and reports when
// each step first happened, counted from start.
func watchSteps(ctx context.Context, cl *client.Client, rev int64, start time.Time) <-chan steps {
	out := make(chan steps, 1)
	mark := func(d *time.Duration, happened bool) {
		if happened && *d == 0 {
			*d = time.Since(start)
		}
	}
	go func() {
		var s steps
		sel := client.ListOptions{LabelSelector: fmt.Sprintf("%s=web-%d", api.DeploymentLabel, rev)}
		for ctx.Err() == nil && s.ready == 0 {
			_, err := revision(ctx, cl, rev)
			mark(&s.revision, err == nil)
			if pods, _, err := cl.List(ctx, api.Pods, project, sel); err == nil {
				for _, o := range pods {
					p := o.(*api.Pod)
					mark(&s.created, true)
					mark(&s.bound, p.Spec.NodeName != "")
					mark(&s.running, p.Status.Phase == api.PodRunning)
					mark(&s.ready, api.PodReady(p))
				}
			}
			_ = sleep(ctx, 20*time.Millisecond)
		}
		out <- s
	}()
	return out
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/1e6) }

// percentiles are the p50 and p99 of one step, in milliseconds.
func percentiles(ss []steps, get func(steps) time.Duration) (p50, p99 float64) {
	ds := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		ds = append(ds, get(s))
	}
	slices.Sort(ds)
	p := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		return float64(ds[min(max(i, 0), len(ds)-1)]) / 1e6
	}
	return p(0.50), p(0.99)
}

// inMemory opens b as a layer's bytes. (tarball.LayerFromReader would
// copy them to a file in the temporary directory that is never removed.)
func inMemory(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
