// Command schedbench measures the pod scheduler against a real embedded
// etcd: N pods onto M simulated nodes (Node objects with capacity and
// Ready=True heartbeats, no agents), and prints a Markdown table for
// BENCHMARKS.md.
//
// Two runs, each in its own key prefix with a fresh scheduler:
//
//   - backlog: every pod is created first, then the scheduler starts;
//     measured from the scheduler's start (which includes its first list of
//     all pods and nodes) to the last bind seen on a watch.
//   - stream: the scheduler is running and has synced; pods are created by
//     concurrent clients; measured from the first create to the last bind.
//
// Each run checks that every pod was bound exactly once (one transition
// from no node to a node, never a change afterwards, and as many successful
// bind writes as pods), and that no node is over its allocatable cpu,
// memory or pod count, or has a host port twice.
//
//	go run ./bench/schedbench [-pods 10000] [-nodes 1000] [-binders 64] [-runs backlog,stream] [-cpuprofile F]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/scheduler"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

const gi = 1 << 30

func main() {
	pods := flag.Int("pods", 10000, "pods to schedule per run")
	nodes := flag.Int("nodes", 1000, "simulated nodes")
	binders := flag.Int("binders", 64, "scheduler's concurrent bind writers")
	creators := flag.Int("c", 32, "concurrent clients creating pods")
	heartbeat := flag.Duration("heartbeat", 10*time.Second, "each node's heartbeat interval during the runs (0: none)")
	runs := flag.String("runs", "backlog,stream", "the runs to do, comma-separated: backlog, stream")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the backlog run here")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "schedbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	member, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer member.Close()
	// In process, as `slipway start` runs its controllers.
	client := member.InProcessClient()

	fmt.Printf("# schedbench: %d pods onto %d nodes, %d binders, heartbeats every %s, GOMAXPROCS=%d, %s\n\n",
		*pods, *nodes, *binders, *heartbeat, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| run | pods/s | to all bound (s) | to all PodScheduled=True (s) | create → bound p50 / p99 (ms) | bind writes | conflicts |")
	fmt.Println("|---|---|---|---|---|---|---|")
	var notes []string
	for _, run := range []string{"backlog", "stream"} {
		if !slices.Contains(strings.Split(*runs, ","), run) {
			continue
		}
		b := &bench{
			s:     store.New(client, store.WithPrefix("/schedbench/"+run+"/")),
			pods:  *pods,
			nodes: *nodes,
			conc:  *creators,
		}
		prof := ""
		if run == "backlog" {
			prof = *cpuprofile
		}
		r := b.run(run, *binders, *heartbeat, prof)
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %s | %d | %d |\n", run, float64(*pods)/r.bound.Seconds(), r.bound.Seconds(), r.scheduled.Seconds(), r.latency, r.binds, r.conflicts)
		notes = append(notes, r.notes...)
	}
	fmt.Println()
	for _, n := range notes {
		fmt.Println("- " + n)
	}
}

type bench struct {
	s     *store.Store
	pods  int
	nodes int
	conc  int
}

type result struct {
	bound, scheduled time.Duration
	latency          string
	binds, conflicts int64
	notes            []string
}

// node is a simulated node: 4 cpus, 8 GiB, 20 pods.
func node(i int) *api.Node {
	now := time.Now().UTC()
	n := &api.Node{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("node-%04d", i), Labels: map[string]string{"zone": fmt.Sprintf("z%d", i%3)}}}
	n.Status.Capacity = api.ResourceList{MilliCPU: 4000, Memory: 8 * gi, Pods: 20}
	n.Status.Allocatable = n.Status.Capacity
	n.Status.Conditions = []api.NodeCondition{{Type: scheduler.NodeReady, Status: api.ConditionTrue, LastHeartbeatTime: now}}
	n.Status.Address = fmt.Sprintf("10.%d.%d.1", i/256, i%256)
	return n
}

// pod i belongs to one of 100 controllers of 100 replicas, with requests
// of 100–400m cpu and 256–768 MiB; controller 0's replicas also publish
// host port 443. On average that fills nodes to about 60% of cpu and
// memory and half their pod slots.
func pod(i int) *api.Pod {
	ctl := i % 100
	p := &api.Pod{ObjectMeta: api.ObjectMeta{
		Namespace: fmt.Sprintf("project-%d", ctl%10),
		Name:      fmt.Sprintf("pod-%05d", i),
		Labels:    map[string]string{scheduler.ControllerLabel: fmt.Sprintf("app-%d", ctl)},
	}}
	c := api.Container{Name: "app", Image: "registry.local/app@sha256:0123"}
	c.Resources.Requests = api.ResourceList{MilliCPU: int64(ctl%4+1) * 100, Memory: int64(ctl%3+1) * 256 << 20}
	if ctl == 0 {
		c.Ports = []api.ContainerPort{{ContainerPort: 8443, HostPort: 443}}
	}
	p.Spec.Containers = []api.Container{c}
	return p
}

func (b *bench) run(name string, binders int, hb time.Duration, prof string) result {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	parallel(b.nodes, b.conc, func(i int) error { return b.s.Create(ctx, api.Nodes, node(i)) })
	if hb > 0 {
		go heartbeats(ctx, b.s, b.nodes, hb)
	}

	// Watch every pod change from before the first create.
	_, meta, err := b.s.List(ctx, api.Pods, "", store.ListOptions{Limit: 1})
	if err != nil {
		log.Fatal(err)
	}
	rv, _ := store.ParseResourceVersion(meta.ResourceVersion)
	events, err := b.s.Watch(ctx, api.Pods, "", rv, store.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	w := newWatcher(b.pods)
	go w.consume(events)

	sch, err := scheduler.New(scheduler.Config{Store: b.s, Binders: binders})
	if err != nil {
		log.Fatal(err)
	}
	var start time.Time
	var notes []string
	created := make([]atomic.Int64, b.pods) // unix nanos at create start
	create := func() float64 {
		t := time.Now()
		parallel(b.pods, b.conc, func(i int) error {
			created[i].Store(time.Now().UnixNano())
			return b.s.Create(ctx, api.Pods, pod(i))
		})
		return float64(b.pods) / time.Since(t).Seconds()
	}
	switch name {
	case "backlog":
		rate := create()
		notes = append(notes, fmt.Sprintf("backlog: %d pods created at %.0f pods/s before the scheduler started; measured from the scheduler's start, which includes listing every pod and node.", b.pods, rate))
		if prof != "" {
			f, err := os.Create(prof)
			if err != nil {
				log.Fatal(err)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				log.Fatal(err)
			}
		}
		start = time.Now()
		go sch.Run(ctx)
		for !sch.Ready() {
			time.Sleep(5 * time.Millisecond)
		}
		notes = append(notes, fmt.Sprintf("backlog: the scheduler had its caches (every pod and node listed and counted) %.2fs after it started.", time.Since(start).Seconds()))
	case "stream":
		go sch.Run(ctx)
		for !sch.Ready() {
			time.Sleep(10 * time.Millisecond)
		}
		start = time.Now()
		rate := create()
		notes = append(notes, fmt.Sprintf("stream: scheduler running and synced; %d concurrent clients created the pods at %.0f pods/s; measured from the first create.", b.conc, rate))
	}
	boundAt, scheduledAt := w.wait()
	if prof != "" {
		pprof.StopCPUProfile()
	}
	for i := range created {
		if t := w.boundAt[i].Load(); t > 0 && created[i].Load() > 0 {
			w.latencies = append(w.latencies, time.Duration(t-created[i].Load()))
		}
	}
	lat := "n/a"
	if name == "stream" && len(w.latencies) > 0 {
		slices.Sort(w.latencies)
		lat = fmt.Sprintf("%.0f / %.0f", ms(w.latencies[len(w.latencies)/2]), ms(w.latencies[len(w.latencies)*99/100]))
	}
	// Every bind write that succeeded was counted before its pod was seen
	// bound, except for the last few: let them land.
	for i := 0; sch.Stats().Bound.Load() < int64(b.pods) && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	notes = append(notes, b.verify(ctx, name, w, sch)...)
	return result{
		bound: time.Duration(boundAt - start.UnixNano()), scheduled: time.Duration(scheduledAt - start.UnixNano()),
		latency: lat, binds: sch.Stats().Bound.Load(), conflicts: sch.Stats().Conflicts.Load(), notes: notes,
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// heartbeats renews every node's Ready condition once per interval,
// spread evenly, as node agents would.
func heartbeats(ctx context.Context, s *store.Store, n int, interval time.Duration) {
	tick := time.NewTicker(interval / time.Duration(n))
	defer tick.Stop()
	for i := 0; ; i = (i + 1) % n {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		go func(name string) {
			_, err := s.GuaranteedUpdate(ctx, api.Nodes, "", name, store.UpdateOptions{Status: true}, func(o api.Object) error {
				o.(*api.Node).Status.Conditions[0].LastHeartbeatTime = time.Now().UTC()
				return nil
			})
			if err != nil && ctx.Err() == nil {
				log.Printf("heartbeat %s: %v", name, err)
			}
		}(fmt.Sprintf("node-%04d", i))
	}
}

// watcher follows every pod event: when each pod was first seen bound and
// with PodScheduled=True, and any bind after the first.
type watcher struct {
	n         int
	boundAt   []atomic.Int64
	mu        sync.Mutex
	node      map[string]string
	scheduled map[string]bool
	moved     []string
	lastBound int64
	lastSched int64
	done      chan struct{}
	latencies []time.Duration
}

func newWatcher(n int) *watcher {
	return &watcher{n: n, boundAt: make([]atomic.Int64, n), node: map[string]string{}, scheduled: map[string]bool{}, done: make(chan struct{})}
}

func (w *watcher) consume(events <-chan store.Event) {
	closed := false
	for ev := range events {
		if ev.Type == api.Error {
			log.Fatalf("watch: %v", ev.Err)
		}
		now := time.Now().UnixNano()
		p := ev.Object.(*api.Pod)
		key := p.Namespace + "/" + p.Name
		w.mu.Lock()
		if nn := p.Spec.NodeName; nn != "" {
			if prev, ok := w.node[key]; !ok {
				w.node[key] = nn
				w.lastBound = now
				var i int
				fmt.Sscanf(p.Name, "pod-%d", &i)
				w.boundAt[i].Store(now)
			} else if prev != nn {
				w.moved = append(w.moved, fmt.Sprintf("%s %s→%s", key, prev, nn))
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Type == scheduler.PodScheduled && c.Status == api.ConditionTrue && !w.scheduled[key] {
				w.scheduled[key] = true
				w.lastSched = now
			}
		}
		if !closed && len(w.node) == w.n && len(w.scheduled) == w.n {
			closed = true
			close(w.done)
		}
		w.mu.Unlock()
	}
}

// wait returns when every pod was seen bound and PodScheduled, in unix
// nanos.
func (w *watcher) wait() (bound, scheduled int64) {
	select {
	case <-w.done:
	case <-time.After(10 * time.Minute):
		w.mu.Lock()
		log.Fatalf("after 10 minutes %d of %d pods bound, %d PodScheduled", len(w.node), w.n, len(w.scheduled))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastBound, w.lastSched
}

// verify checks what the store holds now against the watch and the nodes'
// capacity, and returns notes; it exits on any violation.
func (b *bench) verify(ctx context.Context, run string, w *watcher, sch *scheduler.Scheduler) []string {
	var failures []string
	w.mu.Lock()
	failures = append(failures, w.moved...)
	w.mu.Unlock()
	if got := sch.Stats().Bound.Load(); got != int64(b.pods) {
		failures = append(failures, fmt.Sprintf("%d successful bind writes for %d pods", got, b.pods))
	}
	podObjs, _, err := b.s.List(ctx, api.Pods, "", store.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	nodeObjs, _, err := b.s.List(ctx, api.Nodes, "", store.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	type use struct {
		cpu, mem, pods int64
		ports          map[int32]bool
	}
	used := map[string]*use{}
	for _, o := range podObjs {
		p := o.(*api.Pod)
		if p.Spec.NodeName == "" {
			failures = append(failures, p.Namespace+"/"+p.Name+" not bound")
			continue
		}
		if w.node[p.Namespace+"/"+p.Name] != p.Spec.NodeName {
			failures = append(failures, fmt.Sprintf("%s/%s on %s, watch saw %s", p.Namespace, p.Name, p.Spec.NodeName, w.node[p.Namespace+"/"+p.Name]))
		}
		u := used[p.Spec.NodeName]
		if u == nil {
			u = &use{ports: map[int32]bool{}}
			used[p.Spec.NodeName] = u
		}
		u.pods++
		for _, c := range p.Spec.Containers {
			u.cpu += c.Resources.Requests.MilliCPU
			u.mem += c.Resources.Requests.Memory
			for _, port := range c.Ports {
				if port.HostPort > 0 && u.ports[port.HostPort] {
					failures = append(failures, fmt.Sprintf("host port %d twice on %s", port.HostPort, p.Spec.NodeName))
				}
				u.ports[port.HostPort] = true
			}
		}
	}
	var maxPods int64
	var maxCPU, maxMem float64
	for _, o := range nodeObjs {
		n := o.(*api.Node)
		u := used[n.Name]
		if u == nil {
			continue
		}
		a := n.Status.Allocatable
		if u.cpu > a.MilliCPU || u.mem > a.Memory || u.pods > a.Pods {
			failures = append(failures, fmt.Sprintf("%s over capacity: cpu %d/%d, memory %d/%d, pods %d/%d", n.Name, u.cpu, a.MilliCPU, u.mem, a.Memory, u.pods, a.Pods))
		}
		maxPods = max(maxPods, u.pods)
		maxCPU = max(maxCPU, float64(u.cpu)/float64(a.MilliCPU))
		maxMem = max(maxMem, float64(u.mem)/float64(a.Memory))
	}
	if len(podObjs) != b.pods {
		failures = append(failures, fmt.Sprintf("%d pods in the store, want %d", len(podObjs), b.pods))
	}
	if len(failures) > 0 {
		for _, f := range failures[:min(len(failures), 20)] {
			log.Print(f)
		}
		log.Fatalf("%s: %d violations", run, len(failures))
	}
	return []string{fmt.Sprintf("%s: verified: %d pods each bound once (%d bind writes), on %d of %d nodes; fullest node: %d pods, %.0f%% cpu, %.0f%% memory; no host port twice.",
		run, len(podObjs), sch.Stats().Bound.Load(), len(used), len(nodeObjs), maxPods, maxCPU*100, maxMem*100)}
}

// parallel runs op(0..n-1) on conc workers; any error is fatal.
func parallel(n, conc int, op func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					log.Fatalf("benchmark operation %d failed: %v", i, err)
				}
			}
		})
	}
	wg.Wait()
}
