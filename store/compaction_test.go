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
	"slipway.dev/slipway/store/etcd"
)

// compact compacts the shared etcd at rev. Tests run one at a time and each
// uses only revisions it wrote itself, so this does not disturb the others.
func compact(t *testing.T, ctx context.Context, rev int64) {
	t.Helper()
	if _, err := sharedClient.Compact(ctx, rev); err != nil {
		t.Fatalf("etcd Compact(%d) = %v", rev, err)
	}
}

func TestWatchGoneAfterCompaction(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	p := mustCreate(t, ctx, s, api.Projects, newProject("alpha", "v0")).(*api.Project)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "robot", nil))
	revs := []int64{rv(t, p)}
	for i := 1; i <= 3; i++ {
		p.Spec.DisplayName = "v" + strconv.Itoa(i)
		mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{})
		revs = append(revs, rv(t, p))
	}
	last := revs[len(revs)-1]
	compact(t, ctx, last)

	tests := []struct {
		name    string
		res     *api.Resource
		ns      string
		opts    store.ListOptions
		from    int64
		wantErr error
	}{
		{"creation rv", api.Projects, "", store.ListOptions{}, revs[0], store.ErrGone},
		{"middle rv", api.Projects, "", store.ListOptions{}, revs[1], store.ErrGone},
		{"just before compaction", api.Projects, "", store.ListOptions{}, last - 1, store.ErrGone},
		{"one name", api.Projects, "", store.ListOptions{Name: "alpha"}, revs[0], store.ErrGone},
		{"other resource", api.ServiceAccounts, "team-a", store.ListOptions{}, revs[0], store.ErrGone},
		{"compaction revision itself", api.Projects, "", store.ListOptions{}, last, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			_, err := s.Watch(wctx, tt.res, tt.ns, tt.from, tt.opts)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Watch(rv %d) after Compact(%d) = %v, want %v", tt.from, last, err, tt.wantErr)
			}
		})
	}

	// Relist, then watch from the list's resourceVersion.
	items, meta, err := s.List(ctx, api.Projects, "", store.ListOptions{})
	if err != nil {
		t.Fatalf("List after compaction = %v", err)
	}
	if diff := cmp.Diff([]api.Object{p}, items); diff != "" {
		t.Errorf("List after compaction (-want +got):\n%s", diff)
	}
	listRV, err := store.ParseResourceVersion(meta.ResourceVersion)
	if err != nil || listRV < last {
		t.Fatalf("List resourceVersion = %q, want at least %d", meta.ResourceVersion, last)
	}
	ch, err := s.Watch(ctx, api.Projects, "", listRV, store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch(list rv %d) = %v, want nil", listRV, err)
	}
	p.Spec.DisplayName = "after relist"
	mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{})
	e := nextEvent(t, ch)
	if diff := cmp.Diff(api.Object(p), e.Object); e.Type != api.Modified || diff != "" {
		t.Errorf("event after relist = %s (-want +got):\n%s", e.Type, diff)
	}
}

func TestListContinueCompacted(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for i := range 5 {
		mustCreate(t, ctx, s, api.Projects, newProject("p"+strconv.Itoa(i), ""))
	}
	first, meta, err := s.List(ctx, api.Projects, "", store.ListOptions{Limit: 2})
	if err != nil || meta.Continue == "" {
		t.Fatalf("List(Limit 2) = %v, continue %q, %v; want a continue token", names(first), meta.Continue, err)
	}
	// The token still works before compaction.
	if _, _, err := s.List(ctx, api.Projects, "", store.ListOptions{Limit: 2, Continue: meta.Continue}); err != nil {
		t.Fatalf("List(continue) before compaction = %v", err)
	}
	p := mustCreate(t, ctx, s, api.Projects, newProject("p5", ""))
	compact(t, ctx, rv(t, p))
	_, _, err = s.List(ctx, api.Projects, "", store.ListOptions{Limit: 2, Continue: meta.Continue})
	if !errors.Is(err, store.ErrGone) {
		t.Errorf("List(continue at compacted rv %s) = %v, want ErrGone", meta.ResourceVersion, err)
	}
	// Starting again works.
	pages, _ := listAll(t, s, api.Projects, store.ListOptions{Limit: 2}, nil)
	if diff := cmp.Diff([][]string{{"p0", "p1"}, {"p2", "p3"}, {"p4", "p5"}}, pages); diff != "" {
		t.Errorf("fresh paged List after compaction (-want +got):\n%s", diff)
	}
}

// TestDisconnectedPastCompaction cuts a client off, changes and compacts
// etcd behind its back, and reconnects it: an open watch must end with
// ErrGone, and an informer must relist and tell its handlers what changed.
func TestDisconnectedPastCompaction(t *testing.T) {
	ctx := testContext(t)
	prefix := testPrefix(t)
	direct := store.New(sharedClient, store.WithPrefix(prefix))
	px := newProxy(t, sharedClient.Endpoints()[0])
	c, err := etcd.Client(px.URL())
	if err != nil {
		t.Fatalf("Client(proxy) = %v", err)
	}
	t.Cleanup(func() { c.Close() })
	viaProxy := store.New(c, store.WithPrefix(prefix))

	var last api.Object
	for _, n := range []string{"keep", "change", "remove"} {
		last = mustCreate(t, ctx, direct, api.Projects, newProject(n, n))
	}
	inf, events := startInformer(t, ctx, viaProxy, api.Projects)
	initial := collect(t, events, 3)
	wch, err := viaProxy.Watch(ctx, api.Projects, "", rv(t, last), store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch via proxy = %v", err)
	}
	// Make sure the watch is established and delivering before the cut.
	warm := mustCreate(t, ctx, direct, api.Projects, newProject("warm", ""))
	if e := nextEvent(t, wch); evOf(e.Type, e.Object) != evOf(api.Added, warm) {
		t.Fatalf("watch event = %v, want %v", evOf(e.Type, e.Object), evOf(api.Added, warm))
	}
	if err := inf.WaitFor(ctx, rv(t, warm)); err != nil {
		t.Fatalf("WaitFor(warm) = %v", err)
	}
	initial = append(initial, collect(t, events, 1)...)

	px.cut()
	added := mustCreate(t, ctx, direct, api.Projects, newProject("added", "new"))
	changed := mustGet(t, ctx, direct, api.Projects, "", "change").(*api.Project)
	changed.Spec.DisplayName = "changed"
	mustUpdate(t, ctx, direct, api.Projects, changed, store.UpdateOptions{})
	removed := mustDelete(t, ctx, direct, api.Projects, "", "remove")
	compact(t, ctx, rv(t, removed))
	px.restore()

	// The watch cannot resume past the compaction.
	var gotErr error
	for gotErr == nil {
		e, ok := <-wch
		switch {
		case !ok:
			t.Fatal("watch channel closed without an ERROR event")
		case e.Type == api.Error:
			gotErr = e.Err
		default:
			t.Fatalf("watch event %v after compaction, want ERROR ErrGone", evOf(e.Type, e.Object))
		}
	}
	if !errors.Is(gotErr, store.ErrGone) {
		t.Errorf("watch error after reconnecting past compaction = %v, want ErrGone", gotErr)
	}
	if _, ok := <-wch; ok {
		t.Error("watch channel still open after its ERROR event")
	}

	// The informer relists and catches up.
	if err := inf.WaitFor(ctx, rv(t, removed)); err != nil {
		t.Fatalf("informer WaitFor(%d) = %v", rv(t, removed), err)
	}
	if got := cachedNames(inf.List("")); !cmp.Equal(got, []string{"added", "change", "keep", "warm"}) {
		t.Errorf("informer List after relist = %v, want [added change keep warm]", got)
	}
	for _, want := range []api.Object{added, changed} {
		got, ok := inf.Get("", want.GetObjectMeta().Name)
		if diff := cmp.Diff(want, got); !ok || diff != "" {
			t.Errorf("informer Get(%s) after relist (-want +got):\n%s", want.GetObjectMeta().Name, diff)
		}
	}
	// The relist reports the differences, in no particular order.
	relist := collect(t, events, 3)
	sort.Slice(relist, func(i, j int) bool { return relist[i].Name < relist[j].Name })
	want := []ev{evOf(api.Added, added), evOf(api.Modified, changed), {Type: api.Deleted, Name: "remove", RV: relist[2].RV}}
	if diff := cmp.Diff(want, relist); diff != "" {
		t.Errorf("handler events from the relist (-want +got):\n%s", diff)
	}
	// And then follows changes again, with nothing in between.
	after := mustCreate(t, ctx, direct, api.Projects, newProject("after", ""))
	if e := collect(t, events, 1); e[0] != evOf(api.Added, after) {
		t.Errorf("handler event after relist = %v, want %v", e[0], evOf(api.Added, after))
	}
	sort.Slice(initial, func(i, j int) bool { return initial[i].Name < initial[j].Name })
	if got, want := len(initial), 4; got != want || initial[0].Name != "change" || initial[1].Name != "keep" || initial[2].Name != "remove" || initial[3] != evOf(api.Added, warm) {
		t.Errorf("handler events before the cut = %v, want ADDED change, keep, remove, warm", initial)
	}
}
