package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// TestFencedWriteAfterLosingTheElectionIsRefused: leader A's lease expires
// without A noticing (its client stops renewing, as a paused process's
// does), B wins the election, and then every write through A's fenced
// view is refused with ErrFenced and changes nothing, while B's lands.
func TestFencedWriteAfterLosingTheElectionIsRefused(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	prefix := s.Prefix() + "leader/controllers/"

	// A campaigns on a client of its own, so that it can stop renewing
	// its lease without revoking it.
	clientA, err := etcd.Client(sharedClient.Endpoints()...)
	if err != nil {
		t.Fatal(err)
	}
	sessA, err := concurrency.NewSession(clientA, concurrency.WithTTL(1))
	if err != nil {
		t.Fatal(err)
	}
	elA := concurrency.NewElection(sessA, prefix)
	if err := elA.Campaign(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	a := s.Fenced(elA.Key(), elA.Rev())
	sa := mustCreate(t, ctx, a, api.ServiceAccounts, newSA("p", "kept", nil)).(*api.ServiceAccount)

	clientA.Close() // A is paused: no more keepalives, no revoke.
	sessB, err := concurrency.NewSession(sharedClient, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer sessB.Close()
	elB := concurrency.NewElection(sessB, prefix)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := elB.Campaign(cctx, "b"); err != nil { // returns once A's lease expired
		t.Fatal(err)
	}

	// A resumes and writes through its fenced view.
	writes := map[string]func() error{
		"create": func() error { return a.Create(ctx, api.ServiceAccounts, newSA("p", "stale", nil)) },
		"update": func() error {
			o := *sa
			o.Labels = map[string]string{"by": "a"}
			return a.Update(ctx, api.ServiceAccounts, &o, store.UpdateOptions{})
		},
		"guaranteed update": func() error {
			_, err := a.GuaranteedUpdate(ctx, api.ServiceAccounts, "p", "kept", store.UpdateOptions{}, func(o api.Object) error {
				o.GetObjectMeta().Labels = map[string]string{"by": "a"}
				return nil
			})
			return err
		},
		"delete":     func() error { _, err := a.Delete(ctx, api.ServiceAccounts, "p", "kept", ""); return err },
		"delete all": func() error { _, err := a.DeleteAll(ctx, api.ServiceAccounts, "p"); return err },
	}
	before := store.FencedWrites()
	for what, write := range writes {
		err := write()
		if !errors.Is(err, store.ErrFenced) {
			t.Errorf("%s through the old leader's fenced store after B won: got %v, want ErrFenced", what, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "no longer the leader") || !strings.Contains(msg, elA.Key()) {
			t.Errorf("%s: error %q does not say the leadership was lost and which key", what, msg)
		}
	}
	// Counted, for slipway_store_fenced_writes_total.
	if n := store.FencedWrites() - before; n != int64(len(writes)) {
		t.Errorf("FencedWrites rose by %d after %d refused writes", n, len(writes))
	}
	got := mustGet(t, ctx, s, api.ServiceAccounts, "p", "kept")
	if got.GetObjectMeta().ResourceVersion != sa.ResourceVersion {
		t.Errorf("kept changed after the old leader's refused writes: resourceVersion %s, want %s", got.GetObjectMeta().ResourceVersion, sa.ResourceVersion)
	}
	if _, err := s.Get(ctx, api.ServiceAccounts, "p", "stale"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the old leader's refused create left an object: %v", err)
	}

	// The new leader writes.
	b := s.Fenced(elB.Key(), elB.Rev())
	if _, err := b.GuaranteedUpdate(ctx, api.ServiceAccounts, "p", "kept", store.UpdateOptions{}, func(o api.Object) error {
		o.GetObjectMeta().Labels = map[string]string{"by": "b"}
		return nil
	}); err != nil {
		t.Fatalf("the new leader's update: %v", err)
	}
	// A fenced conflict is still a conflict while the fence holds.
	stale := *sa
	if err := b.Update(ctx, api.ServiceAccounts, &stale, store.UpdateOptions{}); !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrFenced) {
		t.Errorf("update from a stale resourceVersion under a holding fence: got %v, want ErrConflict", err)
	}
	if err := b.Create(ctx, api.ServiceAccounts, newSA("p", "kept", nil)); !errors.Is(err, store.ErrExists) {
		t.Errorf("create of a taken name under a holding fence: got %v, want ErrExists", err)
	}
}

// TestInformersAreShared: every NewInformer of one resource on a store and
// its fenced views is one cache: an index added through one handle is
// seen through another, a handle that joins late hears every cached
// object, and each handle stops hearing events when its Run ends.
func TestInformersAreShared(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("p", "one", map[string]string{"team": "x"}))

	first := store.NewInformer(s, api.ServiceAccounts)
	first.AddIndex("team", func(o api.Object) []string { return []string{o.GetObjectMeta().Labels["team"]} })
	firstSeen := make(chan string, 10)
	first.AddHandler(func(ev store.Event) { firstSeen <- ev.Type + " " + ev.Object.GetObjectMeta().Name })
	fctx, stopFirst := context.WithCancel(ctx)
	go first.Run(fctx)
	if got := <-firstSeen; got != api.Added+" one" {
		t.Fatalf("first handle heard %q, want ADDED one", got)
	}

	second := store.NewInformer(s.Fenced("/none", 1), api.ServiceAccounts)
	secondSeen := make(chan string, 10)
	second.AddHandler(func(ev store.Event) { secondSeen <- ev.Type + " " + ev.Object.GetObjectMeta().Name })
	go second.Run(ctx)
	if got := <-secondSeen; got != api.Added+" one" {
		t.Fatalf("a handle joining a filled cache heard %q, want ADDED one", got)
	}
	if objs, ok := second.ByIndex("team", "x"); !ok || len(objs) != 1 {
		t.Fatalf("second handle ByIndex(team, x) = %d objects, %v; want the first handle's index with 1", len(objs), ok)
	}

	stopFirst()
	// Wait until the first handle has left: its handler hears nothing
	// more, the second still hears.
	for first.Synced() {
		time.Sleep(10 * time.Millisecond)
	}
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("p", "two", nil))
	if got := <-secondSeen; got != api.Added+" two" {
		t.Fatalf("second handle heard %q, want ADDED two", got)
	}
	select {
	case got := <-firstSeen:
		t.Errorf("a stopped handle still heard %q", got)
	default:
	}
}

// TestSharedInformerRestartsFresh: when the last handle stops, the cache
// is emptied; a handle that starts after an object was deleted meanwhile
// never hears of it (a node agent restarted on the same store kept an
// orphan container for a pod it still saw in the stale cache).
func TestSharedInformerRestartsFresh(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("p", "gone", nil))
	first := store.NewInformer(s, api.ServiceAccounts)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { first.Run(fctx); close(done) }()
	for !first.Synced() {
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	<-done
	mustDelete(t, ctx, s, api.ServiceAccounts, "p", "gone")

	second := store.NewInformer(s, api.ServiceAccounts)
	heard := make(chan string, 10)
	second.AddHandler(func(ev store.Event) { heard <- ev.Type + " " + ev.Object.GetObjectMeta().Name })
	go second.Run(ctx)
	for !second.Synced() {
		if _, ok := second.Get("p", "gone"); ok {
			t.Fatal("a handle started after the last one stopped sees an object deleted meanwhile")
		}
		time.Sleep(time.Millisecond)
	}
	if _, ok := second.Get("p", "gone"); ok {
		t.Fatal("the restarted cache holds an object deleted while it was stopped")
	}
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("p", "new", nil))
	for got := range heard {
		if got == api.Added+" gone" {
			t.Fatalf("the restarted handle heard %q", got)
		}
		if got == api.Added+" new" {
			break
		}
	}
}

// TestRestartedInformerWaitForReturns: WaitFor on a restarted cache
// returns once it has listed again, though no write moved the revision
// past the one it had reached before it stopped (a restarted node agent
// waited for ever).
func TestRestartedInformerWaitForReturns(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("p", "one", nil))
	first := store.NewInformer(s, api.ServiceAccounts)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { first.Run(fctx); close(done) }()
	if err := first.WaitFor(ctx, 0); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	second := store.NewInformer(s, api.ServiceAccounts)
	go second.Run(ctx)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := second.WaitFor(wctx, 0); err != nil {
		t.Fatalf("WaitFor on a restarted cache with no new writes: %v", err)
	}
}
