package store_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
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
