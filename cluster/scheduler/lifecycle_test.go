package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

func TestLifecycleConfigValidate(t *testing.T) {
	s := store.New(nil)
	cfg := LifecycleConfig{Store: s}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate() = %v", err)
	}
	want := LifecycleConfig{Store: s, GracePeriod: 40 * time.Second, EvictionTimeout: 30 * time.Second, MonitorPeriod: 5 * time.Second}
	if cfg != want {
		t.Errorf("Validate() left %+v, want %+v", cfg, want)
	}
	for _, bad := range []LifecycleConfig{{}, {Store: s, GracePeriod: -1}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}

// podNames lists the pods in the store bound to node.
func podNames(t *testing.T, ctx context.Context, s *store.Store, node string) []string {
	t.Helper()
	out := []string{}
	for _, o := range must(s.List(ctx, api.Pods, "", store.ListOptions{})) {
		if p := o.(*api.Pod); p.Spec.NodeName == node {
			out = append(out, p.Name)
		}
	}
	return out
}

// The whole controller: a node that stopped heartbeating is marked not
// ready, and its pods are deleted; a healthy node and its pods are left
// alone, and the scheduler stops placing pods on the dead node.
func TestNodeLifecycleEvictsFromSilentNode(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	create(t, ctx, s, api.Nodes, newNode("dead", 4000, 8*gi, 10, heartbeat(api.ConditionTrue, time.Now().Add(-time.Hour))))
	// A heartbeat in the future stays fresh for the whole test, whatever
	// the machine's load.
	create(t, ctx, s, api.Nodes, newNode("alive", 4000, 8*gi, 10, heartbeat(api.ConditionTrue, time.Now().Add(time.Hour))))
	for i := range 3 {
		create(t, ctx, s, api.Pods, newPod("p", fmt.Sprintf("on-dead-%d", i), onNode("dead")))
		create(t, ctx, s, api.Pods, newPod("p", fmt.Sprintf("on-alive-%d", i), onNode("alive")))
	}
	l, err := NewNodeLifecycle(LifecycleConfig{Store: s, GracePeriod: time.Second, EvictionTimeout: time.Second, MonitorPeriod: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); l.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	eventually(t, ctx, "dead node marked not ready", func() (bool, string) {
		o, err := s.Get(ctx, api.Nodes, "", "dead")
		if err != nil {
			return false, err.Error()
		}
		c := readyCondition(o.(*api.Node))
		return c.Status == api.ConditionFalse && c.Reason == ReasonNodeStatusUnknown && strings.Contains(c.Message, "stopped posting heartbeats"),
			fmt.Sprintf("Ready condition %+v", *c)
	})
	eventually(t, ctx, "pods on the dead node deleted", func() (bool, string) {
		got := podNames(t, ctx, s, "dead")
		return len(got) == 0, fmt.Sprintf("pods %v", got)
	})
	if diff := cmp.Diff([]string{"on-alive-0", "on-alive-1", "on-alive-2"}, podNames(t, ctx, s, "alive")); diff != "" {
		t.Errorf("pods on the healthy node (-want +got):\n%s", diff)
	}
	o, err := s.Get(ctx, api.Nodes, "", "alive")
	if err != nil {
		t.Fatal(err)
	}
	if !nodeReady(o.(*api.Node)) {
		t.Errorf("healthy node's conditions = %+v, want Ready=True", o.(*api.Node).Status.Conditions)
	}

	// The scheduler now keeps new pods off the dead node.
	startScheduler(t, s)
	create(t, ctx, s, api.Pods, newPod("p", "new", selector("kubernetes.io/hostname", "dead")))
	updateNode(t, ctx, s, "dead", labels("kubernetes.io/hostname", "dead"))
	waitUnschedulable(t, ctx, s, "p", "new", "0/2 nodes are available: 1 node(s) didn't match nodeSelector, 1 node(s) were not ready.")
}

// startLifecycleCaches fills a controller's informers without running its
// loop, so a test can call check with a clock of its own.
func startLifecycleCaches(t *testing.T, ctx context.Context, l *NodeLifecycle) {
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go l.nodes.Run(runCtx)
	go l.pods.Run(runCtx)
}

// syncTo waits until both caches hold exactly what the store holds.
func syncTo(t *testing.T, ctx context.Context, s *store.Store, l *NodeLifecycle) {
	t.Helper()
	for _, inf := range []*store.Informer{l.nodes, l.pods} {
		eventually(t, ctx, inf.Resource().Name+" cache caught up", func() (bool, string) {
			objs := must(s.List(ctx, inf.Resource(), "", store.ListOptions{}))
			for _, o := range objs {
				m := o.GetObjectMeta()
				if c, ok := inf.Get(m.Namespace, m.Name); !ok || c.GetObjectMeta().ResourceVersion != m.ResourceVersion {
					return false, m.Name + " not current"
				}
			}
			return len(inf.List("")) == len(objs), "holds deleted objects"
		})
	}
}

// One pass at a time with a clock of the test's own: a node that reports
// itself not ready is evicted only after EvictionTimeout, and nothing is
// evicted while no node is ready.
func TestNodeLifecycleTimeline(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	t0 := time.Now().UTC().Truncate(time.Second)
	create(t, ctx, s, api.Nodes, newNode("sick", 4000, 8*gi, 10, heartbeat(api.ConditionFalse, t0)))
	create(t, ctx, s, api.Nodes, newNode("quiet", 4000, 8*gi, 10, heartbeat(api.ConditionTrue, t0)))
	create(t, ctx, s, api.Pods, newPod("p", "on-sick", onNode("sick")))
	create(t, ctx, s, api.Pods, newPod("p", "on-quiet", onNode("quiet")))
	l, err := NewNodeLifecycle(LifecycleConfig{Store: s, GracePeriod: 40 * time.Second, EvictionTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	startLifecycleCaches(t, ctx, l)
	exists := func(name string) bool {
		_, err := s.Get(ctx, api.Pods, "p", name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	readyStatus := func(name string) string {
		o, err := s.Get(ctx, api.Nodes, "", name)
		if err != nil {
			t.Fatal(err)
		}
		return readyCondition(o.(*api.Node)).Status
	}

	steps := []struct {
		at                  time.Duration // after t0
		sickPod, quietPod   bool          // want the pods to exist afterwards
		quietReady          string
		heartbeatQuietFirst bool
	}{
		// sick is first seen not ready now; quiet is fresh.
		{at: 0, sickPod: true, quietPod: true, quietReady: api.ConditionTrue},
		// 29s later: not yet EvictionTimeout.
		{at: 29 * time.Second, sickPod: true, quietPod: true, quietReady: api.ConditionTrue},
		// 41s: sick has been not ready for longer than EvictionTimeout,
		// but quiet's heartbeat is stale too, so no node is ready: quiet
		// is marked not ready and nothing is evicted.
		{at: 41 * time.Second, sickPod: true, quietPod: true, quietReady: api.ConditionFalse},
		// quiet heartbeats again: now sick (not ready for 5 min) is
		// evicted, and quiet keeps its pod.
		{at: 5 * time.Minute, sickPod: false, quietPod: true, quietReady: api.ConditionTrue, heartbeatQuietFirst: true},
	}
	for _, st := range steps {
		now := t0.Add(st.at)
		if st.heartbeatQuietFirst {
			updateNode(t, ctx, s, "quiet", heartbeat(api.ConditionTrue, now))
		}
		syncTo(t, ctx, s, l)
		l.check(ctx, now)
		if got := exists("on-sick"); got != st.sickPod {
			t.Errorf("t0+%s: pod on sick exists = %v, want %v", st.at, got, st.sickPod)
		}
		if got := exists("on-quiet"); got != st.quietPod {
			t.Errorf("t0+%s: pod on quiet exists = %v, want %v", st.at, got, st.quietPod)
		}
		if got := readyStatus("quiet"); got != st.quietReady {
			t.Errorf("t0+%s: quiet Ready = %s, want %s", st.at, got, st.quietReady)
		}
	}
}
