package store_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

func quotaPod(ns, name string, cpu int64) *api.Pod {
	p := &api.Pod{ObjectMeta: api.ObjectMeta{Namespace: ns, Name: name}}
	c := api.Container{Name: "app", Image: "busybox"}
	c.Resources.Requests.MilliCPU = cpu
	p.Spec.Containers = []api.Container{c}
	return p
}

func quota(ns, name string, hard, soft map[string]string) *api.ResourceQuota {
	return &api.ResourceQuota{ObjectMeta: api.ObjectMeta{Namespace: ns, Name: name}, Spec: api.ResourceQuotaSpec{Hard: hard, Soft: soft}}
}

// The 11th pod of a project with pods: 10 is refused with the quota, the
// resource, used, requested and hard named; finished pods free their
// slot; a quota created after the store cached the project's (empty)
// policy applies at once.
func TestQuotaRefusesPodsOverHard(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.Pods, quotaPod("q", "before", 0)) // caches "no quota"
	mustCreate(t, ctx, s, api.ResourceQuotas, quota("q", "compute", map[string]string{"pods": "10"}, nil))
	for i := 1; i < 10; i++ {
		mustCreate(t, ctx, s, api.Pods, quotaPod("q", fmt.Sprintf("p%d", i), 0))
	}
	err := s.Create(ctx, api.Pods, quotaPod("q", "p10", 0))
	want := "exceeded quota compute: pods used 10, requested 1, hard 10"
	if !errors.Is(err, store.ErrQuota) || err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Create(11th pod) = %v, want ErrQuota saying %q", err, want)
	}
	if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden {
		t.Errorf("Create(11th pod): status %+v, want 403", st)
	}
	if _, err := s.Get(ctx, api.Pods, "q", "p10"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(refused pod) = %v, want ErrNotFound", err)
	}
	// Other kinds and projects are not bounded by it.
	mustCreate(t, ctx, s, api.Pods, quotaPod("other", "p10", 0))
	// A finished pod no longer counts.
	if _, err := s.GuaranteedUpdate(ctx, api.Pods, "q", "p1", store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Pod).Status.Phase = api.PodSucceeded
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, api.Pods, quotaPod("q", "p10", 0))
	// Raising the quota (through any store) applies to the next create.
	if _, err := s.GuaranteedUpdate(ctx, api.ResourceQuotas, "q", "compute", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.ResourceQuota).Spec.Hard["pods"] = "11"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, api.Pods, quotaPod("q", "p11", 0))
	// Deleting the quota lifts it.
	if _, err := s.Delete(ctx, api.ResourceQuotas, "q", "compute", ""); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, api.Pods, quotaPod("q", "p12", 0))
}

// Two stores (two API servers, or an API server and a controller) that
// create pods at once for the last slots never both take the same one,
// and a store that cached a project's policy before a quota was made (by
// the other) applies the quota all the same.
func TestQuotaHoldsUnderConcurrentCreates(t *testing.T) {
	ctx := testContext(t)
	prefix := testPrefix(t)
	a := store.New(sharedClient, store.WithPrefix(prefix))
	b := store.New(sharedClient, store.WithPrefix(prefix))
	// b caches the project's policy (none) before a makes the quota: b
	// must not go on creating under the stale policy.
	mustCreate(t, ctx, b, api.Pods, quotaPod("q", "first", 100))
	mustCreate(t, ctx, a, api.ResourceQuotas, quota("q", "compute", map[string]string{"pods": "10", "requests.cpu": "2"}, nil))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, refused int
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			err := s.Create(ctx, api.Pods, quotaPod("q", fmt.Sprintf("p%d", i), 100))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, store.ErrQuota):
				refused++
			default:
				t.Errorf("Create = %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 9 || refused != 15 {
		t.Errorf("24 concurrent creates under pods: 10 with 1 pod made: %d created, %d refused; want 9 and 15", ok, refused)
	}
	used, err := a.QuotaUsage(ctx, "q", []string{"pods", "requests.cpu"})
	if err != nil {
		t.Fatal(err)
	}
	if used["pods"] != 10 || used["requests.cpu"] != 1000 {
		t.Errorf("QuotaUsage = %v, want pods 10, requests.cpu 1000", used)
	}
}

// A soft limit lets the create through and warns; compute quotas sum
// containers' requests and refuse a pod that states none; count/ counts
// objects of any kind.
func TestQuotaSoftComputeAndCounts(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ResourceQuotas, quota("q", "compute",
		map[string]string{"requests.cpu": "1", "count/serviceaccounts": "1"},
		map[string]string{"requests.cpu": "500m"}))
	var warnings []string
	wctx := store.WithWarnings(ctx, func(m string) { warnings = append(warnings, m) })
	mustCreate(t, wctx, s, api.Pods, quotaPod("q", "a", 400))
	if len(warnings) != 0 {
		t.Errorf("warnings under the soft limit: %q", warnings)
	}
	mustCreate(t, wctx, s, api.Pods, quotaPod("q", "b", 400))
	want := "over the soft limit of quota compute: requests.cpu used 400m, requested 400m, soft 500m"
	if len(warnings) != 1 || warnings[0] != want {
		t.Errorf("warnings = %q, want [%q]", warnings, want)
	}
	err := s.Create(ctx, api.Pods, quotaPod("q", "c", 400))
	if want := "exceeded quota compute: requests.cpu used 800m, requested 400m, hard 1"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Create(over cpu) = %v, want %q", err, want)
	}
	err = s.Create(ctx, api.Pods, quotaPod("q", "d", 0))
	if err == nil || !strings.Contains(err.Error(), `quota compute tracks requests.cpu, and container "app" sets none`) {
		t.Errorf("Create(pod without requests) = %v, want a refusal asking for requests.cpu", err)
	}
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("q", "one", nil))
	if err := s.Create(ctx, api.ServiceAccounts, newSA("q", "two", nil)); err == nil || !strings.Contains(err.Error(), "count/serviceaccounts used 1, requested 1, hard 1") {
		t.Errorf("Create(2nd service account) = %v, want the count/ quota", err)
	}
}

// A limit range fills requests and limits a container lacks and refuses
// one over its max, naming it.
func TestLimitRangeDefaultsAndMax(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.LimitRanges, &api.LimitRange{ObjectMeta: api.ObjectMeta{Namespace: "q", Name: "limits"},
		Spec: api.LimitRangeSpec{Limits: []api.LimitRangeItem{{Type: "Container",
			Default: api.ResourceList{MilliCPU: 500, Memory: 64 << 20}, DefaultRequest: api.ResourceList{MilliCPU: 100},
			Max: api.ResourceList{MilliCPU: 1000}}}}})
	p := quotaPod("q", "a", 0)
	mustCreate(t, ctx, s, api.Pods, p)
	got, err := s.Get(ctx, api.Pods, "q", "a")
	if err != nil {
		t.Fatal(err)
	}
	want := api.ResourceRequirements{Requests: api.ResourceList{MilliCPU: 100, Memory: 64 << 20}, Limits: api.ResourceList{MilliCPU: 500, Memory: 64 << 20}}
	if r := got.(*api.Pod).Spec.Containers[0].Resources; r != want {
		t.Errorf("stored resources = %+v, want %+v", r, want)
	}
	big := quotaPod("q", "big", 0)
	big.Spec.Containers[0].Resources.Limits.MilliCPU = 2000
	err = s.Create(ctx, api.Pods, big)
	if want := `limit range limits: container "app" asks for limits.cpu 2, above the max 1`; err == nil || !errors.Is(err, store.ErrQuota) || !strings.Contains(err.Error(), want) {
		t.Errorf("Create(over max) = %v, want %q", err, want)
	}
}

// A build starts only while the project's builds quota has room.
func TestStartBuildWaitsForQuota(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ResourceQuotas, quota("q", "builds", map[string]string{"builds": "1"}, nil))
	for _, n := range []string{"b1", "b2"} {
		mustCreate(t, ctx, s, api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Namespace: "q", Name: n}})
	}
	run := func(b *api.Build) { b.Status.Phase = api.BuildRunning }
	if err := s.StartBuild(ctx, "q", "b1", run); err != nil {
		t.Fatalf("StartBuild(b1) = %v", err)
	}
	err := s.StartBuild(ctx, "q", "b2", run)
	if err == nil || !strings.Contains(err.Error(), "exceeded quota builds: builds used 1, requested 1, hard 1") {
		t.Fatalf("StartBuild(b2) = %v, want the builds quota", err)
	}
	if o, _ := s.Get(ctx, api.Builds, "q", "b2"); o.(*api.Build).Status.Phase == api.BuildRunning {
		t.Fatal("a refused start changed the build")
	}
	if _, err := s.GuaranteedUpdate(ctx, api.Builds, "q", "b1", store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Build).Status.Phase = api.BuildComplete
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.StartBuild(ctx, "q", "b2", run); err != nil {
		t.Fatalf("StartBuild(b2) after b1 finished = %v", err)
	}
}

// CheckCreate, which the registry calls before it stores a pushed
// manifest, meets the image streams quota as Create does.
func TestCheckCreateMeetsQuota(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ResourceQuotas, quota("q", "objects", map[string]string{"imagestreams": "1"}, nil))
	if err := s.CheckCreate(ctx, api.ImageStreams, "q", "app"); err != nil {
		t.Fatalf("CheckCreate(first stream) = %v", err)
	}
	mustCreate(t, ctx, s, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "q", Name: "app"}})
	if err := s.CheckCreate(ctx, api.ImageStreams, "q", "app"); err != nil {
		t.Errorf("CheckCreate(existing stream) = %v, want nil", err)
	}
	err := s.CheckCreate(ctx, api.ImageStreams, "q", "other")
	if !errors.Is(err, store.ErrQuota) || !strings.Contains(err.Error(), "exceeded quota objects: imagestreams used 1, requested 1, hard 1") {
		t.Errorf("CheckCreate(second stream) = %v, want the quota", err)
	}
}
