package store

import (
	"context"

	"slipway.dev/slipway/api"
)

// Interface is the part of a store that agents and controllers use: the
// Store itself in the process that holds etcd, or client.Store over the
// API anywhere else, so the same code runs on either side of the API (as
// client-go's interfaces let a Kubernetes controller run in or out of the
// API server). Errors are the store's: ErrNotFound, ErrExists,
// ErrConflict and ErrGone mean the same on both.
type Interface interface {
	Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error)
	List(ctx context.Context, r *api.Resource, ns string, opts ListOptions) ([]api.Object, api.ListMeta, error)
	Watch(ctx context.Context, r *api.Resource, ns string, rv int64, opts ListOptions) (<-chan Event, error)
	Create(ctx context.Context, r *api.Resource, obj api.Object) error
	GuaranteedUpdate(ctx context.Context, r *api.Resource, ns, name string, opts UpdateOptions, fn func(api.Object) error) (api.Object, error)
}

var _ Interface = (*Store)(nil)
