package apiserver_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

type wantEvent struct{ typ, name string }

// expectEvents reads len(want) events and compares them in order.
func expectEvents(t *testing.T, w *watchStream, want ...wantEvent) []watchEvent {
	t.Helper()
	var got []watchEvent
	for i, we := range want {
		ev := w.next(t)
		got = append(got, ev)
		if ev.Type != we.typ || ev.name(t) != we.name {
			t.Fatalf("event %d: got %s %s, want %s %s", i, ev.Type, ev.name(t), we.typ, we.name)
		}
	}
	return got
}

// testWatch: a watch from a list's resourceVersion shows every later change
// in order; selectors turn objects entering and leaving into ADDED and
// DELETED.
func (s *suite) testWatch(t *testing.T) {
	s.setupTeam(t, "pw")
	alice, bob := s.as("alice"), s.as("bob")
	coll := nsPath("pw", "serviceaccounts")
	mustCode(t, "create before", alice.post(t, coll, serviceAccount("before")), http.StatusCreated)

	t.Run("create update delete", func(t *testing.T) {
		list := bob.get(t, coll)
		mustCode(t, "bob lists", list, http.StatusOK)
		w := bob.watch(t, coll, url.Values{"resourceVersion": {listRV(t, list)}})
		mustCode(t, "bob watches", w.result, http.StatusOK)
		if ct := w.Header.Get("Content-Type"); ct != "application/json;stream=watch" {
			t.Errorf("watch Content-Type: got %q, want application/json;stream=watch", ct)
		}
		var rvs []string
		r := alice.post(t, coll, serviceAccount("w1"))
		mustCode(t, "create w1", r, http.StatusCreated)
		rvs = append(rvs, metaOf(t, r).ResourceVersion)
		r = alice.patch(t, coll+"/w1", map[string]any{"metadata": map[string]any{"labels": map[string]string{"v": "2"}}})
		mustCode(t, "patch w1", r, http.StatusOK)
		rvs = append(rvs, metaOf(t, r).ResourceVersion)
		r = alice.del(t, coll+"/w1")
		mustCode(t, "delete w1", r, http.StatusOK)
		rvs = append(rvs, metaOf(t, r).ResourceVersion)

		evs := expectEvents(t, w, wantEvent{"ADDED", "w1"}, wantEvent{"MODIFIED", "w1"}, wantEvent{"DELETED", "w1"})
		for i, ev := range evs {
			var o api.ServiceAccount
			if err := json.Unmarshal(ev.Object, &o); err != nil {
				t.Fatal(err)
			}
			if o.Kind != "ServiceAccount" || o.Namespace != "pw" || o.ResourceVersion != rvs[i] {
				t.Errorf("event %d: got kind %q namespace %q rv %s, want ServiceAccount in pw at rv %s", i, o.Kind, o.Namespace, o.ResourceVersion, rvs[i])
			}
			if i == 1 && o.Labels["v"] != "2" {
				t.Errorf("MODIFIED event: got labels %v, want v=2", o.Labels)
			}
		}
	})

	t.Run("without resourceVersion", func(t *testing.T) {
		w := bob.watch(t, coll, nil)
		mustCode(t, "bob watches", w.result, http.StatusOK)
		expectEvents(t, w, wantEvent{"ADDED", "before"})
		mustCode(t, "create w2", alice.post(t, coll, serviceAccount("w2")), http.StatusCreated)
		expectEvents(t, w, wantEvent{"ADDED", "w2"})
	})

	t.Run("label selector", func(t *testing.T) {
		list := bob.get(t, coll)
		mustCode(t, "bob lists", list, http.StatusOK)
		w := bob.watch(t, coll, url.Values{"resourceVersion": {listRV(t, list)}, "labelSelector": {"color=blue"}})
		mustCode(t, "bob watches blue", w.result, http.StatusOK)
		label := func(name, color string) {
			t.Helper()
			mustCode(t, "label "+name, alice.patch(t, coll+"/"+name, map[string]any{"metadata": map[string]any{"labels": map[string]string{"color": color}}}), http.StatusOK)
		}
		mustCode(t, "create plain", alice.post(t, coll, serviceAccount("plain")), http.StatusCreated)
		label("plain", "blue")
		label("plain", "red")
		blue := serviceAccount("born-blue")
		blue.Labels = map[string]string{"color": "blue"}
		mustCode(t, "create born-blue", alice.post(t, coll, blue), http.StatusCreated)
		mustCode(t, "resize born-blue", alice.patch(t, coll+"/born-blue", map[string]any{"metadata": map[string]any{"labels": map[string]string{"size": "xl"}}}), http.StatusOK)
		mustCode(t, "delete born-blue", alice.del(t, coll+"/born-blue"), http.StatusOK)
		expectEvents(t, w,
			wantEvent{"ADDED", "plain"}, wantEvent{"DELETED", "plain"},
			wantEvent{"ADDED", "born-blue"}, wantEvent{"MODIFIED", "born-blue"}, wantEvent{"DELETED", "born-blue"})
	})

	t.Run("name and project scope", func(t *testing.T) {
		list := alice.get(t, coll)
		mustCode(t, "list", list, http.StatusOK)
		rv := listRV(t, list)
		byName := alice.watch(t, coll, url.Values{"resourceVersion": {rv}, "fieldSelector": {"metadata.name=target"}})
		mustCode(t, "watch one name", byName.result, http.StatusOK)
		mustCode(t, "create other in pa", alice.post(t, nsPath("pa", "serviceaccounts"), serviceAccount("target")), http.StatusCreated)
		mustCode(t, "create decoy", alice.post(t, coll, serviceAccount("decoy")), http.StatusCreated)
		mustCode(t, "create target", alice.post(t, coll, serviceAccount("target")), http.StatusCreated)
		ev := expectEvents(t, byName, wantEvent{"ADDED", "target"})
		var o api.ServiceAccount
		if err := json.Unmarshal(ev[0].Object, &o); err != nil || o.Namespace != "pw" {
			t.Errorf("watch in pw: got an event from project %q, want pw", o.Namespace)
		}
	})

	t.Run("future resourceVersion", func(t *testing.T) {
		list := alice.get(t, coll)
		rv := rvNum(t, listRV(t, list))
		w := alice.watch(t, coll, url.Values{"resourceVersion": {strconv.FormatInt(rv+1_000_000, 10)}})
		checkStatus(t, "watch from the future", w.result, http.StatusBadRequest, api.ReasonBadRequest, "future")
	})
}

// testPaging pages through five objects two at a time, at one revision, and
// filters by label.
func (s *suite) testPaging(t *testing.T) {
	s.createProject(t, "alice", "pp")
	alice := s.as("alice")
	coll := nsPath("pp", "serviceaccounts")
	tiers := map[string]string{"p1": "a", "p2": "a", "p3": "b", "p4": "a", "p5": "b"}
	for _, n := range []string{"p1", "p2", "p3", "p4", "p5"} {
		sa := serviceAccount(n)
		sa.Labels = map[string]string{"tier": tiers[n]}
		mustCode(t, "create "+n, alice.post(t, coll, sa), http.StatusCreated)
	}

	page := func(t *testing.T, q url.Values) (names []string, meta api.ListMeta) {
		t.Helper()
		r := alice.get(t, coll+"?"+q.Encode())
		mustCode(t, "list "+q.Encode(), r, http.StatusOK)
		var l struct {
			Kind     string       `json:"kind"`
			Metadata api.ListMeta `json:"metadata"`
		}
		mustDecode(t, r, &l)
		if l.Kind != "ServiceAccountList" {
			t.Errorf("list kind: got %q, want ServiceAccountList", l.Kind)
		}
		return namesOf(t, r), l.Metadata
	}

	t.Run("limit and continue", func(t *testing.T) {
		var all []string
		var pages [][]string
		q := url.Values{"limit": {"2"}}
		firstRV := ""
		for i := 0; ; i++ {
			names, meta := page(t, q)
			pages = append(pages, names)
			all = append(all, names...)
			if i == 0 {
				firstRV = meta.ResourceVersion
				// Written after the first page: later pages keep the
				// first page's revision and do not show it.
				mustCode(t, "create p6", alice.post(t, coll, serviceAccount("p6")), http.StatusCreated)
			} else if meta.ResourceVersion != firstRV {
				t.Errorf("page %d: got resourceVersion %s, want the first page's %s", i, meta.ResourceVersion, firstRV)
			}
			if meta.Continue == "" {
				break
			}
			if i > 5 {
				t.Fatalf("paging does not end: %v", pages)
			}
			q.Set("continue", meta.Continue)
		}
		if want := [][]string{{"p1", "p2"}, {"p3", "p4"}, {"p5"}}; !slices.EqualFunc(pages, want, slices.Equal) {
			t.Errorf("pages: got %v, want %v", pages, want)
		}
		if got := alice.listNames(t, coll); !slices.Equal(got, []string{"p1", "p2", "p3", "p4", "p5", "p6"}) {
			t.Errorf("full list: got %v, want p1..p6", got)
		}
	})

	t.Run("field selector", func(t *testing.T) {
		if got, _ := page(t, url.Values{"fieldSelector": {"metadata.name=p3"}}); !slices.Equal(got, []string{"p3"}) {
			t.Errorf("fieldSelector metadata.name=p3 in pp: got %v, want [p3]", got)
		}
		if got, _ := page(t, url.Values{"fieldSelector": {"metadata.name=nope"}}); len(got) != 0 {
			t.Errorf("fieldSelector metadata.name=nope in pp: got %v, want none", got)
		}
		checkStatus(t, "fieldSelector on another field", alice.get(t, coll+"?fieldSelector=spec.x%3Dy"), http.StatusBadRequest, api.ReasonBadRequest, "fieldSelector")
		t.Run("every project", func(t *testing.T) {
			r := s.as("admin").get(t, clusterPath("serviceaccounts")+"?fieldSelector=metadata.name%3Dp3")
			mustCode(t, "admin lists sa named p3 in every project", r, http.StatusOK)
			if got := namesOf(t, r); !slices.Equal(got, []string{"p3"}) {
				t.Errorf("admin lists sa named p3 in every project: got %v, want [p3]", got)
			}
		})
	})

	t.Run("label selector", func(t *testing.T) {
		for _, tc := range []struct {
			sel  string
			want []string
		}{
			{"tier=a", []string{"p1", "p2", "p4"}},
			{"tier=b", []string{"p3", "p5"}},
			{"tier in (a,b)", []string{"p1", "p2", "p3", "p4", "p5"}},
			{"tier!=a", []string{"p3", "p5", "p6"}},
			{"!tier", []string{"p6"}},
			{"tier=c", []string{}},
		} {
			if got, _ := page(t, url.Values{"labelSelector": {tc.sel}}); !slices.Equal(got, tc.want) {
				t.Errorf("labelSelector %q: got %v, want %v", tc.sel, got, tc.want)
			}
		}
		names, meta := page(t, url.Values{"labelSelector": {"tier=a"}, "limit": {"2"}})
		if !slices.Equal(names, []string{"p1", "p2"}) || meta.Continue == "" {
			t.Fatalf("tier=a limit 2: got %v continue %q, want [p1 p2] and a continue token", names, meta.Continue)
		}
		names, meta = page(t, url.Values{"labelSelector": {"tier=a"}, "limit": {"2"}, "continue": {meta.Continue}})
		if !slices.Equal(names, []string{"p4"}) || meta.Continue != "" {
			t.Errorf("tier=a limit 2, page 2: got %v continue %q, want [p4] and no continue", names, meta.Continue)
		}
	})
}

// testWatchCompacted: a watch or a continued list from before a compaction
// is 410 Gone; one from after works.
func (s *suite) testWatchCompacted(t *testing.T) {
	alice := s.as("alice")
	coll := nsPath("pw", "serviceaccounts")
	old := alice.get(t, coll)
	mustCode(t, "list", old, http.StatusOK)
	oldRV := listRV(t, old)
	r := alice.get(t, nsPath("pp", "serviceaccounts")+"?limit=2")
	mustCode(t, "first page", r, http.StatusOK)
	var l struct {
		Metadata api.ListMeta `json:"metadata"`
	}
	mustDecode(t, r, &l)

	r = alice.post(t, coll, serviceAccount("after-old"))
	mustCode(t, "create after-old", r, http.StatusCreated)
	rev := rvNum(t, metaOf(t, r).ResourceVersion)
	if _, err := s.env.Server.Store.Client().Compact(t.Context(), rev); err != nil {
		t.Fatalf("compact at %d: %v", rev, err)
	}

	w := alice.watch(t, coll, url.Values{"resourceVersion": {oldRV}})
	checkStatus(t, "watch from before the compaction", w.result, http.StatusGone, api.ReasonGone, "too old")
	r = alice.get(t, nsPath("pp", "serviceaccounts")+"?limit=2&continue="+url.QueryEscape(l.Metadata.Continue))
	checkStatus(t, "continue a list from before the compaction", r, http.StatusGone, api.ReasonGone, "start the list again")

	list := alice.get(t, coll)
	mustCode(t, "list again", list, http.StatusOK)
	w = alice.watch(t, coll, url.Values{"resourceVersion": {listRV(t, list)}})
	mustCode(t, "watch from the new list", w.result, http.StatusOK)
	mustCode(t, "create after-compaction", alice.post(t, coll, serviceAccount("after-compaction")), http.StatusCreated)
	expectEvents(t, w, wantEvent{"ADDED", "after-compaction"})
	// The server's own caches survive the compaction.
	checkStatus(t, "dave is still refused", s.as("dave").get(t, coll), http.StatusForbidden, api.ReasonForbidden, "")
}

// testWatchAcrossProjects: a list or watch of a project resource without
// a project, by a user without the verb in every project, shows the
// objects of the projects where the user has it and nothing else; each
// event is authorized when it is sent, so a binding taken away ends that
// project's events at once, its DELETED events included.
func (s *suite) testWatchAcrossProjects(t *testing.T) {
	admin, alice, bob := s.as("admin"), s.as("alice"), s.as("bob")
	s.createProject(t, "alice", "xa1")
	s.createProject(t, "alice", "xa2")
	mustCode(t, "alice grants bob view in xa1", alice.post(t, nsPath("xa1", "rolebindings"), binding("bob-view", "ClusterRole", "view", user("bob"))), http.StatusCreated)
	// bob holds view in pa, pw (testWatch's) and xa1; alice owns xa2.
	bobs := map[string]bool{"pa": true, "pw": true, "xa1": true}
	mustCode(t, "create seen in xa1", alice.post(t, nsPath("xa1", "serviceaccounts"), serviceAccount("seen")), http.StatusCreated)
	mustCode(t, "create hidden in xa2", alice.post(t, nsPath("xa2", "serviceaccounts"), serviceAccount("hidden")), http.StatusCreated)
	mustCode(t, "create hidden2 in xa2", alice.post(t, nsPath("xa2", "serviceaccounts"), serviceAccount("hidden2")), http.StatusCreated)
	all := clusterPath("serviceaccounts")
	namespaces := func(r result) map[string]bool { t.Helper(); return namespacesOf(t, r) }
	list := bob.get(t, all)
	mustCode(t, "bob lists service accounts across projects", list, http.StatusOK)
	if got := namespaces(list); !got["xa1"] || got["xa2"] || !onlyOf(got, bobs) {
		t.Errorf("bob's list across projects holds the projects %v, want xa1 and only bob's (%v)", got, bobs)
	}
	if got := namespaces(admin.get(t, all)); !got["xa2"] {
		t.Errorf("the admin's list across projects holds %v, want xa2 too", got)
	}
	// Paged one by one, bob gets the same objects, and no continue token
	// names an object of a project he may not read (a token naming the
	// last key read let any user walk every project's object names: seen
	// as {"rev":52,"start":"xa2/hidden"} with items=0).
	paged := map[string]bool{}
	for cont, pages := "", 0; ; pages++ {
		q := url.Values{"limit": {"1"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		r := bob.get(t, all+"?"+q.Encode())
		mustCode(t, "bob pages service accounts across projects", r, http.StatusOK)
		var l struct {
			Metadata api.ListMeta `json:"metadata"`
		}
		mustDecode(t, r, &l)
		for _, m := range metasOf(t, r) {
			paged[m.Namespace] = true
		}
		if raw, _ := base64.RawURLEncoding.DecodeString(l.Metadata.Continue); strings.Contains(string(raw), "xa2/") {
			t.Fatalf("page %d's continue token names an object of xa2, which bob may not read: %s", pages, raw)
		}
		if cont = l.Metadata.Continue; cont == "" || pages > 200 {
			break
		}
	}
	if !paged["xa1"] || !onlyOf(paged, bobs) {
		t.Errorf("bob's paged list across projects holds %v, want xa1 and only bob's (%v)", paged, bobs)
	}
	w := bob.watch(t, all, url.Values{"resourceVersion": {listRV(t, list)}})
	mustCode(t, "bob watches service accounts across projects", w.result, http.StatusOK)
	defer w.close()
	mustCode(t, "create x2 in xa2", alice.post(t, nsPath("xa2", "serviceaccounts"), serviceAccount("x2")), http.StatusCreated)
	mustCode(t, "create x1 in xa1", alice.post(t, nsPath("xa1", "serviceaccounts"), serviceAccount("x1")), http.StatusCreated)
	expectEvents(t, w, wantEvent{"ADDED", "x1"})
	// Without view in xa1, nothing of it: not the new object, not the
	// deletion (with its last state) of what bob saw.
	mustCode(t, "alice takes bob's view in xa1", alice.del(t, nsPath("xa1", "rolebindings", "bob-view")), http.StatusOK)
	mustCode(t, "change x1 in xa1", alice.patch(t, nsPath("xa1", "serviceaccounts", "x1"), map[string]any{"metadata": map[string]any{"labels": map[string]string{"secret": "yes"}}}), http.StatusOK)
	mustCode(t, "delete x1 in xa1", alice.del(t, nsPath("xa1", "serviceaccounts", "x1")), http.StatusOK)
	mustCode(t, "create after in xa1", alice.post(t, nsPath("xa1", "serviceaccounts"), serviceAccount("after")), http.StatusCreated)
	mustCode(t, "create marker in pa", alice.post(t, nsPath("pa", "serviceaccounts"), serviceAccount("marker")), http.StatusCreated)
	evs := expectEvents(t, w, wantEvent{"ADDED", "marker"})
	var o api.ServiceAccount
	if err := json.Unmarshal(evs[0].Object, &o); err != nil || o.Namespace != "pa" {
		t.Errorf("marker event from project %q (%v), want pa", o.Namespace, err)
	}
	// From the start of a watch without a resourceVersion, too.
	w2 := bob.watch(t, all, nil)
	mustCode(t, "bob watches from the start", w2.result, http.StatusOK)
	defer w2.close()
	mustCode(t, "create marker2 in pa", alice.post(t, nsPath("pa", "serviceaccounts"), serviceAccount("marker2")), http.StatusCreated)
	for {
		ev := w2.next(t)
		var o api.ServiceAccount
		if err := json.Unmarshal(ev.Object, &o); err != nil {
			t.Fatal(err)
		}
		if !bobs[o.Namespace] {
			t.Fatalf("bob's watch from the start sent %s %s/%s, of a project bob may not read", ev.Type, o.Namespace, o.Name)
		}
		if o.Name == "marker2" {
			break
		}
	}
	// Others see their own projects' objects and none of alice's xa*:
	// carol (edit in pa and pw), dave (owner of pb and pother).
	for u, theirs := range map[string]map[string]bool{"carol": {"pa": true, "pw": true}, "dave": {"pb": true, "pother": true}} {
		r := s.as(u).get(t, all)
		mustCode(t, u+" lists across projects", r, http.StatusOK)
		if got := namespaces(r); !onlyOf(got, theirs) {
			t.Errorf("%s's list across projects holds %v, want only %v", u, got, theirs)
		}
	}
}

// namespacesOf is the set of projects a list answer's items are in.
func namespacesOf(t *testing.T, r result) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, m := range metasOf(t, r) {
		out[m.Namespace] = true
	}
	return out
}

// onlyOf says whether every key of got is in allowed.
func onlyOf(got, allowed map[string]bool) bool {
	for k := range got {
		if !allowed[k] {
			return false
		}
	}
	return true
}
