package store_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// recorder performs writes and remembers the events a watch of one
// namespace must report for them.
type recorder struct {
	t    *testing.T
	ctx  context.Context
	s    *store.Store
	ns   string // events outside this namespace are not recorded
	want []ev
}

func (w *recorder) create(ns, name string, lbls map[string]string) *api.ServiceAccount {
	w.t.Helper()
	o := mustCreate(w.t, w.ctx, w.s, api.ServiceAccounts, newSA(ns, name, lbls)).(*api.ServiceAccount)
	w.record(ns, evOf(api.Added, o))
	return o
}

func (w *recorder) relabel(ns, name string, lbls map[string]string) *api.ServiceAccount {
	w.t.Helper()
	o := mustGet(w.t, w.ctx, w.s, api.ServiceAccounts, ns, name).(*api.ServiceAccount)
	o.Labels = lbls
	mustUpdate(w.t, w.ctx, w.s, api.ServiceAccounts, o, store.UpdateOptions{})
	w.record(ns, evOf(api.Modified, o))
	return o
}

func (w *recorder) delete(ns, name string) api.Object {
	w.t.Helper()
	o := mustDelete(w.t, w.ctx, w.s, api.ServiceAccounts, ns, name)
	w.record(ns, evOf(api.Deleted, o))
	return o
}

func (w *recorder) record(ns string, e ev) {
	if w.ns == "" || w.ns == ns {
		w.want = append(w.want, e)
	}
}

func TestWatchResume(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	w := &recorder{t: t, ctx: ctx, s: s, ns: "team-a"}
	w.create("team-a", "a0", nil)
	from := w.want[0].RV
	w.want = nil
	fromRV, _ := strconv.ParseInt(from, 10, 64)

	wctx, disconnect := context.WithCancel(ctx)
	ch, err := s.Watch(wctx, api.ServiceAccounts, "team-a", fromRV, store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch(rv %d) = %v", fromRV, err)
	}
	w.create("team-a", "a1", nil)
	w.relabel("team-a", "a1", map[string]string{"v": "2"})
	w.create("team-ab", "other", nil) // a namespace sharing a prefix
	w.create("team-b", "other", nil)
	w.create("team-a", "a2", nil)
	got := collect(t, ch, len(w.want))
	if diff := cmp.Diff(w.want, got); diff != "" {
		t.Fatalf("Watch(rv %d) events (-want +got):\n%s", fromRV, diff)
	}
	last := got[len(got)-1].RV
	disconnect()
	drain(t, ch)

	// While disconnected.
	seen := len(w.want)
	w.create("team-a", "a3", nil)
	w.relabel("team-a", "a1", map[string]string{"v": "3"})
	w.delete("team-a", "a2")
	w.create("team-b", "b1", nil)
	w.relabel("team-a", "a0", map[string]string{"v": "1"})
	w.create("team-a", "a2", map[string]string{"reborn": "true"})
	w.delete("team-b", "b1")
	missed := w.want[seen:]

	lastRV, _ := strconv.ParseInt(last, 10, 64)
	ch, err = s.Watch(ctx, api.ServiceAccounts, "team-a", lastRV, store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch(rv %d) after reconnect = %v", lastRV, err)
	}
	got = collect(t, ch, len(missed))
	if diff := cmp.Diff(missed, got); diff != "" {
		t.Errorf("events after reconnecting at rv %d (-want +got):\n%s", lastRV, diff)
	}
	// A new change must be the very next event: nothing duplicated or
	// left over.
	w.create("team-a", "sentinel", nil)
	if e := nextEvent(t, ch); evOf(e.Type, e.Object) != w.want[len(w.want)-1] {
		t.Errorf("event after the missed ones = %v, want %v", evOf(e.Type, e.Object), w.want[len(w.want)-1])
	}

	// Resuming from any resourceVersion seen yields exactly the rest.
	for i := range len(w.want) - 1 {
		t.Run("from "+w.want[i].String(), func(t *testing.T) {
			rv, _ := strconv.ParseInt(w.want[i].RV, 10, 64)
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, api.ServiceAccounts, "team-a", rv, store.ListOptions{})
			if err != nil {
				t.Fatalf("Watch(rv %d) = %v", rv, err)
			}
			rest := w.want[i+1:]
			if diff := cmp.Diff(rest, collect(t, ch, len(rest))); diff != "" {
				t.Errorf("Watch(rv %d) (-want +got):\n%s", rv, diff)
			}
		})
	}
}

func TestWatchFromZero(t *testing.T) {
	// setup stores the fixtures under the subtest's own prefix.
	setup := func(t *testing.T, ctx context.Context, s *store.Store) map[string]*api.ServiceAccount {
		objs := map[string]*api.ServiceAccount{}
		for _, o := range []*api.ServiceAccount{
			newSA("team-a", "c", map[string]string{"app": "web"}),
			newSA("team-a", "a", map[string]string{"app": "db"}),
			newSA("team-a", "b", map[string]string{"app": "web"}),
			newSA("team-ab", "a", map[string]string{"app": "web"}),
			newSA("team-b", "a", map[string]string{"app": "web"}),
		} {
			objs[qname(o)] = mustCreate(t, ctx, s, api.ServiceAccounts, o).(*api.ServiceAccount)
		}
		// One object changed after creation: ADDED must carry its
		// current rv.
		b := objs["team-a/b"]
		b.Annotations = map[string]string{"touched": "yes"}
		mustUpdate(t, ctx, s, api.ServiceAccounts, b, store.UpdateOptions{})
		return objs
	}
	tests := []struct {
		name     string
		ns       string
		selector string
		objName  string
		want     []string
	}{
		{"namespace", "team-a", "", "", []string{"team-a/a", "team-a/b", "team-a/c"}},
		{"all namespaces", "", "", "", []string{"team-a/a", "team-a/b", "team-a/c", "team-ab/a", "team-b/a"}},
		{"selector", "", "app=web", "", []string{"team-a/b", "team-a/c", "team-ab/a", "team-b/a"}},
		{"name", "team-a", "", "b", []string{"team-a/b"}},
		{"empty namespace", "team-c", "", "", nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			s := newStore(t)
			objs := setup(t, ctx, s)
			want := []ev{}
			for _, k := range tt.want {
				want = append(want, evOf(api.Added, objs[k]))
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			opts := store.ListOptions{Name: tt.objName}
			if tt.selector != "" {
				opts.Selector, _ = labels.Parse(tt.selector)
			}
			ch, err := s.Watch(wctx, api.ServiceAccounts, tt.ns, 0, opts)
			if err != nil {
				t.Fatalf("Watch(rv 0) = %v", err)
			}
			if diff := cmp.Diff(want, collect(t, ch, len(want))); diff != "" {
				t.Errorf("Watch(%q, rv 0, %+v) initial events (-want +got):\n%s", tt.ns, opts, diff)
			}
			// Then the changes after the snapshot, starting with the next
			// one that matches.
			ns := tt.ns
			if ns == "" {
				ns = "team-a"
			}
			name := tt.objName
			if name == "" {
				name = "new" + strconv.Itoa(i)
			}
			o := mustCreate(t, ctx, s, api.ServiceAccounts, newSA(ns, name+"-x", map[string]string{"app": "web"}))
			if tt.objName != "" {
				// A watch of one name ignores the new object; change the
				// watched one.
				cur := mustGet(t, ctx, s, api.ServiceAccounts, ns, name).(*api.ServiceAccount)
				cur.Labels = map[string]string{"app": "web", "n": strconv.Itoa(i)}
				o = mustUpdate(t, ctx, s, api.ServiceAccounts, cur, store.UpdateOptions{})
				if e := nextEvent(t, ch); evOf(e.Type, e.Object) != evOf(api.Modified, o) {
					t.Errorf("event after snapshot = %v, want %v", evOf(e.Type, e.Object), evOf(api.Modified, o))
				}
				return
			}
			if e := nextEvent(t, ch); evOf(e.Type, e.Object) != evOf(api.Added, o) {
				t.Errorf("event after snapshot = %v, want %v", evOf(e.Type, e.Object), evOf(api.Added, o))
			}
		})
	}
}

func TestWatchSelectorTransitions(t *testing.T) {
	sel, err := labels.Parse("app=web,tier!=db")
	if err != nil {
		t.Fatal(err)
	}
	web := map[string]string{"app": "web"}
	db := map[string]string{"app": "web", "tier": "db"}
	for _, fromZero := range []bool{false, true} {
		t.Run("fromZero="+strconv.FormatBool(fromZero), func(t *testing.T) {
			ctx := testContext(t)
			s := newStore(t)
			start := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "before", web))
			mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "before-db", db))
			from, initial := rv(t, start), []ev(nil)
			if fromZero {
				from, initial = 0, []ev{evOf(api.Added, start)}
			}
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, api.ServiceAccounts, "team-a", from, store.ListOptions{Selector: sel})
			if err != nil {
				t.Fatalf("Watch = %v", err)
			}
			w := &recorder{t: t, ctx: ctx, s: s}
			want := append([]ev{}, initial...)
			x, y := "x", "y"

			o := w.create("team-a", x, web)
			want = append(want, evOf(api.Added, o))
			w.create("team-a", y, db) // outside: nothing
			o = w.relabel("team-a", y, web)
			want = append(want, evOf(api.Added, o)) // moved in
			o = w.relabel("team-a", x, db)
			want = append(want, evOf(api.Deleted, o))               // moved out
			w.relabel("team-a", x, map[string]string{"app": "api"}) // still outside: nothing
			o = w.relabel("team-a", y, map[string]string{"app": "web", "v": "2"})
			want = append(want, evOf(api.Modified, o)) // stays in
			w.delete("team-a", x)                      // deleted while outside: nothing
			o = w.delete("team-a", y).(*api.ServiceAccount)
			want = append(want, evOf(api.Deleted, o))
			o = w.create("team-a", "sentinel", web)
			want = append(want, evOf(api.Added, o))

			if diff := cmp.Diff(want, collect(t, ch, len(want))); diff != "" {
				t.Errorf("Watch(selector %q) events (-want +got):\n%s", sel, diff)
			}
		})
	}
}

func TestWatchSingleName(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	w := &recorder{t: t, ctx: ctx, s: s}
	start := w.create("team-a", "noise", nil)
	w.want = nil

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx, api.ServiceAccounts, "team-a", rv(t, start), store.ListOptions{Name: "app"})
	if err != nil {
		t.Fatalf("Watch(Name app) = %v", err)
	}
	var want []ev
	keep := func() { want = append(want, w.want[len(w.want)-1]) }
	w.create("team-a", "app", nil)
	keep()
	w.create("team-a", "app2", nil) // name with the same prefix
	w.create("team-b", "app", nil)  // same name, other namespace
	w.create("team-a", "ap", nil)   // a prefix of the name
	w.relabel("team-a", "app2", map[string]string{"x": "1"})
	w.relabel("team-a", "app", map[string]string{"x": "1"})
	keep()
	w.relabel("team-b", "app", map[string]string{"x": "1"})
	w.delete("team-a", "app")
	keep()
	w.delete("team-a", "app2")
	w.create("team-a", "app", map[string]string{"again": "yes"})
	keep()
	if diff := cmp.Diff(want, collect(t, ch, len(want))); diff != "" {
		t.Errorf("Watch(Name app) events (-want +got):\n%s", diff)
	}

	// Cluster-scoped resources too.
	p := mustCreate(t, ctx, s, api.Projects, newProject("one", ""))
	pch, err := s.Watch(wctx, api.Projects, "", rv(t, p), store.ListOptions{Name: "one"})
	if err != nil {
		t.Fatalf("Watch(projects, Name one) = %v", err)
	}
	mustCreate(t, ctx, s, api.Projects, newProject("one-more", ""))
	mustCreate(t, ctx, s, api.Projects, newProject("on", ""))
	gone := mustDelete(t, ctx, s, api.Projects, "", "one")
	if e := nextEvent(t, pch); evOf(e.Type, e.Object) != evOf(api.Deleted, gone) {
		t.Errorf("Watch(projects, Name one) event = %v, want %v", evOf(e.Type, e.Object), evOf(api.Deleted, gone))
	}
}

func TestWatchDeletedObject(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	p := mustCreate(t, ctx, s, api.Projects, newProject("alpha", "Alpha")).(*api.Project)
	p.Status.Phase = api.ProjectTerminating
	mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{Status: true})
	ch, err := s.Watch(ctx, api.Projects, "", rv(t, p), store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch = %v", err)
	}
	gone := mustDelete(t, ctx, s, api.Projects, "", "alpha")
	e := nextEvent(t, ch)
	if e.Type != api.Deleted {
		t.Fatalf("event type = %s, want DELETED", e.Type)
	}
	if diff := cmp.Diff(gone, e.Object); diff != "" {
		t.Errorf("DELETED event object differs from Delete's (-delete +event):\n%s", diff)
	}
	if got := e.Object.(*api.Project); got.Status.Phase != api.ProjectTerminating || got.Spec.DisplayName != "Alpha" {
		t.Errorf("DELETED object = %+v, want the last stored state", got)
	}
}

func TestWatchFutureRevision(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	p := mustCreate(t, ctx, s, api.Projects, newProject("alpha", ""))
	future := rv(t, p) + 1000000
	if _, err := s.Watch(ctx, api.Projects, "", future, store.ListOptions{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Watch(rv %d, in the future) = %v, want ErrInvalid", future, err)
	}
}

func TestWatchSkipsNoopUpdate(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	p := mustCreate(t, ctx, s, api.Projects, newProject("alpha", "Alpha")).(*api.Project)
	ch, err := s.Watch(ctx, api.Projects, "", rv(t, p), store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch = %v", err)
	}
	before := p.ResourceVersion
	mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{})
	same, err := s.GuaranteedUpdate(ctx, api.Projects, "", "alpha", store.UpdateOptions{}, func(api.Object) error { return nil })
	if err != nil {
		t.Fatalf("GuaranteedUpdate(no change) = %v", err)
	}
	if p.ResourceVersion != before || same.GetObjectMeta().ResourceVersion != before {
		t.Errorf("no-op updates: resourceVersion %s and %s, want unchanged %s", p.ResourceVersion, same.GetObjectMeta().ResourceVersion, before)
	}
	p.Spec.Description = "real change"
	mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{})
	if e := nextEvent(t, ch); evOf(e.Type, e.Object) != evOf(api.Modified, p) {
		t.Errorf("first event = %v, want %v (no-op updates send nothing)", evOf(e.Type, e.Object), evOf(api.Modified, p))
	}
}
