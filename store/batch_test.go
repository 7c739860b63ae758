package store_test

import (
	"context"
	"errors"
	"strings"
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

// TestBatchIsFenced: a batch through a fenced view commits only while the
// fence holds, as every other write does: once the election key is gone
// the batch is refused with ErrFenced (saying which key) and writes
// nothing.
func TestBatchIsFenced(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	key := s.Prefix() + "leader/controllers/a"
	put, err := sharedClient.Put(ctx, key, "a")
	if err != nil {
		t.Fatal(err)
	}
	fenced := s.Fenced(key, put.Header.Revision)
	img := func(c byte) *api.Image {
		return &api.Image{ObjectMeta: api.ObjectMeta{Name: "sha256:" + hex64(c), Namespace: "p"}}
	}
	b := fenced.NewBatch()
	_ = b.Create(api.Images, img('1'))
	if _, err := b.Commit(ctx); err != nil {
		t.Fatalf("batch while the fence holds: %v", err)
	}
	if _, err := sharedClient.Delete(ctx, key); err != nil { // the lease expired
		t.Fatal(err)
	}
	b = fenced.NewBatch()
	_ = b.Create(api.Images, img('2'))
	_, err = b.Commit(ctx)
	if !errors.Is(err, store.ErrFenced) || !strings.Contains(err.Error(), key) {
		t.Fatalf("batch after the election key is gone: %v, want ErrFenced naming %s", err, key)
	}
	if _, err := s.Get(ctx, api.Images, "p", "sha256:"+hex64('2')); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a fenced batch wrote its image: %v", err)
	}
	// A batch that would fail a compare anyway is still ErrFenced, so the
	// caller does not retry it.
	b = fenced.NewBatch()
	_ = b.Create(api.Images, img('1'))
	if _, err := b.Commit(ctx); !errors.Is(err, store.ErrFenced) {
		t.Errorf("conflicting batch after the fence went: %v, want ErrFenced", err)
	}
}

// TestBatchRespectsHardQuota: creates in a batch are counted against the
// project's hard quotas as Store.Create counts them: a batch that would
// pass one is refused whole with the quota named, one that fits commits
// and bumps the quota fence (a plain create after it counts its objects),
// and a quota made through another store after this one cached the
// project's policy applies to the next batch.
func TestBatchRespectsHardQuota(t *testing.T) {
	ctx := testContext(t)
	prefix := testPrefix(t)
	s := store.New(sharedClient, store.WithPrefix(prefix))
	admin := store.New(sharedClient, store.WithPrefix(prefix))
	img := func(c byte) *api.Image {
		return &api.Image{ObjectMeta: api.ObjectMeta{Name: "sha256:" + hex64(c), Namespace: "q"}}
	}
	b := s.NewBatch()
	_ = b.Create(api.Images, img('1')) // caches the project's policy: none
	if _, err := b.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, admin, api.ResourceQuotas, quota("q", "objects", map[string]string{"count/images": "3", "count/builds": "1"}, nil))

	b = s.NewBatch()
	for _, c := range []byte{'2', '3', '4'} {
		_ = b.Create(api.Images, img(c))
	}
	_, err := b.Commit(ctx)
	want := "exceeded quota objects: count/images used 1, requested 3, hard 3"
	if !errors.Is(err, store.ErrQuota) || !strings.Contains(err.Error(), want) {
		t.Fatalf("batch of 3 images over count/images: 3 with 1 held: %v, want %q", err, want)
	}
	items, _, _ := s.List(ctx, api.Images, "q", store.ListOptions{})
	if len(items) != 1 {
		t.Errorf("a refused batch left %d images, want 1", len(items))
	}

	b = s.NewBatch()
	_ = b.Create(api.Images, img('2'))
	_ = b.Create(api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: "app-1", Namespace: "q"}})
	_ = b.Create(api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: "app-2", Namespace: "q"}})
	if _, err := b.Commit(ctx); !errors.Is(err, store.ErrQuota) || !strings.Contains(err.Error(), "count/builds used 0, requested 2, hard 1") {
		t.Errorf("batch of 2 builds over count/builds: 1: %v, want the quota", err)
	}

	b = s.NewBatch()
	_ = b.Create(api.Images, img('2'))
	_ = b.Create(api.Images, img('3'))
	_ = b.Create(api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: "app-1", Namespace: "q"}})
	if _, err := b.Commit(ctx); err != nil {
		t.Fatalf("batch up to the quota: %v", err)
	}
	if err := admin.Create(ctx, api.Images, img('4')); !errors.Is(err, store.ErrQuota) {
		t.Errorf("create past the quota after a batch: %v, want ErrQuota", err)
	}
}
