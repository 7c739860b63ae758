package controller

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func newStore(t *testing.T) *store.Store {
	t.Helper()
	dir, err := os.MkdirTemp("", "controller-test-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	c, err := etcd.Client(m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return store.New(c)
}

// calls records reconciles, per key, and signals each.
type calls struct {
	mu sync.Mutex
	n  map[string]int
	ch chan string
}

func (c *calls) add(key string) int {
	c.mu.Lock()
	c.n[key]++
	n := c.n[key]
	c.mu.Unlock()
	c.ch <- key
	return n
}

func (c *calls) next(t *testing.T) string {
	t.Helper()
	select {
	case k := <-c.ch:
		return k
	case <-time.After(30 * time.Second):
		t.Fatal("no reconcile")
		return ""
	}
}

// TestRuntime: objects of a watched informer are reconciled by key; a
// reconcile that asks for RequeueAfter is called again with no event; a
// failure is retried; a terminal error is not, and an event brings its
// key back.
func TestRuntime(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &calls{n: map[string]int{}, ch: make(chan string, 100)}
	c := New("test", ReconcileFunc(func(ctx context.Context, key string) (Result, error) {
		n := rec.add(key)
		switch key {
		case "p/requeue":
			if n == 1 {
				return Result{RequeueAfter: 10 * time.Millisecond}, nil
			}
		case "p/fails":
			if n == 1 {
				return Result{}, errors.New("transient")
			}
		case "p/terminal":
			return Result{}, Terminal(errors.New("bad input"))
		}
		return Result{}, nil
	}))
	c.Watch(store.NewInformer(st, api.ServiceAccounts), nil)
	go c.Run(ctx)
	for _, n := range []string{"requeue", "fails", "terminal"} {
		if err := st.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: n, Namespace: "p"}}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	for seen["p/requeue"] < 2 || seen["p/fails"] < 2 || seen["p/terminal"] < 1 {
		seen[rec.next(t)]++
	}
	// The terminal key left no retry behind: no failure counted, nothing
	// waiting. A transient failure was forgotten once it succeeded.
	terminalFailures, failsFailures, pending := c.q.Failures("p/terminal"), c.q.Failures("p/fails"), c.q.Waiting("p/terminal")
	if terminalFailures != 0 || pending {
		t.Errorf("after a terminal error: %d failures counted, pending %v; want the key dropped", terminalFailures, pending)
	}
	if failsFailures != 0 {
		t.Errorf("after a retried failure succeeded: %d failures still counted", failsFailures)
	}
	// An event brings the terminal key back.
	if _, err := st.GuaranteedUpdate(ctx, api.ServiceAccounts, "p", "terminal", store.UpdateOptions{}, func(o api.Object) error {
		o.GetObjectMeta().Labels = map[string]string{"fixed": "yes"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for rec.next(t) != "p/terminal" {
	}
}

// TestBackoff: the controller's queue waits longer after each failure of
// a key, from BaseDelay doubling up to MaxDelay, and a success forgets its
// failures.
func TestBackoff(t *testing.T) {
	q := New("backoff", nil).q
	var last time.Duration
	for i := 0; i < 12; i++ {
		q.Add("k")
		if k, _ := q.Get(); k != "k" {
			t.Fatalf("got %q", k)
		}
		q.Finish("k", 0, true)
		d := q.RetryDelay("k")
		if i == 0 && d != BaseDelay {
			t.Fatalf("back-off after the first failure = %s, want %s", d, BaseDelay)
		}
		if d <= last && d != MaxDelay || d > MaxDelay {
			t.Fatalf("failure %d: back-off %s after %s; want growing up to %s", i+1, d, last, MaxDelay)
		}
		last = d
	}
	if last != MaxDelay {
		t.Errorf("back-off after 12 failures = %s, want the cap %s", last, MaxDelay)
	}
	// The retry after the last failure is already on its timer; a success
	// now forgets the failures.
	q.Add("k")
	q.Get()
	q.Finish("k", 0, false)
	if n := q.Failures("k"); n != 0 {
		t.Errorf("a success kept %d failures", n)
	}
}
