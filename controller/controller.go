// Package controller is the small runtime Slipway's controllers run on:
// shared informers feed a queue of keys ("ns/name"), and one worker hands
// each key to Reconcile(ctx, key), which looks at the cached state and
// makes the world match. A key is never reconciled by two workers at once;
// adds of a waiting key merge. A reconcile asks to be called again with
// Result.RequeueAfter; a failure is retried with per-key exponential
// back-off under an overall rate limit, unless it is Terminal.
package controller

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"slipway.dev/slipway/store"
)

// Result is what a reconcile asks of the runtime.
type Result struct {
	// RequeueAfter reconciles the key again after this long (0: not
	// unless an event or a failure asks).
	RequeueAfter time.Duration
}

// Reconciler makes the world match the cached state of one key.
type Reconciler interface {
	Reconcile(ctx context.Context, key string) (Result, error)
}

// ReconcileFunc is a Reconciler.
type ReconcileFunc func(ctx context.Context, key string) (Result, error)

// Reconcile calls f.
func (f ReconcileFunc) Reconcile(ctx context.Context, key string) (Result, error) { return f(ctx, key) }

// ErrTerminal marks an error that retrying cannot fix (bad input in the
// object): the key is logged and dropped until its object changes.
var ErrTerminal = errors.New("terminal")

type terminalError struct{ err error }

func (e terminalError) Error() string        { return e.err.Error() }
func (e terminalError) Is(target error) bool { return target == ErrTerminal }
func (e terminalError) Unwrap() error        { return e.err }

// Terminal marks err as not worth retrying.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return terminalError{err}
}

// Back-off of failed keys: BaseDelay doubling to MaxDelay per key, and
// at most RetryQPS retries a second (burst RetryBurst) over all keys, so
// that a failing dependency cannot make a controller spin.
const (
	BaseDelay  = 500 * time.Millisecond
	MaxDelay   = 5 * time.Minute
	RetryQPS   = 20
	RetryBurst = 100
)

// Controller runs one Reconciler.
type Controller struct {
	name string
	r    Reconciler
	q    *store.WorkQueue
	// informers are run by Run and must sync before the first reconcile.
	informers []*store.Informer
}

// New returns a controller named name (for logs) around r.
func New(name string, r Reconciler) *Controller {
	return &Controller{name: name, r: r, q: store.NewRateLimitedWorkQueue(BaseDelay, MaxDelay, rate.NewLimiter(RetryQPS, RetryBurst))}
}

// Key is the queue key of an object: "ns/name", or "name" when it lives in
// no project.
func Key(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// SplitKey undoes Key.
func SplitKey(key string) (ns, name string) {
	if ns, name, ok := strings.Cut(key, "/"); ok {
		return ns, name
	}
	return "", key
}

// Watch runs inf with the controller and enqueues, for each of its
// events, the keys that keys returns; nil keys means the event's object
// itself. Call Watch before Run.
func (c *Controller) Watch(inf *store.Informer, keys func(store.Event) []string) {
	if keys == nil {
		keys = func(ev store.Event) []string {
			m := ev.Object.GetObjectMeta()
			return []string{Key(m.Namespace, m.Name)}
		}
	}
	inf.AddHandler(func(ev store.Event) {
		for _, k := range keys(ev) {
			c.q.Add(k)
		}
	})
	c.informers = append(c.informers, inf)
}

// Enqueue asks for key to be reconciled.
func (c *Controller) Enqueue(key string) { c.q.Add(key) }

// Run runs the watched informers, waits until they have synced, and
// reconciles until ctx ends; it returns when the worker has finished its
// key.
func (c *Controller) Run(ctx context.Context) {
	go func() { <-ctx.Done(); c.q.Shutdown() }()
	for _, inf := range c.informers {
		go inf.Run(ctx)
	}
	if store.WaitSynced(ctx, c.informers...) != nil {
		return
	}
	for {
		key, ok := c.q.Get()
		if !ok {
			return
		}
		res, err := c.r.Reconcile(ctx, key)
		switch {
		case ctx.Err() != nil:
			c.q.Finish(key, 0, false)
		case errors.Is(err, ErrTerminal):
			slog.Error(c.name+": giving up until the object changes", "key", key, "err", err)
			c.q.Finish(key, 0, false)
		case err != nil:
			slog.Warn(c.name+" failed; will retry", "key", key, "err", err)
			c.q.Finish(key, 0, true)
		default:
			c.q.Finish(key, res.RequeueAfter, false)
		}
	}
}
