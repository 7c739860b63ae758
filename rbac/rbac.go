// Package rbac decides whether a subject may perform a verb on a resource in
// a project, from Roles, ClusterRoles and their bindings, and prevents
// escalation: nobody can grant a permission they do not hold.
package rbac

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/store"
)

// ErrEscalation is returned when a binding or role would grant more than
// its author holds.
var ErrEscalation = errors.New("rbac: escalation")

// Attributes describe one request for authorization. Namespace is the
// project; for a Project itself it is the project's name, so a project's
// admin can read and delete it.
type Attributes struct {
	Verb        string
	Resource    string
	Subresource string
	Namespace   string
	Name        string
}

func (a Attributes) resource() string {
	if a.Subresource != "" {
		return a.Resource + "/" + a.Subresource
	}
	return a.Resource
}

// String reads like "create serviceaccounts in project p".
func (a Attributes) String() string {
	s := a.Verb + " " + a.resource()
	if a.Name != "" {
		s += " " + a.Name
	}
	if a.Namespace != "" {
		return s + " in project " + a.Namespace
	}
	return s + " at cluster scope"
}

// Authorizer answers from informer caches, so it never reads etcd.
type Authorizer struct {
	Roles, ClusterRoles, RoleBindings, ClusterRoleBindings *store.Informer
}

// Informers lists the caches the Authorizer needs running.
func (a *Authorizer) Informers() []*store.Informer {
	return []*store.Informer{a.Roles, a.ClusterRoles, a.RoleBindings, a.ClusterRoleBindings}
}

// NewAuthorizer makes the caches an Authorizer reads. Bindings are
// indexed by subject (and a RoleBinding also by its project), so a
// decision reads only the bindings that name the user or one of its
// groups, not every binding of the platform. The indexes live in the
// informers' caches and change under the same lock, so a binding is in
// the index as soon as the informer has seen its revision: read-your-writes
// holds as before.
func NewAuthorizer(s *store.Store) *Authorizer {
	a := &Authorizer{
		Roles:               store.NewInformer(s, api.Roles),
		ClusterRoles:        store.NewInformer(s, api.ClusterRoles),
		RoleBindings:        store.NewInformer(s, api.RoleBindings),
		ClusterRoleBindings: store.NewInformer(s, api.ClusterRoleBindings),
	}
	a.RoleBindings.AddIndex(bySubject, func(o api.Object) []string {
		b := o.(*api.RoleBinding)
		return subjectKeys(b.Subjects, b.Namespace, b.Namespace)
	})
	a.ClusterRoleBindings.AddIndex(bySubject, func(o api.Object) []string {
		return subjectKeys(o.(*api.ClusterRoleBinding).Subjects, "", "")
	})
	return a
}

// bySubject is the name of the bindings' index: see subjectKeys.
const bySubject = "subject"

// subjectKeys are the index keys of a binding in project ns ("" for a
// ClusterRoleBinding) with subjects: "ns\x00u:NAME" for a user (a service
// account is the user its name resolves to, exactly as matchesSubject
// resolves it) and "ns\x00g:NAME" for a group. Subjects of other kinds
// match nobody and are not indexed.
func subjectKeys(subjects []api.Subject, ns, bindingNS string) []string {
	keys := make([]string, 0, len(subjects))
	for _, s := range subjects {
		switch s.Kind {
		case api.SubjectUser:
			keys = append(keys, userKey(ns, s.Name))
		case api.SubjectGroup:
			keys = append(keys, groupKey(ns, s.Name))
		case api.SubjectServiceAccount:
			sns := s.Namespace
			if sns == "" {
				sns = bindingNS
			}
			keys = append(keys, userKey(ns, api.ServiceAccountUser(sns, s.Name)))
		}
	}
	return keys
}

func userKey(ns, name string) string  { return ns + "\x00u:" + name }
func groupKey(ns, name string) string { return ns + "\x00g:" + name }

// bindingsFor returns the bindings of inf in project ns ("" for cluster
// bindings) that may name u, each once, from the subject index; matchesSubject
// still decides. ok is false when inf has no index (an Authorizer not made
// by NewAuthorizer): the caller scans.
func bindingsFor(inf *store.Informer, u identity.Info, ns string) (out []api.Object, ok bool) {
	if out, ok = inf.ByIndex(bySubject, userKey(ns, u.Name)); !ok {
		return nil, false
	}
	if len(u.Groups) == 0 {
		return out, true
	}
	seen := make(map[api.Object]bool, len(out))
	for _, o := range out {
		seen[o] = true
	}
	for _, g := range u.Groups {
		more, _ := inf.ByIndex(bySubject, groupKey(ns, g))
		for _, o := range more {
			if !seen[o] {
				seen[o] = true
				out = append(out, o)
			}
		}
	}
	return out, true
}

// Authorize reports whether u may do a, and if not, why not in words a user
// can act on.
func (a *Authorizer) Authorize(u identity.Info, at Attributes) (bool, string) {
	for _, r := range a.RulesFor(u, at.Namespace) {
		if ruleAllows(r, at.Verb, at.resource(), at.Name) {
			return true, ""
		}
	}
	return false, fmt.Sprintf("user %q cannot %s; ask a project admin for a role that allows it (slipway policy add-role-to-user ROLE %s -n PROJECT)", u.Name, at, u.Name)
}

// RulesFor returns every rule u holds in project ns (cluster-wide rules
// included). ns "" returns only cluster-wide rules.
func (a *Authorizer) RulesFor(u identity.Info, ns string) []api.PolicyRule {
	var rules []api.PolicyRule
	crbs, ok := bindingsFor(a.ClusterRoleBindings, u, "")
	if !ok {
		crbs = a.ClusterRoleBindings.List("")
	}
	for _, o := range crbs {
		b := o.(*api.ClusterRoleBinding)
		if matchesSubject(b.Subjects, u, "") {
			rules = append(rules, a.roleRules(b.RoleRef, "")...)
		}
	}
	if ns != "" {
		rbs, ok := bindingsFor(a.RoleBindings, u, ns)
		if !ok {
			rbs = a.RoleBindings.List(ns)
		}
		for _, o := range rbs {
			b := o.(*api.RoleBinding)
			if matchesSubject(b.Subjects, u, ns) {
				rules = append(rules, a.roleRules(b.RoleRef, ns)...)
			}
		}
	}
	return rules
}

// RoleRules resolves a role reference; missing roles grant nothing.
func (a *Authorizer) roleRules(ref api.RoleRef, ns string) []api.PolicyRule {
	switch ref.Kind {
	case "ClusterRole":
		if o, ok := a.ClusterRoles.Get("", ref.Name); ok {
			return o.(*api.ClusterRole).Rules
		}
	case "Role":
		if o, ok := a.Roles.Get(ns, ref.Name); ok {
			return o.(*api.Role).Rules
		}
	}
	return nil
}

// ResolveRole returns the rules of a role reference, or an error naming
// what is missing.
func (a *Authorizer) ResolveRole(ctx context.Context, s *store.Store, ref api.RoleRef, ns string) ([]api.PolicyRule, error) {
	var r *api.Resource
	switch ref.Kind {
	case "ClusterRole":
		r, ns = api.ClusterRoles, ""
	case "Role":
		r = api.Roles
	default:
		return nil, fmt.Errorf("roleRef.kind %q is not ClusterRole or Role", ref.Kind)
	}
	o, err := s.Get(ctx, r, ns, ref.Name)
	if err != nil {
		return nil, fmt.Errorf("%s %q does not exist; create it first or bind an existing role (slipway get clusterroles): %w", ref.Kind, ref.Name, err)
	}
	switch o := o.(type) {
	case *api.ClusterRole:
		return o.Rules, nil
	case *api.Role:
		return o.Rules, nil
	}
	return nil, nil
}

// CheckEscalation fails with ErrEscalation when granting rules in project ns
// would give away a permission u does not hold there.
func (a *Authorizer) CheckEscalation(u identity.Info, ns string, grant []api.PolicyRule) error {
	own := a.RulesFor(u, ns)
	var missing []string
	for _, g := range grant {
		for _, v := range g.Verbs {
			for _, res := range g.Resources {
				if !covered(own, v, res, g.ResourceNames) {
					missing = append(missing, v+" "+res)
				}
			}
		}
	}
	if len(missing) > 0 {
		where := "cluster-wide"
		if ns != "" {
			where = "in project " + ns
		}
		return fmt.Errorf("%w: user %q cannot grant permissions it does not hold %s: %s", ErrEscalation, u.Name, where, strings.Join(missing, ", "))
	}
	return nil
}

// covered reports whether own grants verb on res for every listed name (or
// for all names when names is empty). Wildcards in the request must be
// matched by wildcards held.
func covered(own []api.PolicyRule, verb, res string, names []string) bool {
	for _, r := range own {
		if !contains(r.Verbs, verb) && !contains(r.Verbs, "*") {
			continue
		}
		if !resourceMatches(r.Resources, res) {
			continue
		}
		if len(r.ResourceNames) == 0 {
			return true
		}
		if len(names) > 0 && allIn(names, r.ResourceNames) {
			return true
		}
	}
	return false
}

func ruleAllows(r api.PolicyRule, verb, res, name string) bool {
	if !contains(r.Verbs, verb) && !contains(r.Verbs, "*") {
		return false
	}
	if !resourceMatches(r.Resources, res) {
		return false
	}
	return len(r.ResourceNames) == 0 || (name != "" && contains(r.ResourceNames, name))
}

// resourceMatches: "*" matches any resource and subresource, "builds/*"
// any subresource of builds, otherwise an exact match. Status subresources
// are the exception: they belong to controllers and nodes, so no wildcard
// but "*/status" (or "builds/status" itself) reaches them.
func resourceMatches(held []string, res string) bool {
	base, sub, isSub := strings.Cut(res, "/")
	for _, h := range held {
		switch {
		case h == res:
			return true
		case sub == StatusSubresource:
			if h == "*/"+StatusSubresource {
				return true
			}
		case h == "*":
			return true
		case isSub && h == base+"/*":
			return true
		}
	}
	return false
}

// StatusSubresource is the one subresource wildcards do not reach.
const StatusSubresource = "status"

func matchesSubject(subjects []api.Subject, u identity.Info, bindingNS string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case api.SubjectUser:
			if s.Name == u.Name {
				return true
			}
		case api.SubjectGroup:
			if u.InGroup(s.Name) {
				return true
			}
		case api.SubjectServiceAccount:
			ns := s.Namespace
			if ns == "" {
				ns = bindingNS
			}
			if api.ServiceAccountUser(ns, s.Name) == u.Name {
				return true
			}
		}
	}
	return false
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

func allIn(names, held []string) bool {
	for _, n := range names {
		if !contains(held, n) {
			return false
		}
	}
	return true
}

// CheckActAs fails with ErrEscalation unless u holds every permission
// target holds, cluster-wide and in every project where a binding names
// target: acting as someone (with a token minted for them) must not give
// more than u has. Target's groups count, as its tokens would carry them.
func (a *Authorizer) CheckActAs(u, target identity.Info) error {
	if err := a.CheckEscalation(u, "", a.RulesFor(target, "")); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, o := range a.RoleBindings.List("") {
		b := o.(*api.RoleBinding)
		if seen[b.Namespace] || !matchesSubject(b.Subjects, target, b.Namespace) {
			continue
		}
		seen[b.Namespace] = true
		if err := a.CheckEscalation(u, b.Namespace, a.RulesFor(target, b.Namespace)); err != nil {
			return err
		}
	}
	return nil
}
