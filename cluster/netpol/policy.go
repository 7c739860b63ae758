// Package netpol isolates projects on a node's pod network: a pod is
// reached by the pods of its own project, by whatever NetworkPolicies of
// its project let in, and by the node itself (the router, the service
// proxy, the registry), and by no other pod.
//
// The node enforces it with nftables, in tables of its own
// (slipway-netpol-PREFIX, one in the ip family and one in the bridge
// family) that name pod IPs. They filter traffic between pods only: a
// packet whose source is not a pod of this host (the host itself, another
// machine through a host port) is not touched, nor is traffic from a pod
// to anything that is not a pod. Why nftables on the existing bridge
// rather than a Docker network per project is in docs/design.md.
//
// The tables are rebuilt whole, in one netlink transaction, from the
// store (pods with their IPs, projects, policies) whenever one of these
// changes, and at start: a restarted agent replaces what the last one
// left, and pods that went away leave no rule behind.
//
// The userspace service proxy relays from the host, so the tables never
// see a pod reach another project's pod through a cluster IP; it asks
// Access before each dial instead.
package netpol

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"slipway.dev/slipway/api"
)

// ErrDenied is a connection the policy does not allow.
var ErrDenied = errors.New("netpol: denied by network policy")

// Pod is what the rules need of a pod: where it is and what it is.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IP        netip.Addr
	// Local: bound to this node. The node filters only traffic to or
	// from its own pods; other pods are known to tell their project.
	Local bool
}

// Rules is the compiled policy for a set of pods: which pod IPs may open
// connections to which.
type Rules struct {
	// Pods are the IPs of every known pod, sorted.
	Pods []netip.Addr
	// Local are those of this node's pods, sorted: traffic to or from
	// them is filtered.
	Local []netip.Addr
	// Projects groups the pod IPs of each project: a group reaches itself.
	Projects []Group
	// Allows are what policies add.
	Allows []Allow
	// Subnets are the pod network: an address there that is not one of
	// Pods is a pod not known yet (its IP not yet in its status), and is
	// refused rather than taken for the outside world.
	Subnets []netip.Prefix

	byIP map[netip.Addr]*Pod
}

// Group is one project's pods.
type Group struct {
	Project string
	IPs     []netip.Addr
}

// Allow lets From open connections to To, on Port of Proto ("TCP" or
// "UDP"; "" any protocol, and then Port is 0), or every port of Proto when
// Port is 0.
type Allow struct {
	Policy string // "ns/name", for diagnosis
	From   []netip.Addr
	To     []netip.Addr
	Proto  string
	Port   uint16
}

// Compile makes the rules for pods, whose projects carry projectLabels
// (by project name; a project missing there has only ProjectNameLabel),
// under policies. Pods without a valid IP are left out, and so are pods
// that share an IP (a deleted pod's address given to a new one before the
// store has caught up): which project the address is in is unknown, so it
// is refused like any unknown address of the pod network.
func Compile(pods []Pod, projectLabels map[string]map[string]string, policies []*api.NetworkPolicy) *Rules {
	pods = slices.Clone(pods)
	slices.SortFunc(pods, func(a, b Pod) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	r := &Rules{byIP: map[netip.Addr]*Pod{}}
	uses := map[netip.Addr]int{}
	for i := range pods {
		pods[i].IP = pods[i].IP.Unmap()
		uses[pods[i].IP]++
	}
	var kept []*Pod
	for i := range pods {
		p := &pods[i]
		if !p.IP.IsValid() || uses[p.IP] > 1 {
			continue
		}
		r.byIP[p.IP] = p
		kept = append(kept, p)
		r.Pods = append(r.Pods, p.IP)
		if p.Local {
			r.Local = append(r.Local, p.IP)
		}
		if n := len(r.Projects); n == 0 || r.Projects[n-1].Project != p.Namespace {
			r.Projects = append(r.Projects, Group{Project: p.Namespace})
		}
		g := &r.Projects[len(r.Projects)-1]
		g.IPs = append(g.IPs, p.IP)
	}
	slices.SortFunc(r.Pods, netip.Addr.Compare)
	slices.SortFunc(r.Local, netip.Addr.Compare)
	for _, g := range r.Projects {
		slices.SortFunc(g.IPs, netip.Addr.Compare)
	}
	// A project is selected by its name alone: its other labels are its
	// owner's word (any user may create a project with any labels), so a
	// selector on them would let anyone in (the API refuses such
	// selectors; this holds for any stored before).
	nsLabels := func(ns string) map[string]string {
		return map[string]string{api.ProjectNameLabel: ns}
	}
	policies = slices.Clone(policies)
	slices.SortFunc(policies, func(a, b *api.NetworkPolicy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	for _, np := range policies {
		var to []netip.Addr
		for _, p := range kept {
			if p.Namespace == np.Namespace && np.Spec.PodSelector.Matches(p.Labels) {
				to = append(to, p.IP)
			}
		}
		if len(to) == 0 {
			continue
		}
		slices.SortFunc(to, netip.Addr.Compare)
		for _, rule := range np.Spec.Ingress {
			var from []netip.Addr
			for _, p := range kept {
				if peersMatch(rule.From, np.Namespace, p, nsLabels) {
					from = append(from, p.IP)
				}
			}
			if len(from) == 0 {
				continue
			}
			slices.SortFunc(from, netip.Addr.Compare)
			a := Allow{Policy: np.Namespace + "/" + np.Name, From: from, To: to}
			if len(rule.Ports) == 0 {
				r.Allows = append(r.Allows, a)
				continue
			}
			for _, port := range rule.Ports {
				a.Proto, a.Port = cmp.Or(port.Protocol, "TCP"), uint16(port.Port)
				r.Allows = append(r.Allows, a)
			}
		}
	}
	return r
}

func (r *Rules) inPodNetwork(ip netip.Addr) bool {
	if r.byIP[ip] != nil {
		return true
	}
	for _, s := range r.Subnets {
		if s.Contains(ip) {
			return true
		}
	}
	return false
}

// peersMatch reports whether p is one of peers, for a policy in project
// ns; no peers means every pod.
func peersMatch(peers []api.NetworkPolicyPeer, ns string, p *Pod, nsLabels func(string) map[string]string) bool {
	if len(peers) == 0 {
		return true
	}
	for _, peer := range peers {
		switch {
		case peer.NamespaceSelector != nil:
			if peer.NamespaceSelector.Matches(nsLabels(p.Namespace)) && (peer.PodSelector == nil || peer.PodSelector.Matches(p.Labels)) {
				return true
			}
		case peer.PodSelector != nil:
			if p.Namespace == ns && peer.PodSelector.Matches(p.Labels) {
				return true
			}
		}
	}
	return false
}

// Allowed reports whether src may open a connection to dst on port of
// proto ("TCP" or "UDP"). An address outside the pod network (the host,
// another machine) is not filtered; one inside it that is not a known pod
// is refused.
func (r *Rules) Allowed(src, dst netip.Addr, proto string, port uint16) error {
	src, dst = src.Unmap(), dst.Unmap()
	if !r.inPodNetwork(src) || !r.inPodNetwork(dst) {
		return nil
	}
	from, to := r.byIP[src], r.byIP[dst]
	switch {
	case from == nil:
		return fmt.Errorf("%w: %s is in the pod network but is no pod this node knows yet", ErrDenied, src)
	case to == nil:
		return fmt.Errorf("%w: %s is in the pod network but is no pod this node knows yet", ErrDenied, dst)
	case from.Namespace == to.Namespace:
		return nil
	}
	for _, a := range r.Allows {
		if (a.Proto == "" || a.Proto == proto && (a.Port == 0 || a.Port == port)) &&
			slices.Contains(a.From, src) && slices.Contains(a.To, dst) {
			return nil
		}
	}
	return fmt.Errorf("%w: pod %s/%s may not reach pod %s/%s (%s %d): no NetworkPolicy of project %s lets project %s in",
		ErrDenied, from.Namespace, from.Name, to.Namespace, to.Name, proto, port, to.Namespace, from.Namespace)
}
