package apiserver_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

// testCompareAndSwap: updates with a stale resourceVersion are 409, merge
// patches bump the resourceVersion, and the status subresource changes only
// status.
func (s *suite) testCompareAndSwap(t *testing.T) {
	s.createProject(t, "alice", "pcas")
	alice := s.as("alice")
	saPath := nsPath("pcas", "serviceaccounts", "cas")
	r := alice.post(t, nsPath("pcas", "serviceaccounts"), serviceAccount("cas"))
	mustCode(t, "create cas", r, http.StatusCreated)
	created := metaOf(t, r)

	t.Run("serviceaccount", func(t *testing.T) {
		r := alice.patch(t, saPath, map[string]any{"metadata": map[string]any{"labels": map[string]string{"step": "patched"}}})
		mustCode(t, "merge patch", r, http.StatusOK)
		patched := metaOf(t, r)
		if rvNum(t, patched.ResourceVersion) <= rvNum(t, created.ResourceVersion) {
			t.Errorf("merge patch: got resourceVersion %s, want it above %s", patched.ResourceVersion, created.ResourceVersion)
		}
		if patched.Labels["step"] != "patched" || patched.UID != created.UID || patched.Name != "cas" {
			t.Errorf("merge patch: got %+v, want label step=patched on the same object", patched)
		}

		stale := serviceAccount("cas")
		stale.ResourceVersion, stale.Labels = created.ResourceVersion, map[string]string{"step": "stale"}
		checkStatus(t, "PUT with a stale resourceVersion", alice.put(t, saPath, stale), http.StatusConflict, api.ReasonConflict, "")
		checkStatus(t, "PATCH with a stale resourceVersion", alice.patch(t, saPath, map[string]any{
			"metadata": map[string]any{"resourceVersion": created.ResourceVersion, "labels": map[string]string{"step": "stale"}},
		}), http.StatusConflict, api.ReasonConflict, "")
		checkStatus(t, "DELETE with a stale resourceVersion", alice.del(t, saPath+"?resourceVersion="+created.ResourceVersion), http.StatusConflict, api.ReasonConflict, "")
		r = alice.get(t, saPath)
		mustCode(t, "get", r, http.StatusOK)
		if got := metaOf(t, r); got.ResourceVersion != patched.ResourceVersion || got.Labels["step"] != "patched" {
			t.Errorf("after refused writes: got rv %s labels %v, want rv %s labels step=patched", got.ResourceVersion, got.Labels, patched.ResourceVersion)
		}

		fresh := serviceAccount("cas")
		fresh.ResourceVersion, fresh.Labels = patched.ResourceVersion, map[string]string{"step": "put"}
		r = alice.put(t, saPath, fresh)
		mustCode(t, "PUT with the current resourceVersion", r, http.StatusOK)
		put := metaOf(t, r)
		if rvNum(t, put.ResourceVersion) <= rvNum(t, patched.ResourceVersion) || put.Labels["step"] != "put" {
			t.Errorf("PUT: got rv %s labels %v, want rv above %s and step=put", put.ResourceVersion, put.Labels, patched.ResourceVersion)
		}
		if put.UID != created.UID || put.CreationTimestamp == nil || !put.CreationTimestamp.Equal(*created.CreationTimestamp) {
			t.Errorf("PUT: got uid %s created %v, want them kept (%s, %v)", put.UID, put.CreationTimestamp, created.UID, created.CreationTimestamp)
		}

		checkCode(t, "DELETE with the current resourceVersion", alice.del(t, saPath+"?resourceVersion="+put.ResourceVersion), http.StatusOK)
		checkCode(t, "gone", alice.get(t, saPath), http.StatusNotFound)
	})

	t.Run("PATCH content type", func(t *testing.T) {
		path := nsPath("pcas", "serviceaccounts", "cas-ct")
		mustCode(t, "create cas-ct", alice.post(t, nsPath("pcas", "serviceaccounts"), serviceAccount("cas-ct")), http.StatusCreated)
		checkStatus(t, "PATCH as text/plain", alice.do(t, http.MethodPatch, path, `{"metadata":{"labels":{"step":"text"}}}`, "text/plain"),
			http.StatusUnsupportedMediaType, api.ReasonUnsupportedType, "merge-patch")
		t.Run("application/json", func(t *testing.T) {
			for _, ct := range []string{"application/json", "application/yaml"} {
				r := alice.do(t, http.MethodPatch, path, `{"metadata":{"labels":{"step":"json"}}}`, ct)
				checkStatus(t, "PATCH sent as "+ct, r, http.StatusUnsupportedMediaType, api.ReasonUnsupportedType, "merge-patch")
			}
			if m := metaOf(t, alice.get(t, path)); m.Labels["step"] != "" {
				t.Errorf("after refused patches: got labels %v, want none", m.Labels)
			}
		})
	})

	t.Run("project status", func(t *testing.T) {
		// Status is the platform's: a cluster admin writes it here, and
		// the project's own admin may not (M7).
		path := projectPath("pcas")
		root := s.as("admin")
		get := func() api.Project {
			t.Helper()
			r := alice.get(t, path)
			mustCode(t, "get pcas", r, http.StatusOK)
			var p api.Project
			mustDecode(t, r, &p)
			return p
		}
		orig := get()
		if orig.Status.Phase != api.ProjectActive {
			t.Fatalf("new project: got phase %q, want Active", orig.Status.Phase)
		}

		p := orig
		p.Status.Phase = "Custom"
		p.Spec.DisplayName = "set through status"
		p.Labels = map[string]string{"through": "status"}
		r := root.put(t, path+"/status", &p)
		mustCode(t, "PUT status", r, http.StatusOK)
		statusAnswer := decodeProject(t, r)
		if got := get(); got.Status.Phase != "Custom" || got.Spec.DisplayName != orig.Spec.DisplayName || got.Labels["through"] != "" || got.Generation != orig.Generation {
			t.Errorf("PUT status, stored: got phase %q displayName %q labels %v generation %d; want phase Custom and the rest unchanged",
				got.Status.Phase, got.Spec.DisplayName, got.Labels, got.Generation)
		}
		t.Run("answer", func(t *testing.T) {
			if got := statusAnswer; got.Status.Phase != "Custom" || got.Spec.DisplayName != orig.Spec.DisplayName || got.Labels["through"] != "" {
				t.Errorf("PUT status, answer: got phase %q displayName %q labels %v; want what was stored: phase Custom, displayName %q, no labels",
					got.Status.Phase, got.Spec.DisplayName, got.Labels, orig.Spec.DisplayName)
			}
		})

		p = get()
		p.Status.Phase = "Bogus"
		p.Spec.DisplayName = "set through the main resource"
		r = alice.put(t, path, &p)
		mustCode(t, "PUT project", r, http.StatusOK)
		for what, got := range map[string]api.Project{"answer": decodeProject(t, r), "stored": get()} {
			if got.Status.Phase != "Custom" || got.Spec.DisplayName != "set through the main resource" || got.Generation != orig.Generation+1 {
				t.Errorf("PUT project, %s: got phase %q displayName %q generation %d; want phase Custom (unchanged), the new display name, generation %d",
					what, got.Status.Phase, got.Spec.DisplayName, got.Generation, orig.Generation+1)
			}
		}

		p = orig // stale
		p.Status.Phase = "Stale"
		checkStatus(t, "PUT status with a stale resourceVersion", root.put(t, path+"/status", &p), http.StatusConflict, api.ReasonConflict, "")

		r = root.patch(t, path+"/status", map[string]any{"status": map[string]string{"phase": api.ProjectActive}, "spec": map[string]string{"displayName": "patched through status"}})
		mustCode(t, "PATCH status", r, http.StatusOK)
		if got := get(); got.Status.Phase != api.ProjectActive || got.Spec.DisplayName != "set through the main resource" {
			t.Errorf("PATCH status: got phase %q displayName %q, want Active and the display name unchanged", got.Status.Phase, got.Spec.DisplayName)
		}
		r = alice.patch(t, path, map[string]any{"status": map[string]string{"phase": "Patched"}})
		mustCode(t, "PATCH project status through the main resource", r, http.StatusOK)
		if got := get(); got.Status.Phase != api.ProjectActive {
			t.Errorf("PATCH main resource: got phase %q, want Active (status is ignored)", got.Status.Phase)
		}
		checkStatus(t, "alice (admin of pcas) PUTs status", alice.put(t, path+"/status", &p), http.StatusForbidden, api.ReasonForbidden, "")
		checkStatus(t, "carol (no rights in pcas) PUTs status", s.as("carol").put(t, path+"/status", &p), http.StatusForbidden, api.ReasonForbidden, "")
		checkStatus(t, "status of a service account", alice.put(t, nsPath("pcas", "serviceaccounts", "x", "status"), serviceAccount("x")), http.StatusNotFound, api.ReasonNotFound, "subresource")
	})
}

// testServerOwnedFields: uid, creationTimestamp, generation and
// deletionTimestamp belong to the server. Setting deletionTimestamp would
// start the project finalizer, a delete by someone without the delete
// verb.
func (s *suite) testServerOwnedFields(t *testing.T) {
	s.createProject(t, "alice", "powned")
	alice, bob := s.as("alice"), s.as("bob")
	mustCode(t, "alice creates role project-updater", alice.post(t, nsPath("powned", "roles"), &api.Role{
		ObjectMeta: api.ObjectMeta{Name: "project-updater"},
		Rules:      []api.PolicyRule{{Verbs: []string{"get", "update", "patch"}, Resources: []string{"projects"}}},
	}), http.StatusCreated)
	mustCode(t, "alice binds bob", alice.post(t, nsPath("powned", "rolebindings"), binding("bob-updater", "Role", "project-updater", user("bob"))), http.StatusCreated)
	t.Run("create", func(t *testing.T) {
		r := alice.post(t, nsPath("powned", "serviceaccounts"), map[string]any{"metadata": map[string]any{
			"name": "owned", "uid": "mine", "generation": 7,
			"creationTimestamp": "2001-01-01T00:00:00Z", "deletionTimestamp": "2001-01-01T00:00:00Z",
		}})
		mustCode(t, "create with server-owned fields", r, http.StatusCreated)
		m := metaOf(t, r)
		if m.UID == "mine" || m.Generation != 1 || m.CreationTimestamp == nil || m.CreationTimestamp.Year() == 2001 {
			t.Errorf("create: got uid %q generation %d creationTimestamp %v, want the server's", m.UID, m.Generation, m.CreationTimestamp)
		}
		t.Run("deletionTimestamp", func(t *testing.T) {
			if m.DeletionTimestamp != nil {
				t.Errorf("create: got deletionTimestamp %v, want none on a new object", m.DeletionTimestamp)
			}
		})
	})
	path := projectPath("powned")
	checkStatus(t, "bob deletes powned", bob.del(t, path), http.StatusForbidden, api.ReasonForbidden, "")
	checkCode(t, "bob updates powned", bob.patch(t, path, map[string]any{"spec": map[string]string{"displayName": "bob was here"}}), http.StatusOK)

	for _, tc := range []struct {
		what   string
		method string
		body   func() any
	}{
		{"PATCH deletionTimestamp", http.MethodPatch, func() any {
			return map[string]any{"metadata": map[string]any{"deletionTimestamp": "2001-01-01T00:00:00Z"}}
		}},
		{"PUT deletionTimestamp", http.MethodPut, func() any {
			var p map[string]any
			mustDecode(t, bob.get(t, path), &p)
			p["metadata"].(map[string]any)["deletionTimestamp"] = "2001-01-01T00:00:00Z"
			return p
		}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			ct := ""
			if tc.method == http.MethodPatch {
				ct = "application/merge-patch+json"
			}
			r := bob.do(t, tc.method, path, tc.body(), ct)
			if r.Code == http.StatusOK {
				if p := decodeProject(t, r); p.DeletionTimestamp != nil {
					t.Errorf("bob (update, no delete) %s: got deletionTimestamp %v stored, want it ignored or refused: this starts the deletion of the project", tc.what, p.DeletionTimestamp)
				}
			} else {
				checkStatus(t, "bob "+tc.what, r, http.StatusBadRequest, "", "")
			}
		})
	}

}

func decodeProject(t *testing.T, r result) api.Project {
	t.Helper()
	var p api.Project
	mustDecode(t, r, &p)
	return p
}

func rvNum(t *testing.T, rv string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q is not a number", rv)
	}
	return n
}

// testBadInput: every kind of bad request is answered 400 (413 for a body
// over the limit, 415 for an unknown content type) with a Status that says
// what is wrong, and nothing is written.
func (s *suite) testBadInput(t *testing.T) {
	s.createProject(t, "alice", "pbad")
	alice, admin := s.as("alice"), s.as("admin")
	coll := nsPath("pbad", "serviceaccounts")
	mustCode(t, "create fixed", alice.post(t, coll, serviceAccount("fixed")), http.StatusCreated)
	long := strings.Repeat("a", 300)
	huge := `{"metadata":{"name":"huge","annotations":{"a":"` + strings.Repeat("x", 3<<20) + `"}}}`
	const (
		bad     = http.StatusBadRequest
		tooBig  = http.StatusRequestEntityTooLarge
		badType = http.StatusUnsupportedMediaType
	)
	for _, tc := range []struct {
		what         string
		method, path string
		ctype        string
		body         any
		code         int
		reason       string
		msg          string // the message must contain this
		field        string // details.causes must name this field
	}{
		{"malformed JSON", "POST", coll, "", `{"metadata":{"name":"x"`, bad, api.ReasonBadRequest, "not valid JSON", ""},
		{"JSON that is not an object", "POST", coll, "", `["x"]`, bad, api.ReasonBadRequest, "", ""},
		{"two JSON values", "POST", coll, "", `{"metadata":{"name":"x"}} {"metadata":{"name":"y"}}`, bad, api.ReasonBadRequest, "", ""},
		{"malformed YAML", "POST", coll, "application/yaml", "metadata:\n  name: [x\n", bad, api.ReasonBadRequest, "not valid YAML", ""},
		{"YAML with a duplicate key", "POST", coll, "application/yaml", "metadata:\n  name: x\n  name: y\n", bad, api.ReasonBadRequest, "YAML", ""},
		{"unknown kind", "POST", coll, "", `{"kind":"Banana","metadata":{"name":"x"}}`, bad, api.ReasonBadRequest, `"Banana" is unknown`, ""},
		{"kind of another resource", "POST", coll, "", `{"kind":"RoleBinding","metadata":{"name":"x"}}`, bad, api.ReasonBadRequest, "cannot be sent to serviceaccounts", ""},
		{"apiVersion not served", "POST", coll, "", `{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"x"}}`, bad, api.ReasonBadRequest, "not served", ""},
		{"unknown field", "POST", coll, "", `{"metadata":{"name":"x"},"spec":{"replicas":1}}`, bad, api.ReasonBadRequest, "unknown field", "spec"},
		{"unknown metadata field", "POST", coll, "", `{"metadata":{"name":"x","nmae":"y"}}`, bad, api.ReasonBadRequest, "unknown field", "nmae"},
		{"wrong type", "POST", coll, "", `{"metadata":{"name":5}}`, bad, api.ReasonBadRequest, "cannot hold a JSON number", ""},
		{"empty body", "POST", coll, "", " \n", bad, api.ReasonBadRequest, "empty", ""},
		{"text/plain", "POST", coll, "text/plain", `{"metadata":{"name":"x"}}`, badType, api.ReasonUnsupportedType, "text/plain", ""},
		{"no name", "POST", coll, "", `{"metadata":{}}`, bad, api.ReasonInvalid, "metadata.name", "metadata.name"},
		{"name ../x in body", "POST", coll, "", `{"metadata":{"name":"../x"}}`, bad, api.ReasonInvalid, "not a valid name", "metadata.name"},
		{"name UPPER in body", "POST", coll, "", `{"metadata":{"name":"UPPER"}}`, bad, api.ReasonInvalid, "not a valid name", "metadata.name"},
		{"300-char name in body", "POST", coll, "", `{"metadata":{"name":"` + long + `"}}`, bad, api.ReasonInvalid, "63", "metadata.name"},
		{"name with a slash in YAML", "POST", coll, "application/yaml", "metadata:\n  name: a/b\n", bad, api.ReasonInvalid, "", "metadata.name"},
		{"bad label", "POST", coll, "", `{"metadata":{"name":"x","labels":{"a b":"c"}}}`, bad, api.ReasonInvalid, "label", "metadata.labels"},
		{"other project in body", "POST", coll, "", `{"metadata":{"name":"x","namespace":"pa"}}`, bad, "", "pa", "metadata.namespace"},
		{"resourceVersion on create", "POST", coll, "", `{"metadata":{"name":"x","resourceVersion":"5"}}`, bad, "", "resourceVersion", "metadata.resourceVersion"},
		{"POST to a name", "POST", coll + "/x", "", `{"metadata":{"name":"x"}}`, http.StatusMethodNotAllowed, api.ReasonMethodNotAllow, "", ""},
		{"name ../x in path", "PUT", coll + "/..%2Fx", "", `{"metadata":{"name":"../x"}}`, bad, api.ReasonInvalid, "not a valid", ""},
		{"name .. in path", "PUT", coll + "/../x", "", `{"metadata":{"name":"x"}}`, bad, api.ReasonInvalid, "not a valid", ""},
		{"name UPPER in path", "PUT", coll + "/UPPER", "", `{"metadata":{"name":"UPPER"}}`, bad, api.ReasonInvalid, "not a valid", ""},
		{"300-char name in path", "GET", coll + "/" + long, "", nil, bad, api.ReasonInvalid, "…", ""},
		{"300-char name in path, PUT", "PUT", coll + "/" + long, "", `{"metadata":{"name":"` + long + `"}}`, bad, api.ReasonInvalid, "", ""},
		{"delete ../x", "DELETE", coll + "/..%2Fx", "", nil, bad, api.ReasonInvalid, "", ""},
		{"name in body differs from path", "PUT", coll + "/x", "", `{"metadata":{"name":"y"}}`, bad, "", "", "metadata.name"},
		{"body over 3 MiB", "POST", coll, "", huge, tooBig, api.ReasonTooLarge, "limit", ""},
		{"body over 3 MiB, chunked", "POST", coll, "", strings.NewReader(huge), tooBig, api.ReasonTooLarge, "limit", ""},
		{"body over 3 MiB, YAML", "POST", coll, "application/yaml", "metadata:\n  name: huge\n  annotations:\n    a: " + strings.Repeat("x", 3<<20) + "\n", tooBig, api.ReasonTooLarge, "", ""},
		{"project ../x in path", "GET", nsPath("..%2Fx", "serviceaccounts"), "", nil, bad, api.ReasonInvalid, "project", ""},
		{"project .. in path", "GET", prefix + "/namespaces/../x/serviceaccounts", "", nil, bad, api.ReasonInvalid, "project", ""},
		{"create in project ../x", "POST", nsPath("..%2Fx", "serviceaccounts"), "", `{"metadata":{"name":"x"}}`, bad, api.ReasonInvalid, "project", ""},
		{"create in project UPPER", "POST", nsPath("UPPER", "serviceaccounts"), "", `{"metadata":{"name":"x"}}`, bad, api.ReasonInvalid, "project", ""},
		{"project ../x by name", "GET", projectPath("..%2Fx"), "", nil, bad, api.ReasonInvalid, "", ""},
		{"new project ../x", "POST", projectPath(""), "", `{"metadata":{"name":"../x"}}`, bad, api.ReasonInvalid, "", "metadata.name"},
		{"new project UPPER", "POST", projectPath(""), "", `{"metadata":{"name":"UPPER"}}`, bad, api.ReasonInvalid, "", "metadata.name"},
		{"new project with a 300-char name", "POST", projectPath(""), "", `{"metadata":{"name":"` + long + `"}}`, bad, api.ReasonInvalid, "", "metadata.name"},
		{"new project with a namespace", "POST", projectPath(""), "", `{"metadata":{"name":"x","namespace":"pa"}}`, bad, api.ReasonInvalid, "", "metadata.namespace"},
		{"malformed merge patch", "PATCH", coll + "/fixed", "application/merge-patch+json", `{"metadata":`, bad, api.ReasonBadRequest, "", ""},
		{"patch that renames", "PATCH", coll + "/fixed", "application/merge-patch+json", `{"metadata":{"name":"other"}}`, bad, "", "rename", "metadata.name"},
		{"patch with an unknown field", "PATCH", coll + "/fixed", "application/merge-patch+json", `{"spec":{"x":1}}`, bad, api.ReasonBadRequest, "unknown field", "spec"},
		{"binding without subjects", "POST", nsPath("pbad", "rolebindings"), "", `{"metadata":{"name":"x"},"roleRef":{"kind":"ClusterRole","name":"view"}}`, bad, api.ReasonInvalid, "", "subjects"},
		{"binding to a missing role", "POST", nsPath("pbad", "rolebindings"), "", `{"metadata":{"name":"x"},"roleRef":{"kind":"Role","name":"nope"},"subjects":[{"kind":"User","name":"bob"}]}`, bad, api.ReasonInvalid, "does not exist", "roleRef"},
		{"binding with a bad subject kind", "POST", nsPath("pbad", "rolebindings"), "", `{"metadata":{"name":"x"},"roleRef":{"kind":"ClusterRole","name":"view"},"subjects":[{"kind":"Robot","name":"bob"}]}`, bad, api.ReasonInvalid, "", "subjects[0].kind"},
		{"bad labelSelector", "GET", coll + "?labelSelector=%3D%3D%3D", "", nil, bad, api.ReasonBadRequest, "labelSelector", ""},
		{"negative limit", "GET", coll + "?limit=-1", "", nil, bad, api.ReasonBadRequest, "limit", ""},
		{"bad continue", "GET", coll + "?limit=1&continue=garbage", "", nil, bad, api.ReasonBadRequest, "continue", ""},
		{"bad resourceVersion", "GET", coll + "?watch=true&resourceVersion=abc", "", nil, bad, api.ReasonBadRequest, "resourceVersion", ""},
	} {
		t.Run(tc.what, func(t *testing.T) {
			r := alice.do(t, tc.method, tc.path, tc.body, tc.ctype)
			st := checkStatus(t, tc.what, r, tc.code, tc.reason, tc.msg)
			if tc.field != "" && !contains(causeFields(st), tc.field) {
				t.Errorf("%s: got causes for fields %v, want %q among them (message %q)", tc.what, causeFields(st), tc.field, st.Message)
			}
			if len(st.Message) > 2000 {
				t.Errorf("%s: got a message of %d bytes, want a short one", tc.what, len(st.Message))
			}
		})
	}

	t.Run("nothing written", func(t *testing.T) {
		if got := admin.listNames(t, coll); len(got) != 1 || got[0] != "fixed" {
			t.Errorf("service accounts of pbad: got %v, want only [fixed]", got)
		}
		if got := admin.listNames(t, nsPath("pbad", "rolebindings")); len(got) != 1 || got[0] != "admin" {
			t.Errorf("role bindings of pbad: got %v, want [admin]", got)
		}
		for _, p := range admin.listNames(t, projectPath("")) {
			if p == "x" || strings.ToLower(p) != p || len(p) > 63 || strings.ContainsAny(p, "./") {
				t.Errorf("project list holds %q, want no project from bad input", p)
			}
		}
		r := admin.get(t, coll+"/fixed")
		mustCode(t, "get fixed", r, http.StatusOK)
		if m := metaOf(t, r); m.Generation != 1 || len(m.Labels) != 0 {
			t.Errorf("fixed after bad writes: got %+v, want it untouched", m)
		}
	})

	t.Run("JSON syntax message", func(t *testing.T) {
		st := checkStatus(t, "malformed JSON", alice.post(t, coll, `{"metadata":{"name":"x"`), http.StatusBadRequest, api.ReasonBadRequest, "not valid JSON")
		if n := strings.Count(st.Message, "not valid JSON"); n != 1 {
			t.Errorf("got message %q, want it to say \"not valid JSON\" once", st.Message)
		}
	})

	t.Run("good YAML", func(t *testing.T) {
		r := alice.do(t, "POST", coll, "apiVersion: slipway.dev/v1\nkind: ServiceAccount\nmetadata:\n  name: from-yaml\n  labels:\n    format: yaml\n", "application/yaml")
		mustCode(t, "create from YAML", r, http.StatusCreated)
		if m := metaOf(t, r); m.Name != "from-yaml" || m.Namespace != "pbad" || m.Labels["format"] != "yaml" {
			t.Errorf("created from YAML: got %+v", m)
		}
		// Just under the limit is accepted.
		body := `{"metadata":{"name":"big","annotations":{"a":"`
		body += strings.Repeat("x", 3<<20-len(body)-len(`"}}}`)) + `"}}}`
		r = alice.do(t, "POST", coll, bytes.NewBufferString(body).Bytes(), "")
		checkCode(t, "create a body of exactly 3 MiB", r, http.StatusCreated)
	})
}
