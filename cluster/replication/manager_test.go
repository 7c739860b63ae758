package replication

import (
	"context"
	"os"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

func pods(t *testing.T, ctx context.Context, s *store.Store, rc string) []*api.Pod {
	t.Helper()
	items, _, err := s.List(ctx, api.Pods, "ns", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*api.Pod
	for _, o := range items {
		if p := o.(*api.Pod); p.Labels[api.ControllerLabel] == rc {
			out = append(out, p)
		}
	}
	return out
}

// TestReplicasKept: the manager creates the count from the template,
// replaces a deleted pod and a failed one, scales down gracefully (marked
// terminating first, deleted after the grace), and counts ready pods.
func TestReplicasKept(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&Manager{Store: s, Grace: 300 * time.Millisecond}).Run(runCtx)

	rc := &api.ReplicationController{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: "ns"},
		Spec: api.ReplicationControllerSpec{
			Replicas: 3, Selector: map[string]string{"app": "web"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "c", Image: "img"}}},
			},
		},
	}
	if err := s.Create(ctx, api.ReplicationControllers, rc); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "3 pods exist", func() bool { return len(pods(t, ctx, s, "web")) == 3 })
	time.Sleep(300 * time.Millisecond) // no more than 3 appear
	ps := pods(t, ctx, s, "web")
	if len(ps) != 3 {
		t.Fatalf("%d pods, want exactly 3", len(ps))
	}
	if ps[0].Labels["app"] != "web" || ps[0].Spec.Containers[0].Image != "img" {
		t.Fatalf("pod = %+v, want the template's labels and containers", ps[0])
	}

	// A deleted pod is replaced; a failed one is removed and replaced.
	if _, err := s.Delete(ctx, api.Pods, "ns", ps[0].Name, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GuaranteedUpdate(ctx, api.Pods, "ns", ps[1].Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Pod).Status.Phase = api.PodFailed
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	gone := map[string]bool{ps[0].Name: true, ps[1].Name: true}
	storetest.Eventually(t, ctx, "the deleted and failed pods are replaced", func() bool {
		cur := pods(t, ctx, s, "web")
		for _, p := range cur {
			if gone[p.Name] {
				return false
			}
		}
		return len(cur) == 3
	})

	// Two pods report ready: status counts them.
	ps = pods(t, ctx, s, "web")
	for _, p := range ps[:2] {
		if _, err := s.GuaranteedUpdate(ctx, api.Pods, "ns", p.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
			o.(*api.Pod).Status = api.PodStatus{Phase: api.PodRunning, PodIP: "10.0.0.1", Conditions: []api.PodCondition{{Type: "Ready", Status: api.ConditionTrue}}}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	storetest.Eventually(t, ctx, "status shows 3 replicas, 2 ready", func() bool {
		o, _ := s.Get(ctx, api.ReplicationControllers, "ns", "web")
		st := o.(*api.ReplicationController).Status
		return st.Replicas == 3 && st.ReadyReplicas == 2
	})

	// Scale to 1: the not-ready pod goes first, marked terminating before
	// it is deleted.
	if _, err := s.GuaranteedUpdate(ctx, api.ReplicationControllers, "ns", "web", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.ReplicationController).Spec.Replicas = 1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sawTerminating := false
	storetest.Eventually(t, ctx, "one pod is left", func() bool {
		ps := pods(t, ctx, s, "web")
		for _, p := range ps {
			if p.Annotations[api.TerminatingAnnotation] != "" {
				sawTerminating = true
			}
		}
		return len(ps) == 1
	})
	if !sawTerminating {
		t.Error("scaled-down pods were deleted without being marked terminating first")
	}
	if p := pods(t, ctx, s, "web")[0]; !api.PodReady(p) {
		t.Errorf("the pod kept is not ready; scale-down should remove not-ready pods first")
	}
}

// TestPodsRunRestricted: the manager makes pods with the project's first
// UID when the template names none, and makes none from a template that
// asks for more than restricted without the API server's privileged
// marker (written to the store past admission).
func TestPodsRunRestricted(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 4)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&Manager{Store: s, Grace: 300 * time.Millisecond}).Run(runCtx)

	rc := func(name string, sc *api.SecurityContext) *api.ReplicationController {
		return &api.ReplicationController{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: "ns"},
			Spec: api.ReplicationControllerSpec{
				Replicas: 1, Selector: map[string]string{"app": name},
				Template: &api.PodTemplateSpec{
					ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": name}},
					Spec:       api.PodSpec{Containers: []api.Container{{Name: "c", Image: "img", SecurityContext: sc}}},
				},
			},
		}
	}
	yes := true
	for _, r := range []*api.ReplicationController{rc("plain", nil), rc("priv", &api.SecurityContext{Privileged: &yes})} {
		if err := s.Create(ctx, api.ReplicationControllers, r); err != nil {
			t.Fatal(err)
		}
	}
	storetest.Eventually(t, ctx, "a pod of plain", func() bool { return len(pods(t, ctx, s, "plain")) == 1 })
	p := pods(t, ctx, s, "plain")[0]
	if sc := p.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != api.UIDRangeBlock(4).First {
		t.Errorf("plain's pod has securityContext %+v; want runAsUser %d, the project's first UID", sc, api.UIDRangeBlock(4).First)
	}
	// The manager has acted on priv too: it says why priv has no pod (or,
	// wrongly, made one).
	storetest.Eventually(t, ctx, "priv has ReplicaFailure or a pod", func() bool {
		if len(pods(t, ctx, s, "priv")) > 0 {
			return true
		}
		o, err := s.Get(ctx, api.ReplicationControllers, "ns", "priv")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range o.(*api.ReplicationController).Status.Conditions {
			if c.Type == api.ReplicaFailure && c.Reason == api.FailedCreate {
				return true
			}
		}
		return false
	})
	if n := len(pods(t, ctx, s, "priv")); n != 0 {
		t.Errorf("priv has %d pods; want none from a privileged template without the marker", n)
	}
}
