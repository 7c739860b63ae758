// Command failoverbench measures how long the controllers are headless
// when their leader is lost: `slipway master` processes (the real binary)
// share an etcd started here (TLS, client certificates); each trial finds
// the leader, signals it (SIGKILL: it dies holding its lease; SIGTERM: it
// stops gracefully and resigns), and at the same instant asks for a
// rollout of a DeploymentConfig (the request `slipway rollout latest`
// writes). Failover time is from the signal to the new revision being
// stored: what a user waits for. A replacement master is started before
// the next trial, so two always run. The same request with a live leader
// gives the baseline. Every trial checks that each request made exactly
// one revision.
//
//	go build -o bin/slipway ./cmd/slipway
//	go run ./bench/failoverbench [-bin bin/slipway] [-trials 20] [-lease 2s] [-signals kill,term]
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/deploy"
	"slipway.dev/slipway/leader"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func main() {
	bin := flag.String("bin", "bin/slipway", "the slipway binary")
	trials := flag.Int("trials", 20, "failovers per signal")
	lease := flag.Duration("lease", 2*time.Second, "--leader-lease of the masters")
	signals := flag.String("signals", "kill,term", "how the leader is lost, comma-separated: kill (SIGKILL), term (SIGTERM)")
	flag.Parse()
	abs, err := filepath.Abs(*bin)
	if err != nil {
		log.Fatal(err)
	}
	b := &bench{bin: abs, lease: *lease}
	if err := b.start(); err != nil {
		log.Fatal(err)
	}
	defer b.stop()

	base, err := b.baseline(*trials)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\nFailover of the controllers' leader: 2 `slipway master` processes on one etcd, --leader-lease %s, %d trials each.\n\n", *lease, *trials)
	fmt.Println("| leader lost by | p50 | p99 | min | max |")
	fmt.Println("|---|---|---|---|---|")
	row("none (baseline: rollout request → revision, live leader)", base)
	for _, s := range strings.Split(*signals, ",") {
		sig := map[string]syscall.Signal{"kill": syscall.SIGKILL, "term": syscall.SIGTERM}[s]
		if sig == 0 {
			log.Fatalf("-signals: %q is not kill or term", s)
		}
		ds, err := b.failovers(sig, *trials)
		if err != nil {
			log.Fatal(err)
		}
		row(map[string]string{"kill": "SIGKILL (lease expires)", "term": "SIGTERM (leader resigns)"}[s], ds)
	}
}

func row(what string, ds []time.Duration) {
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	fmt.Printf("| %s | %s | %s | %s | %s |\n", what, r(q(0.5)), r(q(0.99)), r(ds[0]), r(ds[len(ds)-1]))
}

type master struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	addr string
	done chan struct{}
}

type bench struct {
	bin, dir, etcdURL string
	lease             time.Duration
	member            *etcd.Member
	st                *store.Store
	mu                sync.Mutex
	masters           []*master
	requests          int
}

func (b *bench) start() error {
	var err error
	if b.dir, err = os.MkdirTemp("", "failoverbench-"); err != nil {
		return err
	}
	pki, err := etcd.EnsurePKI(filepath.Join(b.dir, "pki", "etcd"))
	if err != nil {
		return err
	}
	if b.member, err = etcd.Start(etcd.Config{Name: "bench", Dir: filepath.Join(b.dir, "etcd"), TLS: &pki.Member}); err != nil {
		return err
	}
	b.etcdURL = b.member.ClientURL
	files, _ := etcd.ExistingPKI(filepath.Join(b.dir, "pki", "etcd"))
	c, err := etcd.ClientTLS(files, b.etcdURL)
	if err != nil {
		return err
	}
	b.st = store.New(c)
	for range 2 {
		if _, err := b.startMaster(); err != nil {
			return err
		}
	}
	ctx := context.Background()
	if err := b.st.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bench"}}); err != nil {
		return err
	}
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "bench"},
		Spec: api.DeploymentConfigSpec{
			Selector: map[string]string{"app": "app"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "app"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "docker.io/library/busybox:1"}}},
			},
			RevisionHistoryLimit: ptr(int32(1)),
		},
	}
	if err := b.st.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		return err
	}
	// The first revision, with a live leader.
	_, err = b.rollout()
	return err
}

func ptr[T any](v T) *T { return &v }

func (b *bench) stop() {
	b.mu.Lock()
	for _, m := range b.masters {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, m := range b.masters {
		select {
		case <-m.done:
		case <-time.After(20 * time.Second):
			_ = m.cmd.Process.Kill()
		}
	}
	b.mu.Unlock()
	if b.member != nil {
		b.member.Close()
	}
	os.RemoveAll(b.dir)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startMaster starts one more master and waits until its API is ready
// (its elector campaigns from then on).
func (b *bench) startMaster() (*master, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.bin, "master", "--data-dir", b.dir, "--listen", addr, "--etcd-endpoints", b.etcdURL,
		"--registry", "127.0.0.1:5999", "--buildkitd", "none", "--leader-lease", b.lease.String(), "--log-level", "info")
	m := &master{cmd: cmd, out: &bytes.Buffer{}, addr: addr, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = m.out, m.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(m.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for !ready(b.dir, addr) {
		select {
		case <-m.done:
			return nil, fmt.Errorf("slipway master exited:\n%s", m.out)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("slipway master not ready after 60s:\n%s", m.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.mu.Lock()
	b.masters = append(b.masters, m)
	b.mu.Unlock()
	return m, nil
}

func ready(dir, addr string) bool {
	ca, err := os.ReadFile(filepath.Join(dir, "pki", "ca.crt"))
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// leader is the master that leads now; it waits until one does.
func (b *bench) leader() (*master, error) {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		id, _, err := leader.Current(context.Background(), b.st.Client(), leader.Prefix(b.st, "controllers"))
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		for _, m := range b.masters {
			if strings.Contains(id, fmt.Sprintf(" pid %d ", m.cmd.Process.Pid)) {
				b.mu.Unlock()
				return m, nil
			}
		}
		b.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("no master leads after 60s")
}

// rollout asks for a new revision and returns how long until it is
// stored; it checks that exactly one revision was made for it.
func (b *bench) rollout() (time.Duration, error) {
	ctx := context.Background()
	b.requests++
	n := b.requests
	start := time.Now()
	if _, err := b.st.GuaranteedUpdate(ctx, api.DeploymentConfigs, "bench", "app", store.UpdateOptions{}, func(o api.Object) error {
		dc := o.(*api.DeploymentConfig)
		if dc.Annotations == nil {
			dc.Annotations = map[string]string{}
		}
		dc.Annotations[deploy.RequestAnnotation] = "request " + strconv.Itoa(n)
		return nil
	}); err != nil {
		return 0, err
	}
	// Revision n+0 was the first, made on the first request: revision
	// numbers count requests.
	want := deploy.RevisionName("app", int64(n))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := b.st.Get(ctx, api.ReplicationControllers, "bench", want); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("request %d made no revision %s in 2 minutes", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	// Exactly one revision for this request: none numbered past it.
	time.Sleep(100 * time.Millisecond)
	if _, err := b.st.Get(ctx, api.ReplicationControllers, "bench", deploy.RevisionName("app", int64(n+1))); err == nil {
		rcs, _, _ := b.st.List(ctx, api.ReplicationControllers, "bench", store.ListOptions{})
		var desc []string
		for _, o := range rcs {
			desc = append(desc, fmt.Sprintf("%s rv %s %v", o.GetObjectMeta().Name, o.GetObjectMeta().ResourceVersion, o.GetObjectMeta().Annotations))
		}
		b.mu.Lock()
		for _, m := range b.masters {
			desc = append(desc, fmt.Sprintf("master pid %d:\n%s", m.cmd.Process.Pid, m.out))
		}
		b.mu.Unlock()
		return 0, fmt.Errorf("request %d made two revisions:\n%s", n, strings.Join(desc, "\n"))
	}
	return took, nil
}

func (b *bench) baseline(trials int) ([]time.Duration, error) {
	var ds []time.Duration
	for range trials {
		d, err := b.rollout()
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// failovers loses the leader trials times by sig.
func (b *bench) failovers(sig syscall.Signal, trials int) ([]time.Duration, error) {
	var ds []time.Duration
	for i := range trials {
		l, err := b.leader()
		if err != nil {
			return nil, err
		}
		if err := l.cmd.Process.Signal(sig); err != nil {
			return nil, err
		}
		d, err := b.rollout()
		if err != nil {
			return nil, fmt.Errorf("trial %d: %w", i+1, err)
		}
		ds = append(ds, d)
		log.Printf("%s trial %d: %s", sig, i+1, d.Round(time.Millisecond))
		select {
		case <-l.done:
		case <-time.After(30 * time.Second):
			_ = l.cmd.Process.Kill()
			<-l.done
		}
		b.mu.Lock()
		b.masters = slices.DeleteFunc(b.masters, func(m *master) bool { return m == l })
		b.mu.Unlock()
		if _, err := b.startMaster(); err != nil {
			return nil, err
		}
	}
	return ds, nil
}
