package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
)

// Event is one change seen by a watch. Err is set only on an api.Error
// event, which is always the last one on the channel.
type Event struct {
	Type   string // api.Added, api.Modified, api.Deleted or api.Error
	Object api.Object
	Err    error
}

// Watch streams changes to one resource in one project (every project when
// ns is empty) after resourceVersion rv.
//
// With rv == 0 it first sends an ADDED event for every object that exists,
// then the changes after that snapshot. With rv > 0 it sends every change
// after rv, without gaps, or fails with ErrGone when etcd has compacted rv
// away; the caller should then list again and watch from the list's
// revision.
//
// A selector turns changes that move an object into or out of the selection
// into ADDED and DELETED events, as Kubernetes does. The channel is closed
// when ctx ends or after an api.Error event.
func (s *Store) Watch(ctx context.Context, r *api.Resource, ns string, rv int64, opts ListOptions) (<-chan Event, error) {
	if isStreams(r) {
		return s.watchStreams(ctx, ns, rv, opts)
	}
	prefix := s.keyPrefix(r, ns)
	watchKey, watchOpts := prefix, []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithPrevKV()}
	// A name in every project: watch the resource and filter by name.
	nameFilter := ""
	if opts.Name != "" && r.Namespaced && ns == "" {
		nameFilter = opts.Name
	} else if opts.Name != "" {
		watchKey, watchOpts = s.Key(r, ns, opts.Name), []clientv3.OpOption{clientv3.WithPrevKV()}
	}
	var initial []api.Object
	if rv == 0 {
		items, meta, err := s.List(ctx, r, ns, ListOptions{Selector: opts.Selector, Name: opts.Name})
		if err != nil {
			return nil, err
		}
		initial = items
		rv, _ = strconv.ParseInt(meta.ResourceVersion, 10, 64)
	} else {
		if err := s.readableAt(ctx, r, watchKey, rv); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	wch := s.client.Watch(clientv3.WithRequireLeader(ctx), watchKey, append(watchOpts, clientv3.WithRev(rv+1))...)
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer cancel()
		send := sender(ctx, out)
		for _, obj := range initial {
			if !send(Event{Type: api.Added, Object: obj}) {
				return
			}
		}
		for resp := range wch {
			if err := watchFailed(resp, rv, r); err != nil {
				send(Event{Type: api.Error, Err: err})
				return
			}
			for _, e := range resp.Events {
				ev, ok, err := translate(r, e, opts.Selector)
				if err != nil {
					send(Event{Type: api.Error, Err: err})
					return
				}
				if ok && nameFilter != "" && ev.Object.GetObjectMeta().Name != nameFilter {
					ok = false
				}
				if ok && !send(ev) {
					return
				}
				rv = e.Kv.ModRevision
			}
		}
		if ctx.Err() == nil {
			send(Event{Type: api.Error, Err: fmt.Errorf("store: watch closed by etcd")})
		}
	}()
	return out, nil
}

// readableAt checks that the store can still be read at rv, so that a
// watch from rv can answer 410 before any event is sent.
func (s *Store) readableAt(ctx context.Context, r *api.Resource, key string, rv int64) error {
	if _, err := s.client.Get(ctx, key, clientv3.WithRev(rv), clientv3.WithLimit(1), clientv3.WithKeysOnly()); err != nil {
		if errors.Is(err, rpctypes.ErrCompacted) {
			return fmt.Errorf("resourceVersion %d is too old; list again and watch from the list's resourceVersion: %w", rv, ErrGone)
		}
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return fmt.Errorf("resourceVersion %d is in the future: %w", rv, ErrInvalid)
		}
		return wrapEtcd(err, r, "")
	}
	return nil
}

func translate(r *api.Resource, e *clientv3.Event, sel labels.Selector) (Event, bool, error) {
	var cur, prev api.Object
	var err error
	if e.Type == mvccpb.PUT {
		if cur, err = decode(r, e.Kv.Value, e.Kv.ModRevision); err != nil {
			return Event{}, false, err
		}
	}
	matches := func(o api.Object) bool {
		return o != nil && (sel == nil || sel.Matches(labels.Set(o.GetObjectMeta().Labels)))
	}
	// Without a selector an update needs only whether there was an
	// object before, not its decoding: every informer's watch.
	prevMatches := e.PrevKv != nil
	if e.PrevKv != nil && (e.Type == mvccpb.DELETE || sel != nil) {
		// A deleted object is reported at the revision of its deletion.
		if prev, err = decode(r, e.PrevKv.Value, e.Kv.ModRevision); err != nil {
			return Event{}, false, err
		}
		prevMatches = matches(prev)
	}
	switch {
	case e.Type == mvccpb.DELETE:
		return Event{Type: api.Deleted, Object: prev}, prevMatches, nil
	case matches(cur) && (e.IsCreate() || !prevMatches):
		return Event{Type: api.Added, Object: cur}, true, nil
	case matches(cur):
		return Event{Type: api.Modified, Object: cur}, true, nil
	case prevMatches:
		return Event{Type: api.Deleted, Object: cur}, true, nil
	}
	return Event{}, false, nil
}

// sender returns a send of ev on out that gives up, reporting false, when
// ctx ends first.
func sender(ctx context.Context, out chan<- Event) func(Event) bool {
	return func(ev Event) bool {
		select {
		case out <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
}

// watchFailed is what ends a watch of r at rv with this response: its
// revision compacted away, or etcd's error; nil if neither.
func watchFailed(resp clientv3.WatchResponse, rv int64, r *api.Resource) error {
	if resp.CompactRevision != 0 {
		return fmt.Errorf("resourceVersion %d is too old; list again: %w", rv, ErrGone)
	}
	if err := resp.Err(); err != nil {
		return wrapEtcd(err, r, "")
	}
	return nil
}
