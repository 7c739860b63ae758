package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Store is the API seen as a store.Interface, so agents and controllers
// written against the store run out of process on the API with the same
// code. Errors carry the store's sentinels (store.ErrNotFound, ErrExists,
// ErrConflict, ErrGone) next to the server's Status.
type Store struct {
	C *Client
	// Fields adds a field selector to every list and watch of a
	// resource, such as spec.nodeName=NODE for pods: a node is answered
	// only its own pods.
	Fields map[*api.Resource]string
}

var _ store.Interface = (*Store)(nil)

func (s *Store) opts(r *api.Resource, o store.ListOptions) ListOptions {
	out := ListOptions{Name: o.Name, Limit: o.Limit, Continue: o.Continue, Field: s.Fields[r]}
	if o.Selector != nil && !o.Selector.Empty() {
		out.LabelSelector = o.Selector.String()
	}
	return out
}

// Get reads one object.
func (s *Store) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	o, err := s.C.Get(ctx, r, ns, name)
	return o, storeError(err)
}

// List lists through the API, every page when opts.Limit is 0.
func (s *Store) List(ctx context.Context, r *api.Resource, ns string, opts store.ListOptions) ([]api.Object, api.ListMeta, error) {
	items, meta, err := s.C.List(ctx, r, ns, s.opts(r, opts))
	return items, meta, storeError(err)
}

// Create creates obj.
func (s *Store) Create(ctx context.Context, r *api.Resource, obj api.Object) error {
	return storeError(s.C.Create(ctx, r, obj))
}

// GuaranteedUpdate reads the object, applies fn and writes it back (its
// status subresource with opts.Status), again from a fresh read on a
// conflict.
func (s *Store) GuaranteedUpdate(ctx context.Context, r *api.Resource, ns, name string, opts store.UpdateOptions, fn func(api.Object) error) (api.Object, error) {
	for {
		obj, err := s.Get(ctx, r, ns, name)
		if err != nil {
			return nil, err
		}
		if err := fn(obj); err != nil {
			return nil, err
		}
		if opts.Status {
			err = s.C.UpdateStatus(ctx, r, obj)
		} else {
			err = s.C.Update(ctx, r, obj)
		}
		err = storeError(err)
		if errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			continue
		}
		return obj, err
	}
}

// Watch streams changes after rv through the API.
func (s *Store) Watch(ctx context.Context, r *api.Resource, ns string, rv int64, opts store.ListOptions) (<-chan store.Event, error) {
	v := ""
	if rv > 0 {
		v = strconv.FormatInt(rv, 10)
	}
	in, err := s.C.Watch(ctx, r, ns, v, s.opts(r, opts))
	if err != nil {
		return nil, storeError(err)
	}
	out := make(chan store.Event, 64)
	go func() {
		defer close(out)
		for ev := range in {
			se := store.Event{Type: ev.Type, Object: ev.Object, Err: storeError(ev.Err)}
			select {
			case out <- se:
			case <-ctx.Done():
				return
			}
			if ev.Type == api.Error {
				return
			}
		}
		if ctx.Err() == nil {
			// The stream broke without an ERROR line: say so, so an
			// informer lists again.
			select {
			case out <- store.Event{Type: api.Error, Err: errors.New("client: the watch stream ended")}:
			case <-ctx.Done():
			}
		}
	}()
	return out, nil
}

// storeError adds the store's sentinel to an API Status.
func storeError(err error) error {
	st, ok := api.StatusFor(err)
	if !ok {
		return err
	}
	var sentinel error
	switch {
	case st.Code == http.StatusNotFound:
		sentinel = store.ErrNotFound
	case st.Code == http.StatusConflict && st.Reason == api.ReasonAlreadyExists:
		sentinel = store.ErrExists
	case st.Code == http.StatusConflict:
		sentinel = store.ErrConflict
	case st.Code == http.StatusGone:
		sentinel = store.ErrGone
	default:
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}
