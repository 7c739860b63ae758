package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// LifecycleConfig configures a NodeLifecycle controller.
type LifecycleConfig struct {
	// Store holds pods and nodes. Required.
	Store *store.Store
	// GracePeriod is how old a node's last heartbeat may be before the
	// node is marked Ready=False. Default 40s.
	GracePeriod time.Duration
	// EvictionTimeout is how long a node stays not ready before its pods
	// are deleted, so that their controllers make them again elsewhere.
	// Default 30s.
	EvictionTimeout time.Duration
	// MonitorPeriod is how often every node is checked. Default 5s.
	MonitorPeriod time.Duration
}

// Validate fills in defaults and checks what is required.
func (c *LifecycleConfig) Validate() error {
	if c.Store == nil {
		return errors.New("scheduler: node lifecycle: a store is required")
	}
	if c.GracePeriod < 0 || c.EvictionTimeout < 0 || c.MonitorPeriod < 0 {
		return errors.New("scheduler: node lifecycle: periods must not be negative")
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = 40 * time.Second
	}
	if c.EvictionTimeout == 0 {
		c.EvictionTimeout = 30 * time.Second
	}
	if c.MonitorPeriod == 0 {
		c.MonitorPeriod = 5 * time.Second
	}
	return nil
}

// NodeLifecycle marks nodes whose agent stopped heartbeating Ready=False
// (reason NodeStatusUnknown) and deletes the pods bound to nodes that have
// not been ready for EvictionTimeout.
//
// A node counts as not ready from its last heartbeat plus GracePeriod when
// its heartbeats stopped, so a controller that restarts evicts a long-dead
// node at once; when the agent itself reports Ready=False, from the moment
// this controller first saw it so. While no node at all is ready, nothing
// is evicted: that looks like a fault on this side (etcd, the network, the
// clock) rather than every machine failing at once.
type NodeLifecycle struct {
	cfg   LifecycleConfig
	nodes *store.Informer
	pods  *store.Informer
	// notReadySeen is when this controller first saw a node that reports
	// itself not ready.
	notReadySeen map[string]time.Time
	// holding is set while evictions wait for a ready node, so that is
	// logged once.
	holding bool
}

// NewNodeLifecycle returns a controller; Run starts it.
func NewNodeLifecycle(cfg LifecycleConfig) (*NodeLifecycle, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &NodeLifecycle{
		cfg:          cfg,
		nodes:        store.NewInformer(cfg.Store, api.Nodes),
		pods:         store.NewInformer(cfg.Store, api.Pods),
		notReadySeen: map[string]time.Time{},
	}, nil
}

// Run checks nodes every MonitorPeriod until ctx ends.
func (l *NodeLifecycle) Run(ctx context.Context) {
	go l.nodes.Run(ctx)
	go l.pods.Run(ctx)
	t := time.NewTicker(l.cfg.MonitorPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.nodes.Synced() && l.pods.Synced() {
			l.check(ctx, time.Now())
		}
	}
}

// check is one pass over every node at time now.
func (l *NodeLifecycle) check(ctx context.Context, now time.Time) {
	var evict []*api.Node
	anyReady := false
	seen := map[string]bool{}
	for _, o := range l.nodes.List("") {
		n := o.(*api.Node)
		seen[n.Name] = true
		since, notReady := l.notReadySince(n, now)
		if !notReady {
			anyReady = true
			delete(l.notReadySeen, n.Name)
			continue
		}
		if nodeReady(n) {
			// The heartbeat is stale but the condition still says True.
			if err := l.markNotReady(ctx, n, now); err != nil && ctx.Err() == nil {
				slog.Warn("scheduler: could not mark node not ready", "node", n.Name, "err", err)
			}
		}
		if now.Sub(since) >= l.cfg.EvictionTimeout {
			evict = append(evict, n)
		}
	}
	for name := range l.notReadySeen {
		if !seen[name] {
			delete(l.notReadySeen, name)
		}
	}
	if len(evict) > 0 && !anyReady {
		if !l.holding {
			slog.Warn("scheduler: no node is ready; not evicting pods until one is", "notReady", len(evict))
		}
		l.holding = true
		return
	}
	l.holding = false
	if len(evict) == 0 {
		return
	}
	onNode := map[string][]*api.Pod{}
	for _, o := range l.pods.List("") {
		p := o.(*api.Pod)
		if p.Spec.NodeName != "" {
			onNode[p.Spec.NodeName] = append(onNode[p.Spec.NodeName], p)
		}
	}
	for _, n := range evict {
		l.evict(ctx, n.Name, onNode[n.Name])
	}
}

// notReadySince reports whether n is not ready at now, and since when:
// the earlier of when its heartbeats went stale and when this controller
// first saw it report itself not ready.
func (l *NodeLifecycle) notReadySince(n *api.Node, now time.Time) (time.Time, bool) {
	c := readyCondition(n)
	var last time.Time
	switch {
	case c != nil:
		last = c.LastHeartbeatTime
	case n.CreationTimestamp != nil:
		last = *n.CreationTimestamp // registered but never heartbeated
	default:
		last = now
	}
	staleAt := last.Add(l.cfg.GracePeriod)
	stale := now.After(staleAt)
	reported := c != nil && c.Status != api.ConditionTrue
	if !stale && !reported {
		return time.Time{}, false
	}
	since := staleAt
	if reported {
		first, ok := l.notReadySeen[n.Name]
		if !ok {
			first = now
			l.notReadySeen[n.Name] = now
		}
		if !stale || first.Before(since) {
			since = first
		}
	}
	return since, true
}

// markNotReady sets Ready=False with compare-and-swap on the version the
// decision was made on: a heartbeat that lands first wins.
func (l *NodeLifecycle) markNotReady(ctx context.Context, n *api.Node, now time.Time) error {
	cp := *n
	conds := make([]api.NodeCondition, 0, len(n.Status.Conditions))
	for _, c := range n.Status.Conditions {
		if c.Type == NodeReady {
			c.Status = api.ConditionFalse
			c.Reason = ReasonNodeStatusUnknown
			c.Message = fmt.Sprintf("the node agent stopped posting heartbeats (last at %s, %s ago)",
				c.LastHeartbeatTime.UTC().Format(time.RFC3339), now.Sub(c.LastHeartbeatTime).Round(time.Second))
		}
		conds = append(conds, c)
	}
	cp.Status.Conditions = conds
	err := l.cfg.Store.Update(ctx, api.Nodes, &cp, store.UpdateOptions{Status: true})
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
		return nil // changed or gone: the next pass looks again
	}
	if err == nil {
		slog.Info("scheduler: node not ready", "node", n.Name, "reason", ReasonNodeStatusUnknown)
	}
	return err
}

// evict deletes the pods bound to a node, each with its resourceVersion as
// a precondition so that a pod changed meanwhile is looked at again first.
func (l *NodeLifecycle) evict(ctx context.Context, node string, pods []*api.Pod) {
	deleted := 0
	for _, p := range pods {
		_, err := l.cfg.Store.Delete(ctx, api.Pods, p.Namespace, p.Name, p.ResourceVersion)
		switch {
		case err == nil:
			deleted++
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict), ctx.Err() != nil:
		default:
			slog.Warn("scheduler: could not evict pod", "pod", p.Namespace+"/"+p.Name, "node", node, "err", err)
		}
	}
	if deleted > 0 {
		slog.Info("scheduler: evicted pods from a node that is not ready", "node", node, "pods", deleted)
	}
}
