package rbac

import (
	"testing"

	"slipway.dev/slipway/api"
)

func TestResourceMatchesStatus(t *testing.T) {
	for _, tc := range []struct {
		held []string
		res  string
		want bool
	}{
		{[]string{"*"}, "pods", true},
		{[]string{"*"}, "pods/exec", true},
		{[]string{"*"}, "pods/status", false}, // status is for controllers and nodes
		{[]string{"pods/*"}, "pods/log", true},
		{[]string{"pods/*"}, "pods/status", false},
		{[]string{"pods/status"}, "pods/status", true},
		{[]string{"*/status"}, "pods/status", true},
		{[]string{"*/status"}, "pods", false},
		{[]string{"*/status"}, "pods/exec", false},
		{[]string{"*", "*/status"}, "*/status", true},
		{[]string{"*"}, "*/status", false},
	} {
		if got := resourceMatches(tc.held, tc.res); got != tc.want {
			t.Errorf("resourceMatches(%v, %q) = %v, want %v", tc.held, tc.res, got, tc.want)
		}
	}
}

// TestBootstrapStatusRules: edit and admin reach only the status
// subresources the API server admits users' writes to; cluster-admin
// reaches them all; view reads them.
func TestBootstrapStatusRules(t *testing.T) {
	roles := map[string][]api.PolicyRule{}
	for _, r := range BootstrapRoles() {
		roles[r.Name] = r.Rules
	}
	allows := func(role, verb, res string) bool {
		for _, r := range roles[role] {
			if ruleAllows(r, verb, res, "") {
				return true
			}
		}
		return false
	}
	for _, tc := range []struct {
		role, verb, res string
		want            bool
	}{
		{ClusterAdmin, "update", "pods/status", true},
		{Admin, "update", "pods/status", false},
		{Admin, "update", "imagescans/status", false},
		{Admin, "update", "promotions/status", false},
		{Admin, "update", "imagestreams/status", true},
		{Admin, "create", "promotions/approve", true},
		{Admin, "promote", "promotions", true},
		{Edit, "update", "pods/status", false},
		{Edit, "patch", "replicationcontrollers/status", false},
		{Edit, "update", "deploymentconfigs/status", false},
		{Edit, "update", "builds/status", true},
		{Edit, "update", "buildconfigs/status", true},
		{Edit, "create", "pods/exec", true},
		{Edit, "get", "pods/status", true},
		{Edit, "promote", "promotions", false},
		{View, "get", "builds/status", true},
		{View, "update", "builds/status", false},
	} {
		if got := allows(tc.role, tc.verb, tc.res); got != tc.want {
			t.Errorf("%s may %s %s = %v, want %v", tc.role, tc.verb, tc.res, got, tc.want)
		}
	}
}
