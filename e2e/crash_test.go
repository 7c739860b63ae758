package e2e

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// TestKill9DuringCreates kills the all-in-one with SIGKILL while 200 creates
// are in flight, restarts it, and checks that every create that was
// answered 201 survived.
func TestKill9DuringCreates(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr)
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "crash"}}); err != nil {
		t.Fatal(err)
	}

	const n = 200
	var acked sync.Map
	var nAcked atomic.Int64
	killAfter := int64(n / 3)
	killed := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			name := fmt.Sprintf("sa-%03d", i)
			err := admin.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "crash"}})
			if err == nil {
				acked.Store(name, true)
				if nAcked.Add(1) >= killAfter {
					once.Do(func() {
						_ = p.cmd.Process.Signal(syscall.SIGKILL)
						close(killed)
					})
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	once.Do(func() { // every create finished before the threshold was seen
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		close(killed)
	})
	<-killed
	<-p.done
	got := nAcked.Load()
	if got == 0 {
		t.Fatal("no create was acknowledged before the kill; the test proves nothing")
	}
	t.Logf("%d of %d creates were answered 201 before kill -9", got, n)

	p2 := startServer(t, dir, addr)
	admin2 := p2.admin(t)
	items, _, err := admin2.List(ctx, api.ServiceAccounts, "crash", client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	for _, o := range items {
		present[o.GetObjectMeta().Name] = true
	}
	var lost []string
	acked.Range(func(k, _ any) bool {
		if !present[k.(string)] {
			lost = append(lost, k.(string))
		}
		return true
	})
	if len(lost) > 0 {
		t.Errorf("after kill -9 and restart, %d acknowledged creates are missing: %v", len(lost), lost)
	}
}

// TestSIGTERMGracefulAndRestart checks that SIGTERM stops the server
// cleanly (exit 0, even with a watch open) and that a restart keeps state.
func TestSIGTERMGracefulAndRestart(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr)
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "keep"}}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := admin.Watch(wctx, api.Projects, "", "", client.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("slipway start after SIGTERM: %v (want exit 0)\n%s", err, p.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("slipway start did not stop within 30s of SIGTERM")
	}
	p2 := startServer(t, dir, addr)
	// The token issued before the restart still works: state is kept.
	if _, err := admin.Get(ctx, api.Projects, "", "keep"); err != nil {
		t.Fatalf("after restart, Get(project keep) = %v", err)
	}
	_ = p2
}
