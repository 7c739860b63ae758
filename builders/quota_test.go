package builders

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

// TestQuotaFreedQueuesTheProjectsWaitingBuilds: when a build of a project
// ends, exactly that project's builds waiting for quota are looked at
// again, found through an index (a rebase records thousands of finished
// builds, each of which ends), and a build that stopped waiting is not.
func TestQuotaFreedQueuesTheProjectsWaitingBuilds(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	for _, p := range []string{"p", "q"} {
		if err := s.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}); err != nil {
			t.Fatal(err)
		}
	}
	c := &Controller{Store: s, running: map[string]context.CancelFunc{}, waiting: map[string]bool{}}
	mk := func(ns, name string, phase, reason string) {
		b := &api.Build{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}}
		if err := s.Create(ctx, api.Builds, b); err != nil {
			t.Fatal(err)
		}
		if err := c.setStatus(ctx, b, func(st *api.BuildStatus) { st.Phase, st.Reason = phase, reason }); err != nil {
			t.Fatal(err)
		}
	}
	mk("p", "waits-1", api.BuildPending, api.BuildWaitingForQuota)
	mk("p", "waits-2", api.BuildPending, api.BuildWaitingForQuota)
	mk("p", "new-1", api.BuildPending, "")
	mk("p", "done-1", api.BuildComplete, "")
	mk("q", "waits-1", api.BuildPending, api.BuildWaitingForQuota)
	c.builds = c.buildsInformer()
	go c.builds.Run(ctx)
	if err := store.WaitSynced(ctx, c.builds); err != nil {
		t.Fatal(err)
	}
	queued := func() []string {
		c.queue = store.NewWorkQueue()
		c.quotaFreed("p")
		var keys []string
		for c.queue.Len() > 0 {
			k, _ := c.queue.Get()
			keys = append(keys, k)
			c.queue.Done(k, nil)
		}
		slices.Sort(keys)
		return keys
	}
	if got, want := queued(), []string{"p/waits-1", "p/waits-2"}; !slices.Equal(got, want) {
		t.Fatalf("a build of p ended: queued %v, want %v", got, want)
	}
	o, err := s.Get(ctx, api.Builds, "p", "waits-1")
	if err != nil {
		t.Fatal(err)
	}
	b := o.(*api.Build)
	if err := c.setStatus(ctx, b, func(st *api.BuildStatus) { st.Phase, st.Reason = api.BuildRunning, "" }); err != nil {
		t.Fatal(err)
	}
	o, err = s.Get(ctx, api.Builds, "p", "waits-1")
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	if err := c.builds.WaitFor(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if got, want := queued(), []string{"p/waits-2"}; !slices.Equal(got, want) {
		t.Fatalf("after p/waits-1 started: queued %v, want %v", got, want)
	}
}
