package registry

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
