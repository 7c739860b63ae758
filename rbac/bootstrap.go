package rbac

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/store"
)

// Verbs every role understands. Promote is the permission to approve a
// promotion into a project; only admin holds it by default.
var (
	ReadVerbs  = []string{"get", "list", "watch"}
	WriteVerbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
)

// Built-in role names.
const (
	ClusterAdmin    = "cluster-admin"
	Admin           = "admin"
	Edit            = "edit"
	View            = "view"
	ImagePuller     = "image-puller"
	ImagePusher     = "image-pusher"
	ImageBuilder    = "image-builder"
	SelfProvisioner = "self-provisioner"
	// PrivilegedPods lets the pods of a service account it is bound to
	// cluster-wide run beyond the restricted policy (api.PrivilegedPodsRole).
	PrivilegedPods = api.PrivilegedPodsRole
	// Router is for an edge router out of process (`slipway router`):
	// it reads routes and endpoints everywhere, with the routes' TLS keys
	// (RouteKeysVerb), and writes route status.
	Router = "system:router"
)

// RouteKeysVerb on routes lets a reader see routes' TLS private keys
// without the right to update the routes, which is what a router needs to
// terminate edge and reencrypt routes. The API server shows the keys
// redacted to readers who hold neither. No read or write verb list holds
// it, so view and edit get it through no wildcard; only system:router
// (and "*" verbs, which may update routes anyway) do.
const RouteKeysVerb = "serve"

// PrivilegedPodsAttributes is what PrivilegedPods grants: the API server
// asks it of a pod's service account, cluster-wide only, so a project's
// RoleBinding of the role grants nothing.
var PrivilegedPodsAttributes = Attributes{Verb: "use", Resource: "pods", Subresource: "privileged"}

// rbacResources are left out of edit and view: seeing or changing who may
// do what is an admin's business.
var rbacResources = []string{"roles", "rolebindings"}

// trustResources are read-only for edit: an editor must not weaken the
// project's policy, swap its signing keys or rewrite scan results.
var trustResources = []string{"imagepolicies", "signingkeys", "imagescans", "events"}

// secretResources are left out of view, as in Kubernetes and OpenShift:
// reading a project is not reading its credentials (a webhook's secret,
// say). Edit and admin read and write them.
var secretResources = []string{"secrets"}

// UserStatus are the status subresources project users (edit, admin) may
// write. The API server admits from them only what the CLI changes:
// lastVersion of a build config, cancelled of a build, and an image
// stream tag's deletion or rollback to an image it already held.
var UserStatus = []string{"buildconfigs/status", "builds/status", "imagestreams/status"}

// BootstrapRoles are the built-in ClusterRoles, derived from the resource
// registry so that a resource added later is covered by edit and view
// without touching this file.
//
// Status subresources are written by controllers and nodes (through the
// store) and by cluster admins: no wildcard reaches them (see
// resourceMatches). Project users read them, and write only the
// userStatus ones, where the API server lets through just the fields the
// CLI changes (start-build, cancel-build, tag deletion, rollback).
func BootstrapRoles() []*api.ClusterRole {
	var ns, readOnly, statusRead, secrets []string
	for _, r := range api.Resources() {
		if r.Namespaced && r.HasStatus {
			statusRead = append(statusRead, r.Name+"/"+StatusSubresource)
		}
		switch {
		case !r.Namespaced || r.Hidden || slices.Contains(rbacResources, r.Name):
			// Hidden resources (signing key secrets) are never served.
		case slices.Contains(trustResources, r.Name):
			readOnly = append(readOnly, r.Name)
		case slices.Contains(secretResources, r.Name):
			secrets = append(secrets, r.Name, r.Name+"/*")
		case r.Name == "promotions":
			// Editors may ask for a promotion; only the controller
			// writes its status, and approving needs the promote verb.
			ns = append(ns, r.Name)
		default:
			ns = append(ns, r.Name, r.Name+"/*")
		}
	}
	statusWrite := api.PolicyRule{Verbs: []string{"update", "patch"}, Resources: UserStatus}
	statusGet := api.PolicyRule{Verbs: []string{"get"}, Resources: statusRead}
	role := func(name string, rules ...api.PolicyRule) *api.ClusterRole {
		return &api.ClusterRole{
			ObjectMeta: api.ObjectMeta{Name: name, Labels: map[string]string{"slipway.dev/bootstrap": "true"}},
			Rules:      rules,
		}
	}
	layers := "imagestreams/layers"
	return []*api.ClusterRole{
		role(ClusterAdmin, api.PolicyRule{Verbs: []string{"*"}, Resources: []string{"*", "*/" + StatusSubresource}}),
		role(Admin, api.PolicyRule{Verbs: []string{"*"}, Resources: []string{"*"}}, statusWrite, statusGet),
		role(Edit,
			api.PolicyRule{Verbs: WriteVerbs, Resources: append(append([]string(nil), ns...), secrets...)},
			api.PolicyRule{Verbs: ReadVerbs, Resources: readOnly},
			api.PolicyRule{Verbs: []string{"get"}, Resources: []string{"projects"}},
			statusWrite, statusGet),
		role(View,
			api.PolicyRule{Verbs: ReadVerbs, Resources: append(append([]string(nil), ns...), readOnly...)},
			api.PolicyRule{Verbs: []string{"get"}, Resources: []string{"projects"}},
			statusGet),
		role(ImagePuller, api.PolicyRule{Verbs: []string{"get"}, Resources: []string{layers}}),
		role(ImagePusher, api.PolicyRule{Verbs: []string{"get", "update"}, Resources: []string{layers}}),
		role(ImageBuilder,
			api.PolicyRule{Verbs: []string{"get", "update"}, Resources: []string{layers}},
			api.PolicyRule{Verbs: []string{"get", "create"}, Resources: []string{"imagestreams"}}),
		role(SelfProvisioner, api.PolicyRule{Verbs: []string{"create"}, Resources: []string{"projects"}}),
		role(PrivilegedPods, api.PolicyRule{Verbs: []string{"use"}, Resources: []string{"pods/privileged"}}),
		role(Router,
			api.PolicyRule{Verbs: ReadVerbs, Resources: []string{"routes", "endpoints"}},
			api.PolicyRule{Verbs: []string{RouteKeysVerb}, Resources: []string{"routes"}},
			api.PolicyRule{Verbs: []string{"get", "update", "patch"}, Resources: []string{"routes/" + StatusSubresource}}),
	}
}

// BootstrapBindings grant cluster-admin to the admin user and to the
// system:cluster-admins group, and self-provisioning to everyone who is
// authenticated.
func BootstrapBindings() []*api.ClusterRoleBinding {
	bind := func(name, role string, subjects ...api.Subject) *api.ClusterRoleBinding {
		return &api.ClusterRoleBinding{
			ObjectMeta: api.ObjectMeta{Name: name, Labels: map[string]string{"slipway.dev/bootstrap": "true"}},
			RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: role},
			Subjects:   subjects,
		}
	}
	return []*api.ClusterRoleBinding{
		bind(ClusterAdmin, ClusterAdmin,
			api.Subject{Kind: api.SubjectUser, Name: identity.AdminUser},
			api.Subject{Kind: api.SubjectGroup, Name: identity.GroupClusterAdmins}),
		bind(SelfProvisioner, SelfProvisioner, api.Subject{Kind: api.SubjectGroup, Name: identity.GroupAuthenticated}),
	}
}

// Bootstrap writes the built-in roles and bindings, bringing roles back to
// their built-in rules if they were changed, and creating bindings that are
// missing (an operator may have edited a binding's subjects on purpose).
func Bootstrap(ctx context.Context, s *store.Store) error {
	for _, want := range BootstrapRoles() {
		err := s.Create(ctx, api.ClusterRoles, want)
		if errors.Is(err, store.ErrExists) {
			_, err = s.GuaranteedUpdate(ctx, api.ClusterRoles, "", want.Name, store.UpdateOptions{}, func(o api.Object) error {
				cur := o.(*api.ClusterRole)
				if !cmp.Equal(cur.Rules, want.Rules) {
					cur.Rules = want.Rules
				}
				return nil
			})
		}
		if err != nil {
			return fmt.Errorf("rbac: bootstrap role %s: %w", want.Name, err)
		}
	}
	for _, b := range BootstrapBindings() {
		if err := s.Create(ctx, api.ClusterRoleBindings, b); err != nil && !errors.Is(err, store.ErrExists) {
			return fmt.Errorf("rbac: bootstrap binding %s: %w", b.Name, err)
		}
	}
	return nil
}

// AdminBinding is the RoleBinding that makes a project's creator its admin.
func AdminBinding(project, user string) *api.RoleBinding {
	kind := api.SubjectUser
	name := user
	subj := api.Subject{Kind: kind, Name: name}
	if p, sa, ok := api.SplitServiceAccountUser(user); ok {
		subj = api.Subject{Kind: api.SubjectServiceAccount, Name: sa, Namespace: p}
	}
	return &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: Admin, Namespace: project},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: Admin},
		Subjects:   []api.Subject{subj},
	}
}
