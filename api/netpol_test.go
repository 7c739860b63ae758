package api

import (
	"strings"
	"testing"
)

// TestNetworkPolicyValidation: bad protocols, ports, peers and label
// selectors are refused with the field named; a good policy passes.
func TestNetworkPolicyValidation(t *testing.T) {
	good := func() *NetworkPolicy {
		return &NetworkPolicy{ObjectMeta: ObjectMeta{Name: "p", Namespace: "b"}, Spec: NetworkPolicySpec{
			PodSelector: LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Ingress: []NetworkPolicyIngressRule{{
				From:  []NetworkPolicyPeer{{NamespaceSelector: &LabelSelector{MatchLabels: map[string]string{ProjectNameLabel: "a"}}}},
				Ports: []NetworkPolicyPort{{Protocol: "TCP", Port: 5432}},
			}},
		}}
	}
	if err := NetworkPolicies.ValidateObject(good()); err != nil {
		t.Fatalf("a good policy: %v", err)
	}
	for _, tc := range []struct {
		field string
		edit  func(*NetworkPolicy)
	}{
		{"spec.ingress[0].ports[0].protocol", func(p *NetworkPolicy) { p.Spec.Ingress[0].Ports[0].Protocol = "SCTP" }},
		// Project labels are their owners' word: only the name selects.
		{"spec.ingress[0].from[0].namespaceSelector.matchLabels", func(p *NetworkPolicy) {
			p.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels = map[string]string{"team": "blue"}
		}},
		{"spec.ingress[0].ports[0].port", func(p *NetworkPolicy) { p.Spec.Ingress[0].Ports[0].Port = 70000 }},
		{"spec.ingress[0].from[0]", func(p *NetworkPolicy) { p.Spec.Ingress[0].From[0] = NetworkPolicyPeer{} }},
		{"spec.podSelector.matchLabels", func(p *NetworkPolicy) { p.Spec.PodSelector.MatchLabels["bad key!"] = "x" }},
		{"spec.ingress[0].from[0].namespaceSelector.matchLabels", func(p *NetworkPolicy) {
			p.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["team"] = "not a value!"
		}},
	} {
		p := good()
		tc.edit(p)
		err := NetworkPolicies.ValidateObject(p)
		if err == nil || !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("%s: error %v, want one naming the field", tc.field, err)
		}
	}
}
