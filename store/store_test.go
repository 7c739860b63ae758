package store_test

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

func TestCreate(t *testing.T) {
	tests := []struct {
		name string
		res  *api.Resource
		obj  func() api.Object
	}{
		{"namespaced", api.ServiceAccounts, func() api.Object { return newSA("team-a", "robot", map[string]string{"app": "web"}) }},
		{"cluster-scoped", api.Projects, func() api.Object { return newProject("alpha", "Alpha") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			s := newStore(t)
			before := time.Now().Add(-time.Second)
			obj := tt.obj()
			// Values a client might send; Create must replace them.
			obj.GetObjectMeta().UID = "client-chosen"
			obj.GetObjectMeta().ResourceVersion = "12345"
			obj.GetObjectMeta().Generation = 7
			mustCreate(t, ctx, s, tt.res, obj)

			m := obj.GetObjectMeta()
			if _, err := uuid.Parse(m.UID); err != nil || m.UID == "client-chosen" {
				t.Errorf("Create: uid = %q, want a fresh UUID", m.UID)
			}
			if m.Generation != 1 {
				t.Errorf("Create: generation = %d, want 1", m.Generation)
			}
			if m.CreationTimestamp == nil || m.CreationTimestamp.Before(before) || m.CreationTimestamp.After(time.Now().Add(time.Second)) {
				t.Errorf("Create: creationTimestamp = %v, want about now", m.CreationTimestamp)
			}
			if got := rv(t, obj); got == 12345 {
				t.Errorf("Create: resourceVersion = %d, want the etcd revision", got)
			}
			if got, want := *obj.GetTypeMeta(), (api.TypeMeta{APIVersion: api.APIVersion, Kind: tt.res.Kind}); got != want {
				t.Errorf("Create: typeMeta = %+v, want %+v", got, want)
			}

			got := mustGet(t, ctx, s, tt.res, m.Namespace, m.Name)
			if diff := cmp.Diff(obj, got); diff != "" {
				t.Errorf("Get after Create differs from created object (-created +got):\n%s", diff)
			}
			kv, err := s.Client().Get(ctx, s.Key(tt.res, m.Namespace, m.Name))
			if err != nil || len(kv.Kvs) != 1 {
				t.Fatalf("etcd Get(%s) = %v, %v; want one key", s.Key(tt.res, m.Namespace, m.Name), kv, err)
			}
			if got, want := strconv.FormatInt(kv.Kvs[0].ModRevision, 10), m.ResourceVersion; got != want {
				t.Errorf("etcd ModRevision = %s, want resourceVersion %s", got, want)
			}
			if strings.Contains(string(kv.Kvs[0].Value), `"resourceVersion"`) {
				t.Errorf("stored value %s contains resourceVersion; it should be derived from the revision", kv.Kvs[0].Value)
			}

			dup := tt.obj()
			err = s.Create(ctx, tt.res, dup)
			if !errors.Is(err, store.ErrExists) {
				t.Errorf("Create(duplicate) = %v, want ErrExists", err)
			}
			again := mustGet(t, ctx, s, tt.res, m.Namespace, m.Name)
			if diff := cmp.Diff(obj, again); diff != "" {
				t.Errorf("a failed duplicate Create changed the object (-before +after):\n%s", diff)
			}
		})
	}
}

func TestGetNotFound(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "robot", nil))
	tests := []struct {
		desc     string
		res      *api.Resource
		ns, name string
	}{
		{"other name", api.ServiceAccounts, "team-a", "nobody"},
		{"same name in another namespace", api.ServiceAccounts, "team-b", "robot"},
		{"other resource", api.Projects, "", "robot"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			o, err := s.Get(ctx, tt.res, tt.ns, tt.name)
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Get(%s %s/%s) = %v, %v; want ErrNotFound", tt.res.Kind, tt.ns, tt.name, o, err)
			}
		})
	}
}

func TestUpdateCompareAndSwap(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	created := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "robot", nil)).(*api.ServiceAccount)
	stale := created.ResourceVersion

	first := *created
	first.Labels = map[string]string{"writer": "first"}
	mustUpdate(t, ctx, s, api.ServiceAccounts, &first, store.UpdateOptions{})
	if rv(t, &first) <= rv(t, created) {
		t.Errorf("Update: resourceVersion = %s, want greater than %s", first.ResourceVersion, stale)
	}

	second := *created
	second.Labels = map[string]string{"writer": "second"}
	second.ResourceVersion = stale
	err := s.Update(ctx, api.ServiceAccounts, &second, store.UpdateOptions{})
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Update(stale resourceVersion %s) = %v, want ErrConflict", stale, err)
	}
	if got := mustGet(t, ctx, s, api.ServiceAccounts, "team-a", "robot"); !cmp.Equal(got.GetObjectMeta().Labels, first.Labels) || got.GetObjectMeta().ResourceVersion != first.ResourceVersion {
		t.Errorf("after a conflicting Update, Get = labels %v rv %s, want labels %v rv %s", got.GetObjectMeta().Labels, got.GetObjectMeta().ResourceVersion, first.Labels, first.ResourceVersion)
	}

	blind := *created
	blind.Labels = map[string]string{"writer": "blind"}
	blind.ResourceVersion = ""
	mustUpdate(t, ctx, s, api.ServiceAccounts, &blind, store.UpdateOptions{})
	got := mustGet(t, ctx, s, api.ServiceAccounts, "team-a", "robot")
	if diff := cmp.Diff(got, api.Object(&blind)); diff != "" {
		t.Errorf("Update without resourceVersion: Get differs from the updated object (-get +updated):\n%s", diff)
	}
	if got, want := got.GetObjectMeta().Labels["writer"], "blind"; got != want {
		t.Errorf("Update without resourceVersion: label writer = %q, want %q", got, want)
	}
	if rv(t, got) <= rv(t, &first) {
		t.Errorf("Update without resourceVersion: rv = %d, want > %d", rv(t, got), rv(t, &first))
	}

	// The current resourceVersion is accepted.
	cur := got.(*api.ServiceAccount)
	cur.Annotations = map[string]string{"note": "cas"}
	mustUpdate(t, ctx, s, api.ServiceAccounts, cur, store.UpdateOptions{})

	missing := newSA("team-a", "ghost", nil)
	if err := s.Update(ctx, api.ServiceAccounts, missing, store.UpdateOptions{}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update(missing object) = %v, want ErrNotFound", err)
	}
	if _, err := s.GuaranteedUpdate(ctx, api.ServiceAccounts, "team-a", "ghost", store.UpdateOptions{}, func(api.Object) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GuaranteedUpdate(missing object) = %v, want ErrNotFound", err)
	}
	boom := errors.New("boom")
	if _, err := s.GuaranteedUpdate(ctx, api.ServiceAccounts, "team-a", "robot", store.UpdateOptions{}, func(api.Object) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("GuaranteedUpdate(fn fails) = %v, want the fn's error", err)
	}
}

// TestUpdateSemantics covers generation, immutable metadata and the status
// split of a resource with HasStatus.
func TestUpdateSemantics(t *testing.T) {
	created := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	tests := []struct {
		name string
		opts store.UpdateOptions
		noRV bool
		// noop: nothing stored changes, so there is no new revision.
		noop   bool
		mutate func(p *api.Project)
		// want changes the original (as created, with status Active) into
		// what must be stored.
		want func(p *api.Project)
	}{
		{
			name:   "spec change bumps generation",
			mutate: func(p *api.Project) { p.Spec.Description = "new" },
			want:   func(p *api.Project) { p.Spec.Description = "new"; p.Generation = 2 },
		},
		{
			name:   "spec field cleared bumps generation",
			mutate: func(p *api.Project) { p.Spec.DisplayName = "" },
			want:   func(p *api.Project) { p.Spec.DisplayName = ""; p.Generation = 2 },
		},
		{
			name:   "label change keeps generation",
			mutate: func(p *api.Project) { p.Labels = map[string]string{"tier": "gold"} },
			want:   func(p *api.Project) { p.Labels = map[string]string{"tier": "gold"} },
		},
		{
			name:   "no-op keeps generation and revision",
			noop:   true,
			mutate: func(p *api.Project) {},
			want:   func(p *api.Project) {},
		},
		{
			name:   "status alone in a main update is a no-op",
			noop:   true,
			mutate: func(p *api.Project) { p.Status.Phase = api.ProjectTerminating },
			want:   func(p *api.Project) {},
		},
		{
			name:   "spec alone in a status update is a no-op",
			opts:   store.UpdateOptions{Status: true},
			noop:   true,
			mutate: func(p *api.Project) { p.Spec.DisplayName = "ignored" },
			want:   func(p *api.Project) {},
		},
		{
			name:   "status in a main update is ignored",
			mutate: func(p *api.Project) { p.Status.Phase = api.ProjectTerminating; p.Spec.Public = true },
			want:   func(p *api.Project) { p.Spec.Public = true; p.Generation = 2 },
		},
		{
			name: "immutable metadata is kept",
			noop: true,
			mutate: func(p *api.Project) {
				p.UID = "forged"
				p.CreationTimestamp = &created
				p.Generation = 42
			},
			want: func(p *api.Project) {},
		},
		{
			name:   "update without resourceVersion",
			noRV:   true,
			mutate: func(p *api.Project) { p.Spec.DisplayName = "blind" },
			want:   func(p *api.Project) { p.Spec.DisplayName = "blind"; p.Generation = 2 },
		},
		{
			name: "status update changes only status",
			opts: store.UpdateOptions{Status: true},
			mutate: func(p *api.Project) {
				p.Status.Phase = api.ProjectTerminating
				p.Spec.DisplayName = "ignored"
				p.Spec.Public = true
			},
			want: func(p *api.Project) { p.Status.Phase = api.ProjectTerminating },
		},
		{
			name: "update with status writes both",
			opts: store.UpdateOptions{WithStatus: true},
			mutate: func(p *api.Project) {
				p.Status.Phase = api.ProjectTerminating
				p.Spec.Public = true
			},
			want: func(p *api.Project) { p.Status.Phase = api.ProjectTerminating; p.Spec.Public = true; p.Generation = 2 },
		},
		{
			name:   "status update wins over with status",
			opts:   store.UpdateOptions{Status: true, WithStatus: true},
			mutate: func(p *api.Project) { p.Status.Phase = api.ProjectTerminating; p.Spec.Public = true },
			want:   func(p *api.Project) { p.Status.Phase = api.ProjectTerminating },
		},
		{
			name: "status update ignores metadata",
			opts: store.UpdateOptions{Status: true},
			mutate: func(p *api.Project) {
				p.Status.Phase = api.ProjectTerminating
				p.Labels = map[string]string{"ignored": "yes"}
				p.Annotations = map[string]string{"ignored": "yes"}
			},
			want: func(p *api.Project) { p.Status.Phase = api.ProjectTerminating },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			s := newStore(t)
			p := mustCreate(t, ctx, s, api.Projects, newProject("alpha", "Alpha")).(*api.Project)
			p.Status.Phase = api.ProjectActive
			p.Spec.DisplayName = "not written by a status update"
			mustUpdate(t, ctx, s, api.Projects, p, store.UpdateOptions{Status: true})
			orig := mustGet(t, ctx, s, api.Projects, "", "alpha").(*api.Project)
			if orig.Status.Phase != api.ProjectActive || orig.Spec.DisplayName != "Alpha" || orig.Generation != 1 {
				t.Fatalf("after status update: phase %q displayName %q generation %d, want %q %q 1", orig.Status.Phase, orig.Spec.DisplayName, orig.Generation, api.ProjectActive, "Alpha")
			}

			obj := mustGet(t, ctx, s, api.Projects, "", "alpha").(*api.Project)
			tt.mutate(obj)
			if tt.noRV {
				obj.ResourceVersion = ""
			}
			mustUpdate(t, ctx, s, api.Projects, obj, tt.opts)

			got := mustGet(t, ctx, s, api.Projects, "", "alpha").(*api.Project)
			copied := *orig
			want := &copied
			tt.want(want)
			want.ResourceVersion = got.ResourceVersion
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Update(%+v): stored object (-want +got):\n%s", tt.opts, diff)
			}
			switch {
			case tt.noop && rv(t, got) != rv(t, orig):
				t.Errorf("Update that changes nothing: resourceVersion = %d, want unchanged %d", rv(t, got), rv(t, orig))
			case !tt.noop && rv(t, got) <= rv(t, orig):
				t.Errorf("Update: resourceVersion = %d, want > %d", rv(t, got), rv(t, orig))
			}
			if got.ResourceVersion != obj.ResourceVersion {
				t.Errorf("Update: obj.resourceVersion = %s, want the stored %s", obj.ResourceVersion, got.ResourceVersion)
			}
		})
	}
}

// TestUpdateRefreshesObject checks the documented promise that "obj is
// refreshed with what was stored".
func TestUpdateRefreshesObject(t *testing.T) {
	tests := []struct {
		name       string
		opts       store.UpdateOptions
		regression bool // a case that once failed; kept as a regression test
		mutate     func(p *api.Project)
	}{
		{"status update with spec change", store.UpdateOptions{Status: true}, false, func(p *api.Project) {
			p.Status.Phase = api.ProjectTerminating
			p.Spec.DisplayName = "ignored"
		}},
		{"main update with status change", store.UpdateOptions{}, true, func(p *api.Project) {
			p.Status.Phase = api.ProjectTerminating
			p.Spec.DisplayName = "kept"
		}},
		{"status update with label change", store.UpdateOptions{Status: true}, true, func(p *api.Project) {
			p.Status.Phase = api.ProjectTerminating
			p.Labels = map[string]string{"ignored": "yes"}
		}},
		{"main update that must keep an empty stored status", store.UpdateOptions{}, true, func(p *api.Project) {
			p.Status.Phase = api.ProjectTerminating
		}},
		{"status update with a field the stored spec omits", store.UpdateOptions{Status: true}, true, func(p *api.Project) {
			p.Status.Phase = api.ProjectTerminating
			p.Spec.Description = "ignored"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			s := newStore(t)
			mustCreate(t, ctx, s, api.Projects, newProject("alpha", "Alpha"))
			obj := mustGet(t, ctx, s, api.Projects, "", "alpha").(*api.Project)
			tt.mutate(obj)
			mustUpdate(t, ctx, s, api.Projects, obj, tt.opts)
			got := mustGet(t, ctx, s, api.Projects, "", "alpha")
			if diff := cmp.Diff(got, api.Object(obj)); diff != "" {
				t.Errorf("Update(%+v) left obj different from what was stored (-stored +obj):\n%s", tt.opts, diff)
			}
		})
	}
}

func TestUpdateGenerationWithoutSpec(t *testing.T) {
	// A ServiceAccount has no spec: metadata changes never bump generation.
	ctx := testContext(t)
	s := newStore(t)
	sa := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "robot", nil)).(*api.ServiceAccount)
	for i := range 3 {
		sa.Labels = map[string]string{"n": strconv.Itoa(i)}
		mustUpdate(t, ctx, s, api.ServiceAccounts, sa, store.UpdateOptions{})
	}
	got := mustGet(t, ctx, s, api.ServiceAccounts, "team-a", "robot")
	if got.GetObjectMeta().Generation != 1 || got.GetObjectMeta().Labels["n"] != "2" {
		t.Errorf("after 3 label updates: generation %d labels %v, want 1 map[n:2]", got.GetObjectMeta().Generation, got.GetObjectMeta().Labels)
	}
}

func TestDelete(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	sa := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "robot", map[string]string{"app": "web"})).(*api.ServiceAccount)
	stale := sa.ResourceVersion
	sa.Labels["app"] = "api"
	mustUpdate(t, ctx, s, api.ServiceAccounts, sa, store.UpdateOptions{})

	if _, err := s.Delete(ctx, api.ServiceAccounts, "team-a", "robot", stale); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Delete(stale precondition) = %v, want ErrConflict", err)
	}
	mustGet(t, ctx, s, api.ServiceAccounts, "team-a", "robot")

	gone, err := s.Delete(ctx, api.ServiceAccounts, "team-a", "robot", sa.ResourceVersion)
	if err != nil {
		t.Fatalf("Delete(current precondition) = %v, want nil", err)
	}
	if rv(t, gone) <= rv(t, sa) {
		t.Errorf("Delete: resourceVersion = %d, want the deletion revision, after %d", rv(t, gone), rv(t, sa))
	}
	want := *sa
	want.ResourceVersion = gone.GetObjectMeta().ResourceVersion
	if diff := cmp.Diff(api.Object(&want), gone); diff != "" {
		t.Errorf("Delete returned (-want +got):\n%s", diff)
	}
	if _, err := s.Get(ctx, api.ServiceAccounts, "team-a", "robot"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.Delete(ctx, api.ServiceAccounts, "team-a", "robot", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete twice = %v, want ErrNotFound", err)
	}
	// The name can be reused, with a new uid.
	again := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "robot", nil))
	if again.GetObjectMeta().UID == sa.UID {
		t.Errorf("re-created object uid = %s, want a new uid", sa.UID)
	}
}

func TestDeleteAll(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for _, ns := range []string{"team-a", "team-ab", "team-b"} {
		for _, n := range []string{"x", "y", "z"} {
			mustCreate(t, ctx, s, api.ServiceAccounts, newSA(ns, n, nil))
		}
	}
	n, err := s.DeleteAll(ctx, api.ServiceAccounts, "team-a")
	if err != nil || n != 3 {
		t.Fatalf("DeleteAll(team-a) = %d, %v; want 3, nil", n, err)
	}
	items, _, err := s.List(ctx, api.ServiceAccounts, "", store.ListOptions{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	want := []string{"team-ab/x", "team-ab/y", "team-ab/z", "team-b/x", "team-b/y", "team-b/z"}
	if diff := cmp.Diff(want, names(items)); diff != "" {
		t.Errorf("List after DeleteAll(team-a) (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		name string
		res  *api.Resource
		ns   string
	}{
		{"cluster-scoped resource", api.Projects, ""},
		{"all namespaces", api.ServiceAccounts, ""},
	} {
		if n, err := s.DeleteAll(ctx, tt.res, tt.ns); !errors.Is(err, store.ErrInvalid) || n != 0 {
			t.Errorf("DeleteAll(%s): %s %q) = %d, %v; want 0, ErrInvalid", tt.name, tt.res.Name, tt.ns, n, err)
		}
	}
	items, _, _ = s.List(ctx, api.ServiceAccounts, "", store.ListOptions{})
	if len(items) != 6 {
		t.Errorf("List after rejected DeleteAll = %d items, want 6", len(items))
	}
}

func TestTooLarge(t *testing.T) {
	// The embedded member accepts requests up to 4 MiB; the client sends up
	// to 8 MiB.
	tests := []struct {
		name       string
		size       int
		regression bool
	}{
		{"just above etcd's request limit", 4<<20 + 100<<10, false},
		{"above the server's gRPC receive limit", 6 << 20, true},
		{"above the client's send limit", 9 << 20, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			s := newStore(t)
			sa := newSA("team-a", "big", nil)
			sa.Annotations = map[string]string{"blob": strings.Repeat("x", tt.size)}
			err := s.Create(ctx, api.ServiceAccounts, sa)
			if !errors.Is(err, store.ErrTooLarge) {
				t.Errorf("Create(%d-byte object) = %.200v, want ErrTooLarge", tt.size, err)
			}
			small := mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "small", nil)).(*api.ServiceAccount)
			small.Annotations = sa.Annotations
			if err := s.Update(ctx, api.ServiceAccounts, small, store.UpdateOptions{}); !errors.Is(err, store.ErrTooLarge) {
				t.Errorf("Update(%d-byte object) = %.200v, want ErrTooLarge", tt.size, err)
			}
		})
	}
}

func TestListSelectors(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	fixtures := []*api.ServiceAccount{
		newSA("team-a", "api", map[string]string{"app": "api", "tier": "backend"}),
		newSA("team-a", "cache", map[string]string{"app": "web", "tier": "db"}),
		newSA("team-a", "front", map[string]string{"app": "web", "tier": "frontend"}),
		newSA("team-a", "plain", nil),
		newSA("team-b", "front", map[string]string{"app": "web"}),
		newSA("team-b", "db", map[string]string{"app": "db", "tier": "db"}),
		newSA("team-bb", "front", map[string]string{"app": "web", "tier": "edge"}),
	}
	for _, o := range fixtures {
		mustCreate(t, ctx, s, api.ServiceAccounts, o)
	}
	tests := []struct {
		ns       string
		selector string // "" means no selector
		want     []string
	}{
		{"", "app=web,tier!=db", []string{"team-a/front", "team-b/front", "team-bb/front"}},
		{"team-a", "app=web,tier!=db", []string{"team-a/front"}},
		{"team-b", "app=web,tier!=db", []string{"team-b/front"}},
		{"", "", []string{"team-a/api", "team-a/cache", "team-a/front", "team-a/plain", "team-b/db", "team-b/front", "team-bb/front"}},
		{"team-a", "", []string{"team-a/api", "team-a/cache", "team-a/front", "team-a/plain"}},
		{"team-b", "", []string{"team-b/db", "team-b/front"}},
		{"team-c", "", []string{}},
		{"", "tier=db", []string{"team-a/cache", "team-b/db"}},
		{"", "app in (api,db)", []string{"team-a/api", "team-b/db"}},
		{"", "!tier", []string{"team-a/plain", "team-b/front"}},
		{"", "app", []string{"team-a/api", "team-a/cache", "team-a/front", "team-b/db", "team-b/front", "team-bb/front"}},
		{"", "app=none", []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.ns+"?"+tt.selector, func(t *testing.T) {
			var opts store.ListOptions
			if tt.selector != "" {
				sel, err := labels.Parse(tt.selector)
				if err != nil {
					t.Fatalf("labels.Parse(%q) = %v", tt.selector, err)
				}
				opts.Selector = sel
			}
			items, meta, err := s.List(ctx, api.ServiceAccounts, tt.ns, opts)
			if err != nil {
				t.Fatalf("List(%q, %q) = %v", tt.ns, tt.selector, err)
			}
			if diff := cmp.Diff(tt.want, names(items)); diff != "" {
				t.Errorf("List(%q, %q) (-want +got):\n%s", tt.ns, tt.selector, diff)
			}
			if meta.Continue != "" {
				t.Errorf("List(%q, %q) continue = %q, want none", tt.ns, tt.selector, meta.Continue)
			}
			if _, err := strconv.ParseInt(meta.ResourceVersion, 10, 64); err != nil {
				t.Errorf("List(%q, %q) resourceVersion = %q, want a revision", tt.ns, tt.selector, meta.ResourceVersion)
			}
			for _, o := range items {
				if o.GetTypeMeta().Kind != "ServiceAccount" || o.GetObjectMeta().ResourceVersion == "" {
					t.Errorf("List item %s: kind %q rv %q, want ServiceAccount and a resourceVersion", qname(o), o.GetTypeMeta().Kind, o.GetObjectMeta().ResourceVersion)
				}
			}
		})
	}
}

func TestListName(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for _, n := range []string{"a", "ab", "b"} {
		mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", n, nil))
	}
	tests := []struct {
		name string
		want []string
	}{
		{"a", []string{"team-a/a"}},
		{"ab", []string{"team-a/ab"}},
		{"c", []string{}},
	}
	for _, tt := range tests {
		items, _, err := s.List(ctx, api.ServiceAccounts, "team-a", store.ListOptions{Name: tt.name})
		if err != nil {
			t.Fatalf("List(Name %q) = %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, names(items)); diff != "" {
			t.Errorf("List(Name %q) (-want +got):\n%s", tt.name, diff)
		}
	}
}

// listAll pages through a list and returns every page's names.
func listAll(t *testing.T, s *store.Store, r *api.Resource, opts store.ListOptions, between func(page int)) (pages [][]string, rvs []string) {
	t.Helper()
	ctx := testContext(t)
	for page := 0; ; page++ {
		if page > 50 {
			t.Fatalf("List did not finish after 50 pages")
		}
		items, meta, err := s.List(ctx, r, "", opts)
		if err != nil {
			t.Fatalf("List(page %d) = %v", page, err)
		}
		pages = append(pages, names(items))
		rvs = append(rvs, meta.ResourceVersion)
		if meta.Continue == "" {
			return pages, rvs
		}
		if between != nil {
			between(page)
		}
		opts.Continue = meta.Continue
	}
}

func TestListPaging(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	var all []string
	for i := range 10 {
		p := newProject("p"+strconv.Itoa(i), "v1")
		if i%2 == 0 {
			p.Labels = map[string]string{"even": "true"}
		}
		mustCreate(t, ctx, s, api.Projects, p)
		all = append(all, p.Name)
	}
	even := labels.SelectorFromSet(labels.Set{"even": "true"})
	tests := []struct {
		limit    int64
		selector labels.Selector
		want     [][]string
	}{
		{1, nil, [][]string{{"p0"}, {"p1"}, {"p2"}, {"p3"}, {"p4"}, {"p5"}, {"p6"}, {"p7"}, {"p8"}, {"p9"}}},
		{3, nil, [][]string{{"p0", "p1", "p2"}, {"p3", "p4", "p5"}, {"p6", "p7", "p8"}, {"p9"}}},
		{5, nil, [][]string{{"p0", "p1", "p2", "p3", "p4"}, {"p5", "p6", "p7", "p8", "p9"}}},
		{9, nil, [][]string{all[:9], all[9:]}},
		{10, nil, [][]string{all}},
		{11, nil, [][]string{all}},
		{0, nil, [][]string{all}},
		{2, even, [][]string{{"p0", "p2"}, {"p4", "p6"}, {"p8"}}},
		{5, even, [][]string{{"p0", "p2", "p4", "p6", "p8"}}},
	}
	for _, tt := range tests {
		t.Run("limit="+strconv.FormatInt(tt.limit, 10)+",selector="+labelsString(tt.selector), func(t *testing.T) {
			pages, rvs := listAll(t, s, api.Projects, store.ListOptions{Limit: tt.limit, Selector: tt.selector}, nil)
			if tt.selector != nil && len(pages) == len(tt.want)+1 && len(pages[len(pages)-1]) == 0 {
				// With a selector the store cannot know that no further
				// key matches, so a final empty page is allowed.
				pages = pages[:len(pages)-1]
			}
			if diff := cmp.Diff(tt.want, pages); diff != "" {
				t.Errorf("List pages with Limit %d (-want +got):\n%s", tt.limit, diff)
			}
			for i, r := range rvs {
				if r != rvs[0] {
					t.Errorf("page %d resourceVersion = %s, want the first page's %s", i, r, rvs[0])
				}
			}
		})
	}
}

func labelsString(s labels.Selector) string {
	if s == nil {
		return "none"
	}
	return s.String()
}

// TestListPagingConsistent changes objects between pages: every page must
// still show the state at the first page's revision.
func TestListPagingConsistent(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	var all []string
	for i := range 10 {
		p := mustCreate(t, ctx, s, api.Projects, newProject("p"+strconv.Itoa(i), "v1"))
		all = append(all, p.GetObjectMeta().Name)
	}
	var seen []api.Object
	opts := store.ListOptions{Limit: 3}
	var firstRV string
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatal("List did not finish after 10 pages")
		}
		items, meta, err := s.List(ctx, api.Projects, "", opts)
		if err != nil {
			t.Fatalf("List(page %d) = %v", page, err)
		}
		if page == 0 {
			firstRV = meta.ResourceVersion
		} else if meta.ResourceVersion != firstRV {
			t.Errorf("List(page %d) resourceVersion = %s, want %s", page, meta.ResourceVersion, firstRV)
		}
		if n := len(items); n > 3 || (n < 3 && meta.Continue != "") {
			t.Errorf("List(page %d) = %d items with continue %q, want 3 per full page", page, n, meta.Continue)
		}
		seen = append(seen, items...)
		if meta.Continue == "" {
			break
		}
		opts.Continue = meta.Continue
		// Between pages: objects before, inside and after the cursor change.
		suffix := strconv.Itoa(page)
		mustCreate(t, ctx, s, api.Projects, newProject("p"+strconv.Itoa(3*(page+1))+"x", "new"))
		mustCreate(t, ctx, s, api.Projects, newProject("p0"+suffix, "new"))
		mustCreate(t, ctx, s, api.Projects, newProject("p9"+suffix, "new"))
		p8 := mustGet(t, ctx, s, api.Projects, "", "p8").(*api.Project)
		p8.Spec.DisplayName = "v2-" + suffix
		mustUpdate(t, ctx, s, api.Projects, p8, store.UpdateOptions{})
		if page == 1 {
			mustDelete(t, ctx, s, api.Projects, "", "p7")
		}
	}
	if diff := cmp.Diff(all, names(seen)); diff != "" {
		t.Errorf("paged List across changes (-want +got):\n%s", diff)
	}
	first, _ := strconv.ParseInt(firstRV, 10, 64)
	for _, o := range seen {
		p := o.(*api.Project)
		if p.Spec.DisplayName != "v1" || rv(t, p) > first {
			t.Errorf("paged List item %s: displayName %q rv %d, want v1 at or before %d", p.Name, p.Spec.DisplayName, rv(t, p), first)
		}
	}

	// A fresh list sees the changes.
	items, _, err := s.List(ctx, api.Projects, "", store.ListOptions{})
	if err != nil {
		t.Fatalf("List = %v", err)
	}
	want := []string{"p0", "p00", "p01", "p02", "p1", "p2", "p3", "p3x", "p4", "p5", "p6", "p6x", "p8", "p9", "p90", "p91", "p92", "p9x"}
	if diff := cmp.Diff(want, names(items)); diff != "" {
		t.Errorf("fresh List (-want +got):\n%s", diff)
	}
}

func TestListMalformedContinue(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	for i := range 4 {
		mustCreate(t, ctx, s, api.Projects, newProject("p"+strconv.Itoa(i), ""))
	}
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name, token string
		regression  bool
	}{
		{"not base64", "!!not base64!!", false},
		{"padded base64", base64.URLEncoding.EncodeToString([]byte(`{"rev":1,"start":"p0"}`)) + "==", false},
		{"not json", enc("hello"), false},
		{"json of the wrong shape", enc(`["rev",1]`), false},
		{"no revision", enc(`{"start":"p1"}`), false},
		{"zero revision", enc(`{"rev":0,"start":"p1"}`), false},
		{"negative revision", enc(`{"rev":-5,"start":"p1"}`), false},
		{"NUL in key", enc(`{"rev":1,"start":"p1\u0000"}`), false},
		// A forged token from the future reaches etcd, whose "future
		// revision" error List passes on unwrapped (a 500, not a 400).
		{"future revision", enc(`{"rev":999999999,"start":"p1"}`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			items, _, err := s.List(ctx, api.Projects, "", store.ListOptions{Limit: 2, Continue: tt.token})
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("List(continue %q) = %v, %v; want ErrInvalid", tt.token, names(items), err)
			}
		})
	}
}

func TestParseResourceVersion(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr error
	}{
		{"", 0, nil},
		{"0", 0, nil},
		{"42", 42, nil},
		{"-1", 0, store.ErrInvalid},
		{"abc", 0, store.ErrInvalid},
		{"1.5", 0, store.ErrInvalid},
	}
	for _, tt := range tests {
		got, err := store.ParseResourceVersion(tt.in)
		if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
			t.Errorf("ParseResourceVersion(%q) = %d, %v; want %d, %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestKey(t *testing.T) {
	s := store.New(sharedClient)
	tests := []struct {
		res      *api.Resource
		ns, name string
		want     string
	}{
		{api.ServiceAccounts, "team-a", "robot", "/slipway/serviceaccounts/team-a/robot"},
		{api.Projects, "", "alpha", "/slipway/projects/alpha"},
	}
	for _, tt := range tests {
		if got := s.Key(tt.res, tt.ns, tt.name); got != tt.want {
			t.Errorf("Key(%s, %q, %q) = %q, want %q", tt.res.Name, tt.ns, tt.name, got, tt.want)
		}
	}
	if got, want := s.Prefix(), store.DefaultPrefix; got != want {
		t.Errorf("Prefix() = %q, want %q", got, want)
	}
	for _, p := range []string{"/x", "/x/"} {
		ps := store.New(sharedClient, store.WithPrefix(p))
		if got, want := ps.Key(api.Projects, "", "a"), "/x/projects/a"; got != want {
			t.Errorf("WithPrefix(%q).Key = %q, want %q", p, got, want)
		}
		if got, want := ps.Prefix(), "/x/"; got != want {
			t.Errorf("WithPrefix(%q).Prefix() = %q, want %q", p, got, want)
		}
	}
}
