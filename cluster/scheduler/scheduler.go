// Package scheduler binds pending pods to nodes, and marks nodes whose
// agents stop heartbeating NotReady and evicts their pods.
//
// The Scheduler has the shape of kube-scheduler, much reduced: informers
// on pods and nodes feed an in-memory cache of what every node has left;
// one loop takes pending pods in order, filters the nodes (resources, host
// ports, nodeSelector, cordoned, not ready), scores the rest (least
// allocated, balanced cpu/memory, spreading of one controller's replicas)
// and charges the pod to the winner in the cache at once (assume), so the
// next decision sees it; a small pool of goroutines writes the binds to the
// store. A bind sets spec.nodeName and PodScheduled=True in one write, with
// compare-and-swap on the pod's resourceVersion, so a pod is bound at most
// once: a bind that finds the pod changed is dropped, and the pod is looked
// at again.
//
// A pod that fits nowhere gets PodScheduled=False, reason Unschedulable,
// and a message saying why per filter. It is tried again when a node is
// added or gains room, labels, readiness or is uncordoned, and when a pod
// that held resources goes away.
//
// Two schedulers on one store never bind a pod twice, but each charges
// only its own decisions, so they can overcommit a node between them: run
// one (leader election is future work).
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// ControllerLabel names the controller a pod belongs to. Pods of one
// namespace with the same value are replicas of one controller, and the
// scheduler spreads them over nodes.
const ControllerLabel = api.ControllerLabel

// Condition types and reasons the scheduler and the lifecycle controller
// write.
const (
	PodScheduled = "PodScheduled"
	NodeReady    = "Ready"
	// ReasonUnschedulable is PodScheduled=False's reason when no node fits.
	ReasonUnschedulable = "Unschedulable"
	// ReasonNodeStatusUnknown is Ready=False's reason when the node's agent
	// stopped heartbeating.
	ReasonNodeStatusUnknown = "NodeStatusUnknown"
)

// Config configures a Scheduler.
type Config struct {
	// Store holds pods and nodes. Required.
	Store *store.Store
	// Binders is how many store writes (binds, and Unschedulable
	// conditions) run at once. Each bind is two etcd round trips (a read and a transaction),
	// which dominate the cost of scheduling a pod. Default 64.
	Binders int
	// RetryInterval is how often pods that fit nowhere are tried again
	// even though nothing the scheduler watches said the cluster changed.
	// Default 5 minutes.
	RetryInterval time.Duration
}

// Validate fills in defaults and checks what is required.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("scheduler: a store is required")
	}
	if c.Binders < 0 || c.RetryInterval < 0 {
		return errors.New("scheduler: binders and retry interval must not be negative")
	}
	if c.Binders == 0 {
		c.Binders = 64
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = 5 * time.Minute
	}
	return nil
}

// Scheduler binds pending pods to ready nodes.
type Scheduler struct {
	cfg   Config
	pods  *store.Informer
	nodes *store.Informer
	q     *queue
	jobs  chan job
	move  chan struct{}

	mu       sync.Mutex
	cache    *cache
	inFlight map[string]bool
	// again marks in-flight pods that something asked to look at again;
	// they are queued when their write ends.
	again map[string]bool
	// stale is the resourceVersion of a pod a write found outdated; the
	// pod is not tried again until the cache shows a newer one.
	stale map[string]int64
	// written is the Unschedulable message last written (or being written)
	// per pod, so the same message is never written twice.
	written  map[string]string
	failures map[string]int // consecutive failed writes per pod, for backoff
	// podRV and nodeRV are the versions the handlers have seen, for
	// waitForCaches.
	podRV  map[string]int64
	nodeRV map[string]int64

	ready atomic.Bool
	stats Stats
}

// Stats counts what a Scheduler did. Read it with Scheduler.Stats.
type Stats struct {
	Attempts      atomic.Int64 // scheduling attempts
	Bound         atomic.Int64 // binds written
	Conflicts     atomic.Int64 // writes that found the pod changed
	Unschedulable atomic.Int64 // PodScheduled=False writes
}

// New returns a Scheduler; Run starts it.
func New(cfg Config) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scheduler{
		cfg:      cfg,
		pods:     store.NewInformer(cfg.Store, api.Pods),
		nodes:    store.NewInformer(cfg.Store, api.Nodes),
		q:        newQueue(),
		jobs:     make(chan job, cfg.Binders*4),
		move:     make(chan struct{}, 1),
		cache:    newCache(),
		inFlight: map[string]bool{},
		again:    map[string]bool{},
		stale:    map[string]int64{},
		written:  map[string]string{},
		failures: map[string]int{},
		podRV:    map[string]int64{},
		nodeRV:   map[string]int64{},
	}
	s.pods.AddHandler(s.onPod)
	s.nodes.AddHandler(s.onNode)
	return s, nil
}

// Ready reports whether Run has filled its caches and is scheduling.
func (s *Scheduler) Ready() bool { return s.ready.Load() }

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() *Stats { return &s.stats }

// Run schedules until ctx ends. It starts deciding once its caches hold
// every node and pod that existed when it started.
func (s *Scheduler) Run(ctx context.Context) {
	go s.pods.Run(ctx)
	go s.nodes.Run(ctx)
	if err := s.waitForCaches(ctx); err != nil {
		return
	}
	s.ready.Store(true)
	var wg sync.WaitGroup
	for range s.cfg.Binders {
		wg.Go(func() { s.writer(ctx) })
	}
	wg.Go(func() { s.mover(ctx) })
	go func() { <-ctx.Done(); s.q.close() }()
	s.loop(ctx)
	wg.Wait()
}

// waitForCaches blocks until the handlers have seen everything the
// informers' first lists returned: deciding earlier could overcommit a
// node whose pods were not yet counted.
func (s *Scheduler) waitForCaches(ctx context.Context) error {
	caughtUp := func(inf *store.Informer, seen map[string]int64) bool {
		if !inf.Synced() {
			return false
		}
		objs := inf.List("")
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, o := range objs {
			m := o.GetObjectMeta()
			if seen[m.Namespace+"/"+m.Name] < parseRV(m.ResourceVersion) {
				return false
			}
		}
		return true
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !caughtUp(s.nodes, s.nodeRV) || !caughtUp(s.pods, s.podRV) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

func parseRV(rv string) int64 {
	n, _ := strconv.ParseInt(rv, 10, 64)
	return n
}

func podKey(p *api.Pod) string { return p.Namespace + "/" + p.Name }

func pending(p *api.Pod) bool { return p.Spec.NodeName == "" && p.DeletionTimestamp == nil }

// terminal pods have finished and hold no resources.
func terminal(p *api.Pod) bool {
	return p.Status.Phase == api.PodSucceeded || p.Status.Phase == api.PodFailed
}

// requestMove asks the mover to retry parked pods; bursts of requests
// coalesce into one move.
func (s *Scheduler) requestMove() {
	select {
	case s.move <- struct{}{}:
	default:
	}
}

// mover retries parked pods when asked, at most every 100ms (each retry
// scans every node for every parked pod), and every RetryInterval anyway.
func (s *Scheduler) mover(ctx context.Context) {
	t := time.NewTicker(s.cfg.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.move:
		case <-t.C:
		}
		s.q.moveAll()
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *Scheduler) onNode(ev store.Event) {
	n := ev.Object.(*api.Node)
	s.mu.Lock()
	defer s.mu.Unlock()
	key := "/" + n.Name
	if ev.Type == api.Deleted {
		delete(s.nodeRV, key)
		s.cache.removeNode(n.Name)
		return
	}
	s.nodeRV[key] = parseRV(n.ResourceVersion)
	if s.cache.setNode(n) {
		s.requestMove()
	}
}

func (s *Scheduler) onPod(ev store.Event) {
	p := ev.Object.(*api.Pod)
	key := podKey(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if ev.Type == api.Deleted {
		delete(s.podRV, key)
		delete(s.again, key)
		delete(s.stale, key)
		delete(s.written, key)
		delete(s.failures, key)
		s.q.remove(key)
		if s.cache.removePod(key) {
			s.requestMove()
		}
		return
	}
	s.podRV[key] = parseRV(p.ResourceVersion)
	holds := p.Spec.NodeName != "" && !terminal(p)
	cur := s.cache.pods[key]
	switch {
	case holds && (cur == nil || cur.assumed || cur.node != p.Spec.NodeName):
		// Bound: confirm what this scheduler assumed, or learn of a bind
		// (by another scheduler, or by a user) for the first time.
		s.cache.removePod(key)
		s.cache.addPod(key, newPodInfo(p))
		delete(s.written, key)
		s.q.remove(key)
	case holds:
	case p.Spec.NodeName != "":
		// Finished: what it held is free again.
		if s.cache.removePod(key) {
			s.requestMove()
		}
	case s.inFlight[key]:
		// Being written: look again once the write is done, whatever its
		// outcome.
		s.again[key] = true
	case cur != nil && cur.assumed:
		// Bound by this scheduler, but the watch has not shown it yet.
	case pending(p):
		// Waiting for a node. If the cache had it bound, someone cleared
		// spec.nodeName: what it held is free.
		if s.cache.removePod(key) {
			s.requestMove()
		}
		s.q.update(key, p.Generation)
	}
}

// loop is the scheduling loop: one pod at a time, against the cache.
func (s *Scheduler) loop(ctx context.Context) {
	for {
		key, ok := s.q.pop()
		if !ok {
			return
		}
		s.attempt(ctx, key)
	}
}

func (s *Scheduler) attempt(ctx context.Context, key string) {
	o, ok := s.pods.Get(splitKey(key))
	if !ok {
		return
	}
	p := o.(*api.Pod)
	if !pending(p) {
		return
	}
	moves := s.q.moveCount()
	s.mu.Lock()
	rv := parseRV(p.ResourceVersion)
	if s.inFlight[key] {
		s.again[key] = true
		s.mu.Unlock()
		return
	}
	if s.cache.pods[key] != nil || rv <= s.stale[key] {
		s.mu.Unlock()
		return
	}
	delete(s.stale, key)
	s.stats.Attempts.Add(1)
	pi := newPodInfo(p)
	best, diag := s.cache.pick(p, pi)
	var j job
	if best != nil {
		s.cache.assume(key, p, best.name)
		s.inFlight[key] = true
		j = job{pod: p, node: best.name}
	} else {
		s.q.park(key, p.Generation, moves)
		msg := diag.message()
		if s.written[key] != msg && !hasUnschedulable(p, msg) {
			s.written[key] = msg
			s.inFlight[key] = true
			j = job{pod: p, message: msg}
		}
	}
	s.mu.Unlock()
	if j.pod != nil {
		select {
		case s.jobs <- j:
		case <-ctx.Done():
		}
	}
}

func splitKey(key string) (string, string) {
	ns, name, _ := strings.Cut(key, "/")
	return ns, name
}

func hasUnschedulable(p *api.Pod, msg string) bool {
	c := podCondition(p, PodScheduled)
	return c != nil && c.Status == api.ConditionFalse && c.Reason == ReasonUnschedulable && c.Message == msg
}

func podCondition(p *api.Pod, typ string) *api.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// job is one write: a bind when node is set, else an Unschedulable
// condition with message.
type job struct {
	pod     *api.Pod
	node    string
	message string
}

func (s *Scheduler) writer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-s.jobs:
			var err error
			if j.node != "" {
				err = s.bind(ctx, j.pod, j.node)
			} else {
				err = s.markUnschedulable(ctx, j.pod, j.message)
			}
			s.done(ctx, j, err)
		}
	}
}

// done settles the cache after a write.
func (s *Scheduler) done(ctx context.Context, j job, err error) {
	key := podKey(j.pod)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inFlight, key)
	if s.again[key] {
		delete(s.again, key)
		s.q.add(key)
	}
	if j.node != "" && err != nil {
		s.cache.forget(key)
	}
	if j.node == "" && err != nil {
		delete(s.written, key)
	}
	switch {
	case err == nil:
		delete(s.failures, key)
	case errors.Is(err, store.ErrNotFound), ctx.Err() != nil:
	case errors.Is(err, store.ErrConflict):
		// The pod changed: look again once the cache has the new version
		// (the watch event re-queues it if this add finds it stale).
		s.stats.Conflicts.Add(1)
		s.stale[key] = parseRV(j.pod.ResourceVersion)
		s.q.add(key)
	default:
		s.failures[key]++
		delay := min(time.Second<<min(s.failures[key]-1, 5), 30*time.Second)
		slog.Warn("scheduler: write failed; will retry", "pod", key, "node", j.node, "err", err, "in", delay)
		time.AfterFunc(delay, func() { s.q.add(key) })
	}
}

// bind sets spec.nodeName and PodScheduled=True in one write, with
// compare-and-swap on the resourceVersion the decision was made on: if the
// pod changed meanwhile, nothing is written and the pod is looked at again.
func (s *Scheduler) bind(ctx context.Context, p *api.Pod, node string) error {
	cp := *p
	cp.Spec.NodeName = node
	setPodCondition(&cp, api.PodCondition{Type: PodScheduled, Status: api.ConditionTrue})
	if err := s.cfg.Store.Update(ctx, api.Pods, &cp, store.UpdateOptions{WithStatus: true}); err != nil {
		return fmt.Errorf("scheduler: bind %s/%s to %s: %w", p.Namespace, p.Name, node, err)
	}
	s.stats.Bound.Add(1)
	return nil
}

// markUnschedulable writes PodScheduled=False with compare-and-swap: if
// the pod changed, the scheduler looks at it again instead.
func (s *Scheduler) markUnschedulable(ctx context.Context, p *api.Pod, msg string) error {
	cp := *p
	setPodCondition(&cp, api.PodCondition{Type: PodScheduled, Status: api.ConditionFalse, Reason: ReasonUnschedulable, Message: msg})
	if err := s.cfg.Store.Update(ctx, api.Pods, &cp, store.UpdateOptions{Status: true}); err != nil {
		return fmt.Errorf("scheduler: mark %s/%s unschedulable: %w", p.Namespace, p.Name, err)
	}
	s.stats.Unschedulable.Add(1)
	return nil
}

// setPodCondition replaces or adds a condition on p without touching the
// slice p shares with the cache. The transition time moves only when the
// status does.
func setPodCondition(p *api.Pod, c api.PodCondition) {
	conds := make([]api.PodCondition, 0, len(p.Status.Conditions)+1)
	c.LastTransitionTime = time.Now().UTC().Truncate(time.Second)
	found := false
	for _, old := range p.Status.Conditions {
		if old.Type == c.Type {
			if old.Status == c.Status {
				c.LastTransitionTime = old.LastTransitionTime
			}
			old, found = c, true
		}
		conds = append(conds, old)
	}
	if !found {
		conds = append(conds, c)
	}
	p.Status.Conditions = conds
}
