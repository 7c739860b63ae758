package replication

import (
	"context"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

// TestQuotaRefusalOnTheController: an RC over its project's pods quota
// makes the pods the quota allows, and says why the rest are missing
// (ReplicaFailure, one Warning event); scaled within the quota, the
// condition clears.
func TestQuotaRefusalOnTheController(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&Manager{Store: s, Grace: 100 * time.Millisecond}).Run(runCtx)
	if err := s.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{ObjectMeta: api.ObjectMeta{Name: "compute", Namespace: "ns"},
		Spec: api.ResourceQuotaSpec{Hard: map[string]string{"pods": "2"}}}); err != nil {
		t.Fatal(err)
	}
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
	const want = "exceeded quota compute: pods used 2, requested 1, hard 2"
	var cond api.ReplicationControllerCondition
	storetest.Eventually(t, ctx, "rc web has ReplicaFailure", func() bool {
		o, err := s.Get(ctx, api.ReplicationControllers, "ns", "web")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range o.(*api.ReplicationController).Status.Conditions {
			if c.Type == api.ReplicaFailure {
				cond = c
				return true
			}
		}
		return false
	})
	if cond.Status != api.ConditionTrue || cond.Reason != api.FailedCreate || !strings.Contains(cond.Message, want) {
		t.Errorf("condition = %+v, want ReplicaFailure=True FailedCreate saying %q", cond, want)
	}
	if n := len(pods(t, ctx, s, "web")); n != 2 {
		t.Errorf("%d pods, want the 2 the quota allows", n)
	}
	// The event is written after the condition: wait for it, then there
	// must be one only.
	var evs []api.Object
	storetest.Eventually(t, ctx, "an event for the refused pod", func() bool {
		var err error
		if evs, _, err = s.List(ctx, api.Events, "ns", store.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		return len(evs) > 0
	})
	if len(evs) != 1 || evs[0].(*api.Event).Reason != api.FailedCreate || evs[0].(*api.Event).Type != "Warning" {
		t.Errorf("events = %+v, want one Warning FailedCreate", evs)
	}
	if _, err := s.GuaranteedUpdate(ctx, api.ReplicationControllers, "ns", "web", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.ReplicationController).Spec.Replicas = 2
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "the condition clears", func() bool {
		o, err := s.Get(ctx, api.ReplicationControllers, "ns", "web")
		if err != nil {
			t.Fatal(err)
		}
		return len(o.(*api.ReplicationController).Status.Conditions) == 0
	})
}
