package scheduler

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"slipway.dev/slipway/api"
)

// Why a node was filtered out. The wording follows kube-scheduler's, so
// that messages read the same to people who know it.
const (
	reasonUnschedulable = "node(s) were unschedulable"
	reasonNotReady      = "node(s) were not ready"
	reasonSelector      = "node(s) didn't match nodeSelector"
	reasonPorts         = "node(s) didn't have free ports for the requested pod ports"
	reasonPods          = "Too many pods"
	reasonCPU           = "Insufficient cpu"
	reasonMemory        = "Insufficient memory"
)

// Score weights. Spreading outweighs allocation: replicas of one
// controller go to different nodes even when one node is much emptier.
const (
	weightLeastAllocated = 1
	weightBalanced       = 1
	weightSpread         = 2
	maxNodeScore         = 100
)

// diagnosis counts, per reason, the nodes a pod did not fit.
type diagnosis struct {
	nodes   int
	reasons map[string]int
}

// message is the user-facing summary, in kube-scheduler's shape:
// "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) were not ready."
func (d diagnosis) message() string {
	if d.nodes == 0 {
		return "0/0 nodes are available: no nodes are registered."
	}
	parts := make([]string, 0, len(d.reasons))
	for r, n := range d.reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(parts)
	return fmt.Sprintf("0/%d nodes are available: %s.", d.nodes, strings.Join(parts, ", "))
}

// fits runs the filters for one node and returns the reasons it fails;
// nil means the pod fits. Filters stop at the first failing one, except
// the resources, which report every resource that is short.
func fits(pi *podInfo, sel map[string]string, ni *nodeInfo, reasons []string) []string {
	n := ni.node
	switch {
	case n.Spec.Unschedulable:
		return append(reasons, reasonUnschedulable)
	case !ni.ready:
		return append(reasons, reasonNotReady)
	}
	for k, v := range sel {
		if w, ok := n.Labels[k]; !ok || w != v {
			return append(reasons, reasonSelector)
		}
	}
	for _, hp := range pi.ports {
		if ni.ports[hp] > 0 {
			return append(reasons, reasonPorts)
		}
	}
	if ni.requested.Pods+1 > ni.alloc.Pods {
		reasons = append(reasons, reasonPods)
	}
	if pi.req.MilliCPU > 0 && ni.requested.MilliCPU+pi.req.MilliCPU > ni.alloc.MilliCPU {
		reasons = append(reasons, reasonCPU)
	}
	if pi.req.Memory > 0 && ni.requested.Memory+pi.req.Memory > ni.alloc.Memory {
		reasons = append(reasons, reasonMemory)
	}
	return reasons
}

// duplicatePorts reports whether a pod asks for the same host port twice,
// which no node can give it.
func duplicatePorts(pi *podInfo) bool {
	for i, a := range pi.ports {
		for _, b := range pi.ports[i+1:] {
			if a == b {
				return true
			}
		}
	}
	return false
}

// Sampling, as kube-scheduler does it: in a large cluster an attempt
// stops filtering once it has found enough feasible nodes, and the next
// attempt starts where this one stopped.
const (
	minFeasibleNodes           = 100
	minFeasibleNodesPercentage = 5
)

// feasibleNodesToFind is how many feasible nodes are enough among n: all of
// them up to 100, then a share falling from 50% towards 5% as the cluster
// grows (42% of 1,000 nodes, 10% of 5,000).
func feasibleNodesToFind(n int) int {
	if n <= minFeasibleNodes {
		return n
	}
	pct := max(50-n/125, minFeasibleNodesPercentage)
	return max(n*pct/100, minFeasibleNodes)
}

// pick chooses the node for a pod: candidates that pass the filters are
// scored, and the best wins, ties broken at random. It returns nil and why
// when nothing fits; then every node was looked at.
func (c *cache) pick(p *api.Pod, pi *podInfo) (*nodeInfo, diagnosis) {
	d := diagnosis{nodes: len(c.list)}
	c.stamp++
	if pi.controller != "" {
		for ni, n := range c.byController[pi.controller] {
			ni.ctlCount, ni.ctlStamp = n, c.stamp
		}
	}
	feasible := c.feasible[:0]
	var scratch [4]string
	dup := duplicatePorts(pi)
	want, n := feasibleNodesToFind(len(c.list)), len(c.list)
	maxCount, looked := 0, 0
	for ; looked < n && len(feasible) < want; looked++ {
		ni := c.list[(c.next+looked)%n]
		reasons := fits(pi, p.Spec.NodeSelector, ni, scratch[:0])
		if len(reasons) == 0 && dup {
			reasons = append(reasons, reasonPorts)
		}
		if len(reasons) == 0 {
			feasible = append(feasible, ni)
			if ni.ctlStamp == c.stamp {
				maxCount = max(maxCount, ni.ctlCount)
			}
			continue
		}
		if d.reasons == nil {
			d.reasons = map[string]int{}
		}
		for _, r := range reasons {
			d.reasons[r]++
		}
	}
	if n > 0 {
		c.next = (c.next + looked) % n
	}
	c.feasible = feasible
	if len(feasible) == 0 {
		return nil, d
	}
	var best *nodeInfo
	bestScore, ties := -1.0, 0
	for _, ni := range feasible {
		count := 0
		if ni.ctlStamp == c.stamp {
			count = ni.ctlCount
		}
		s := score(pi, ni, count, maxCount)
		switch {
		case s > bestScore:
			best, bestScore, ties = ni, s, 1
		case s == bestScore:
			// Reservoir sampling: each tied node wins with equal odds.
			ties++
			if rand.IntN(ties) == 0 {
				best = ni
			}
		}
	}
	return best, d
}

// score is the weighted sum of least-allocated, balanced-allocation and
// controller spreading, each 0–100, for the node as it would be with the
// pod on it.
func score(pi *podInfo, ni *nodeInfo, count, maxCount int) float64 {
	cpu := fraction(ni.scoreCPU+pi.scoreCPU, ni.alloc.MilliCPU)
	mem := fraction(ni.scoreMem+pi.scoreMem, ni.alloc.Memory)
	least := (2 - cpu - mem) / 2 * maxNodeScore
	diff := cpu - mem
	if diff < 0 {
		diff = -diff
	}
	balanced := (1 - diff) * maxNodeScore
	spread := float64(maxNodeScore)
	if maxCount > 0 {
		spread = float64(maxCount-count) / float64(maxCount) * maxNodeScore
	}
	return weightLeastAllocated*least + weightBalanced*balanced + weightSpread*spread
}

// fraction is used/capacity clamped to [0, 1]; no capacity counts as full.
func fraction(used, capacity int64) float64 {
	if capacity <= 0 || used >= capacity {
		return 1
	}
	return float64(used) / float64(capacity)
}
