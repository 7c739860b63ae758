package registry

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"slipway.dev/slipway/identity"
)

// FastPathHits is how many manifest requests r answered from its cache.
func FastPathHits(r *Registry) int64 { return r.manifests.hits.Load() }

// QuietFor is how long after its last change a link file may be held.
const QuietFor = quietFor

// LinkHeld reports whether r's manifest cache holds the link file of repo's
// manifest dgst open.
func LinkHeld(r *Registry, repo, dgst string) bool {
	e := r.manifests.get(repo, dgst)
	return e != nil && e.link.Load() != nil
}

// PurgeManifestCache empties r's manifest cache.
func PurgeManifestCache(r *Registry) { r.manifests.purge() }

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

// Touched reports whether a garbage-collection hold touched digest d.
func Touched(ctx context.Context, r *Registry, d string) (bool, error) {
	resp, err := r.cfg.Store.Client().Get(ctx, r.gcKey("touch", d), clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// SetMirrorClock sets the clock of mirror name: its tag TTL and expiry
// read it.
func SetMirrorClock(r *Registry, name string, now func() time.Time) {
	m := r.mirrors[name]
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// InFlight is how many requests from the network r is serving.
func InFlight(r *Registry) int64 { return r.inFlight.Load() }

// ForgetHashStates drops the upload hash states r's storage keeps in
// memory, as another registry process, or this one restarted, has none,
// and reports whether it kept any.
func ForgetHashStates(r *Registry) bool {
	fd, ok := r.driver.(*fastFSDriver)
	if !ok {
		panic("registry: the storage is not the filesystem driver")
	}
	fd.hashes.mu.Lock()
	defer fd.hashes.mu.Unlock()
	kept := len(fd.hashes.m) > 0
	fd.hashes.m = nil
	return kept
}
