package api

import (
	"k8s.io/apimachinery/pkg/util/validation"
)

// NetworkPolicy lets pods of other projects reach some of this project's
// pods, in the shape of Kubernetes' networking.k8s.io/v1 NetworkPolicy
// (ingress only).
//
// The default, with no policy at all, is OpenShift's multitenant one: a
// pod is reached by the pods of its own project and by the platform (the
// node itself: the router, the service proxy, the registry, DNS), and by
// no pod of another project. Policies only add to that default: each
// selects pods of its own project (podSelector) and lets the peers of
// each ingress rule reach them on the rule's ports. A project decides who
// may come in, never who another project lets in.
type NetworkPolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NetworkPolicySpec `json:"spec"`
}

// NetworkPolicySpec selects pods and says who else may reach them.
type NetworkPolicySpec struct {
	// PodSelector selects the project's pods the policy opens; empty
	// selects every pod of the project.
	PodSelector LabelSelector `json:"podSelector"`
	// Ingress rules: traffic matching any rule is allowed in.
	Ingress []NetworkPolicyIngressRule `json:"ingress,omitempty"`
}

// LabelSelector matches objects that carry every label given; empty
// matches every object.
type LabelSelector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// Matches reports whether labels has every label of the selector.
func (s LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if w, ok := labels[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// NetworkPolicyIngressRule lets From reach the selected pods on Ports.
type NetworkPolicyIngressRule struct {
	// From lists the peers; empty means every pod of every project.
	From []NetworkPolicyPeer `json:"from,omitempty"`
	// Ports lists the selected pods' ports; empty means every port.
	Ports []NetworkPolicyPort `json:"ports,omitempty"`
}

// NetworkPolicyPeer is a set of pods, as in Kubernetes: a podSelector
// alone picks pods of the policy's own project; a namespaceSelector alone
// every pod of the projects it matches; both, the pods matching
// podSelector in those projects. A project carries the label
// ProjectNameLabel with its own name, which nobody can set otherwise, so
// {matchLabels: {kubernetes.io/metadata.name: NAME}} names one project.
type NetworkPolicyPeer struct {
	PodSelector       *LabelSelector `json:"podSelector,omitempty"`
	NamespaceSelector *LabelSelector `json:"namespaceSelector,omitempty"`
}

// NetworkPolicyPort is a port of the selected pods: TCP (default) or UDP,
// and a port number (0 or absent: every port of that protocol).
type NetworkPolicyPort struct {
	Protocol string `json:"protocol,omitempty"`
	Port     int32  `json:"port,omitempty"`
}

// ProjectNameLabel is the label every project is matched with by a
// namespaceSelector: its own name, whatever labels it carries.
const ProjectNameLabel = "kubernetes.io/metadata.name"

// NetworkPolicies is the resource.
var NetworkPolicies = Register(&Resource{
	Name: "networkpolicies", Kind: "NetworkPolicy", ShortNames: []string{"netpol"}, Namespaced: true,
	New:      func() Object { return &NetworkPolicy{} },
	Validate: func(o Object) FieldErrors { return validateNetworkPolicy(&o.(*NetworkPolicy).Spec) },
})

func validateNetworkPolicy(s *NetworkPolicySpec) FieldErrors {
	var errs FieldErrors
	selector := func(path string, sel *LabelSelector) {
		if sel == nil {
			return
		}
		for k, v := range sel.MatchLabels {
			for _, msg := range validation.IsQualifiedName(k) {
				errs.Add(path+".matchLabels", FieldValueInvalid, "label key %q: %s", truncate(k), msg)
			}
			for _, msg := range validation.IsValidLabelValue(v) {
				errs.Add(path+".matchLabels", FieldValueInvalid, "label %q value %q: %s", truncate(k), truncate(v), msg)
			}
		}
	}
	selector("spec.podSelector", &s.PodSelector)
	for i, r := range s.Ingress {
		rp := fieldIndex("spec.ingress", i, "")
		for j, p := range r.From {
			pp := fieldIndex(rp+"from", j, "")
			if p.PodSelector == nil && p.NamespaceSelector == nil {
				errs.Add(pp[:len(pp)-1], FieldValueRequired, "give a podSelector, a namespaceSelector or both ({} matches everything)")
			}
			selector(pp+"podSelector", p.PodSelector)
			selector(pp+"namespaceSelector", p.NamespaceSelector)
			if p.NamespaceSelector != nil {
				for k := range p.NamespaceSelector.MatchLabels {
					if k != ProjectNameLabel {
						errs.Add(pp+"namespaceSelector.matchLabels", FieldValueInvalid, "select projects by %s only: any user may create a project carrying label %q, so it proves nothing", ProjectNameLabel, truncate(k))
					}
				}
			}
		}
		for j, p := range r.Ports {
			pp := fieldIndex(rp+"ports", j, "")
			if p.Protocol != "" && p.Protocol != "TCP" && p.Protocol != "UDP" {
				errs.Add(pp+"protocol", FieldValueInvalid, "must be TCP or UDP, not %q", p.Protocol)
			}
			if p.Port < 0 || p.Port > 65535 {
				errs.Add(pp+"port", FieldValueInvalid, "must be 1-65535 (or absent for every port)")
			}
		}
	}
	return errs
}
