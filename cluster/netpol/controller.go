package netpol

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Enforcer makes the host filter by a set of rules; Apply replaces what
// the last Apply (of this process or an earlier one) made.
type Enforcer interface {
	Apply(*Rules) error
}

// Config configures a Controller.
type Config struct {
	// Store is where pods, projects and policies are watched. Required.
	Store store.Interface
	// NodeName and Address pick the pods known: those bound to the node
	// (whose traffic is filtered), and those whose hostIP is Address
	// (other agents on this host share its pod network; they filter
	// their own). One is required.
	NodeName, Address string
	// Enforcer applies the rules, such as NFTables. Required.
	Enforcer Enforcer
	// Resync applies the rules again this often even with no change, to
	// repair tables someone else flushed. Default 30s.
	Resync time.Duration
	// Subnets lists the pod network's subnets (runtime.Docker.PodSubnets),
	// asked at most once per Resync. An unknown address there is refused
	// to and from pods. Nil, or an error, leaves only the known pod IPs
	// filtered.
	Subnets func(context.Context) ([]netip.Prefix, error)
}

// Controller keeps the host's filter in step with the store.
type Controller struct {
	cfg      Config
	pods     *store.Informer
	projects *store.Informer
	policies *store.Informer
	kick     chan struct{}
	rules    atomic.Pointer[Rules]
	applied  chan struct{} // closed after the first Apply that succeeded
	once     sync.Once
}

// New returns a controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("netpol: a store is required")
	case cfg.Enforcer == nil:
		return nil, errors.New("netpol: an enforcer is required")
	case cfg.NodeName == "" && cfg.Address == "":
		return nil, errors.New("netpol: a node name or address is required")
	}
	cfg.Resync = cmp.Or(cfg.Resync, 30*time.Second)
	c := &Controller{
		cfg:      cfg,
		pods:     store.NewInformer(cfg.Store, api.Pods),
		projects: store.NewInformer(cfg.Store, api.Projects),
		policies: store.NewInformer(cfg.Store, api.NetworkPolicies),
		kick:     make(chan struct{}, 1),
		applied:  make(chan struct{}),
	}
	poke := func(store.Event) {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	c.pods.AddHandler(poke)
	c.projects.AddHandler(poke)
	c.policies.AddHandler(poke)
	return c, nil
}

// Run keeps the rules applied until ctx ends. The rules stay in the
// kernel after it returns: pods keep running while the agent is away, and
// the next Run replaces them.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, inf := range []*store.Informer{c.pods, c.projects, c.policies} {
		wg.Go(func() { inf.Run(ctx) })
	}
	defer wg.Wait()
	for _, inf := range []*store.Informer{c.pods, c.projects, c.policies} {
		if inf.WaitFor(ctx, 0) != nil {
			return
		}
	}
	t := time.NewTicker(c.cfg.Resync)
	defer t.Stop()
	var last string
	backoff := time.Duration(0)
	var subnets []netip.Prefix
	var subnetsAt time.Time
	for {
		if c.cfg.Subnets != nil && time.Since(subnetsAt) >= c.cfg.Resync {
			s, err := c.cfg.Subnets(ctx)
			if err != nil {
				slog.Warn("netpol: the pod network's subnets are unknown; addresses there that are no known pod are not filtered", "err", err)
				subnetsAt = time.Now().Add(5*time.Second - c.cfg.Resync) // again in 5s
			} else {
				subnets, subnetsAt = s, time.Now()
			}
		}
		r := c.compile()
		r.Subnets = subnets
		c.rules.Store(r)
		if err := c.cfg.Enforcer.Apply(r); err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 10*time.Second)
			slog.Error("netpol: pods are not isolated as their policies say; will retry", "err", err, "retry", backoff)
		} else {
			backoff = 0
			c.once.Do(func() { close(c.applied) })
			if s := r.String(); s != last {
				slog.Info("netpol: rules applied", "pods", len(r.Pods), "projects", len(r.Projects), "allows", len(r.Allows))
				last = s
			}
		}
		var retry <-chan time.Time
		if backoff > 0 {
			retry = time.After(backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
			// Let a burst of events land before compiling again.
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		case <-t.C:
		case <-retry:
		}
	}
}

// Applied is closed once the rules have first been applied.
func (c *Controller) Applied() <-chan struct{} { return c.applied }

func (c *Controller) compile() *Rules {
	var pods []Pod
	for _, o := range c.pods.List("") {
		p := o.(*api.Pod)
		if p.Status.PodIP == "" || p.Status.Phase == api.PodSucceeded || p.Status.Phase == api.PodFailed {
			continue
		}
		if !(c.cfg.NodeName != "" && p.Spec.NodeName == c.cfg.NodeName || c.cfg.Address != "" && p.Status.HostIP == c.cfg.Address) {
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil {
			continue
		}
		local := p.Spec.NodeName == c.cfg.NodeName || c.cfg.NodeName == ""
		pods = append(pods, Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels, IP: ip, Local: local})
	}
	labels := map[string]map[string]string{}
	for _, o := range c.projects.List("") {
		m := o.GetObjectMeta()
		labels[m.Name] = m.Labels
	}
	var policies []*api.NetworkPolicy
	for _, o := range c.policies.List("") {
		policies = append(policies, o.(*api.NetworkPolicy))
	}
	return Compile(pods, labels, policies)
}

// Access is the check the userspace service proxy makes before it dials
// endpoint for client: the proxy relays from the host, so the kernel's
// tables see the host, not the client pod. A client or endpoint that is
// not a pod of this host is not filtered. Until the rules are first
// compiled every client is refused.
func (c *Controller) Access(client netip.Addr, endpoint netip.AddrPort, proto string) error {
	r := c.rules.Load()
	if r == nil {
		return fmt.Errorf("%w: the node's network policy is not loaded yet", ErrDenied)
	}
	return r.Allowed(client, endpoint.Addr(), proto, endpoint.Port())
}

// String is a stable text of the rules, to tell a change.
func (r *Rules) String() string {
	return fmt.Sprint(r.Pods, r.Local, r.Projects, r.Allows, r.Subnets)
}
