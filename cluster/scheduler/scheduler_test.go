package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

const gi = 1 << 30

func TestConfigValidate(t *testing.T) {
	s := store.New(nil)
	tests := []struct {
		name    string
		cfg     Config
		want    Config
		wantErr bool
	}{
		{"defaults", Config{Store: s}, Config{Store: s, Binders: 64, RetryInterval: 5 * time.Minute}, false},
		{"kept", Config{Store: s, Binders: 3, RetryInterval: time.Second}, Config{Store: s, Binders: 3, RetryInterval: time.Second}, false},
		{"no store", Config{}, Config{}, true},
		{"negative", Config{Store: s, Binders: -1}, Config{Store: s, Binders: -1}, true},
	}
	for _, tt := range tests {
		cfg := tt.cfg
		err := cfg.Validate()
		if (err != nil) != tt.wantErr {
			t.Errorf("%s: Validate() = %v, want error %v", tt.name, err, tt.wantErr)
		}
		if cfg != tt.want {
			t.Errorf("%s: Validate() left %+v, want %+v", tt.name, cfg, tt.want)
		}
	}
}

func TestDiagnosisMessage(t *testing.T) {
	tests := []struct {
		d    diagnosis
		want string
	}{
		{diagnosis{}, "0/0 nodes are available: no nodes are registered."},
		{diagnosis{nodes: 3, reasons: map[string]int{reasonMemory: 2, reasonSelector: 1}},
			"0/3 nodes are available: 1 node(s) didn't match nodeSelector, 2 Insufficient memory."},
		{diagnosis{nodes: 2, reasons: map[string]int{reasonCPU: 2, reasonMemory: 1, reasonPods: 1}},
			"0/2 nodes are available: 1 Insufficient memory, 1 Too many pods, 2 Insufficient cpu."},
	}
	for _, tt := range tests {
		if got := tt.d.message(); got != tt.want {
			t.Errorf("message(%+v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// A pod too big for every node says why, and is bound once a node that
// fits it appears.
func TestInsufficientResources(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 1000, gi, 10))
	create(t, ctx, s, api.Nodes, newNode("n2", 1000, gi, 10))
	sch := startScheduler(t, s)

	create(t, ctx, s, api.Pods, newPod("p", "big", requests(100, 2*gi)))
	create(t, ctx, s, api.Pods, newPod("p", "hungry", requests(1500, 0)))
	waitUnschedulable(t, ctx, s, "p", "big", "0/2 nodes are available: 2 Insufficient memory.")
	waitUnschedulable(t, ctx, s, "p", "hungry", "0/2 nodes are available: 2 Insufficient cpu.")

	create(t, ctx, s, api.Nodes, newNode("n3", 1000, 4*gi, 10))
	if got := waitBound(t, ctx, s, "p", "big"); got != "n3" {
		t.Errorf("big bound to %q, want n3 (the only node with the memory)", got)
	}
	waitUnschedulable(t, ctx, s, "p", "hungry", "0/3 nodes are available: 3 Insufficient cpu.")

	// Room made by growing a node counts too.
	updateNode(t, ctx, s, "n1", func(n *api.Node) { n.Status.Allocatable.MilliCPU = 2000 })
	if got := waitBound(t, ctx, s, "p", "hungry"); got != "n1" {
		t.Errorf("hungry bound to %q, want n1", got)
	}
	// The counter moves just after the write that the store already shows.
	eventually(t, ctx, "two bind writes counted", func() (bool, string) {
		got := sch.Stats().Bound.Load()
		if got > 2 {
			t.Fatalf("binds written = %d, want 2", got)
		}
		return got == 2, fmt.Sprintf("%d binds written", got)
	})
}

// A pod that still fits nowhere is tried again on every relevant change,
// but the same message is written only once.
func TestUnschedulableWrittenOnce(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 1000, gi, 10))
	sch := startScheduler(t, s)
	create(t, ctx, s, api.Pods, newPod("p", "big", requests(100, 2*gi)))
	waitUnschedulable(t, ctx, s, "p", "big", "0/1 nodes are available: 1 Insufficient memory.")
	eventually(t, ctx, "the write counted", func() (bool, string) {
		return sch.Stats().Unschedulable.Load() == 1, "not yet"
	})
	for i := range 5 {
		before := sch.Stats().Attempts.Load()
		// New labels could make a pod fit, so this retries the pod.
		updateNode(t, ctx, s, "n1", labels("round", strconv.Itoa(i)))
		eventually(t, ctx, "another attempt after relabelling", func() (bool, string) {
			got := sch.Stats().Attempts.Load()
			return got > before, fmt.Sprintf("%d attempts", got)
		})
	}
	if got := sch.Stats().Unschedulable.Load(); got != 1 {
		t.Errorf("Unschedulable writes = %d after 6 attempts with the same outcome, want 1", got)
	}
}

func TestHostPortConflict(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 4000, 8*gi, 10))
	startScheduler(t, s)

	create(t, ctx, s, api.Pods, newPod("p", "a", hostPortOpt(8080, "")))
	waitBound(t, ctx, s, "p", "a")
	create(t, ctx, s, api.Pods, newPod("p", "b", hostPortOpt(8080, "TCP")))
	waitUnschedulable(t, ctx, s, "p", "b", "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.")
	// Same port, other protocol: no conflict.
	create(t, ctx, s, api.Pods, newPod("p", "c", hostPortOpt(8080, "UDP")))
	waitBound(t, ctx, s, "p", "c")
	// A pod asking for one port twice fits nowhere.
	create(t, ctx, s, api.Pods, newPod("p", "twice", hostPortOpt(9090, "UDP"), hostPortOpt(9090, "UDP")))
	waitUnschedulable(t, ctx, s, "p", "twice", "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.")

	// The port is freed when its pod goes.
	deletePod(t, ctx, s, "p", "a")
	waitBound(t, ctx, s, "p", "b")
}

func TestNodeSelector(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 4000, 8*gi, 10, labels("disk", "ssd")))
	create(t, ctx, s, api.Nodes, newNode("n2", 4000, 8*gi, 10))
	startScheduler(t, s)

	for i := range 3 {
		name := fmt.Sprintf("ssd-%d", i)
		create(t, ctx, s, api.Pods, newPod("p", name, selector("disk", "ssd")))
		if got := waitBound(t, ctx, s, "p", name); got != "n1" {
			t.Errorf("%s bound to %q, want n1 (the only disk=ssd node)", name, got)
		}
	}
	create(t, ctx, s, api.Pods, newPod("p", "nvme", selector("disk", "nvme")))
	waitUnschedulable(t, ctx, s, "p", "nvme", "0/2 nodes are available: 2 node(s) didn't match nodeSelector.")
	updateNode(t, ctx, s, "n2", labels("disk", "nvme"))
	if got := waitBound(t, ctx, s, "p", "nvme"); got != "n2" {
		t.Errorf("nvme bound to %q, want n2", got)
	}
}

// Cordoned nodes, nodes whose Ready condition is not True and nodes that
// never reported one get no pods.
func TestCordonedAndNotReadyNodes(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("cordoned", 4000, 8*gi, 10, cordoned))
	create(t, ctx, s, api.Nodes, newNode("sick", 4000, 8*gi, 10, heartbeat(api.ConditionFalse, time.Now())))
	create(t, ctx, s, api.Nodes, newNode("silent", 4000, 8*gi, 10, noConditions))
	startScheduler(t, s)

	create(t, ctx, s, api.Pods, newPod("p", "a"))
	waitUnschedulable(t, ctx, s, "p", "a", "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) were not ready.")
	updateNode(t, ctx, s, "sick", heartbeat(api.ConditionTrue, time.Now()))
	if got := waitBound(t, ctx, s, "p", "a"); got != "sick" {
		t.Errorf("a bound to %q, want sick (now ready)", got)
	}
	create(t, ctx, s, api.Pods, newPod("p", "b", selector("pick", "me")))
	waitUnschedulable(t, ctx, s, "p", "b", "0/3 nodes are available: 1 node(s) didn't match nodeSelector, 1 node(s) were not ready, 1 node(s) were unschedulable.")
	updateNode(t, ctx, s, "cordoned", func(n *api.Node) { n.Spec.Unschedulable = false; n.Labels = map[string]string{"pick": "me"} })
	if got := waitBound(t, ctx, s, "p", "b"); got != "cordoned" {
		t.Errorf("b bound to %q, want cordoned (now uncordoned)", got)
	}
}

func TestTooManyPods(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 4000, 8*gi, 2))
	startScheduler(t, s)
	create(t, ctx, s, api.Pods, newPod("p", "a"))
	create(t, ctx, s, api.Pods, newPod("p", "b"))
	waitBound(t, ctx, s, "p", "a")
	waitBound(t, ctx, s, "p", "b")
	create(t, ctx, s, api.Pods, newPod("p", "c"))
	waitUnschedulable(t, ctx, s, "p", "c", "0/1 nodes are available: 1 Too many pods.")

	// A finished pod holds nothing.
	_, err := s.GuaranteedUpdate(ctx, api.Pods, "p", "a", store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Pod).Status.Phase = api.PodSucceeded
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitBound(t, ctx, s, "p", "c")
}

// nodeCounts counts pods per node.
func nodeCounts(t *testing.T, s *store.Store, ns string) map[string]int {
	t.Helper()
	objs, _, err := s.List(t.Context(), api.Pods, ns, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, o := range objs {
		out[o.(*api.Pod).Spec.NodeName]++
	}
	return out
}

func TestSpreadsReplicas(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		create(t, ctx, s, api.Nodes, newNode(n, 4000, 8*gi, 20))
	}
	startScheduler(t, s)
	for i := range 6 {
		create(t, ctx, s, api.Pods, newPod("p", fmt.Sprintf("web-%d", i), controller("web"), requests(100, 128<<20)))
	}
	for i := range 6 {
		waitBound(t, ctx, s, "p", fmt.Sprintf("web-%d", i))
	}
	if diff := cmp.Diff(map[string]int{"n1": 2, "n2": 2, "n3": 2}, nodeCounts(t, s, "p")); diff != "" {
		t.Errorf("web replicas per node (-want +got):\n%s", diff)
	}
}

// Spreading outweighs allocation: without it all three replicas would go
// to the much larger node, the emptiest by far.
func TestSpreadBeatsLeastAllocated(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("big", 64000, 256*gi, 100))
	create(t, ctx, s, api.Nodes, newNode("small-1", 4000, 16*gi, 100))
	create(t, ctx, s, api.Nodes, newNode("small-2", 4000, 16*gi, 100))
	startScheduler(t, s)
	for i := range 3 {
		name := fmt.Sprintf("api-%d", i)
		create(t, ctx, s, api.Pods, newPod("p", name, controller("api"), requests(100, 128<<20)))
		waitBound(t, ctx, s, "p", name)
	}
	if diff := cmp.Diff(map[string]int{"big": 1, "small-1": 1, "small-2": 1}, nodeCounts(t, s, "p")); diff != "" {
		t.Errorf("api replicas per node (-want +got):\n%s", diff)
	}
	// Pods of no controller go by allocation: to the big node.
	create(t, ctx, s, api.Pods, newPod("p", "loner", requests(100, 128<<20)))
	if got := waitBound(t, ctx, s, "p", "loner"); got != "big" {
		t.Errorf("loner bound to %q, want big (least allocated)", got)
	}
}

// Pods waiting before the scheduler starts are decided much faster than
// their binds come back through the watch; each decision must already
// count the pods decided before it, or they would pile onto one node.
func TestAssumedPodsCount(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for i := range 5 {
		create(t, ctx, s, api.Nodes, newNode(fmt.Sprintf("n%d", i), 1000, 8*gi, 10))
	}
	for i := range 50 {
		create(t, ctx, s, api.Pods, newPod("p", fmt.Sprintf("pod-%d", i), requests(100, 64<<20)))
	}
	startScheduler(t, s)
	for i := range 50 {
		waitBound(t, ctx, s, "p", fmt.Sprintf("pod-%d", i))
	}
	want := map[string]int{"n0": 10, "n1": 10, "n2": 10, "n3": 10, "n4": 10}
	if diff := cmp.Diff(want, nodeCounts(t, s, "p")); diff != "" {
		t.Errorf("pods per node, each node fitting exactly 10 (-want +got):\n%s", diff)
	}
}

// Two schedulers racing for the same pods: every pod is bound by exactly
// one successful write, and its node never changes afterwards.
func TestTwoSchedulersNeverDoubleBind(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for i := range 10 {
		create(t, ctx, s, api.Nodes, newNode(fmt.Sprintf("n%d", i), 64000, 256*gi, 1000))
	}
	_, meta, err := s.List(ctx, api.Pods, "", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv, _ := store.ParseResourceVersion(meta.ResourceVersion)
	events, err := s.Watch(ctx, api.Pods, "", rv, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := range n {
		create(t, ctx, s, api.Pods, newPod("p", fmt.Sprintf("pod-%d", i), controller("race")))
	}
	var a, b *Scheduler
	var wg sync.WaitGroup
	wg.Go(func() { a = startScheduler(t, s) })
	wg.Go(func() { b = startScheduler(t, s) })
	wg.Wait()

	node := map[string]string{}
	for len(node) < n {
		select {
		case ev := <-events:
			if ev.Type == api.Error {
				t.Fatalf("watch: %v", ev.Err)
			}
			p := ev.Object.(*api.Pod)
			got := p.Spec.NodeName
			if got == "" {
				continue
			}
			if prev, ok := node[p.Name]; ok && prev != got {
				t.Errorf("pod %s moved from %s to %s", p.Name, prev, got)
			}
			node[p.Name] = got
		case <-ctx.Done():
			t.Fatalf("%d of %d pods bound when the test timed out", len(node), n)
		}
	}
	eventually(t, ctx, "both schedulers' bind counts to settle", func() (bool, string) {
		got := a.Stats().Bound.Load() + b.Stats().Bound.Load()
		if got > n {
			t.Fatalf("%d successful bind writes for %d pods", got, n)
		}
		return got == n, fmt.Sprintf("%d bind writes", got)
	})
	t.Logf("scheduler A bound %d, B bound %d; conflicts A %d, B %d", a.Stats().Bound.Load(), b.Stats().Bound.Load(), a.Stats().Conflicts.Load(), b.Stats().Conflicts.Load())
	// Once more from the store, after the dust settled.
	for _, o := range must(s.List(ctx, api.Pods, "", store.ListOptions{})) {
		p := o.(*api.Pod)
		if p.Spec.NodeName != node[p.Name] {
			t.Errorf("pod %s is on %q, the watch saw it bound to %q", p.Name, p.Spec.NodeName, node[p.Name])
		}
	}
}

func must(objs []api.Object, _ api.ListMeta, err error) []api.Object {
	if err != nil {
		panic(err)
	}
	return objs
}

// A pod already being deleted is not scheduled.
func TestTerminatingPodNotScheduled(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 4000, 8*gi, 10))
	p := newPod("p", "going")
	create(t, ctx, s, api.Pods, p)
	now := time.Now().UTC()
	p.DeletionTimestamp = &now
	if err := s.Update(ctx, api.Pods, p, store.UpdateOptions{MarkDeleted: true}); err != nil {
		t.Fatal(err)
	}
	sch := startScheduler(t, s)
	eventually(t, ctx, "scheduler caches synced", func() (bool, string) {
		return sch.pods.Synced() && sch.nodes.Synced(), "not synced"
	})
	// The queue is FIFO: had "going" been queued, it would have been
	// tried before "sentinel".
	create(t, ctx, s, api.Pods, newPod("p", "sentinel"))
	waitBound(t, ctx, s, "p", "sentinel")
	if got := getPod(t, ctx, s, "p", "going"); got.Spec.NodeName != "" || len(got.Status.Conditions) != 0 {
		t.Errorf("terminating pod: nodeName %q, conditions %+v; want untouched", got.Spec.NodeName, got.Status.Conditions)
	}
	if got := sch.Stats().Attempts.Load(); got != 1 {
		t.Errorf("scheduling attempts = %d, want 1 (the sentinel only)", got)
	}
}

// Pods bound before the scheduler starts (by another scheduler, or by a
// user naming the node) take their room.
func TestCountsPodsBoundBeforeStart(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("n1", 1000, 8*gi, 10))
	create(t, ctx, s, api.Nodes, newNode("n2", 1000, 8*gi, 10))
	create(t, ctx, s, api.Pods, newPod("p", "pinned", onNode("n1"), requests(800, 0)))
	startScheduler(t, s)
	create(t, ctx, s, api.Pods, newPod("p", "new", requests(500, 0)))
	if got := waitBound(t, ctx, s, "p", "new"); got != "n2" {
		t.Errorf("new bound to %q, want n2 (n1 has 200m left)", got)
	}
	got := slices.Sorted(maps.Keys(nodeCounts(t, s, "p")))
	if diff := cmp.Diff([]string{"n1", "n2"}, got); diff != "" {
		t.Errorf("nodes with pods (-want +got):\n%s", diff)
	}
}
