package scheduler

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// newStore returns a store isolated under a prefix unique to the test.
func newStore(t *testing.T) *store.Store { return storetest.New(t) }

// testContext bounds a test so that a hang fails instead of blocking the
// binary; it is not a timing assertion.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startScheduler runs a scheduler until the test ends.
func startScheduler(t *testing.T, s *store.Store) *Scheduler {
	t.Helper()
	sch, err := New(Config{Store: s, Binders: 8})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sch.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return sch
}

// Fixtures.

type nodeOpt func(*api.Node)

func labels(kv ...string) nodeOpt {
	return func(n *api.Node) {
		n.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}

func cordoned(n *api.Node) { n.Spec.Unschedulable = true }

// heartbeat sets the Ready condition with status and last heartbeat.
func heartbeat(status string, at time.Time) nodeOpt {
	return func(n *api.Node) {
		n.Status.Conditions = []api.NodeCondition{{Type: NodeReady, Status: status, LastHeartbeatTime: at.UTC()}}
	}
}

func noConditions(n *api.Node) { n.Status.Conditions = nil }

// newNode is a ready node with the given allocatable cpu (millicores),
// memory and pod count.
func newNode(name string, cpu, mem, pods int64, opts ...nodeOpt) *api.Node {
	n := &api.Node{ObjectMeta: api.ObjectMeta{Name: name}}
	n.Status.Capacity = api.ResourceList{MilliCPU: cpu, Memory: mem, Pods: pods}
	n.Status.Allocatable = n.Status.Capacity
	heartbeat(api.ConditionTrue, time.Now())(n)
	for _, o := range opts {
		o(n)
	}
	return n
}

type podOpt func(*api.Pod)

func requests(cpu, mem int64) podOpt {
	return func(p *api.Pod) {
		p.Spec.Containers[0].Resources.Requests = api.ResourceList{MilliCPU: cpu, Memory: mem}
	}
}

func hostPortOpt(port int32, proto string) podOpt {
	return func(p *api.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, api.ContainerPort{ContainerPort: 80, HostPort: port, Protocol: proto})
	}
}

func selector(kv ...string) podOpt {
	return func(p *api.Pod) {
		p.Spec.NodeSelector = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p.Spec.NodeSelector[kv[i]] = kv[i+1]
		}
	}
}

func controller(name string) podOpt {
	return func(p *api.Pod) { p.Labels = map[string]string{ControllerLabel: name} }
}

func onNode(name string) podOpt { return func(p *api.Pod) { p.Spec.NodeName = name } }

func newPod(ns, name string, opts ...podOpt) *api.Pod {
	p := &api.Pod{ObjectMeta: api.ObjectMeta{Namespace: ns, Name: name}}
	p.Spec.Containers = []api.Container{{Name: "app", Image: "registry.local/app@sha256:0"}}
	for _, o := range opts {
		o(p)
	}
	return p
}

func create(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource, o api.Object) {
	t.Helper()
	if err := s.Create(ctx, r, o); err != nil {
		t.Fatalf("Create(%s %q) = %v, want nil", r.Kind, o.GetObjectMeta().Name, err)
	}
}

// updateNode changes a node (spec and labels, then status) with
// GuaranteedUpdate.
func updateNode(t *testing.T, ctx context.Context, s *store.Store, name string, fn func(*api.Node)) {
	t.Helper()
	for _, status := range []bool{false, true} {
		_, err := s.GuaranteedUpdate(ctx, api.Nodes, "", name, store.UpdateOptions{Status: status}, func(o api.Object) error {
			fn(o.(*api.Node))
			return nil
		})
		if err != nil {
			t.Fatalf("update node %s: %v", name, err)
		}
	}
}

func getPod(t *testing.T, ctx context.Context, s *store.Store, ns, name string) *api.Pod {
	t.Helper()
	o, err := s.Get(ctx, api.Pods, ns, name)
	if err != nil {
		t.Fatalf("Get(pod %s/%s) = %v", ns, name, err)
	}
	return o.(*api.Pod)
}

// eventually polls cond until it holds; it fails the test with cond's
// last description when ctx ends first. The deadline guards hangs only.
func eventually(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	for {
		ok, desc := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still %s", what, desc)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitBound waits until the pod is bound and has PodScheduled=True, and
// returns its node.
func waitBound(t *testing.T, ctx context.Context, s *store.Store, ns, name string) string {
	t.Helper()
	var node string
	eventually(t, ctx, "pod "+ns+"/"+name+" bound", func() (bool, string) {
		p := getPod(t, ctx, s, ns, name)
		c := podCondition(p, PodScheduled)
		node = p.Spec.NodeName
		return node != "" && c != nil && c.Status == api.ConditionTrue,
			fmt.Sprintf("nodeName=%q conditions=%+v", node, p.Status.Conditions)
	})
	return node
}

// waitUnschedulable waits for PodScheduled=False/Unschedulable with
// exactly msg.
func waitUnschedulable(t *testing.T, ctx context.Context, s *store.Store, ns, name, msg string) {
	t.Helper()
	eventually(t, ctx, "pod "+ns+"/"+name+" unschedulable", func() (bool, string) {
		p := getPod(t, ctx, s, ns, name)
		return p.Spec.NodeName == "" && hasUnschedulable(p, msg),
			fmt.Sprintf("nodeName=%q conditions=%+v, want message %q", p.Spec.NodeName, p.Status.Conditions, msg)
	})
}

func deletePod(t *testing.T, ctx context.Context, s *store.Store, ns, name string) {
	t.Helper()
	if _, err := s.Delete(ctx, api.Pods, ns, name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Delete(pod %s/%s) = %v", ns, name, err)
	}
}
