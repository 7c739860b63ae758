// Package storetest gives tests a store on a real embedded etcd member,
// one per test binary, with every store under its own key prefix:
//
//	func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		s := storetest.New(t)
//		ctx := storetest.Context(t)
//		...
//	}
package storetest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

var (
	shared *clientv3.Client
	runs   atomic.Int64
)

// Main starts the member, runs the tests, and stops it. It returns the
// exit code for os.Exit.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "storetest-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	member, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer member.Close()
	c, err := etcd.Client(member.ClientURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	shared = c
	return m.Run()
}

// New returns a store under a prefix no other store of this process uses.
// opts come after the prefix (a WithLimits, say).
func New(t testing.TB, opts ...store.Option) *store.Store {
	t.Helper()
	if shared == nil {
		t.Fatal("storetest: call storetest.Main from TestMain")
	}
	return store.New(shared, append([]store.Option{store.WithPrefix(fmt.Sprintf("/t/%d/%s/", runs.Add(1), t.Name()))}, opts...)...)
}

// Context bounds a test so that a hang fails instead of blocking the
// binary. It is not a timing assertion.
func Context(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Eventually polls cond every 20ms until it holds, failing the test with
// what when ctx ends first.
func Eventually(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Project creates project name with the UID range the API server would
// give it (api.UIDRangeBlock(block)), for tests of the controllers and
// nodes, which run pods with the UIDs of their project.
func Project(t testing.TB, ctx context.Context, s *store.Store, name string, block int64) *api.Project {
	t.Helper()
	p := &api.Project{ObjectMeta: api.ObjectMeta{Name: name, Annotations: map[string]string{api.UIDRangeAnnotation: api.UIDRangeBlock(block).String()}}}
	if err := s.Create(ctx, api.Projects, p); err != nil {
		t.Fatalf("creating project %s: %v", name, err)
	}
	return p
}
