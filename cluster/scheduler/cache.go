package scheduler

import (
	"slices"

	"slipway.dev/slipway/api"
)

// hostPort is one published port on a node.
type hostPort struct {
	port     int32
	protocol string
}

// podInfo is what the cache remembers of a pod that holds resources on a
// node: bound (the watch showed spec.nodeName) or assumed (this scheduler
// chose the node and its bind write is in flight or not yet seen).
type podInfo struct {
	node       string
	req        api.ResourceList // summed container requests; Pods is 1
	scoreCPU   int64            // requests with the non-zero defaults, for scoring only
	scoreMem   int64
	ports      []hostPort
	controller string // "ns/value of ControllerLabel", or ""
	assumed    bool
}

// nodeInfo is one node and what the pods on it take. node is nil while
// pods are known to be bound to a node the cache has not seen (or no longer
// sees); such an entry is never a candidate.
type nodeInfo struct {
	name      string
	node      *api.Node
	rv        int64
	alloc     api.ResourceList
	ready     bool
	requested api.ResourceList // Pods counts pods
	scoreCPU  int64
	scoreMem  int64
	ports     map[hostPort]int
	// ctlCount is how many replicas of the controller of the pod being
	// scheduled are here, valid when ctlStamp is the cache's stamp: set
	// from cache.byController per attempt, so the node loop needs no map
	// lookups.
	ctlCount int
	ctlStamp uint64
}

// cache is the scheduler's view of the cluster: nodes, and the pods that
// take resources on them. It is not safe for concurrent use; the Scheduler
// guards it with its mutex.
type cache struct {
	nodes map[string]*nodeInfo
	list  []*nodeInfo // nodes with node != nil, in a stable order
	pods  map[string]*podInfo
	// byController counts, per controller, its pods on each node.
	byController map[string]map[*nodeInfo]int
	stamp        uint64
	// next is where the next attempt starts looking, so that sampled
	// attempts take turns over all nodes.
	next     int
	feasible []*nodeInfo // scratch
}

func newCache() *cache {
	return &cache{nodes: map[string]*nodeInfo{}, pods: map[string]*podInfo{}, byController: map[string]map[*nodeInfo]int{}}
}

// Non-zero defaults used when scoring pods that request nothing, as
// Kubernetes does, so that such pods still spread by allocation.
const (
	defaultScoreMilliCPU = 100
	defaultScoreMemory   = 200 << 20
)

func newPodInfo(p *api.Pod) *podInfo {
	pi := &podInfo{node: p.Spec.NodeName, req: api.ResourceList{Pods: 1}}
	for _, c := range p.Spec.Containers {
		r := c.Resources.Requests
		pi.req.MilliCPU += r.MilliCPU
		pi.req.Memory += r.Memory
		pi.scoreCPU += cmpOr(r.MilliCPU, defaultScoreMilliCPU)
		pi.scoreMem += cmpOr(r.Memory, defaultScoreMemory)
		for _, port := range c.Ports {
			if port.HostPort > 0 {
				pi.ports = append(pi.ports, hostPort{port.HostPort, protocolOf(port.Protocol)})
			}
		}
	}
	if v := p.Labels[ControllerLabel]; v != "" {
		pi.controller = p.Namespace + "/" + v
	}
	return pi
}

func cmpOr(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

func protocolOf(p string) string {
	if p == "" {
		return "TCP"
	}
	return p
}

// effectiveAllocatable is status.allocatable, or status.capacity when the
// node reported no allocatable at all.
func effectiveAllocatable(n *api.Node) api.ResourceList {
	if n.Status.Allocatable == (api.ResourceList{}) {
		return n.Status.Capacity
	}
	return n.Status.Allocatable
}

// nodeReady reports whether the node's Ready condition is True.
func nodeReady(n *api.Node) bool {
	c := readyCondition(n)
	return c != nil && c.Status == api.ConditionTrue
}

func readyCondition(n *api.Node) *api.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

func (c *cache) nodeEntry(name string) *nodeInfo {
	ni := c.nodes[name]
	if ni == nil {
		ni = &nodeInfo{name: name, ports: map[hostPort]int{}}
		c.nodes[name] = ni
	}
	return ni
}

// setNode adds or replaces a node. It reports whether the change could
// make a pod that did not fit before fit now (a new node, more room, new
// labels, uncordoned, became ready); heartbeats alone do not count.
func (c *cache) setNode(n *api.Node) bool {
	rv := parseRV(n.ResourceVersion)
	ni := c.nodeEntry(n.Name)
	if ni.node != nil && rv <= ni.rv {
		return false
	}
	old := ni.node
	ni.node, ni.rv = n, rv
	ni.alloc, ni.ready = effectiveAllocatable(n), nodeReady(n)
	if old == nil {
		c.list = append(c.list, ni)
		return true
	}
	oldAlloc := effectiveAllocatable(old)
	return (old.Spec.Unschedulable && !n.Spec.Unschedulable) ||
		(!nodeReady(old) && ni.ready) ||
		ni.alloc.MilliCPU > oldAlloc.MilliCPU || ni.alloc.Memory > oldAlloc.Memory || ni.alloc.Pods > oldAlloc.Pods ||
		!mapsEqual(old.Labels, n.Labels)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// removeNode forgets a deleted node; pods still bound to it keep their
// entry (without a node) until they go too.
func (c *cache) removeNode(name string) {
	ni := c.nodes[name]
	if ni == nil || ni.node == nil {
		return
	}
	ni.node = nil
	c.list = slices.DeleteFunc(c.list, func(x *nodeInfo) bool { return x == ni })
	if ni.requested.Pods == 0 {
		delete(c.nodes, name)
	}
}

// addPod charges a pod to its node.
func (c *cache) addPod(key string, pi *podInfo) {
	c.pods[key] = pi
	ni := c.nodeEntry(pi.node)
	ni.requested.MilliCPU += pi.req.MilliCPU
	ni.requested.Memory += pi.req.Memory
	ni.requested.Pods++
	ni.scoreCPU += pi.scoreCPU
	ni.scoreMem += pi.scoreMem
	for _, hp := range pi.ports {
		ni.ports[hp]++
	}
	if pi.controller != "" {
		m := c.byController[pi.controller]
		if m == nil {
			m = map[*nodeInfo]int{}
			c.byController[pi.controller] = m
		}
		m[ni]++
	}
}

// removePod releases what a pod took and reports whether it held
// anything.
func (c *cache) removePod(key string) bool {
	pi := c.pods[key]
	if pi == nil {
		return false
	}
	delete(c.pods, key)
	ni := c.nodes[pi.node]
	ni.requested.MilliCPU -= pi.req.MilliCPU
	ni.requested.Memory -= pi.req.Memory
	ni.requested.Pods--
	ni.scoreCPU -= pi.scoreCPU
	ni.scoreMem -= pi.scoreMem
	for _, hp := range pi.ports {
		if ni.ports[hp]--; ni.ports[hp] <= 0 {
			delete(ni.ports, hp)
		}
	}
	if m := c.byController[pi.controller]; m != nil {
		if m[ni]--; m[ni] <= 0 {
			delete(m, ni)
		}
		if len(m) == 0 {
			delete(c.byController, pi.controller)
		}
	}
	if ni.node == nil && ni.requested.Pods == 0 {
		delete(c.nodes, pi.node)
	}
	return true
}

// assume charges a pod to the node chosen for it before the bind is
// written, so the next decision already sees it there.
func (c *cache) assume(key string, p *api.Pod, node string) {
	pi := newPodInfo(p)
	pi.node, pi.assumed = node, true
	c.removePod(key)
	c.addPod(key, pi)
}

// forget undoes assume after a failed bind, unless the watch has since
// shown the pod bound (then the cache already has the truth).
func (c *cache) forget(key string) {
	if pi := c.pods[key]; pi != nil && pi.assumed {
		c.removePod(key)
	}
}
