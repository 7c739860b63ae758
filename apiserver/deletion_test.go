package apiserver_test

import (
	"net/http"
	"slices"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
)

// M2: deleting a project takes its service accounts out of other
// projects' bindings and of cluster bindings (deleting those left empty),
// and leaves alone the subjects that only look alike: another project's
// own service account of the same name.
func TestDeletionUnbindsServiceAccounts(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	s := newSuite(t, env)
	s.createProject(t, "alice", "gone")
	s.createProject(t, "alice", "other")
	admin, alice := s.as("admin"), s.as("alice")
	sa := func(ns, name string) api.Subject {
		return api.Subject{Kind: api.SubjectServiceAccount, Namespace: ns, Name: name}
	}
	mustCode(t, "bind gone's SA and other's own SA in other", admin.post(t, nsPath("other", "rolebindings"),
		binding("mixed", "ClusterRole", "edit", sa("gone", "deployer"), api.Subject{Kind: api.SubjectServiceAccount, Name: "deployer"}, user("bob"))), http.StatusCreated)
	mustCode(t, "bind only gone's SA in other", admin.post(t, nsPath("other", "rolebindings"),
		binding("only-gone", "ClusterRole", "view", user(api.ServiceAccountUser("gone", "builder")))), http.StatusCreated)
	crb := &api.ClusterRoleBinding{ObjectMeta: api.ObjectMeta{Name: "gone-viewers"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "view"},
		Subjects: []api.Subject{sa("gone", "deployer"), user("carol")}}
	mustCode(t, "cluster binding naming gone's SA", admin.post(t, clusterPath("clusterrolebindings"), crb), http.StatusCreated)

	mustCode(t, "alice deletes gone", alice.del(t, projectPath("gone")), http.StatusOK)

	var rb api.RoleBinding
	r := admin.get(t, nsPath("other", "rolebindings", "mixed"))
	mustCode(t, "get other/mixed", r, http.StatusOK)
	mustDecode(t, r, &rb)
	if want := []api.Subject{{Kind: api.SubjectServiceAccount, Name: "deployer"}, user("bob")}; !slices.Equal(rb.Subjects, want) {
		t.Errorf("other/mixed subjects = %+v, want %+v", rb.Subjects, want)
	}
	mustCode(t, "get other/only-gone", admin.get(t, nsPath("other", "rolebindings", "only-gone")), http.StatusNotFound)
	var got api.ClusterRoleBinding
	r = admin.get(t, clusterPath("clusterrolebindings", "gone-viewers"))
	mustCode(t, "get gone-viewers", r, http.StatusOK)
	mustDecode(t, r, &got)
	if want := []api.Subject{user("carol")}; !slices.Equal(got.Subjects, want) {
		t.Errorf("clusterrolebinding gone-viewers subjects = %+v, want %+v", got.Subjects, want)
	}
	// The name is free again, and deleting the new project (nothing
	// outside it names it) works the same.
	s.createProject(t, "bob", "gone")
	mustCode(t, "bob deletes the new gone", s.as("bob").del(t, projectPath("gone")), http.StatusOK)
}
