package registry

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// FastPathHits is how many manifest requests r answered from its cache.
func FastPathHits(r *Registry) int64 { return r.manifests.hits.Load() }

// PurgeManifestCache empties r's manifest cache.
func PurgeManifestCache(r *Registry) {
	c := r.manifests
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Init()
	clear(c.items)
	c.size = 0
}

// Touched reports whether a garbage-collection hold touched digest d.
func Touched(ctx context.Context, r *Registry, d string) (bool, error) {
	resp, err := r.cfg.Store.Client().Get(ctx, r.gcKey("touch", d), clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}
