package apiserver_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

var allVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete"}

// matrixUsers go from least to most privileged in "pa", so that alice's
// delete of the project comes last.
var matrixUsers = []string{"dave", "bob", "carol", "alice"}

// testRBACMatrix checks every verb on service accounts, role bindings and
// the project itself, for the admin (alice), an editor (carol), a viewer
// (bob) and a stranger (dave) of project "pa". Every write is checked for
// its effect too: a refused write must change nothing.
func (s *suite) testRBACMatrix(t *testing.T) {
	// Project deletes are tried on a twin of "pa" with the same team.
	s.setupTeam(t, "pa-del")
	admin := s.as("admin")
	for _, res := range []string{"serviceaccounts", "rolebindings"} {
		newObj := func(name string) any {
			if res == "serviceaccounts" {
				return serviceAccount(name)
			}
			return binding(name, "ClusterRole", "view", user("nobody"))
		}
		mustCode(t, "fixture", admin.post(t, nsPath("pa", res), newObj("m-fixed")), http.StatusCreated)
		for _, u := range matrixUsers {
			for _, v := range []string{"update", "patch", "delete"} {
				mustCode(t, "fixture", admin.post(t, nsPath("pa", res), newObj("m-"+u+"-"+v)), http.StatusCreated)
			}
		}
	}

	// allowed[resource][user] are the verbs the user's role grants in pa.
	allowed := map[string]map[string][]string{
		"serviceaccounts": {"alice": allVerbs, "carol": allVerbs, "bob": {"get", "list", "watch"}},
		"rolebindings":    {"alice": allVerbs},
		"projects":        {"alice": allVerbs, "carol": {"get"}, "bob": {"get"}},
	}
	for _, res := range []string{"serviceaccounts", "rolebindings", "projects"} {
		for _, verb := range allVerbs {
			for _, u := range matrixUsers {
				want := slices.Contains(allowed[res][u], verb)
				if res == "projects" && (verb == "list" || verb == "watch" || verb == "create") {
					// Not about "pa": anyone may list and watch the
					// projects they can see, and create new ones.
					want = true
				}
				t.Run(fmt.Sprintf("%s_%s_%s", res, verb, u), func(t *testing.T) {
					s.matrixCell(t, res, verb, u, want, allowed["projects"][u] != nil)
				})
			}
		}
	}
}

// matrixCell does one verb as one user and checks the answer and, for
// writes, whether it took effect.
func (s *suite) matrixCell(t *testing.T, res, verb, u string, want, seesProject bool) {
	c, admin := s.as(u), s.as("admin")
	name := "m-" + u + "-" + verb
	coll := nsPath("pa", res)
	obj := func(n string) string { return nsPath("pa", res, n) }
	if res == "projects" {
		coll = projectPath("")
		obj = func(string) string { return projectPath("pa") }
	}
	var r result
	var took func() bool // for writes: did the write happen?
	switch verb {
	case "get":
		if res == "projects" {
			r = c.get(t, projectPath("pa"))
		} else {
			r = c.get(t, obj("m-fixed"))
		}
	case "list":
		r = c.get(t, coll)
		if res == "projects" && r.Code == http.StatusOK {
			if got := contains(namesOf(t, r), "pa"); got != seesProject {
				t.Errorf("%s lists projects: got pa listed %v, want %v", u, got, seesProject)
			}
		}
	case "watch":
		w := c.watch(t, coll, nil)
		w.close()
		r = w.result
	case "create":
		var body any
		switch res {
		case "serviceaccounts":
			body = serviceAccount(name)
		case "rolebindings":
			body = binding(name, "ClusterRole", "view", user("nobody"))
		case "projects":
			name = "mk-" + u
			body = project(name)
			obj = projectPath
		}
		r = c.post(t, coll, body)
		took = func() bool { return admin.get(t, obj(name)).Code == http.StatusOK }
	case "update":
		cur := admin.get(t, obj(name))
		mustCode(t, "admin reads the object", cur, http.StatusOK)
		var m map[string]any
		mustDecode(t, cur, &m)
		if res == "projects" {
			m["spec"] = map[string]any{"displayName": "updated by " + u}
		} else {
			m["metadata"].(map[string]any)["labels"] = map[string]string{"updated-by": u}
		}
		r = c.put(t, obj(name), m)
		took = func() bool {
			after := admin.get(t, obj(name))
			mustCode(t, "admin reads the object", after, http.StatusOK)
			if res == "projects" {
				var p api.Project
				mustDecode(t, after, &p)
				return p.Spec.DisplayName == "updated by "+u
			}
			return metaOf(t, after).Labels["updated-by"] == u
		}
	case "patch":
		r = c.patch(t, obj(name), map[string]any{"metadata": map[string]any{"labels": map[string]string{"patched-by-" + u: "yes"}}})
		took = func() bool {
			after := admin.get(t, obj(name))
			mustCode(t, "admin reads the object", after, http.StatusOK)
			return metaOf(t, after).Labels["patched-by-"+u] == "yes"
		}
	case "delete":
		if res == "projects" {
			obj = func(string) string { return projectPath("pa-del") }
		}
		r = c.del(t, obj(name))
		took = func() bool { return admin.get(t, obj(name)).Code == http.StatusNotFound }
	}
	switch {
	case !want:
		checkStatus(t, u+" "+verb+" "+res, r, http.StatusForbidden, api.ReasonForbidden, u)
	case verb == "create":
		checkCode(t, u+" "+verb+" "+res, r, http.StatusCreated)
	default:
		checkCode(t, u+" "+verb+" "+res, r, http.StatusOK)
	}
	if took != nil {
		if got := took(); got != want {
			t.Errorf("%s %s %s: got written=%v, want %v", u, verb, res, got, want)
		}
	}
}

// testTenancy: a user of one project has no rights in another, and sees
// only her own projects.
func (s *suite) testTenancy(t *testing.T) {
	s.createProject(t, "dave", "pb")
	alice, dave, admin := s.as("alice"), s.as("dave"), s.as("admin")
	mustCode(t, "dave creates sa in pb", dave.post(t, nsPath("pb", "serviceaccounts"), serviceAccount("secret-robot")), http.StatusCreated)

	for _, tc := range []struct {
		what   string
		method string
		path   string
		body   any
	}{
		{"get pb", "GET", projectPath("pb"), nil},
		{"update pb", "PATCH", projectPath("pb"), map[string]any{"spec": map[string]any{"displayName": "mine"}}},
		{"delete pb", "DELETE", projectPath("pb"), nil},
		{"list sa in pb", "GET", nsPath("pb", "serviceaccounts"), nil},
		{"get sa in pb", "GET", nsPath("pb", "serviceaccounts", "secret-robot"), nil},
		{"create sa in pb", "POST", nsPath("pb", "serviceaccounts"), serviceAccount("intruder")},
		{"delete sa in pb", "DELETE", nsPath("pb", "serviceaccounts", "secret-robot"), nil},
		{"token for sa in pb", "POST", nsPath("pb", "serviceaccounts", "secret-robot", "token"), map[string]any{"spec": map[string]any{}}},
		{"list rolebindings in pb", "GET", nsPath("pb", "rolebindings"), nil},
		{"bind herself admin in pb", "POST", nsPath("pb", "rolebindings"), binding("alice-admin", "ClusterRole", "admin", user("alice"))},
	} {
		t.Run(tc.what, func(t *testing.T) {
			ct := ""
			if tc.method == "PATCH" {
				ct = "application/merge-patch+json"
			}
			checkStatus(t, "alice: "+tc.what, alice.do(t, tc.method, tc.path, tc.body, ct), http.StatusForbidden, api.ReasonForbidden, "alice")
		})
	}
	// Across projects, alice gets her projects' objects, none of pb's.
	for _, res := range []string{"serviceaccounts", "rolebindings"} {
		r := alice.get(t, clusterPath(res))
		mustCode(t, "alice lists "+res+" in every project", r, http.StatusOK)
		if got := namespacesOf(t, r); got["pb"] || !got["pa"] {
			t.Errorf("alice's list of %s across projects holds the projects %v: want pa, never pb", res, got)
		}
	}
	t.Run("pb unchanged", func(t *testing.T) {
		if got := admin.listNames(t, nsPath("pb", "serviceaccounts")); !slices.Equal(got, []string{"secret-robot"}) {
			t.Errorf("service accounts of pb: got %v, want [secret-robot]", got)
		}
		var p api.Project
		r := admin.get(t, projectPath("pb"))
		mustCode(t, "get pb", r, http.StatusOK)
		mustDecode(t, r, &p)
		if p.Spec.DisplayName != "" {
			t.Errorf("pb display name: got %q, want it unchanged", p.Spec.DisplayName)
		}
	})

	t.Run("project lists", func(t *testing.T) {
		for _, tc := range []struct {
			user       string
			see, avoid []string
		}{
			{"alice", []string{"pa"}, []string{"pb"}},
			{"dave", []string{"pb"}, []string{"pa"}},
			{"bob", []string{"pa"}, []string{"pb"}},
			{"admin", []string{"pa", "pb"}, nil},
		} {
			c := s.as(tc.user)
			got := c.listNames(t, projectPath(""))
			for _, p := range tc.see {
				if !contains(got, p) {
					t.Errorf("%s lists projects: got %v, want %s in it", tc.user, got, p)
				}
			}
			for _, p := range tc.avoid {
				if contains(got, p) {
					t.Errorf("%s lists projects: got %v, want %s left out", tc.user, got, p)
				}
			}
			for _, p := range got {
				checkCode(t, tc.user+" gets listed project "+p, c.get(t, projectPath(p)), http.StatusOK)
			}
		}
	})

	t.Run("project watch", func(t *testing.T) {
		// A change to pb and then to pa: alice's stream must show pa's
		// change and nothing of pb before it.
		list := alice.get(t, projectPath(""))
		mustCode(t, "alice lists projects", list, http.StatusOK)
		w := alice.watch(t, projectPath(""), url.Values{"resourceVersion": {listRV(t, list)}})
		mustCode(t, "alice watches projects", w.result, http.StatusOK)
		for _, p := range []string{"pb", "pa"} {
			mustCode(t, "admin labels "+p, admin.patch(t, projectPath(p), map[string]any{"metadata": map[string]any{"labels": map[string]string{"watched": "yes"}}}), http.StatusOK)
		}
		for {
			ev := w.next(t)
			name := ev.name(t)
			if name == "pb" {
				t.Fatalf("alice's project watch shows %s %s, want nothing of pb", ev.Type, name)
			}
			if name == "pa" {
				if ev.Type != "MODIFIED" {
					t.Errorf("alice's project watch: got %s pa, want MODIFIED", ev.Type)
				}
				break
			}
		}
	})
}

// testEscalation: nobody can grant what they do not hold, by create, update
// or patch of a Role or RoleBinding.
func (s *suite) testEscalation(t *testing.T) {
	s.createProject(t, "alice", "pesc")
	alice, bob, carol, dave := s.as("alice"), s.as("bob"), s.as("carol"), s.as("dave")

	t.Run("edit cannot bind", func(t *testing.T) {
		for _, role := range []string{"view", "edit", "admin"} {
			r := carol.post(t, nsPath("pa", "rolebindings"), binding("carol-grants-"+role, "ClusterRole", role, user("dave")))
			checkStatus(t, "carol binds "+role+" in pa", r, http.StatusForbidden, api.ReasonForbidden, "")
		}
		checkStatus(t, "carol reads bindings in pa", carol.get(t, nsPath("pa", "rolebindings")), http.StatusForbidden, api.ReasonForbidden, "")
		checkStatus(t, "carol creates a role in pa", carol.post(t, nsPath("pa", "roles"), &api.Role{
			ObjectMeta: api.ObjectMeta{Name: "carol-role"},
			Rules:      []api.PolicyRule{{Verbs: []string{"get"}, Resources: []string{"serviceaccounts"}}},
		}), http.StatusForbidden, api.ReasonForbidden, "")
		checkStatus(t, "dave still has nothing in pa", dave.get(t, nsPath("pa", "serviceaccounts")), http.StatusForbidden, api.ReasonForbidden, "")
	})

	t.Run("project admin cannot act cluster-wide", func(t *testing.T) {
		crb := &api.ClusterRoleBinding{
			ObjectMeta: api.ObjectMeta{Name: "alice-cluster-admin"},
			RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []api.Subject{user("alice")},
		}
		checkStatus(t, "alice creates a ClusterRoleBinding to cluster-admin", alice.post(t, clusterPath("clusterrolebindings"), crb), http.StatusForbidden, api.ReasonForbidden, "")
		crb.Name, crb.RoleRef.Name = "alice-view", "view"
		checkStatus(t, "alice creates a ClusterRoleBinding to view", alice.post(t, clusterPath("clusterrolebindings"), crb), http.StatusForbidden, api.ReasonForbidden, "")
		checkStatus(t, "alice creates a ClusterRole", alice.post(t, clusterPath("clusterroles"), &api.ClusterRole{
			ObjectMeta: api.ObjectMeta{Name: "alice-role"},
			Rules:      []api.PolicyRule{{Verbs: []string{"*"}, Resources: []string{"*"}}},
		}), http.StatusForbidden, api.ReasonForbidden, "")
		checkStatus(t, "alice edits cluster-admin's binding", alice.patch(t, clusterPath("clusterrolebindings", "cluster-admin"),
			map[string]any{"subjects": []api.Subject{user("alice")}}), http.StatusForbidden, api.ReasonForbidden, "")
		checkCode(t, "the ClusterRoleBinding was not written", s.as("admin").get(t, clusterPath("clusterrolebindings", "alice-cluster-admin")), http.StatusNotFound)
	})

	t.Run("cluster-admin bound in a project stays in it", func(t *testing.T) {
		// Alice holds every verb on every resource in pesc but not status
		// subresources, which cluster-admin reaches (*/status): she may
		// not bind it. A cluster admin may, and a RoleBinding confines it
		// to pesc.
		checkStatus(t, "alice binds cluster-admin to bob in pesc",
			alice.post(t, nsPath("pesc", "rolebindings"), binding("bob-ca", "ClusterRole", "cluster-admin", user("bob"))), http.StatusForbidden, api.ReasonForbidden, "*/status")
		mustCode(t, "admin binds cluster-admin to bob in pesc",
			s.as("admin").post(t, nsPath("pesc", "rolebindings"), binding("bob-ca", "ClusterRole", "cluster-admin", user("bob"))), http.StatusCreated)
		checkCode(t, "bob lists bindings in pesc", bob.get(t, nsPath("pesc", "rolebindings")), http.StatusOK)
		for _, tc := range []struct{ what, method, path string }{
			{"list clusterrolebindings", "GET", clusterPath("clusterrolebindings")},
			{"list users", "GET", clusterPath("users")},
			{"list bindings in pa", "GET", nsPath("pa", "rolebindings")},
			{"list sa in pb", "GET", nsPath("pb", "serviceaccounts")},
		} {
			checkStatus(t, "bob: "+tc.what, bob.do(t, tc.method, tc.path, nil, ""), http.StatusForbidden, api.ReasonForbidden, "")
		}
		r := bob.get(t, clusterPath("serviceaccounts"))
		mustCode(t, "bob lists sa in every project", r, http.StatusOK)
		if got := namespacesOf(t, r); got["pb"] {
			t.Errorf("bob's list of service accounts across projects holds the projects %v: never pb", got)
		}
		checkStatus(t, "bob creates a ClusterRoleBinding", bob.post(t, clusterPath("clusterrolebindings"), &api.ClusterRoleBinding{
			ObjectMeta: api.ObjectMeta{Name: "bob-everywhere"},
			RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects:   []api.Subject{user("bob")},
		}), http.StatusForbidden, api.ReasonForbidden, "")
		mustCode(t, "alice removes the binding", alice.del(t, nsPath("pesc", "rolebindings", "bob-ca")), http.StatusOK)
		checkStatus(t, "bob after removal", bob.get(t, nsPath("pesc", "rolebindings")), http.StatusForbidden, api.ReasonForbidden, "")
	})

	// Carol holds, through a Role in pesc, full rights on service accounts
	// and create/update/patch on roles and role bindings, but not delete.
	limited := &api.Role{
		ObjectMeta: api.ObjectMeta{Name: "limited"},
		Rules: []api.PolicyRule{
			{Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}, Resources: []string{"serviceaccounts"}},
			{Verbs: []string{"get", "list", "create", "update", "patch"}, Resources: []string{"roles", "rolebindings"}},
		},
	}
	mustCode(t, "alice creates role limited", alice.post(t, nsPath("pesc", "roles"), limited), http.StatusCreated)
	mustCode(t, "alice binds carol to limited", alice.post(t, nsPath("pesc", "rolebindings"), binding("carol-limited", "Role", "limited", user("carol"))), http.StatusCreated)
	rule := func(verbs, resources []string) []api.PolicyRule {
		return []api.PolicyRule{{Verbs: verbs, Resources: resources}}
	}
	role := func(name string, rules []api.PolicyRule) *api.Role {
		return &api.Role{ObjectMeta: api.ObjectMeta{Name: name}, Rules: rules}
	}

	t.Run("create", func(t *testing.T) {
		for _, tc := range []struct {
			what string
			res  string
			obj  any
			code int
		}{
			{"role within her rights", "roles", role("sa-reader", rule([]string{"get", "list"}, []string{"serviceaccounts"})), http.StatusCreated},
			{"role with verb *", "roles", role("star-verbs", rule([]string{"*"}, []string{"serviceaccounts"})), http.StatusForbidden},
			{"role with resource *", "roles", role("star-resources", rule([]string{"get"}, []string{"*"})), http.StatusForbidden},
			{"role with a verb she lacks", "roles", role("rb-deleter", rule([]string{"delete"}, []string{"rolebindings"})), http.StatusForbidden},
			{"role on a resource she lacks", "roles", role("project-editor", rule([]string{"update"}, []string{"projects"})), http.StatusForbidden},
			{"binding to a role within her rights", "rolebindings", binding("dave-sa-reader", "Role", "sa-reader", user("dave")), http.StatusCreated},
			{"binding to view", "rolebindings", binding("dave-view", "ClusterRole", "view", user("dave")), http.StatusForbidden},
			{"binding to edit", "rolebindings", binding("dave-edit", "ClusterRole", "edit", user("dave")), http.StatusForbidden},
			{"binding herself admin", "rolebindings", binding("carol-admin", "ClusterRole", "admin", user("carol")), http.StatusForbidden},
			{"binding to cluster-admin", "rolebindings", binding("carol-ca", "ClusterRole", "cluster-admin", user("carol")), http.StatusForbidden},
		} {
			t.Run(tc.what, func(t *testing.T) {
				r := carol.post(t, nsPath("pesc", tc.res), tc.obj)
				if tc.code == http.StatusForbidden {
					checkStatus(t, "carol creates "+tc.what, r, tc.code, api.ReasonForbidden, "cannot grant")
				} else {
					checkCode(t, "carol creates "+tc.what, r, tc.code)
				}
				name := tc.obj.(api.Object).GetObjectMeta().Name
				want := map[bool]int{true: http.StatusOK, false: http.StatusNotFound}[tc.code == http.StatusCreated]
				checkCode(t, "stored "+name, s.as("admin").get(t, nsPath("pesc", tc.res, name)), want)
			})
		}
		checkCode(t, "dave reads sa through sa-reader", dave.get(t, nsPath("pesc", "serviceaccounts")), http.StatusOK)
		checkStatus(t, "dave creates sa", dave.post(t, nsPath("pesc", "serviceaccounts"), serviceAccount("d")), http.StatusForbidden, api.ReasonForbidden, "")
	})

	t.Run("update and patch", func(t *testing.T) {
		rbPath := nsPath("pesc", "rolebindings", "dave-sa-reader")
		rolePath := nsPath("pesc", "roles", "sa-reader")
		for _, tc := range []struct {
			what   string
			method string
			path   string
			body   func(t *testing.T) any
		}{
			{"PUT binding to admin", "PUT", rbPath, func(t *testing.T) any {
				var b api.RoleBinding
				mustDecode(t, carol.get(t, rbPath), &b)
				b.RoleRef = api.RoleRef{Kind: "ClusterRole", Name: "admin"}
				return &b
			}},
			{"PUT binding to edit without resourceVersion", "PUT", rbPath, func(t *testing.T) any {
				return binding("dave-sa-reader", "ClusterRole", "edit", user("dave"))
			}},
			{"PATCH binding to edit", "PATCH", rbPath, func(t *testing.T) any {
				return map[string]any{"roleRef": map[string]string{"kind": "ClusterRole", "name": "edit"}}
			}},
			{"PATCH binding to cluster-admin", "PATCH", rbPath, func(t *testing.T) any {
				return map[string]any{"roleRef": map[string]string{"kind": "ClusterRole", "name": "cluster-admin"}}
			}},
			{"PUT role with verb *", "PUT", rolePath, func(t *testing.T) any {
				var r api.Role
				mustDecode(t, carol.get(t, rolePath), &r)
				r.Rules = rule([]string{"*"}, []string{"serviceaccounts"})
				return &r
			}},
			{"PATCH role with delete rolebindings", "PATCH", rolePath, func(t *testing.T) any {
				return map[string]any{"rules": []api.PolicyRule{
					{Verbs: []string{"get", "list"}, Resources: []string{"serviceaccounts"}},
					{Verbs: []string{"delete"}, Resources: []string{"rolebindings"}},
				}}
			}},
			{"PATCH her own role with delete", "PATCH", nsPath("pesc", "roles", "limited"), func(t *testing.T) any {
				return map[string]any{"rules": append(slices.Clone(limited.Rules),
					api.PolicyRule{Verbs: []string{"delete"}, Resources: []string{"roles", "rolebindings"}})}
			}},
		} {
			t.Run(tc.what, func(t *testing.T) {
				before := s.as("admin").get(t, tc.path)
				mustCode(t, "admin reads "+tc.path, before, http.StatusOK)
				ct := ""
				if tc.method == "PATCH" {
					ct = "application/merge-patch+json"
				}
				r := carol.do(t, tc.method, tc.path, tc.body(t), ct)
				checkStatus(t, "carol: "+tc.what, r, http.StatusForbidden, api.ReasonForbidden, "cannot grant")
				after := s.as("admin").get(t, tc.path)
				if got, want := metaOf(t, after).ResourceVersion, metaOf(t, before).ResourceVersion; got != want {
					t.Errorf("%s was written: got resourceVersion %s, want %s; now %s", tc.path, got, want, after)
				}
			})
		}
		// Narrowing is not escalation.
		checkCode(t, "carol narrows sa-reader", carol.patch(t, rolePath, map[string]any{"rules": rule([]string{"get"}, []string{"serviceaccounts"})}), http.StatusOK)
		checkStatus(t, "dave lists sa after list was dropped from sa-reader", dave.get(t, nsPath("pesc", "serviceaccounts")), http.StatusForbidden, api.ReasonForbidden, "")
		checkCode(t, "dave gets a missing sa (get is still granted)", dave.get(t, nsPath("pesc", "serviceaccounts", "none")), http.StatusNotFound)
	})
}

// testServiceAccountSubject: a service account's token names it
// system:serviceaccount:PROJECT:NAME, and a binding to kind ServiceAccount
// grants it rights in the binding's project.
func (s *suite) testServiceAccountSubject(t *testing.T) {
	alice := s.as("alice")
	mustCode(t, "create robot", alice.post(t, nsPath("pa", "serviceaccounts"), serviceAccount("robot")), http.StatusCreated)
	r := alice.post(t, nsPath("pa", "serviceaccounts", "robot", "token"), map[string]any{"spec": map[string]any{"expirationSeconds": 3600}})
	mustCode(t, "token for robot", r, http.StatusCreated)
	var tr api.TokenRequest
	mustDecode(t, r, &tr)
	if tr.Status.Token == "" || tr.Status.ExpirationTimestamp.IsZero() {
		t.Fatalf("token request: got %s, want a token and an expiration", r)
	}
	robot := s.withToken(tr.Status.Token)

	r = robot.get(t, prefix+"/users/~")
	mustCode(t, "robot whoami", r, http.StatusOK)
	var u api.User
	mustDecode(t, r, &u)
	if got, want := u.Name, "system:serviceaccount:pa:robot"; got != want {
		t.Errorf("robot whoami: got %q, want %q", got, want)
	}
	for _, g := range []string{"system:authenticated", "system:serviceaccounts", "system:serviceaccounts:pa"} {
		if !contains(u.Groups, g) {
			t.Errorf("robot groups: got %v, want %s in them", u.Groups, g)
		}
	}

	checkStatus(t, "robot lists sa before any grant", robot.get(t, nsPath("pa", "serviceaccounts")), http.StatusForbidden, api.ReasonForbidden, "system:serviceaccount:pa:robot")
	mustCode(t, "alice grants robot view", alice.post(t, nsPath("pa", "rolebindings"),
		binding("robot-view", "ClusterRole", "view", api.Subject{Kind: api.SubjectServiceAccount, Name: "robot"})), http.StatusCreated)
	r = robot.get(t, nsPath("pa", "serviceaccounts"))
	if checkCode(t, "robot lists sa with view", r, http.StatusOK) && !contains(namesOf(t, r), "robot") {
		t.Errorf("robot lists sa: got %v, want robot in it", namesOf(t, r))
	}
	checkStatus(t, "robot creates sa with view", robot.post(t, nsPath("pa", "serviceaccounts"), serviceAccount("robot-child")), http.StatusForbidden, api.ReasonForbidden, "")
	checkStatus(t, "robot lists sa in pb", robot.get(t, nsPath("pb", "serviceaccounts")), http.StatusForbidden, api.ReasonForbidden, "")

	// A ServiceAccount subject naming another project is a different
	// service account.
	mustCode(t, "create robot2", alice.post(t, nsPath("pa", "serviceaccounts"), serviceAccount("robot2")), http.StatusCreated)
	mustCode(t, "grant view to pb's robot2", alice.post(t, nsPath("pa", "rolebindings"),
		binding("robot2-view", "ClusterRole", "view", api.Subject{Kind: api.SubjectServiceAccount, Name: "robot2", Namespace: "pb"})), http.StatusCreated)
	r = alice.post(t, nsPath("pa", "serviceaccounts", "robot2", "token"), nil)
	mustCode(t, "token for robot2 without a body", r, http.StatusCreated)
	mustDecode(t, r, &tr)
	checkStatus(t, "pa's robot2 lists sa", s.withToken(tr.Status.Token).get(t, nsPath("pa", "serviceaccounts")), http.StatusForbidden, api.ReasonForbidden, "")

	// A service account can provision a project and administer it.
	mustCode(t, "robot creates a project", robot.post(t, projectPath(""), project("robot-proj")), http.StatusCreated)
	checkCode(t, "robot administers its project", robot.post(t, nsPath("robot-proj", "serviceaccounts"), serviceAccount("helper")), http.StatusCreated)
	checkStatus(t, "alice in robot's project", alice.get(t, nsPath("robot-proj", "serviceaccounts")), http.StatusForbidden, api.ReasonForbidden, "")
}

// randomToken is well formed but was never issued.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return "sha256~" + base64.RawURLEncoding.EncodeToString(b)
}

// testStatusMatrix checks who may write status subresources in "pa" (M7):
// nobody but a cluster admin for what controllers and nodes record, and
// for the three the CLI writes (build configs, builds, image streams)
// project editors and admins, but only the fields the CLI changes. Every
// refused write must change nothing.
func (s *suite) testStatusMatrix(t *testing.T) {
	admin := s.as("admin")
	container := []map[string]any{{"name": "c", "image": "busybox"}}
	fixtures := map[string]any{
		"pods": map[string]any{"metadata": map[string]any{"name": "st"}, "spec": map[string]any{"containers": container}},
		"replicationcontrollers": map[string]any{"metadata": map[string]any{"name": "st"}, "spec": map[string]any{
			"replicas": 0, "selector": map[string]string{"app": "st"},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]string{"app": "st"}}, "spec": map[string]any{"containers": container}}}},
		"imagestreams": map[string]any{"metadata": map[string]any{"name": "st"}},
		"buildconfigs": map[string]any{"metadata": map[string]any{"name": "st"}, "spec": map[string]any{
			"source":   map[string]any{"dockerfile": "FROM scratch\n"},
			"strategy": map[string]any{"type": "Docker", "dockerStrategy": map[string]any{}},
			"output":   map[string]any{"to": map[string]any{"kind": "ImageStreamTag", "name": "st:latest"}}}},
		"promotions": map[string]any{"metadata": map[string]any{"name": "st"}, "spec": map[string]any{"pipeline": "none", "to": "prod"}},
		"builds": map[string]any{"metadata": map[string]any{"name": "st"}, "spec": map[string]any{
			"source":   map[string]any{"dockerfile": "FROM scratch\n"},
			"strategy": map[string]any{"type": "Docker", "dockerStrategy": map[string]any{}},
			"output":   map[string]any{"to": map[string]any{"kind": "ImageStreamTag", "name": "st:latest"}}}},
	}
	// forge is a status change that only the platform may make.
	forge := map[string]map[string]any{
		"pods":                   {"phase": "Running", "podIP": "127.0.0.1"},
		"replicationcontrollers": {"replicas": 3, "readyReplicas": 3},
		"imagestreams":           {"dockerImageRepository": "evil.example/x"},
		"buildconfigs":           {"lastTriggeredImage": "sha256:" + strings.Repeat("1", 64)},
		"promotions":             {"phase": "Complete"},
		"builds":                 {"phase": "Complete", "outputDigest": "sha256:" + strings.Repeat("2", 64)},
	}
	// userWritable are the status subresources edit and admin may write.
	userWritable := map[string]bool{"imagestreams": true, "buildconfigs": true, "builds": true}
	for res, body := range fixtures {
		mustCode(t, "fixture "+res, admin.post(t, nsPath("pa", res), body), http.StatusCreated)
	}
	for res := range fixtures {
		// The platform's accounts of pa (builder, deployer, promoter,
		// scanner) write no status through the API, nor read it.
		for _, u := range append(append(slices.Clone(matrixUsers), platformAccounts...), "admin") {
			t.Run(fmt.Sprintf("%s_status_%s", res, u), func(t *testing.T) {
				c := s.as(u)
				path := nsPath("pa", res, "st", "status")
				readable := slices.Contains([]string{"bob", "carol", "alice", "admin"}, u)
				checkCode(t, u+" reads "+res+"/status", c.get(t, path), map[bool]int{true: http.StatusOK, false: http.StatusForbidden}[readable])
				// put writes the object's current status, changed by
				// change, as u; controllers write these statuses too, so
				// a conflict reads the object again.
				put := func(change map[string]any) result {
					for attempt := 0; ; attempt++ {
						var obj map[string]any
						mustDecode(t, admin.get(t, nsPath("pa", res, "st")), &obj)
						st, _ := obj["status"].(map[string]any)
						if st == nil {
							st = map[string]any{}
						}
						for k, v := range change {
							st[k] = v
						}
						obj["status"] = st
						if r := c.put(t, path, obj); r.Code != http.StatusConflict || attempt == 10 {
							return r
						}
					}
				}

				// The same status back: allowed where RBAC grants it.
				wantSame := u == "admin" || (userWritable[res] && (u == "alice" || u == "carol"))
				checkCode(t, u+" PUTs "+res+"/status unchanged", put(nil), map[bool]int{true: http.StatusOK, false: http.StatusForbidden}[wantSame])

				// A forged status: only the cluster admin.
				r := put(forge[res])
				if u == "admin" {
					checkCode(t, "cluster admin forges "+res+"/status", r, http.StatusOK)
					return
				}
				checkStatus(t, u+" forges "+res+"/status", r, http.StatusForbidden, api.ReasonForbidden, "")
				// Controllers write these statuses too, so only the forged
				// fields are compared: none may hold the forged value.
				after := admin.get(t, nsPath("pa", res, "st"))
				var a map[string]any
				mustDecode(t, after, &a)
				got, _ := a["status"].(map[string]any)
				for k, v := range forge[res] {
					if fmt.Sprint(got[k]) == fmt.Sprint(v) {
						t.Errorf("%s's refused status write set %s status.%s = %v", u, res, k, got[k])
					}
				}
			})
		}
	}
	t.Run("editor cancels a build", func(t *testing.T) {
		// cancel-build's write; the build controller may write too, so a
		// conflict is read again.
		for attempt := 0; ; attempt++ {
			r := admin.get(t, nsPath("pa", "builds", "st"))
			var b map[string]any
			mustDecode(t, r, &b)
			st, _ := b["status"].(map[string]any)
			if st == nil {
				st = map[string]any{}
			}
			st["cancelled"] = true
			b["status"] = st
			r = s.as("carol").put(t, nsPath("pa", "builds", "st", "status"), b)
			if r.Code == http.StatusConflict && attempt < 10 {
				continue
			}
			checkCode(t, "carol sets builds/st/status cancelled", r, http.StatusOK)
			return
		}
	})
}
