package store

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"slipway.dev/slipway/api"
)

// Informer keeps an in-memory copy of one resource, fed by a list and then a
// watch, relisting when the watch falls behind compaction. Readers never
// touch etcd. Handlers run in order, one event at a time, after the cache
// has been updated.
//
// Informers are shared: every NewInformer of one resource on a store (and
// on its fenced views) is a handle on one cache, one list and one watch
// per process, however many controllers ask for it. A handle's handlers
// join at Run, first hearing an Added event for every object already
// cached, and leave when Run's context ends; the cache runs while any
// handle runs.
type Informer struct {
	core     *informerCore
	handlers []func(Event)
	joined   atomic.Bool
}

// informerCore is the one cache of a resource that handles share.
type informerCore struct {
	store Interface
	res   *api.Resource

	mu      sync.RWMutex
	items   map[string]api.Object // "ns/name"
	rev     int64
	synced  bool
	changed chan struct{} // closed and replaced on every advance of rev
	// indexers and indices: index name -> key -> cache key -> object,
	// updated under mu with items, so an index is exactly as fresh as
	// the cache (WaitFor covers it).
	indexers map[string]IndexFunc
	indices  map[string]map[string]map[string]api.Object

	// dispatchMu orders events, joins and stops: held while an event is
	// applied and handed to the handles, while a handle joins, and while
	// a stopped cache is emptied.
	dispatchMu sync.Mutex
	handles    []*Informer

	runMu   sync.Mutex
	runners int
	cancel  context.CancelFunc
	// gen counts runs (and stops), under dispatchMu: a run mutates the
	// cache only while gen is its own.
	gen int
}

// IndexFunc gives the keys under which an object is found in an index.
type IndexFunc func(api.Object) []string

// NewInformer returns a handle on the store's informer of r; call Run to
// receive its events. Handles of a *Store (and of its fenced views) share
// one cache per resource; on any other Interface (client.Store over the
// API) each informer has its own.
func NewInformer(s Interface, r *api.Resource) *Informer {
	st, ok := s.(*Store)
	if !ok {
		return &Informer{core: &informerCore{store: s, res: r, items: map[string]api.Object{}, changed: make(chan struct{})}}
	}
	st.sh.informersMu.Lock()
	defer st.sh.informersMu.Unlock()
	if st.sh.informers == nil {
		st.sh.informers = map[string]*informerCore{}
	}
	c := st.sh.informers[r.Name]
	if c == nil {
		c = &informerCore{store: s, res: r, items: map[string]api.Object{}, changed: make(chan struct{})}
		st.sh.informers[r.Name] = c
	}
	return &Informer{core: c}
}

// Resource is the resource this informer caches.
func (i *Informer) Resource() *api.Resource { return i.core.res }

// AddHandler registers fn for every event after Run. Register handlers
// before Run.
func (i *Informer) AddHandler(fn func(Event)) { i.handlers = append(i.handlers, fn) }

// AddIndex keeps an index of the cache: ByIndex(name, key) finds the
// objects for which fn returns key. Index names are shared by every
// handle of the resource in the process, so a name must always mean the
// same fn: the first one added is kept.
func (i *Informer) AddIndex(name string, fn IndexFunc) {
	c := i.core
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.indexers == nil {
		c.indexers, c.indices = map[string]IndexFunc{}, map[string]map[string]map[string]api.Object{}
	}
	if _, ok := c.indexers[name]; ok {
		return
	}
	c.indexers[name], c.indices[name] = fn, map[string]map[string]api.Object{}
	for k, o := range c.items {
		c.indexOne(name, k, o, true)
	}
}

// ByIndex returns the cached objects that index name holds under key,
// and false when there is no such index. The objects are shared: do not
// modify them.
func (i *Informer) ByIndex(name, key string) ([]api.Object, bool) {
	c := i.core
	c.mu.RLock()
	defer c.mu.RUnlock()
	idx, ok := c.indices[name]
	if !ok {
		return nil, false
	}
	set := idx[key]
	out := make([]api.Object, 0, len(set))
	for _, o := range set {
		out = append(out, o)
	}
	return out, true
}

// index adds (add true) or removes o, cached under k, in every index;
// mu must be held.
func (c *informerCore) index(k string, o api.Object, add bool) {
	for name := range c.indexers {
		c.indexOne(name, k, o, add)
	}
}

func (c *informerCore) indexOne(name, k string, o api.Object, add bool) {
	idx := c.indices[name]
	for _, key := range c.indexers[name](o) {
		if add {
			if idx[key] == nil {
				idx[key] = map[string]api.Object{}
			}
			idx[key][k] = o
		} else if set := idx[key]; set != nil {
			delete(set, k)
			if len(set) == 0 {
				delete(idx, key)
			}
		}
	}
}

// Run hands this handle's handlers every event until ctx ends, starting
// the shared cache if it is not running.
func (i *Informer) Run(ctx context.Context) {
	c := i.core
	c.start()
	defer c.stop()
	c.join(i)
	defer c.leave(i)
	<-ctx.Done()
}

// join adds h to the handles; when the cache is already filled, h first
// hears every cached object as Added.
func (c *informerCore) join(h *Informer) {
	c.dispatchMu.Lock()
	defer c.dispatchMu.Unlock()
	c.mu.RLock()
	var replay []api.Object
	if c.synced {
		replay = make([]api.Object, 0, len(c.items))
		for _, o := range c.items {
			replay = append(replay, o)
		}
	}
	c.mu.RUnlock()
	for _, o := range replay {
		for _, fn := range h.handlers {
			fn(Event{Type: api.Added, Object: o})
		}
	}
	c.handles = append(c.handles, h)
	h.joined.Store(true)
}

func (c *informerCore) leave(h *Informer) {
	c.dispatchMu.Lock()
	defer c.dispatchMu.Unlock()
	for n, x := range c.handles {
		if x == h {
			c.handles = append(c.handles[:n:n], c.handles[n+1:]...)
			break
		}
	}
	h.joined.Store(false)
}

// start counts one more running handle, and runs the cache for the
// first, as a new generation: what a stopping run still delivers is
// dropped.
func (c *informerCore) start() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.runners++
	if c.runners > 1 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.dispatchMu.Lock()
	c.gen++
	gen := c.gen
	c.dispatchMu.Unlock()
	go c.run(ctx, gen)
}

// stop counts one handle less; after the last it stops the cache and
// empties it at once, so that a handle joining later never hears a stale
// object, and the next run's list tells it about every object.
func (c *informerCore) stop() {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.runners--
	if c.runners > 0 {
		return
	}
	c.cancel()
	c.dispatchMu.Lock()
	defer c.dispatchMu.Unlock()
	c.gen++
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items, c.synced = map[string]api.Object{}, false
	for name := range c.indices {
		c.indices[name] = map[string]map[string]api.Object{}
	}
}

// run lists and watches until ctx ends, as generation gen.
func (i *informerCore) run(ctx context.Context, gen int) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := i.listAndWatch(ctx, gen)
		if ctx.Err() != nil {
			return
		}
		slog.Warn("informer: watch ended, relisting", "resource", i.res.Name, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (i *informerCore) listAndWatch(ctx context.Context, gen int) error {
	items, meta, err := i.store.List(ctx, i.res, "", ListOptions{})
	if err != nil {
		return err
	}
	rev, _ := strconv.ParseInt(meta.ResourceVersion, 10, 64)
	fresh := make(map[string]api.Object, len(items))
	for _, o := range items {
		fresh[cacheKey(o)] = o
	}
	i.dispatchMu.Lock()
	if i.gen != gen {
		i.dispatchMu.Unlock()
		return ctx.Err()
	}
	i.mu.Lock()
	old := i.items
	i.items = fresh
	for name := range i.indices {
		i.indices[name] = map[string]map[string]api.Object{}
	}
	for k, o := range fresh {
		i.index(k, o, true)
	}
	i.synced = true
	// Waiters hear of every list, even at a revision the cache had
	// reached before it was stopped and emptied.
	i.rev = max(i.rev, rev)
	close(i.changed)
	i.changed = make(chan struct{})
	i.mu.Unlock()
	// Tell handlers what the relist changed, so they stay level-correct.
	for k, o := range fresh {
		if prev, ok := old[k]; !ok {
			i.dispatch(Event{Type: api.Added, Object: o})
		} else if prev.GetObjectMeta().ResourceVersion != o.GetObjectMeta().ResourceVersion {
			i.dispatch(Event{Type: api.Modified, Object: o})
		}
	}
	for k, o := range old {
		if _, ok := fresh[k]; !ok {
			i.dispatch(Event{Type: api.Deleted, Object: o})
		}
	}
	i.dispatchMu.Unlock()
	ch, err := i.store.Watch(ctx, i.res, "", rev, ListOptions{})
	if err != nil {
		return err
	}
	for ev := range ch {
		if ev.Type == api.Error {
			return ev.Err
		}
		i.apply(ev, gen)
	}
	return ctx.Err()
}

func (i *informerCore) apply(ev Event, gen int) {
	rv, _ := strconv.ParseInt(ev.Object.GetObjectMeta().ResourceVersion, 10, 64)
	k := cacheKey(ev.Object)
	i.dispatchMu.Lock()
	defer i.dispatchMu.Unlock()
	if i.gen != gen {
		return // a stopped run's late event
	}
	i.mu.Lock()
	if prev, ok := i.items[k]; ok {
		i.index(k, prev, false)
	}
	if ev.Type == api.Deleted {
		delete(i.items, k)
	} else {
		i.items[k] = ev.Object
		i.index(k, ev.Object, true)
	}
	i.advance(rv)
	i.mu.Unlock()
	i.dispatch(ev)
}

// dispatch hands ev to every handle; dispatchMu must be held.
func (i *informerCore) dispatch(ev Event) {
	for _, h := range i.handles {
		for _, fn := range h.handlers {
			fn(ev)
		}
	}
}

// advance must be called with mu held.
func (i *informerCore) advance(rev int64) {
	if rev > i.rev {
		i.rev = rev
		close(i.changed)
		i.changed = make(chan struct{})
	}
}

// Get returns the cached object. The object is shared: do not modify it.
func (h *Informer) Get(ns, name string) (api.Object, bool) {
	i := h.core
	i.mu.RLock()
	defer i.mu.RUnlock()
	o, ok := i.items[ns+"/"+name]
	return o, ok
}

// List returns the cached objects in one project, or all when ns is empty.
// The objects are shared: do not modify them.
func (h *Informer) List(ns string) []api.Object {
	i := h.core
	i.mu.RLock()
	defer i.mu.RUnlock()
	out := make([]api.Object, 0, len(i.items))
	for _, o := range i.items {
		if ns == "" || o.GetObjectMeta().Namespace == ns {
			out = append(out, o)
		}
	}
	return out
}

// Synced reports whether the cache is filled and this handle's handlers
// have heard of every object in it.
func (h *Informer) Synced() bool {
	i := h.core
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.synced && h.joined.Load()
}

// WaitFor blocks until the cache reflects every change of this resource up
// to and including revision rev, so a caller that just wrote can read its
// own write. rev must be the revision of a write to this resource, or one
// already passed; otherwise WaitFor waits until the next such write.
func (h *Informer) WaitFor(ctx context.Context, rev int64) error {
	i := h.core
	for {
		i.mu.RLock()
		done, ch := i.synced && i.rev >= rev, i.changed
		i.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errors.Join(errors.New("store: cache did not catch up"), ctx.Err())
		}
	}
}

func cacheKey(o api.Object) string {
	m := o.GetObjectMeta()
	return m.Namespace + "/" + m.Name
}

// WaitSynced waits until every informer has listed (and its handle
// joined), so that a controller reading several caches never acts on one
// that is still empty: a deployment controller that saw its configs
// before their revisions made an "initial" revision again. It fails only
// when ctx ends.
func WaitSynced(ctx context.Context, infs ...*Informer) error {
	for _, inf := range infs {
		for !inf.Synced() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	return nil
}
