package store_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// M5: one project cannot hold more objects of a kind than the platform
// allows; the refusal names the limit, the project and what to do, and
// other projects and kinds are not affected.
func TestLimitsCapObjectsPerProjectAndKind(t *testing.T) {
	ctx := testContext(t)
	s := store.New(sharedClient, store.WithPrefix(testPrefix(t)), store.WithLimits(store.Limits{
		PerKind: 3, ByResource: map[string]int64{"roles": 0}, Hint: "ask a cluster admin to raise --project-object-limit",
	}))
	for i := range 3 {
		mustCreate(t, ctx, s, api.ServiceAccounts, newSA("mal", fmt.Sprintf("sa%d", i), nil))
	}
	err := s.Create(ctx, api.ServiceAccounts, newSA("mal", "sa3", nil))
	var le *store.LimitError
	if !errors.Is(err, store.ErrLimit) || !errors.As(err, &le) {
		t.Fatalf("Create(4th service account) = %v, want ErrLimit", err)
	}
	for _, want := range []string{`project "mal"`, "3 serviceaccounts", "delete those it no longer needs", "--project-object-limit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Create(4th) error %q does not say %q", err, want)
		}
	}
	if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden {
		t.Errorf("Create(4th): status %+v, want 403", st)
	}
	if _, err := s.Get(ctx, api.ServiceAccounts, "mal", "sa3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(refused object) = %v, want ErrNotFound: a refusal changes nothing", err)
	}
	// A name that exists is ErrExists, not the limit.
	if err := s.Create(ctx, api.ServiceAccounts, newSA("mal", "sa0", nil)); !errors.Is(err, store.ErrExists) {
		t.Errorf("Create(existing name at the cap) = %v, want ErrExists", err)
	}
	if err := s.CheckCreate(ctx, api.ServiceAccounts, "mal", "sa0"); err != nil {
		t.Errorf("CheckCreate(existing name) = %v, want nil", err)
	}
	if err := s.CheckCreate(ctx, api.ServiceAccounts, "mal", "new"); !errors.Is(err, store.ErrLimit) {
		t.Errorf("CheckCreate(new name at the cap) = %v, want ErrLimit", err)
	}
	// Other projects, kinds without a cap, and cluster-scoped kinds go on.
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("other", "sa0", nil))
	for i := range 5 {
		mustCreate(t, ctx, s, api.Roles, &api.Role{ObjectMeta: api.ObjectMeta{Namespace: "mal", Name: fmt.Sprintf("r%d", i)}})
		mustCreate(t, ctx, s, api.Projects, newProject(fmt.Sprintf("p%d", i), ""))
	}
	// Deleting makes room.
	if _, err := s.Delete(ctx, api.ServiceAccounts, "mal", "sa1", ""); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("mal", "sa3", nil))

	// DeleteAll takes the fence key with the objects.
	if n, err := s.DeleteAll(ctx, api.ServiceAccounts, "mal"); err != nil || n != 3 {
		t.Fatalf("DeleteAll = %d, %v; want 3, nil", n, err)
	}
	resp, err := sharedClient.Get(ctx, s.Prefix()+"createfence/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, strings.TrimPrefix(string(kv.Key), s.Prefix()))
	}
	if want := []string{"createfence/serviceaccounts/other"}; fmt.Sprint(keys) != fmt.Sprint(want) {
		t.Errorf("fence keys after DeleteAll = %v, want %v", keys, want)
	}
}

// Concurrent creates in one project near the cap never overshoot it: each
// create commits only if no other create near the cap committed since its
// count.
func TestLimitsHoldUnderConcurrentCreates(t *testing.T) {
	ctx := testContext(t)
	s := store.New(sharedClient, store.WithPrefix(testPrefix(t)), store.WithLimits(store.Limits{PerKind: 5}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	created, refused := 0, 0
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Create(ctx, api.ServiceAccounts, newSA("race", fmt.Sprintf("sa%d", i), nil))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case errors.Is(err, store.ErrLimit):
				refused++
			default:
				t.Errorf("Create(sa%d) = %v", i, err)
			}
		}()
	}
	wg.Wait()
	objs, _, err := s.List(ctx, api.ServiceAccounts, "race", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created != 5 || refused != 19 || len(objs) != 5 {
		t.Errorf("24 concurrent creates under a cap of 5: created %d, refused %d, stored %d; want 5, 19, 5", created, refused, len(objs))
	}
}

// Far below the cap, creates commit as plain creates: they do not touch
// the fence, so concurrent creates of one kind in one project do not
// retry each other. Within the margin they take the fence.
func TestLimitsFenceOnlyNearTheCap(t *testing.T) {
	ctx := testContext(t)
	prefix := testPrefix(t)
	s := store.New(sharedClient, store.WithPrefix(prefix), store.WithLimits(store.Limits{PerKind: 1000}))
	fenced := func() bool {
		resp, err := sharedClient.Get(ctx, s.Prefix()+"createfence/serviceaccounts/far", clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count > 0
	}
	for i := range 10 {
		if err := s.Create(ctx, api.ServiceAccounts, newSA("far", fmt.Sprintf("sa%d", i), nil)); err != nil {
			t.Fatal(err)
		}
	}
	if fenced() {
		t.Errorf("10 creates under a cap of 1000 wrote the fence; want plain creates far from the cap")
	}
	near := store.New(sharedClient, store.WithPrefix(prefix), store.WithLimits(store.Limits{PerKind: 20}))
	if err := near.Create(ctx, api.ServiceAccounts, newSA("far", "sa-near", nil)); err != nil {
		t.Fatal(err)
	}
	if !fenced() {
		t.Errorf("a create 11 below a cap of 20 did not take the fence")
	}
}

// Far from the cap a store does not count before each create: it checks,
// in the create's transaction, a bound read with its last count. Two
// stores on one etcd (two API servers) creating in turn, and a project
// whose objects are deleted after much churn and then filled again,
// never get past the cap: the bound counts every store's creates and
// dies with the objects.
func TestLimitsCountBoundHoldsAcrossStores(t *testing.T) {
	ctx := testContext(t)
	prefix := testPrefix(t)
	const limit = 74 // the fence margin (64) plus 10
	a := store.New(sharedClient, store.WithPrefix(prefix), store.WithLimits(store.Limits{PerKind: limit}))
	b := store.New(sharedClient, store.WithPrefix(prefix), store.WithLimits(store.Limits{PerKind: limit}))
	fill := func(what, ns string, n int) (created int) {
		t.Helper()
		for i := range n {
			s := a
			if i%3 == 2 {
				s = b
			}
			err := s.Create(ctx, api.ServiceAccounts, newSA(ns, fmt.Sprintf("%s-%d", what, i), nil))
			switch {
			case err == nil:
				created++
			case !errors.Is(err, store.ErrLimit):
				t.Fatalf("%s: Create = %v", what, err)
			}
		}
		return created
	}
	if got := fill("turns", "two", 100); got != limit {
		t.Errorf("two stores creating in turn under a cap of %d created %d", limit, got)
	}

	// Churn: many creates and deletes leave the count low and the
	// creates counter high; a bound read then must not outlive the
	// objects' deletion.
	for i := range 200 {
		name := fmt.Sprintf("churn-%d", i)
		mustCreate(t, ctx, b, api.ServiceAccounts, newSA("churn", name, nil))
		if _, err := b.Delete(ctx, api.ServiceAccounts, "churn", name, ""); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, ctx, a, api.ServiceAccounts, newSA("churn", "first", nil))
	mustCreate(t, ctx, a, api.ServiceAccounts, newSA("churn", "second", nil))
	if _, err := b.DeleteAll(ctx, api.ServiceAccounts, "churn"); err != nil {
		t.Fatal(err)
	}
	if got := fill("after", "churn", 100); got != limit {
		t.Errorf("after churn and DeleteAll, creates under a cap of %d created %d", limit, got)
	}
}

// CheckCreate answers from a bound far from the cap and counts near it:
// creates by another store (another API server or registry) are seen,
// and a project at its cap is refused at once, however the cap was
// reached.
func TestCheckCreateSeesOtherStoresCreates(t *testing.T) {
	ctx := testContext(t)
	prefix := testPrefix(t)
	const limit = 5
	a := store.New(sharedClient, store.WithPrefix(prefix), store.WithLimits(store.Limits{PerKind: limit}))
	b := store.New(sharedClient, store.WithPrefix(prefix), store.WithLimits(store.Limits{PerKind: limit}))
	for i := range limit {
		// a checks before each of b's creates, so its bound is always
		// one create behind.
		if err := a.CheckCreate(ctx, api.ServiceAccounts, "p", fmt.Sprintf("sa%d", i)); err != nil {
			t.Fatalf("CheckCreate with %d of %d: %v", i, limit, err)
		}
		mustCreate(t, ctx, b, api.ServiceAccounts, newSA("p", fmt.Sprintf("sa%d", i), nil))
	}
	if err := a.CheckCreate(ctx, api.ServiceAccounts, "p", "one-more"); !errors.Is(err, store.ErrLimit) {
		t.Errorf("CheckCreate at the cap, reached by another store's creates = %v, want ErrLimit", err)
	}
	if err := a.CheckCreate(ctx, api.ServiceAccounts, "p", "sa0"); err != nil {
		t.Errorf("CheckCreate(existing name at the cap) = %v, want nil", err)
	}
	// Deleting makes room, and the next check sees it.
	if _, err := b.Delete(ctx, api.ServiceAccounts, "p", "sa0", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.CheckCreate(ctx, api.ServiceAccounts, "p", "one-more"); err != nil {
		t.Errorf("CheckCreate after a delete = %v, want nil", err)
	}
	// A project deleted and made again: the old bound does not count.
	if _, err := b.DeleteAll(ctx, api.ServiceAccounts, "p"); err != nil {
		t.Fatal(err)
	}
	for i := range limit {
		mustCreate(t, ctx, b, api.ServiceAccounts, newSA("p", fmt.Sprintf("again%d", i), nil))
	}
	if err := a.CheckCreate(ctx, api.ServiceAccounts, "p", "one-more"); !errors.Is(err, store.ErrLimit) {
		t.Errorf("CheckCreate at the cap after DeleteAll and refilling = %v, want ErrLimit", err)
	}
}
