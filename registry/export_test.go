package registry

import (
	"context"

	"slipway.dev/slipway/identity"
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

// RebaseAsOneGroup rebases the outputs of project's configs as one group,
// as requests that arrive together are, and returns each one's error.
func RebaseAsOneGroup(r *Registry, who identity.Info, project string, configs ...string) []error {
	var batch []*rebaseReq
	for _, c := range configs {
		batch = append(batch, &rebaseReq{ctx: context.Background(), who: who, project: project, config: c, done: make(chan rebaseResult, 1)})
	}
	r.rebaseGroup(batch)
	var errs []error
	for _, q := range batch {
		errs = append(errs, (<-q.done).err)
	}
	return errs
}
