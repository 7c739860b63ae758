package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// TestClusterSurvivesMemberLoss stops the leader of a three-member cluster
// and checks that writes, reads and an open watch carry on with the other
// two.
func TestClusterSurvivesMemberLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-member etcd cluster")
	}
	members, err := etcd.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatalf("StartCluster(3) = %v", err)
	}
	closed := make([]bool, len(members))
	t.Cleanup(func() {
		for i, m := range members {
			if !closed[i] {
				m.Close()
			}
		}
	})
	var endpoints []string
	for _, m := range members {
		endpoints = append(endpoints, m.ClientURL)
	}
	c, err := etcd.Client(endpoints...)
	if err != nil {
		t.Fatalf("Client(%v) = %v", endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := testContext(t)
	prefix := testPrefix(t)
	s := store.New(c, store.WithPrefix(prefix))

	p0 := mustCreate(t, ctx, s, api.Projects, newProject("p0", "zero"))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rw := resumingWatch(t, wctx, s, api.Projects, rv(t, p0))
	var want []ev
	for _, n := range []string{"p1", "p2"} {
		want = append(want, evOf(api.Added, mustCreate(t, ctx, s, api.Projects, newProject(n, n))))
	}

	// Stop the leader; etcd hands leadership over as it stops.
	leader := -1
	var leaderID uint64
	for i, m := range members {
		st, err := c.Status(ctx, m.ClientURL)
		if err != nil {
			t.Fatalf("Status(%s) = %v", m.ClientURL, err)
		}
		if st.Header.MemberId == st.Leader {
			leader, leaderID = i, st.Leader
		}
	}
	if leader < 0 {
		t.Fatal("no member reports itself as leader")
	}
	members[leader].Close()
	closed[leader] = true
	var alive []string
	for i, m := range members {
		if !closed[i] {
			alive = append(alive, m.ClientURL)
		}
	}
	// Wait (bounded by ctx) until the two survivors agree on a new leader.
	for {
		st0, err0 := c.Status(ctx, alive[0])
		st1, err1 := c.Status(ctx, alive[1])
		if err0 == nil && err1 == nil && st0.Leader != 0 && st0.Leader != leaderID && st0.Leader == st1.Leader {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no new leader after stopping %s: %v %v", members[leader].Name, err0, err1)
		case <-time.After(50 * time.Millisecond):
		}
	}

	p3 := mustCreate(t, ctx, s, api.Projects, newProject("p3", "three"))
	want = append(want, evOf(api.Added, p3))
	if err := s.Create(ctx, api.Projects, newProject("p3", "again")); err == nil {
		t.Errorf("Create(duplicate p3) after member loss = nil, want ErrExists")
	}
	for _, n := range []string{"p0", "p1", "p2", "p3"} {
		mustGet(t, ctx, s, api.Projects, "", n)
	}
	p1, err := s.GuaranteedUpdate(ctx, api.Projects, "", "p1", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.Project).Spec.DisplayName = "one"
		return nil
	})
	if err != nil {
		t.Fatalf("GuaranteedUpdate after member loss = %v", err)
	}
	want = append(want, evOf(api.Modified, p1))
	want = append(want, evOf(api.Deleted, mustDelete(t, ctx, s, api.Projects, "", "p2")))

	// The watch opened before the loss saw everything, in order.
	if diff := cmp.Diff(want, rw.collect(len(want))); diff != "" {
		t.Errorf("watch across member loss (-want +got):\n%s", diff)
	}
	// A new watch works too.
	items, meta, err := s.List(ctx, api.Projects, "", store.ListOptions{})
	if err != nil {
		t.Fatalf("List after member loss = %v", err)
	}
	if diff := cmp.Diff([]string{"p0", "p1", "p3"}, names(items)); diff != "" {
		t.Errorf("List after member loss (-want +got):\n%s", diff)
	}
	from, _ := store.ParseResourceVersion(meta.ResourceVersion)
	ch2, err := s.Watch(wctx, api.Projects, "", from, store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch after member loss = %v", err)
	}
	p4 := mustCreate(t, ctx, s, api.Projects, newProject("p4", "four"))
	if e := nextEvent(t, ch2); evOf(e.Type, e.Object) != evOf(api.Added, p4) {
		t.Errorf("new watch event = %v, want %v", evOf(e.Type, e.Object), evOf(api.Added, p4))
	}
	// A client of the survivors alone sees the same data.
	c2, err := etcd.Client(alive...)
	if err != nil {
		t.Fatalf("Client(%v) = %v", alive, err)
	}
	defer c2.Close()
	got := mustGet(t, ctx, store.New(c2, store.WithPrefix(prefix)), api.Projects, "", "p4")
	if diff := cmp.Diff(api.Object(p4), got); diff != "" {
		t.Errorf("Get via the survivors (-want +got):\n%s", diff)
	}
}

// resumer follows a watch and, when it ends with an error other than
// ErrGone (a member stopping, a leader election), watches again from the
// last resourceVersion it saw, as the store's contract tells clients to.
type resumer struct {
	t       *testing.T
	ctx     context.Context
	s       *store.Store
	r       *api.Resource
	last    int64
	ch      <-chan store.Event
	resumes int
}

func resumingWatch(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource, from int64) *resumer {
	t.Helper()
	w := &resumer{t: t, ctx: ctx, s: s, r: r, last: from}
	w.watch()
	return w
}

func (w *resumer) watch() {
	w.t.Helper()
	for {
		ch, err := w.s.Watch(w.ctx, w.r, "", w.last, store.ListOptions{})
		if err == nil {
			w.ch = ch
			return
		}
		if errors.Is(err, store.ErrGone) || w.resumes > 50 {
			w.t.Fatalf("Watch(rv %d) = %v", w.last, err)
		}
		w.resumes++
		select {
		case <-w.ctx.Done():
			w.t.Fatalf("Watch(rv %d) = %v, and the test ran out of time", w.last, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *resumer) collect(n int) []ev {
	w.t.Helper()
	var out []ev
	for len(out) < n {
		select {
		case e, ok := <-w.ch:
			if !ok {
				w.t.Fatal("watch channel closed without an error event")
			}
			if e.Type == api.Error {
				if errors.Is(e.Err, store.ErrGone) || w.resumes > 50 {
					w.t.Fatalf("watch error = %v", e.Err)
				}
				w.t.Logf("watch ended with %v; resuming from rv %d", e.Err, w.last)
				w.resumes++
				w.watch()
				continue
			}
			out = append(out, evOf(e.Type, e.Object))
			w.last, _ = store.ParseResourceVersion(e.Object.GetObjectMeta().ResourceVersion)
		case <-time.After(30 * time.Second):
			w.t.Fatalf("no watch event after 30s; have %v", out)
		}
	}
	return out
}
