package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
)

// Expiry of a mirror's cached content. Every manifest the mirror serves
// has a last-use time, kept in registry storage beside the repositories
// (so every replica sees every other's pulls, and a restart forgets
// nothing): mirrorUsedRoot/REPO/ALG/HEX holds it, RFC 3339. A replica
// writes it at most once per mirrorUsedEvery for a manifest, remembering
// in memory when it last did.
//
// ExpireMirrors unlinks every cached manifest unused for its mirror's
// Expire, and untags the tags that point at it; garbage collection (which
// marks from linked manifests only) then frees the blobs nobody else
// references, after its grace period. A manifest pulled again later is
// fetched again. A manifest cached before its last-use time was kept
// (none on record) starts its clock at the first pass that sees it.
//
// Known debt: a pull that reads a manifest the instant the pass unlinks
// it (unused for a whole Expire until then) gets MANIFEST_UNKNOWN once;
// the next pull fetches it again.

const mirrorUsedRoot = "/docker/registry/v2/_slipway_mirror_used/"

// mirrorUsedEvery is how often a manifest's last use is written while it
// is being pulled: an eighth of the expiry, at most an hour.
func (m *mirror) usedEvery() time.Duration { return min(m.expire()/8, time.Hour) }

func mirrorUsedPath(repo string, d digest.Digest) string {
	return mirrorUsedRoot + repo + "/" + d.Algorithm().String() + "/" + d.Encoded()
}

// mirrorUsed records that repo@d was served now. A failure is logged: it
// costs at most an early expiry, never a pull.
func (r *Registry) mirrorUsed(ctx context.Context, m *mirror, repo string, d digest.Digest) {
	if m.expire() == 0 || r.driver == nil || d.Validate() != nil {
		return
	}
	key := repo + "@" + d.String()
	m.mu.Lock()
	now := m.now()
	last, ok := m.used[key]
	if ok && now.Sub(last) < m.usedEvery() {
		m.mu.Unlock()
		return
	}
	m.used[key] = now
	m.mu.Unlock()
	if err := r.driver.PutContent(ctx, mirrorUsedPath(repo, d), []byte(now.UTC().Format(time.RFC3339Nano))); err != nil {
		slog.Warn("registry: mirror could not record a manifest's use", "mirror", m.Name, "repository", repo, "digest", d, "err", err)
		m.mu.Lock()
		delete(m.used, key)
		m.mu.Unlock()
	}
}

// lastUsed reads when repo@d was last served; false when it never was
// recorded.
func (r *Registry) lastUsed(ctx context.Context, repo string, d digest.Digest) (time.Time, bool, error) {
	b, err := r.driver.GetContent(ctx, mirrorUsedPath(repo, d))
	var missing storagedriver.PathNotFoundError
	if errors.As(err, &missing) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, err
	}
	t, err := time.Parse(time.RFC3339Nano, string(b))
	if err != nil {
		return time.Time{}, false, nil // unreadable: as if never recorded
	}
	return t, true, nil
}

// MirrorExpiry is what one ExpireMirrors pass did.
type MirrorExpiry struct {
	// Manifests and Tags are what it unlinked, as REPO@DIGEST and
	// REPO:TAG.
	Manifests []string `json:"manifests"`
	Tags      []string `json:"tags"`
	// Started is how many manifests had no last use on record, whose
	// clock this pass started.
	Started int `json:"started"`
}

// ExpireMirrors unlinks every mirror's cached manifests that went unused
// for the mirror's Expire, with the tags that point at them. It goes on
// past a manifest it cannot unlink and returns the first such error.
func (r *Registry) ExpireMirrors(ctx context.Context) (*MirrorExpiry, error) {
	rep := &MirrorExpiry{Manifests: []string{}, Tags: []string{}}
	if r.driver == nil || r.ns == nil {
		return rep, errors.New("registry: storage is not ready yet; try again")
	}
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	names := make([]string, 0, len(r.mirrors))
	for n := range r.mirrors {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		m := r.mirrors[n]
		if m.expire() == 0 {
			continue
		}
		revs, err := r.projectRevisions(ctx, m.Name)
		if err != nil {
			keep(err)
			continue
		}
		now := m.clock()
		expired := map[string][]digest.Digest{} // repository → its manifests to unlink
		for ds, repos := range revs {
			d := digest.Digest(ds)
			for _, repo := range repos {
				last, ok, err := r.lastUsed(ctx, repo, d)
				switch {
				case err != nil:
					keep(err)
				case !ok:
					rep.Started++
					keep(r.driver.PutContent(ctx, mirrorUsedPath(repo, d), []byte(now.UTC().Format(time.RFC3339Nano))))
				case now.Sub(last) >= m.expire():
					expired[repo] = append(expired[repo], d)
				}
			}
		}
		for repo, ds := range expired {
			keep(r.expireMirrored(ctx, m, repo, ds, now, rep))
		}
	}
	slices.Sort(rep.Manifests)
	slices.Sort(rep.Tags)
	return rep, first
}

// expireMirrored unlinks manifests ds of repo, and the tags pointing at
// them, each after reading its last use once more (a pull may have just
// come).
func (r *Registry) expireMirrored(ctx context.Context, m *mirror, repo string, ds []digest.Digest, now time.Time, rep *MirrorExpiry) error {
	dr, ms, err := r.mirrorManifests(ctx, repo)
	if err != nil {
		return err
	}
	ts := dr.Tags(ctx)
	tags, err := ts.All(ctx)
	if err != nil && !errors.As(err, new(distribution.ErrRepositoryUnknown)) {
		return fmt.Errorf("registry: listing the tags of %s: %w", repo, err)
	}
	byDigest := map[digest.Digest][]string{}
	for _, t := range tags {
		if desc, err := ts.Get(ctx, t); err == nil {
			byDigest[desc.Digest] = append(byDigest[desc.Digest], t)
		}
	}
	for _, d := range ds {
		if last, ok, err := r.lastUsed(ctx, repo, d); err != nil || (ok && now.Sub(last) < m.expire()) {
			continue
		}
		for _, t := range byDigest[d] {
			if err := ts.Untag(ctx, t); err != nil {
				return fmt.Errorf("registry: untagging %s:%s: %w", repo, t, err)
			}
			m.mu.Lock()
			delete(m.checked, repo+":"+t)
			m.mu.Unlock()
			rep.Tags = append(rep.Tags, repo+":"+t)
		}
		if err := ms.Delete(ctx, d); err != nil && !errors.Is(err, distribution.ErrBlobUnknown) && !errors.As(err, new(distribution.ErrManifestUnknownRevision)) {
			return fmt.Errorf("registry: unlinking %s@%s: %w", repo, d, err)
		}
		r.manifests.remove(repo, d.String())
		if err := r.refs.remove(ctx, repo, d.String()); err != nil {
			return err
		}
		m.mu.Lock()
		delete(m.used, repo+"@"+d.String())
		m.mu.Unlock()
		if err := r.driver.Delete(ctx, mirrorUsedPath(repo, d)); err != nil && !errors.As(err, new(storagedriver.PathNotFoundError)) {
			return err
		}
		rep.Manifests = append(rep.Manifests, repo+"@"+d.String())
		slog.Info("registry: mirror dropped a manifest nobody pulled", "mirror", m.Name, "repository", repo, "digest", d, "expire", m.expire())
	}
	return nil
}
