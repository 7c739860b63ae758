package netpol

import (
	"errors"
	"net/netip"
	"testing"

	"slipway.dev/slipway/api"
)

func sel(kv ...string) *api.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &api.LabelSelector{MatchLabels: m}
}

func policy(ns, name string, pods *api.LabelSelector, rules ...api.NetworkPolicyIngressRule) *api.NetworkPolicy {
	return &api.NetworkPolicy{ObjectMeta: api.ObjectMeta{Namespace: ns, Name: name}, Spec: api.NetworkPolicySpec{PodSelector: *pods, Ingress: rules}}
}

// TestAllowed checks the default (own project in, other projects out,
// non-pods untouched) and Kubernetes' peer and port rules, each case a
// line that fails alone.
func TestAllowed(t *testing.T) {
	ip := netip.MustParseAddr
	pods := []Pod{
		{Namespace: "a", Name: "web", IP: ip("10.0.0.1"), Labels: map[string]string{"app": "web"}},
		{Namespace: "a", Name: "job", IP: ip("10.0.0.2"), Labels: map[string]string{"app": "job"}},
		{Namespace: "b", Name: "db", IP: ip("10.0.0.3"), Labels: map[string]string{"app": "db"}},
		{Namespace: "b", Name: "cache", IP: ip("10.0.0.4"), Labels: map[string]string{"app": "cache"}},
		{Namespace: "c", Name: "spy", IP: ip("10.0.0.5"), Labels: map[string]string{"app": "web"}},
		{Namespace: "c", Name: "old", IP: ip("10.0.0.6")}, // an address two pods claim: whose it is is unknown
		{Namespace: "a", Name: "new", IP: ip("10.0.0.6")},
	}
	projects := map[string]map[string]string{
		"a": {"team": "blue"},
		// c claims to be a: the name label is always the project's own.
		"c": {"team": "blue", api.ProjectNameLabel: "a"},
	}
	tcp := func(port int32) api.NetworkPolicyPort { return api.NetworkPolicyPort{Port: port} }
	policies := []*api.NetworkPolicy{
		// b/db lets a's web pods in on 5432.
		policy("b", "db-from-a-web", sel("app", "db"), api.NetworkPolicyIngressRule{
			From:  []api.NetworkPolicyPeer{{NamespaceSelector: sel(api.ProjectNameLabel, "a"), PodSelector: sel("app", "web")}},
			Ports: []api.NetworkPolicyPort{tcp(5432)},
		}),
		// b/cache names team blue: a label any project may carry, so it
		// matches none (the API refuses such selectors now; one stored
		// before opens nothing).
		policy("b", "cache-from-blue", sel("app", "cache"), api.NetworkPolicyIngressRule{
			From: []api.NetworkPolicyPeer{{NamespaceSelector: sel("team", "blue")}},
		}),
		// A podSelector alone is the policy's own project: it opens
		// nothing to a.
		policy("b", "own-web", sel(), api.NetworkPolicyIngressRule{
			From: []api.NetworkPolicyPeer{{PodSelector: sel("app", "web")}},
		}),
	}
	r := Compile(pods, projects, policies)
	r.Subnets = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}
	for _, tc := range []struct {
		src, dst string
		proto    string
		port     uint16
		allowed  bool
	}{
		{"10.0.0.1", "10.0.0.2", "TCP", 80, true},    // same project
		{"10.0.0.3", "10.0.0.1", "TCP", 80, false},   // b → a: a has no policy
		{"10.0.0.1", "10.0.0.3", "TCP", 5432, true},  // a/web → b/db on the port
		{"10.0.0.1", "10.0.0.3", "TCP", 22, false},   // another port
		{"10.0.0.1", "10.0.0.3", "UDP", 5432, false}, // another protocol
		{"10.0.0.2", "10.0.0.3", "TCP", 5432, false}, // a/job is not selected
		{"10.0.0.5", "10.0.0.3", "TCP", 5432, false}, // c/spy: its label does not make it a
		{"10.0.0.2", "10.0.0.4", "UDP", 53, false},   // a says it is team blue: not proof
		{"10.0.0.5", "10.0.0.4", "TCP", 6379, false}, // c says so too (anyone may): not let in
		{"192.168.1.9", "10.0.0.3", "TCP", 22, true}, // not a pod: the host, another machine
		{"10.0.0.3", "192.168.1.9", "TCP", 22, true}, // to a non-pod
		{"10.0.0.99", "10.0.0.1", "TCP", 80, false},  // an address of the pod network no pod has (yet)
		{"10.0.0.1", "10.0.0.99", "TCP", 80, false},  // and to it
		{"10.0.0.6", "10.0.0.5", "TCP", 80, false},   // a claimed twice: not even c's
		{"10.0.0.1", "10.0.0.6", "TCP", 80, false},   // nor a's
	} {
		err := r.Allowed(ip(tc.src), ip(tc.dst), tc.proto, tc.port)
		if (err == nil) != tc.allowed {
			t.Errorf("%s → %s %s/%d: allowed=%v (%v), want %v", tc.src, tc.dst, tc.proto, tc.port, err == nil, err, tc.allowed)
		}
		if err != nil && !errors.Is(err, ErrDenied) {
			t.Errorf("%s → %s: error %v is not ErrDenied", tc.src, tc.dst, err)
		}
	}
	if got := len(r.Pods); got != 5 {
		t.Errorf("compiled %d pod IPs, want 5 (the shared one left out): %v", got, r.Pods)
	}
	if len(r.Projects) != 3 {
		t.Errorf("groups = %v, want one per project", r.Projects)
	}
}
