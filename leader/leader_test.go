package leader_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/leader"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// freezer is a TCP proxy to etcd that can hold every byte in both
// directions: to the process behind it, etcd stops answering, as to a
// process that SIGSTOP paused; to etcd, the process stops renewing its
// lease. Thawed, what was held goes through.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	thaw   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, thaw: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return f
}

func (f *freezer) serve(c net.Conn) {
	up, err := net.Dial("tcp", f.target)
	if err != nil {
		c.Close()
		return
	}
	pipe := func(dst, src net.Conn) {
		defer dst.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				f.wait()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(up, c)
	go pipe(c, up)
}

func (f *freezer) wait() {
	f.mu.Lock()
	frozen, thaw := f.frozen, f.thaw
	f.mu.Unlock()
	if frozen {
		<-thaw
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen, f.thaw = true, make(chan struct{})
}

func (f *freezer) unfreeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = false
	close(f.thaw)
}

func startEtcd(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "leader-test-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m.ClientURL
}

func newClient(t *testing.T, endpoint string) *clientv3.Client {
	t.Helper()
	c, err := etcd.Client(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// term is what a Lead callback saw.
type term struct {
	st   *store.Store
	ctx  context.Context
	ends chan struct{}
}

func elector(t *testing.T, ctx context.Context, st *store.Store, id string, lease time.Duration) (*leader.Elector, chan term) {
	t.Helper()
	terms := make(chan term, 4)
	el, err := leader.New(leader.Config{Store: st, Identity: id, Lease: lease, Lead: func(ctx context.Context, fenced *store.Store) {
		tm := term{st: fenced, ctx: ctx, ends: make(chan struct{})}
		terms <- tm
		<-ctx.Done()
		close(tm.ends)
	}})
	if err != nil {
		t.Fatal(err)
	}
	go el.Run(ctx)
	return el, terms
}

// TestPausedLeaderWriteIsFenced: leader A is cut off from etcd (as by
// SIGSTOP) with a write in flight; its lease expires and B is elected
// and writes; then A is let go. A's pending write reaches etcd after B
// took over and is refused by the fence, A's controllers' context ends,
// and only B's write is stored.
func TestPausedLeaderWriteIsFenced(t *testing.T) {
	endpoint := startEtcd(t)
	u := endpoint[len("http://"):]
	fz := newFreezer(t, u)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	stA := store.New(newClient(t, "http://"+fz.ln.Addr().String()))
	stB := store.New(newClient(t, endpoint))
	_, termsA := elector(t, ctx, stA, "a", time.Second)
	a := <-termsA
	elB, termsB := elector(t, ctx, stB, "b", time.Second)

	// A writes while leading.
	if err := a.st.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "by-a"}}); err != nil {
		t.Fatalf("the leader's write: %v", err)
	}

	// A is paused with a write on its way.
	fz.freeze()
	pending := make(chan error, 1)
	go func() {
		pending <- a.st.Create(context.Background(), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "stale"}})
	}()

	// A's lease expires; B leads and writes.
	var b term
	select {
	case b = <-termsB:
	case <-time.After(60 * time.Second):
		t.Fatal("B was not elected after A stopped renewing its lease")
	}
	if err := b.st.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "by-b"}}); err != nil {
		t.Fatalf("the new leader's write: %v", err)
	}
	if !elB.Leading() {
		t.Errorf("B leads but says it does not")
	}

	// A resumes.
	fz.unfreeze()
	select {
	case err := <-pending:
		if !errors.Is(err, store.ErrFenced) {
			t.Fatalf("the paused leader's pending write after B took over: got %v, want ErrFenced", err)
		}
		t.Logf("refused: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the paused leader's pending write never returned")
	}
	select {
	case <-a.ends:
	case <-time.After(30 * time.Second):
		t.Fatal("A's controllers still run after A lost the leadership")
	}
	if _, err := stB.Get(ctx, api.Projects, "", "stale"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the paused leader's write landed: %v", err)
	}
	if id, _, err := leader.Current(ctx, stB.Client(), leader.Prefix(stB, "controllers")); err != nil || id != "b" {
		t.Errorf("leader = %q, %v; want b", id, err)
	}
	select {
	case <-b.ends:
		t.Errorf("B's term ended when A came back")
	default:
	}
}

// TestGracefulStopHandsOverAtOnce: a leader whose context ends resigns
// (revokes its lease), so the next is elected without waiting out the
// lease, here a long one.
func TestGracefulStopHandsOverAtOnce(t *testing.T) {
	endpoint := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := store.New(newClient(t, endpoint))
	actx, stopA := context.WithCancel(ctx)
	_, termsA := elector(t, actx, st, "a", time.Hour)
	a := <-termsA
	_, termsB := elector(t, ctx, st, "b", time.Hour)
	select {
	case <-termsB:
		t.Fatal("B was elected while A leads")
	case <-time.After(200 * time.Millisecond):
	}
	stopA()
	<-a.ends
	select {
	case <-termsB:
	case <-time.After(30 * time.Second): // far less than the hour's lease
		t.Fatal("B was not elected after A stopped gracefully")
	}
}

// TestDeadLeaderIsReaped: a leader that died without resigning (kill -9:
// its lease, here an hour, outlives it) is revoked by the next campaign
// when Dead says its process is gone, so the next leads at once.
func TestDeadLeaderIsReaped(t *testing.T) {
	endpoint := startEtcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clientA, err := etcd.Client(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	_, termsA := elector(t, ctx, store.New(clientA), "a", time.Hour)
	<-termsA
	clientA.Close() // dies: no keepalives, no revoke

	st := store.New(newClient(t, endpoint))
	terms := make(chan struct{}, 1)
	el, err := leader.New(leader.Config{Store: st, Identity: "b", Lease: time.Hour, Dead: func(id string) bool { return id == "a" },
		Lead: func(ctx context.Context, _ *store.Store) { terms <- struct{}{}; <-ctx.Done() }})
	if err != nil {
		t.Fatal(err)
	}
	go el.Run(ctx)
	select {
	case <-terms:
	case <-time.After(30 * time.Second): // far less than the dead leader's hour
		t.Fatal("B waits for the lease of a leader known to be dead")
	}
}
