package store_test

import (
	"context"
	"errors"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// TestBatchCommitsAllOrNothing: a batch whose one compare fails (an object
// to create exists) writes none of its objects; a batch that commits
// writes all of them at one revision, and a status update over an object
// that changed since it was read fails the batch.
func TestBatchCommitsAllOrNothing(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "taken", Namespace: "p"}}); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	for _, n := range []string{"a", "b", "taken"} {
		if err := b.Create(api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: n, Namespace: "p"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Commit(ctx); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("batch creating an existing object: %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, api.ImageStreams, "p", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed batch wrote part of itself: %v", err)
	}
	got, err := s.GetMany(ctx, api.ImageStreams, [][2]string{{"p", "taken"}})
	if err != nil {
		t.Fatal(err)
	}
	raw := got["p/taken"]
	b = s.NewBatch()
	_ = b.Create(api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "a", Namespace: "p"}})
	is := raw.Object.(*api.ImageStream)
	is.Status.DockerImageRepository = "r/p/taken"
	if err := b.UpdateStatus(api.ImageStreams, is, raw.Data, raw.Rev); err != nil {
		t.Fatal(err)
	}
	rev, err := b.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "taken"} {
		o, err := s.Get(ctx, api.ImageStreams, "p", n)
		if err != nil || o.GetObjectMeta().ResourceVersion != store.RevisionString(rev) {
			t.Errorf("%s after the batch: %v %v, want revision %d", n, o, err, rev)
		}
	}
	// The same update again, from the stale read: refused.
	b = s.NewBatch()
	if err := b.UpdateStatus(api.ImageStreams, is, raw.Data, raw.Rev); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update from a stale read: %v, want ErrConflict", err)
	}
}

// TestBatchRespectsProjectLimits: creates of a capped kind are counted; a
// batch that would pass the cap is refused whole with a LimitError.
func TestBatchRespectsProjectLimits(t *testing.T) {
	s := store.New(sharedClient, store.WithPrefix(testPrefix(t)), store.WithLimits(store.Limits{ByResource: map[string]int64{"images": 3}}))
	ctx := context.Background()
	if err := s.Create(ctx, api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: "sha256:" + hex64('1'), Namespace: "p"}}); err != nil {
		t.Fatal(err)
	}
	b := s.NewBatch()
	for _, c := range []byte{'2', '3', '4'} {
		if err := b.Create(api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: "sha256:" + hex64(c), Namespace: "p"}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := b.Commit(ctx)
	var le *store.LimitError
	if !errors.As(err, &le) {
		t.Fatalf("batch past the cap: %v, want a LimitError", err)
	}
	items, _, _ := s.List(ctx, api.Images, "p", store.ListOptions{})
	if len(items) != 1 {
		t.Errorf("a refused batch left %d images, want 1", len(items))
	}
	b = s.NewBatch()
	for _, c := range []byte{'2', '3'} {
		_ = b.Create(api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: "sha256:" + hex64(c), Namespace: "p"}})
	}
	if _, err := b.Commit(ctx); err != nil {
		t.Fatalf("batch up to the cap: %v", err)
	}
	// The cap holds for a plain create after it.
	if err := s.Create(ctx, api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: "sha256:" + hex64('5'), Namespace: "p"}}); !errors.As(err, &le) {
		t.Errorf("create past the cap after a batch: %v, want a LimitError", err)
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
