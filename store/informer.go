package store

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"slipway.dev/slipway/api"
)

// Informer keeps an in-memory copy of one resource, fed by a list and then a
// watch, relisting when the watch falls behind compaction. Readers never
// touch etcd. Handlers run in order, one event at a time, after the cache
// has been updated.
type Informer struct {
	store Interface
	res   *api.Resource

	mu       sync.RWMutex
	items    map[string]api.Object // "ns/name"
	rev      int64
	synced   bool
	changed  chan struct{} // closed and replaced on every advance of rev
	handlers []func(Event)
	// indexers and indices: index name -> key -> cache key -> object,
	// updated under mu with items, so an index is exactly as fresh as
	// the cache (WaitFor covers it).
	indexers map[string]IndexFunc
	indices  map[string]map[string]map[string]api.Object
}

// IndexFunc gives the keys under which an object is found in an index.
type IndexFunc func(api.Object) []string

// NewInformer returns an informer; call Run to fill it.
func NewInformer(s Interface, r *api.Resource) *Informer {
	return &Informer{store: s, res: r, items: map[string]api.Object{}, changed: make(chan struct{})}
}

// Resource is the resource this informer caches.
func (i *Informer) Resource() *api.Resource { return i.res }

// AddHandler registers fn for every event after the next list. Register
// handlers before Run.
func (i *Informer) AddHandler(fn func(Event)) { i.handlers = append(i.handlers, fn) }

// AddIndex keeps an index of the cache: ByIndex(name, key) finds the
// objects for which fn returns key. Add indexes before Run.
func (i *Informer) AddIndex(name string, fn IndexFunc) {
	if i.indexers == nil {
		i.indexers, i.indices = map[string]IndexFunc{}, map[string]map[string]map[string]api.Object{}
	}
	i.indexers[name], i.indices[name] = fn, map[string]map[string]api.Object{}
}

// ByIndex returns the cached objects that index name holds under key,
// and false when there is no such index. The objects are shared: do not
// modify them.
func (i *Informer) ByIndex(name, key string) ([]api.Object, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	idx, ok := i.indices[name]
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
func (i *Informer) index(k string, o api.Object, add bool) {
	for name, fn := range i.indexers {
		idx := i.indices[name]
		for _, key := range fn(o) {
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
}

// Run lists and watches until ctx ends.
func (i *Informer) Run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := i.listAndWatch(ctx)
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

func (i *Informer) listAndWatch(ctx context.Context) error {
	items, meta, err := i.store.List(ctx, i.res, "", ListOptions{})
	if err != nil {
		return err
	}
	rev, _ := strconv.ParseInt(meta.ResourceVersion, 10, 64)
	fresh := make(map[string]api.Object, len(items))
	for _, o := range items {
		fresh[cacheKey(o)] = o
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
	i.advance(rev)
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
	ch, err := i.store.Watch(ctx, i.res, "", rev, ListOptions{})
	if err != nil {
		return err
	}
	for ev := range ch {
		if ev.Type == api.Error {
			return ev.Err
		}
		i.apply(ev)
	}
	return ctx.Err()
}

func (i *Informer) apply(ev Event) {
	rv, _ := strconv.ParseInt(ev.Object.GetObjectMeta().ResourceVersion, 10, 64)
	k := cacheKey(ev.Object)
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

func (i *Informer) dispatch(ev Event) {
	for _, h := range i.handlers {
		h(ev)
	}
}

// advance must be called with mu held.
func (i *Informer) advance(rev int64) {
	if rev > i.rev {
		i.rev = rev
		close(i.changed)
		i.changed = make(chan struct{})
	}
}

// Get returns the cached object. The object is shared: do not modify it.
func (i *Informer) Get(ns, name string) (api.Object, bool) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	o, ok := i.items[ns+"/"+name]
	return o, ok
}

// List returns the cached objects in one project, or all when ns is empty.
// The objects are shared: do not modify them.
func (i *Informer) List(ns string) []api.Object {
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

// Synced reports whether the first list has completed.
func (i *Informer) Synced() bool {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.synced
}

// WaitFor blocks until the cache reflects every change of this resource up
// to and including revision rev, so a caller that just wrote can read its
// own write. rev must be the revision of a write to this resource, or one
// already passed; otherwise WaitFor waits until the next such write.
func (i *Informer) WaitFor(ctx context.Context, rev int64) error {
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
