package quota

import (
	"context"
	"maps"
	"os"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// TestStatusFollowsUsage: the controller writes hard, soft and used, and
// follows a pod's create and end.
func TestStatusFollowsUsage(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&Controller{Store: s}).Run(runCtx)
	hard := map[string]string{"pods": "10", "requests.cpu": "2", "count/serviceaccounts": "5"}
	if err := s.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{ObjectMeta: api.ObjectMeta{Name: "compute", Namespace: "ns"},
		Spec: api.ResourceQuotaSpec{Hard: hard, Soft: map[string]string{"pods": "8"}}}); err != nil {
		t.Fatal(err)
	}
	status := func() api.ResourceQuotaStatus {
		o, err := s.Get(ctx, api.ResourceQuotas, "ns", "compute")
		if err != nil {
			t.Fatal(err)
		}
		return o.(*api.ResourceQuota).Status
	}
	want := map[string]string{"pods": "0", "requests.cpu": "0", "count/serviceaccounts": "0"}
	storetest.Eventually(t, ctx, "status shows nothing used", func() bool { return maps.Equal(status().Used, want) })
	if st := status(); !maps.Equal(st.Hard, hard) || st.Soft["pods"] != "8" {
		t.Errorf("status = %+v, want the spec's hard and soft", st)
	}
	p := &api.Pod{ObjectMeta: api.ObjectMeta{Name: "p", Namespace: "ns"}, Spec: api.PodSpec{Containers: []api.Container{{Name: "c", Image: "img",
		Resources: api.ResourceRequirements{Requests: api.ResourceList{MilliCPU: 1500}}}}}}
	if err := s.Create(ctx, api.Pods, p); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"pods": "1", "requests.cpu": "1500m", "count/serviceaccounts": "0"}
	storetest.Eventually(t, ctx, "status counts the pod", func() bool { return maps.Equal(status().Used, want) })
}
