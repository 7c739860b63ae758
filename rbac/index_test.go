package rbac

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// scanRules is RulesFor as it was before the subject index: every
// binding of the project and every cluster binding, matched one by one.
func scanRules(a *Authorizer, u identity.Info, ns string) []api.PolicyRule {
	var rules []api.PolicyRule
	for _, o := range a.ClusterRoleBindings.List("") {
		if b := o.(*api.ClusterRoleBinding); matchesSubject(b.Subjects, u, "") {
			rules = append(rules, a.roleRules(b.RoleRef, "")...)
		}
	}
	if ns != "" {
		for _, o := range a.RoleBindings.List(ns) {
			if b := o.(*api.RoleBinding); matchesSubject(b.Subjects, u, ns) {
				rules = append(rules, a.roleRules(b.RoleRef, ns)...)
			}
		}
	}
	return rules
}

func ruleSet(rules []api.PolicyRule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, fmt.Sprint(r.Verbs, r.Resources, r.ResourceNames))
	}
	slices.Sort(out)
	return out
}

// TestSubjectIndex: RulesFor, answered from the subject index, grants
// exactly what a scan of every binding grants, for users, groups and
// service accounts (named with and without a project), in every project
// and at cluster scope; and right after a binding is changed or deleted
// and the informer has seen the write (read-your-writes), not later.
func TestSubjectIndex(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	a := NewAuthorizer(s)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, inf := range a.Informers() {
		go inf.Run(runCtx)
	}
	// One cluster role per binding, each with a rule of its own, so a
	// binding found or missed shows in the rules.
	var roleRev int64
	for i := range 12 {
		cr := &api.ClusterRole{ObjectMeta: api.ObjectMeta{Name: "r" + strconv.Itoa(i)},
			Rules: []api.PolicyRule{{Verbs: []string{"get"}, Resources: []string{"r" + strconv.Itoa(i)}}}}
		must(t, s.Create(ctx, api.ClusterRoles, cr))
		roleRev = rvOf(cr)
	}
	user := func(n string) api.Subject { return api.Subject{Kind: api.SubjectUser, Name: n} }
	group := func(n string) api.Subject { return api.Subject{Kind: api.SubjectGroup, Name: n} }
	sa := func(ns, n string) api.Subject {
		return api.Subject{Kind: api.SubjectServiceAccount, Namespace: ns, Name: n}
	}
	rb := func(ns, name string, role int, subjects ...api.Subject) *api.RoleBinding {
		return &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "r" + strconv.Itoa(role)}, Subjects: subjects}
	}
	bindings := []*api.RoleBinding{
		rb("p1", "alice", 0, user("alice")),
		rb("p1", "devs", 1, group("devs")),
		rb("p1", "robot", 2, sa("", "robot")),      // the binding's project's robot
		rb("p1", "p2-robot", 3, sa("p2", "robot")), // another project's robot
		rb("p1", "both", 4, user("alice"), group("devs"), user("alice")),
		rb("p2", "alice", 5, user("alice")),
		rb("p2", "nobody", 6, api.Subject{Kind: "Martian", Name: "alice"}),
	}
	for _, b := range bindings {
		must(t, s.Create(ctx, api.RoleBindings, b))
	}
	crbs := []*api.ClusterRoleBinding{
		{ObjectMeta: api.ObjectMeta{Name: "bob"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "r7"}, Subjects: []api.Subject{user("bob")}},
		{ObjectMeta: api.ObjectMeta{Name: "devs"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "r8"}, Subjects: []api.Subject{group("devs"), user("carol")}},
		{ObjectMeta: api.ObjectMeta{Name: "robot"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "r9"}, Subjects: []api.Subject{sa("p1", "robot"), sa("", "robot")}},
	}
	var last int64
	for _, b := range crbs {
		must(t, s.Create(ctx, api.ClusterRoleBindings, b))
		last, _ = strconv.ParseInt(b.ResourceVersion, 10, 64)
	}
	must(t, a.ClusterRoleBindings.WaitFor(ctx, last))
	must(t, a.RoleBindings.WaitFor(ctx, rvOf(bindings[len(bindings)-1])))
	must(t, a.ClusterRoles.WaitFor(ctx, roleRev))

	users := []identity.Info{
		{Name: "alice"}, {Name: "alice", Groups: []string{"devs"}}, {Name: "bob"}, {Name: "carol", Groups: []string{"devs", "others"}},
		{Name: "system:serviceaccount:p1:robot"}, {Name: "system:serviceaccount:p2:robot"}, {Name: "system:serviceaccount::robot"},
		{Name: "nobody"}, {Name: "devs"},
	}
	check := func(when string) {
		t.Helper()
		for _, u := range users {
			for _, ns := range []string{"", "p1", "p2", "p3"} {
				got, want := ruleSet(a.RulesFor(u, ns)), ruleSet(scanRules(a, u, ns))
				if !slices.Equal(got, want) {
					t.Errorf("%s: RulesFor(%v, %q) = %v, a scan of every binding grants %v", when, u, ns, got, want)
				}
			}
		}
	}
	check("after creates")
	if got := ruleSet(a.RulesFor(identity.Info{Name: "alice", Groups: []string{"devs"}}, "p1")); len(got) != 4 {
		t.Errorf("alice in devs in p1 holds rules %v, want r0, r1, r4 and r8 (cluster-wide), each once", got)
	}

	// Read-your-writes: once the informer has seen a write, the index
	// has too.
	b := bindings[0]
	b.Subjects = []api.Subject{user("bob")}
	must(t, s.Update(ctx, api.RoleBindings, b, store.UpdateOptions{}))
	must(t, a.RoleBindings.WaitFor(ctx, rvOf(b)))
	if ok, _ := a.Authorize(identity.Info{Name: "alice"}, Attributes{Verb: "get", Resource: "r0", Namespace: "p1"}); ok {
		t.Error("alice still holds r0 in p1 once the binding names bob instead, and the informer has seen it")
	}
	if ok, _ := a.Authorize(identity.Info{Name: "bob"}, Attributes{Verb: "get", Resource: "r0", Namespace: "p1"}); !ok {
		t.Error("bob does not hold r0 in p1 once the binding names him, and the informer has seen it")
	}
	check("after an update")
	del, err := s.Delete(ctx, api.ClusterRoleBindings, "", "devs", "")
	must(t, err)
	must(t, a.ClusterRoleBindings.WaitFor(ctx, rvOf(del)))
	if ok, _ := a.Authorize(identity.Info{Name: "carol"}, Attributes{Verb: "get", Resource: "r8"}); ok {
		t.Error("carol still holds r8 once its cluster binding is deleted, and the informer has seen it")
	}
	check("after a delete")
}

func rvOf(o api.Object) int64 {
	n, _ := strconv.ParseInt(o.GetObjectMeta().ResourceVersion, 10, 64)
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
