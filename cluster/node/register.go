package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// NodeReady is the Node condition the agent renews.
const NodeReady = "Ready"

// heartbeats registers the node, then renews its status every
// HeartbeatInterval until ctx ends. A failed write is logged and tried
// again at the next tick; a node deleted by an admin is registered again.
func (a *Agent) heartbeats(ctx context.Context) {
	err := a.register(ctx)
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		if err != nil && ctx.Err() == nil {
			slog.Warn("node: heartbeat failed", "node", a.cfg.NodeName, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err = a.heartbeat(ctx)
	}
}

// register adds Config.Labels to the Node, creating it if it is not
// there, and writes its status.
func (a *Agent) register(ctx context.Context) error {
	_, err := a.cfg.Store.GuaranteedUpdate(ctx, api.Nodes, "", a.cfg.NodeName, store.UpdateOptions{}, func(o api.Object) error {
		n := o.(*api.Node)
		if n.Labels == nil && len(a.cfg.Labels) > 0 {
			n.Labels = map[string]string{}
		}
		for k, v := range a.cfg.Labels {
			n.Labels[k] = v
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return a.createNode(ctx)
	}
	if err != nil {
		return fmt.Errorf("node: registering %s: %w", a.cfg.NodeName, err)
	}
	return a.heartbeat(ctx)
}

func (a *Agent) createNode(ctx context.Context) error {
	n := &api.Node{ObjectMeta: api.ObjectMeta{Name: a.cfg.NodeName, Labels: a.cfg.Labels}}
	n.Status = a.nodeStatus(nil, time.Now())
	if err := a.cfg.Store.Create(ctx, api.Nodes, n); err != nil {
		return fmt.Errorf("node: registering %s: %w", a.cfg.NodeName, err)
	}
	slog.Info("node: registered", "node", a.cfg.NodeName)
	return nil
}

// heartbeat writes the node's status with Ready=True as of now.
func (a *Agent) heartbeat(ctx context.Context) error {
	_, err := a.cfg.Store.GuaranteedUpdate(ctx, api.Nodes, "", a.cfg.NodeName, store.UpdateOptions{Status: true}, func(o api.Object) error {
		n := o.(*api.Node)
		n.Status = a.nodeStatus(n.Status.Conditions, time.Now())
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return a.createNode(ctx)
	}
	if err != nil {
		return fmt.Errorf("node: heartbeat of %s: %w", a.cfg.NodeName, err)
	}
	return nil
}

// nodeStatus is the status the agent reports: the machine's capacity, all
// of it allocatable, and Ready=True; conditions of other types are kept.
func (a *Agent) nodeStatus(old []api.NodeCondition, now time.Time) api.NodeStatus {
	capacity := api.ResourceList{MilliCPU: int64(goruntime.NumCPU()) * 1000, Memory: a.memory, Pods: a.cfg.MaxPods}
	conds := []api.NodeCondition{{
		Type: NodeReady, Status: api.ConditionTrue, Reason: "AgentReady",
		Message: "the node agent is posting ready status", LastHeartbeatTime: now.UTC(),
	}}
	for _, c := range old {
		if c.Type != NodeReady {
			conds = append(conds, c)
		}
	}
	return api.NodeStatus{Capacity: capacity, Allocatable: capacity, Conditions: conds, Address: a.cfg.Address}
}

// memTotal reads the machine's memory from /proc/meminfo.
func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("node: reading the machine's memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       24591904 kB
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("node: /proc/meminfo: bad MemTotal %q", rest)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("node: /proc/meminfo has no MemTotal")
}
