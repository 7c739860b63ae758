// Package node is the node agent, Slipway's kubelet: it registers its Node
// and renews Ready by heartbeat, runs the pods bound to the node on a
// container runtime, restarts their containers by restart policy with
// back-off, probes them, writes their status, removes what is no longer
// wanted, and serves their logs and exec to the API server.
//
// The agent is level-based. It keeps no state that matters across a
// restart: the pods come from an informer and the containers from the
// runtime's ListPods, so a new agent adopts what the old one started.
// Every SyncInterval it reads every container from the runtime (a relist,
// like kubelet's PLEG) and syncs every pod it knows of, one worker per pod
// at a time; watch events, probe results and its own changes to the
// runtime sync a pod sooner. A sync after a change to a pod's containers
// waits for a relist that started after the change, so it never acts
// twice on one exit nor writes a status the runtime has moved past.
//
// Known costs: every agent caches every pod and service of the cluster
// (the store has no field selectors yet), and each relist inspects every
// container on the node.
package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/store"
)

// Config configures an Agent.
type Config struct {
	// Store holds nodes, pods and services. Required.
	Store store.Interface
	// Runtime runs the pods. Required.
	Runtime runtime.Runtime
	// NodeName is the Node the agent registers and whose pods it runs. A
	// DNS subdomain; required.
	NodeName string
	// Address is the node's address: the Node's status.address and each
	// pod's status.hostIP. Required.
	Address string
	// Labels are set on the Node at start (labels set by others are kept).
	Labels map[string]string
	// MaxPods is the Node's pod capacity. Default 110.
	MaxPods int64
	// HeartbeatInterval is how often the Node's Ready condition is renewed.
	// Default 10s.
	HeartbeatInterval time.Duration
	// SyncInterval is how often the agent reads every container's state
	// from the runtime and syncs every pod. Default 2s.
	SyncInterval time.Duration
	// BackOff is the first delay before restarting a container that
	// exited again, pulling an image that failed to pull, or asking Admit
	// again; each further delay doubles, up to MaxBackOff, and a quiet
	// spell of twice MaxBackOff starts over. The first restart is at once.
	// Default 10s.
	BackOff time.Duration
	// MaxBackOff caps BackOff's doubling. Default 5 minutes.
	MaxBackOff time.Duration
	// Workers is how many pods are synced at once. Default 4.
	Workers int
	// RegistryAuth returns the credentials to pull image for pod (whose
	// project may decide them): the base64url JSON that the Docker API
	// takes in X-Registry-Auth, or "" for anonymous. Nil pulls
	// anonymously.
	RegistryAuth func(ctx context.Context, pod *api.Pod, image string) (string, error)
	// MirrorImage, if set, maps an image of an outside registry to the
	// reference that pulls it through the integrated registry's
	// pull-through mirror, and reports whether it does. The agent pulls
	// and runs that reference, with the credentials RegistryAuth gives
	// for it; the pod's status keeps the image its spec names. Nil pulls
	// every image from the registry it names.
	MirrorImage func(image string) (string, bool)
	// Admit, if set, is asked before a pod's containers are first started.
	// An error keeps the pod Pending with reason PolicyDenied and the
	// error as its message, and is asked again with back-off. It is the
	// policy hook: it must reject, not log.
	Admit func(ctx context.Context, pod *api.Pod) error
	// ServerToken is the bearer token the API server presents to
	// Handler. Handler refuses every request while it is empty.
	ServerToken string
	// ExecOutputLimit caps what one exec may print, stdout and stderr
	// together; past it the command is stopped and the caller told why.
	// Output is streamed, so the cap bounds time on the wire and what a
	// caller that buffers must hold, not the agent's memory. Default
	// 16 MiB.
	ExecOutputLimit int64
	// ExecTimeout stops an exec that runs longer. Default 1 hour.
	ExecTimeout time.Duration
}

// Validate fills in defaults and checks what is required.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil:
		return errors.New("node: a store is required")
	case c.Runtime == nil:
		return errors.New("node: a runtime is required")
	case c.Address == "":
		return errors.New("node: the node's address is required")
	}
	if msgs := validation.IsDNS1123Subdomain(c.NodeName); len(msgs) > 0 {
		return fmt.Errorf("node: node name %q: %s", c.NodeName, msgs[0])
	}
	if c.MaxPods < 0 || c.HeartbeatInterval < 0 || c.SyncInterval < 0 || c.BackOff < 0 || c.MaxBackOff < 0 || c.Workers < 0 || c.ExecOutputLimit < 0 || c.ExecTimeout < 0 {
		return errors.New("node: counts and intervals must not be negative")
	}
	c.MaxPods = cmp.Or(c.MaxPods, 110)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, 10*time.Second)
	c.SyncInterval = cmp.Or(c.SyncInterval, 2*time.Second)
	c.BackOff = cmp.Or(c.BackOff, 10*time.Second)
	c.MaxBackOff = max(cmp.Or(c.MaxBackOff, 5*time.Minute), c.BackOff)
	c.Workers = cmp.Or(c.Workers, 4)
	c.ExecOutputLimit = cmp.Or(c.ExecOutputLimit, DefaultExecOutputLimit)
	c.ExecTimeout = cmp.Or(c.ExecTimeout, time.Hour)
	return nil
}

// Agent runs the pods bound to one node.
type Agent struct {
	cfg      Config
	rt       runtime.Runtime
	pods     *store.Informer
	services *store.Informer
	projects *store.Informer // for removing a deleted project's volumes
	queue    *store.WorkQueue
	memory   int64 // bytes, from /proc/meminfo
	kick     chan struct{}
	probes   *http.Client
	probing  sync.WaitGroup // probe goroutines

	mu     sync.Mutex
	ctx    context.Context // Run's, for probe goroutines
	snap   *snapshot
	starts uint64 // relists started
	state  map[string]*podState
}

// New returns an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	mem, err := memTotal()
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:      cfg,
		rt:       cfg.Runtime,
		pods:     store.NewInformer(cfg.Store, api.Pods),
		services: store.NewInformer(cfg.Store, api.Services),
		projects: store.NewInformer(cfg.Store, api.Projects),
		queue:    store.NewWorkQueue(),
		memory:   mem,
		kick:     make(chan struct{}, 1),
		probes:   newProbeClient(),
		snap:     &snapshot{},
		state:    map[string]*podState{},
	}
	a.pods.AddHandler(func(ev store.Event) {
		p := ev.Object.(*api.Pod)
		if key := p.Namespace + "/" + p.Name; p.Spec.NodeName == cfg.NodeName || a.known(key) {
			a.queue.Add(key)
		}
	})
	if vr, ok := cfg.Runtime.(volumeRemover); ok {
		a.projects.AddHandler(func(ev store.Event) {
			if m := ev.Object.GetObjectMeta(); ev.Type == api.Deleted {
				go removeVolumes(vr, m.Name, m.UID, m.Name)
			}
		})
	}
	return a, nil
}

// volumeRemover is a runtime that keeps persistent volumes per project,
// under a key: the project's UID (runtime.ProjectUIDAnnotation), or its
// name for volumes made before they were keyed by UID.
type volumeRemover interface {
	VolumeProjects() ([]string, error)
	RemoveProjectVolumes(key string) error
}

// removeVolumes removes a deleted project's persistent volumes. The
// project's pods were deleted before it (the finalizer deletes a project
// last), so its containers are going too.
func removeVolumes(vr volumeRemover, project string, keys ...string) {
	for _, k := range keys {
		if k == "" {
			continue
		}
		if err := vr.RemoveProjectVolumes(k); err != nil {
			slog.Warn("node: removing a deleted project's volumes", "project", project, "key", k, "err", err)
		}
	}
}

// sweepVolumes removes the volumes of projects deleted while this agent
// was not watching, once the project cache is full: volumes are kept
// under their project's UID, so those of a project deleted and made
// again under the same name go too. Volumes kept under the name of a
// project that exists (made before volumes were keyed by UID) may be an
// earlier project's of that name: they are no longer mounted, and left
// for an admin to move or remove.
func (a *Agent) sweepVolumes() {
	vr, ok := a.rt.(volumeRemover)
	if !ok {
		return
	}
	keys, err := vr.VolumeProjects()
	if err != nil {
		slog.Warn("node: listing persistent volumes", "err", err)
		return
	}
	uids := map[string]bool{}
	for _, o := range a.projects.List("") {
		uids[o.GetObjectMeta().UID] = true
	}
	for _, k := range keys {
		switch o, named := a.projects.Get("", k); {
		case uids[k]:
		case named:
			slog.Warn("node: persistent volumes kept under a project's name are no longer mounted: they may be an earlier project's of that name; if they are this project's, move the directory to volumes/UID in the node's data directory",
				"dir", "volumes/"+k, "project", k, "uid", o.GetObjectMeta().UID)
		default:
			removeVolumes(vr, k, k)
		}
	}
}

// Run registers the node and runs its pods until ctx ends. It returns nil
// then; the node is left registered (it goes NotReady when its heartbeats
// stop) and the pods' containers keep running, for the next agent to
// adopt.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	a.ctx = ctx
	a.mu.Unlock()
	var wg sync.WaitGroup
	defer a.probing.Wait()
	defer wg.Wait()
	wg.Go(func() { a.heartbeats(ctx) })
	wg.Go(func() { a.pods.Run(ctx) })
	wg.Go(func() { a.services.Run(ctx) })
	wg.Go(func() { a.projects.Run(ctx) })
	// Nothing is synced before the caches are full and the runtime has
	// been read: a pod missing from either would be taken for an orphan,
	// or started twice.
	if a.pods.WaitFor(ctx, 0) != nil || a.services.WaitFor(ctx, 0) != nil || a.projects.WaitFor(ctx, 0) != nil {
		return nil
	}
	a.sweepVolumes()
	for {
		err := a.relist(ctx)
		if err == nil {
			break
		}
		slog.Warn("node: reading the runtime's pods failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.SyncInterval):
		}
	}
	wg.Go(func() { a.relistLoop(ctx) })
	go func() { <-ctx.Done(); a.queue.Shutdown() }()
	for range a.cfg.Workers {
		wg.Go(func() { a.work(ctx) })
	}
	return nil
}

func (a *Agent) work(ctx context.Context) {
	for {
		key, ok := a.queue.Get()
		if !ok {
			return
		}
		err := a.sync(ctx, key)
		if err != nil && ctx.Err() == nil {
			slog.Warn("node: pod sync failed; will retry", "pod", key, "err", err)
		}
		a.queue.Done(key, err)
	}
}

// snapshot is the runtime's pods as one ListPods saw them.
type snapshot struct {
	gen  uint64 // the relist that made it: the starts count when it began
	pods map[string][]*runtime.PodStatus
}

// find returns the runtime pod of key with uid, or nil.
func (s *snapshot) find(key, uid string) *runtime.PodStatus {
	for _, p := range s.pods[key] {
		if p.UID == uid {
			return p
		}
	}
	return nil
}

func (a *Agent) snapshot() *snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.snap
}

// relist reads every pod from the runtime and queues every pod the agent
// knows of: bound here, running here, or remembered.
func (a *Agent) relist(ctx context.Context) error {
	a.mu.Lock()
	a.starts++
	gen := a.starts
	a.mu.Unlock()
	pods, err := a.rt.ListPods(ctx)
	if err != nil {
		return err
	}
	s := &snapshot{gen: gen, pods: map[string][]*runtime.PodStatus{}}
	for i := range pods {
		p := &pods[i]
		key := p.Namespace + "/" + p.Name
		s.pods[key] = append(s.pods[key], p)
	}
	a.mu.Lock()
	a.snap = s
	keys := make([]string, 0, len(s.pods)+len(a.state))
	for k := range s.pods {
		keys = append(keys, k)
	}
	for k := range a.state {
		keys = append(keys, k)
	}
	a.mu.Unlock()
	for _, o := range a.pods.List("") {
		if p := o.(*api.Pod); p.Spec.NodeName == a.cfg.NodeName {
			keys = append(keys, p.Namespace+"/"+p.Name)
		}
	}
	for _, k := range keys {
		a.queue.Add(k)
	}
	return nil
}

func (a *Agent) relistLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
		}
		if err := a.relist(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("node: reading the runtime's pods failed", "err", err)
		}
	}
}

// changed records that the pod's containers have just been changed: its
// syncs wait for a relist that starts after now, which is asked for.
func (a *Agent) changed(ps *podState) {
	a.mu.Lock()
	ps.needGen = a.starts + 1
	a.mu.Unlock()
	a.relistSoon()
}

func (a *Agent) relistSoon() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// known reports whether the agent has state or containers for key.
func (a *Agent) known(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.state[key]
	return ok || len(a.snap.pods[key]) > 0
}

// boundPod returns the cached pod of key if it is bound to this node and
// not being deleted.
func (a *Agent) boundPod(key string) *api.Pod {
	ns, name, _ := strings.Cut(key, "/")
	o, ok := a.pods.Get(ns, name)
	if !ok {
		return nil
	}
	p := o.(*api.Pod)
	if p.Spec.NodeName != a.cfg.NodeName || p.DeletionTimestamp != nil {
		return nil
	}
	return p
}
