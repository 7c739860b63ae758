package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// One embedded etcd member serves the whole test binary; every test works
// under its own key prefix. Tests do not run in parallel because one of
// them compacts etcd.
var sharedClient *clientv3.Client

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "store-test-etcd-")
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
	sharedClient = c
	return m.Run()
}

// runs numbers the stores made by this process, so that -count=N (which
// reruns tests against the same etcd) never reuses a prefix.
var runs atomic.Int64

// newStore returns a store isolated under a prefix unique to the test.
func newStore(t *testing.T) *store.Store {
	t.Helper()
	return store.New(sharedClient, store.WithPrefix(testPrefix(t)))
}

func testPrefix(t *testing.T) string {
	return fmt.Sprintf("/t/%d/%s/", runs.Add(1), t.Name())
}

// testContext bounds a test so that a hang fails instead of blocking the
// binary; it is not a timing assertion.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newSA(ns, name string, labels map[string]string) *api.ServiceAccount {
	return &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Namespace: ns, Name: name, Labels: labels}}
}

func newProject(name, display string) *api.Project {
	return &api.Project{ObjectMeta: api.ObjectMeta{Name: name}, Spec: api.ProjectSpec{DisplayName: display}}
}

func mustCreate(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource, o api.Object) api.Object {
	t.Helper()
	if err := s.Create(ctx, r, o); err != nil {
		t.Fatalf("Create(%s %q) = %v, want nil", r.Kind, o.GetObjectMeta().Name, err)
	}
	return o
}

func mustUpdate(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource, o api.Object, opts store.UpdateOptions) api.Object {
	t.Helper()
	if err := s.Update(ctx, r, o, opts); err != nil {
		t.Fatalf("Update(%s %q) = %v, want nil", r.Kind, o.GetObjectMeta().Name, err)
	}
	return o
}

func mustDelete(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource, ns, name string) api.Object {
	t.Helper()
	o, err := s.Delete(ctx, r, ns, name, "")
	if err != nil {
		t.Fatalf("Delete(%s %q) = %v, want nil", r.Kind, name, err)
	}
	return o
}

func mustGet(t *testing.T, ctx context.Context, s *store.Store, r *api.Resource, ns, name string) api.Object {
	t.Helper()
	o, err := s.Get(ctx, r, ns, name)
	if err != nil {
		t.Fatalf("Get(%s %q) = %v, want nil", r.Kind, name, err)
	}
	return o
}

// rv parses an object's resourceVersion.
func rv(t *testing.T, o api.Object) int64 {
	t.Helper()
	n, err := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	if err != nil || n <= 0 {
		t.Fatalf("resourceVersion of %q = %q, want a positive revision", o.GetObjectMeta().Name, o.GetObjectMeta().ResourceVersion)
	}
	return n
}

// names lists "ns/name" (or "name" for cluster-scoped objects).
func names(objs []api.Object) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, qname(o))
	}
	return out
}

func qname(o api.Object) string {
	m := o.GetObjectMeta()
	if m.Namespace == "" {
		return m.Name
	}
	return m.Namespace + "/" + m.Name
}

// ev is the comparable summary of one watch event.
type ev struct {
	Type string
	Name string
	RV   string
}

func (e ev) String() string { return e.Type + " " + e.Name + "@" + e.RV }

func evOf(typ string, o api.Object) ev {
	return ev{Type: typ, Name: qname(o), RV: o.GetObjectMeta().ResourceVersion}
}

// nextEvent reads one event, failing on a closed channel, an error event or
// a hang.
func nextEvent(t *testing.T, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want another event")
		}
		if e.Type == api.Error {
			t.Fatalf("watch event = ERROR %v, want a change", e.Err)
		}
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no watch event after 30s")
	}
	panic("unreachable")
}

// collect reads exactly n events.
func collect(t *testing.T, ch <-chan store.Event, n int) []ev {
	t.Helper()
	out := make([]ev, 0, n)
	for range n {
		e := nextEvent(t, ch)
		out = append(out, evOf(e.Type, e.Object))
	}
	return out
}

// drain waits until a watch channel is closed after its context ended.
func drain(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatal("watch channel not closed 30s after its context ended")
		}
	}
}
