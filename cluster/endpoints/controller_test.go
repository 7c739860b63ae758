package endpoints

import (
	"context"
	"os"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// TestEndpointsFollowReadyPods: only ready, matching, non-terminating pods
// with an IP are listed; changes show; the service's deletion removes them.
func TestEndpointsFollowReadyPods(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	alloc, err := proxy.NewAllocator("10.43.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	go (&Controller{Store: s, IPs: alloc}).Run(runCtx)

	svc := &api.Service{ObjectMeta: api.ObjectMeta{Name: "backend", Namespace: "ns"},
		Spec: api.ServiceSpec{Selector: map[string]string{"app": "be"}, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}}}}
	if err := s.Create(ctx, api.Services, svc); err != nil {
		t.Fatal(err)
	}
	mk := func(name, ip string, ready bool, labels map[string]string) {
		p := &api.Pod{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "ns", Labels: labels},
			Spec: api.PodSpec{Containers: []api.Container{{Name: "c", Image: "i"}}}}
		if err := s.Create(ctx, api.Pods, p); err != nil {
			t.Fatal(err)
		}
		st := "False"
		if ready {
			st = "True"
		}
		if _, err := s.GuaranteedUpdate(ctx, api.Pods, "ns", name, store.UpdateOptions{Status: true}, func(o api.Object) error {
			o.(*api.Pod).Status = api.PodStatus{PodIP: ip, Conditions: []api.PodCondition{{Type: "Ready", Status: st}}}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	be := map[string]string{"app": "be"}
	mk("a", "10.0.0.1", true, be)
	mk("b", "10.0.0.2", false, be)
	mk("c", "10.0.0.3", true, map[string]string{"app": "other"})
	mk("d", "10.0.0.4", true, be)
	ips := func() string {
		o, err := s.Get(ctx, api.EndpointsResource, "ns", "backend")
		if err != nil {
			return ""
		}
		out := ""
		for _, ss := range o.(*api.Endpoints).Subsets {
			for _, a := range ss.Addresses {
				out += a.IP + " "
			}
			for _, p := range ss.Ports {
				if p.TargetPort != 8080 || p.Protocol != "TCP" {
					t.Errorf("port = %+v, want target 8080/TCP", p)
				}
			}
		}
		return out
	}
	storetest.Eventually(t, ctx, "endpoints list a and d", func() bool { return ips() == "10.0.0.1 10.0.0.4 " })
	// It has an address from the range; a second service gets another.
	other := &api.Service{ObjectMeta: api.ObjectMeta{Name: "other", Namespace: "ns"},
		Spec: api.ServiceSpec{Selector: map[string]string{"app": "other"}, Ports: []api.ServicePort{{Port: 80}}}}
	if err := s.Create(ctx, api.Services, other); err != nil {
		t.Fatal(err)
	}
	clusterIP := func(name string) string {
		o, _ := s.Get(ctx, api.Services, "ns", name)
		return o.(*api.Service).Spec.ClusterIP
	}
	storetest.Eventually(t, ctx, "both services have addresses", func() bool { return clusterIP("other") != "" })
	if a, b := clusterIP("backend"), clusterIP("other"); a == b || !strings.HasPrefix(a, "10.43.") || !strings.HasPrefix(b, "10.43.") {
		t.Errorf("cluster IPs = %q and %q, want two different addresses in 10.43.0.0/16", a, b)
	}

	// b becomes ready; a is marked terminating.
	s.GuaranteedUpdate(ctx, api.Pods, "ns", "b", store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Pod).Status.Conditions[0].Status = "True"
		return nil
	})
	s.GuaranteedUpdate(ctx, api.Pods, "ns", "a", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.Pod).Annotations = map[string]string{api.TerminatingAnnotation: "now"}
		return nil
	})
	storetest.Eventually(t, ctx, "endpoints list b and d", func() bool { return ips() == "10.0.0.2 10.0.0.4 " })
	if _, err := s.Delete(ctx, api.Pods, "ns", "d", ""); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "endpoints list b", func() bool { return ips() == "10.0.0.2 " })
	if _, err := s.Delete(ctx, api.Services, "ns", "backend", ""); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "the endpoints are deleted", func() bool {
		_, err := s.Get(ctx, api.EndpointsResource, "ns", "backend")
		return err != nil
	})
}
