package store_test

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// startInformer runs an informer until the test ends and records what its
// handler sees.
func startInformer(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource) (*store.Informer, <-chan store.Event) {
	t.Helper()
	inf := store.NewInformer(s, r)
	events := make(chan store.Event, 1000)
	inf.AddHandler(func(e store.Event) { events <- e })
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		inf.Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	if err := inf.WaitFor(ctx, 0); err != nil {
		t.Fatalf("WaitFor(0) = %v, want the informer to sync", err)
	}
	if !inf.Synced() {
		t.Fatal("Synced() = false after WaitFor returned")
	}
	return inf, events
}

func cachedNames(objs []api.Object) []string {
	out := names(objs)
	sort.Strings(out)
	return out
}

func TestInformer(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	p1 := mustCreate(t, ctx, s, api.Projects, newProject("p1", "one")).(*api.Project)
	inf, events := startInformer(t, ctx, s, api.Projects)

	var want []ev
	want = append(want, evOf(api.Added, p1))
	checkCache := func(step string, wantObj api.Object, name string, wantNames []string) {
		t.Helper()
		got, ok := inf.Get("", name)
		switch {
		case wantObj == nil && ok:
			t.Errorf("%s: informer Get(%q) = %v, true; want absent", step, name, got)
		case wantObj != nil && !ok:
			t.Errorf("%s: informer Get(%q) = absent, want %s", step, name, wantObj.GetObjectMeta().ResourceVersion)
		case wantObj != nil:
			if diff := cmp.Diff(wantObj, got); diff != "" {
				t.Errorf("%s: informer Get(%q) (-want +got):\n%s", step, name, diff)
			}
		}
		if diff := cmp.Diff(wantNames, cachedNames(inf.List(""))); diff != "" {
			t.Errorf("%s: informer List (-want +got):\n%s", step, diff)
		}
	}
	checkCache("after sync", p1, "p1", []string{"p1"})

	steps := []struct {
		name  string
		write func() (typ string, obj api.Object)
		check string // object to Get afterwards
		gone  bool   // it must be absent
		names []string
	}{
		{"create", func() (string, api.Object) {
			return api.Added, mustCreate(t, ctx, s, api.Projects, newProject("p2", "two"))
		}, "p2", false, []string{"p1", "p2"}},
		{"update", func() (string, api.Object) {
			p := mustGet(t, ctx, s, api.Projects, "", "p1").(*api.Project)
			p.Spec.DisplayName = "one, changed"
			return api.Modified, mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{})
		}, "p1", false, []string{"p1", "p2"}},
		{"status update", func() (string, api.Object) {
			p := mustGet(t, ctx, s, api.Projects, "", "p1").(*api.Project)
			p.Status.Phase = api.ProjectActive
			return api.Modified, mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{Status: true})
		}, "p1", false, []string{"p1", "p2"}},
		{"create another", func() (string, api.Object) {
			return api.Added, mustCreate(t, ctx, s, api.Projects, newProject("p3", "three"))
		}, "p3", false, []string{"p1", "p2", "p3"}},
		{"delete", func() (string, api.Object) {
			return api.Deleted, mustDelete(t, ctx, s, api.Projects, "", "p2")
		}, "p2", true, []string{"p1", "p3"}},
	}
	for i, st := range steps {
		typ, obj := st.write()
		want = append(want, evOf(typ, obj))
		// A write to another resource must not confuse the cache.
		mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "noise-"+strconv.Itoa(i), nil))
		if err := inf.WaitFor(ctx, rv(t, obj)); err != nil {
			t.Fatalf("%s: WaitFor(%d) = %v", st.name, rv(t, obj), err)
		}
		var wantObj api.Object
		if !st.gone {
			wantObj = mustGet(t, ctx, s, api.Projects, "", st.check)
			if diff := cmp.Diff(obj, wantObj); diff != "" {
				t.Fatalf("%s: store Get differs from the written object (-written +get):\n%s", st.name, diff)
			}
		}
		checkCache(st.name, wantObj, st.check, st.names)
	}

	// Handlers run after the cache is updated, so they may lag WaitFor;
	// read exactly as many events as were written, then check the order.
	if diff := cmp.Diff(want, collect(t, events, len(want))); diff != "" {
		t.Errorf("handler events (-want +got):\n%s", diff)
	}

	// WaitFor honours its context.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := inf.WaitFor(done, rv(t, p1)+1000000); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitFor(future rev, cancelled ctx) = %v, want context.Canceled", err)
	}
}

func TestInformerNamespaced(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for _, ns := range []string{"team-a", "team-b"} {
		mustCreate(t, ctx, s, api.ServiceAccounts, newSA(ns, "x", nil))
	}
	inf, events := startInformer(t, ctx, s, api.ServiceAccounts)
	created := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "y", map[string]string{"app": "web"}))
	if err := inf.WaitFor(ctx, rv(t, created)); err != nil {
		t.Fatalf("WaitFor = %v", err)
	}
	tests := []struct {
		ns   string
		want []string
	}{
		{"", []string{"team-a/x", "team-a/y", "team-b/x"}},
		{"team-a", []string{"team-a/x", "team-a/y"}},
		{"team-b", []string{"team-b/x"}},
		{"team-c", []string{}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, cachedNames(inf.List(tt.ns))); diff != "" {
			t.Errorf("informer List(%q) (-want +got):\n%s", tt.ns, diff)
		}
	}
	if got, ok := inf.Get("team-a", "y"); !ok || !cmp.Equal(got, created) {
		t.Errorf("informer Get(team-a, y) = %v, %v; want %v", got, ok, created)
	}
	if got, ok := inf.Get("team-c", "x"); ok {
		t.Errorf("informer Get(team-c, x) = %v, true; want absent", got)
	}
	// Initial list: two ADDED events in any order, then the new object.
	got := collect(t, events, 3)
	sort.Slice(got[:2], func(i, j int) bool { return got[i].Name < got[j].Name })
	if got[0].Name != "team-a/x" || got[1].Name != "team-b/x" || got[2] != evOf(api.Added, created) {
		t.Errorf("handler events = %v, want ADDED team-a/x, team-b/x (any order), then %v", got, evOf(api.Added, created))
	}
}
