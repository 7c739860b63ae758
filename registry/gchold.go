package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The push side of online garbage collection (gc.go has the collector).
//
// Every operation that makes a blob reachable (an upload's commit, a
// cross-repository mount, a blob put, and a manifest put, which makes its
// own blob and everything it references reachable) first runs one etcd
// transaction per batch of digests:
//
//	if no tombstone exists for any of them:
//	    put inflight/ID (bound to this registry's lease)
//	    put touch/DIGEST = now, for each
//
// then does the storage write, then ends the hold (below). If a tombstone
// exists, a sweep is deleting that blob right now: the operation waits
// until the sweep is done and only then writes (an upload then writes the
// blob afresh; a mount or a manifest put finds it gone and fails without
// 201, and the client uploads again). A manifest put sends the
// transaction while it writes (holdBlobsAlongside), and an upload of
// bytes the file system storage does not hold yet takes no hold at all
// (gcWriter.Commit says why either is as safe).
//
// The collector takes a revision R, waits until no inflight key created
// before R is left (so every write that started before R has finished and
// is visible to its scan), scans, and tombstones a blob only in a
// transaction that requires touch/DIGEST unchanged since before R. A write
// that started after R has touched the digest after R, so either its
// transaction came first and the tombstone is refused, or the tombstone
// came first and the write waits for the sweep. The race is closed by
// etcd's serializable transactions, not narrowed by a clock; the grace
// period only spares blobs whose manifest has not arrived yet.
//
// The hold ends with a (linearizable) read of inflight/ID: if the
// registry lost its lease during the write (a stall longer than the TTL),
// the key is gone, the collector may not have waited for this write, and
// the operation answers an error instead of success. If the key is there,
// the write is done and visible to any scan that follows, so the key is
// deleted afterwards, off the request's path, with the keys of other holds
// that ended meanwhile in one transaction: a read costs no raft write and
// no disk sync, a delete does. (A key whose delete is lost with the
// process goes with its lease.)

// gcPrefix is where the collector's keys live, under the store's prefix.
const gcPrefix = "registry-gc/"

// gcLeaseTTL bounds how long a crashed registry's unfinished writes hold
// up a collection.
const gcLeaseTTL = 15 // seconds

// gcTxnDigests bounds the digests per transaction (etcd allows 128
// operations in one).
const gcTxnDigests = 100

// gcHolds keeps each Registry's lease; a package map rather than a field
// so that registry.go stays as it is.
var gcHolds sync.Map // *Registry → *gcHold

type gcHold struct {
	mu    sync.Mutex
	lease clientv3.LeaseID
	alive bool
}

func (r *Registry) gcKey(kind, name string) string {
	return r.cfg.Store.Prefix() + gcPrefix + kind + "/" + name
}

// gcLease returns a live lease of this registry process for its inflight
// keys, granting a new one when the last one was lost.
func (r *Registry) gcLease(ctx context.Context) (clientv3.LeaseID, error) {
	v, _ := gcHolds.LoadOrStore(r, &gcHold{})
	h := v.(*gcHold)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.alive {
		return h.lease, nil
	}
	cli := r.cfg.Store.Client()
	g, err := cli.Grant(ctx, gcLeaseTTL)
	if err != nil {
		return 0, err
	}
	ch, err := cli.KeepAlive(context.WithoutCancel(ctx), g.ID)
	if err != nil {
		return 0, err
	}
	h.lease, h.alive = g.ID, true
	go func(id clientv3.LeaseID) {
		for range ch {
		}
		h.mu.Lock()
		if h.lease == id {
			h.alive = false
		}
		h.mu.Unlock()
	}(g.ID)
	return g.ID, nil
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// errLostHold is what a write answers when the registry lost its lease
// while writing: the collector may not have seen the write.
var errLostHold = errors.New("registry: this registry lost its hold on the blobs while writing (etcd unreachable for longer than the lease); the write is not acknowledged, push again")

// holdBlobs runs op while the collector can neither sweep any of digests
// nor miss op's write (see above). Digests that are empty are ignored.
func (r *Registry) holdBlobs(ctx context.Context, digests []string, op func() error) error {
	ds := make([]string, 0, len(digests))
	for _, d := range digests {
		if d != "" && !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
		// A sha512 digest names bytes stored under sha256: hold those.
		if d256, ok := r.sha512Lookup(ctx, d); ok && !slices.Contains(ds, d256) {
			ds = append(ds, d256)
		}
	}
	if len(ds) == 0 {
		return op()
	}
	lease, err := r.gcLease(ctx)
	if err != nil {
		return fmt.Errorf("registry: recording the push for garbage collection: %w", err)
	}
	cli := r.cfg.Store.Client()
	id := r.gcKey("inflight", randomID())
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	for start := 0; start < len(ds); start += gcTxnDigests {
		batch := ds[start:min(start+gcTxnDigests, len(ds))]
		for {
			var cmps []clientv3.Cmp
			var ops []clientv3.Op
			if start == 0 {
				// What the hold is for, to name a hold a collection waits on.
				ops = append(ops, clientv3.OpPut(id, fmt.Sprintf("%s %d digests from %s", ds[0], len(ds), time.Now().UTC().Format(time.RFC3339Nano)), clientv3.WithLease(lease)))
			}
			for _, d := range batch {
				cmps = append(cmps, clientv3.Compare(clientv3.Version(r.gcKey("tomb", d)), "=", 0))
				ops = append(ops, clientv3.OpPut(r.gcKey("touch", d), now))
			}
			resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			if err != nil {
				// The transaction may have been applied although the
				// answer was lost (a cancelled request): drop the key.
				r.releaseHold(id, false)
				return fmt.Errorf("registry: recording the push for garbage collection: %w", err)
			}
			if resp.Succeeded {
				break
			}
			// A sweep is deleting one of these blobs; wait for it to end.
			if err := r.waitTombs(ctx, batch); err != nil {
				r.releaseHold(id, false)
				return err
			}
		}
	}
	released := false
	defer func() {
		if !released { // op panicked
			r.releaseHold(id, false)
		}
	}()
	opErr := op()
	released = true
	if opErr != nil {
		r.releaseHold(id, false)
		return opErr
	}
	if !r.releaseHold(id, true) {
		return errLostHold
	}
	return nil
}

// holdBlobsAlongside is holdBlobs with the hold's transaction sent while
// op runs, not before: op's storage writes and etcd's log sync overlap.
// That is as safe: the collector either waits for the hold (taken before
// its mark) until op has finished, or finds the digests touched after its
// mark and tombstones none of them; and when a tombstone was there first
// the transaction fails, nothing is acknowledged, and op runs again as
// holdBlobs runs it, after the sweep (op must be safe to run twice: a
// manifest put is).
func (r *Registry) holdBlobsAlongside(ctx context.Context, digests []string, op func() error) error {
	var ds []string
	for _, d := range digests {
		if strings.HasPrefix(d, "sha512:") {
			return r.holdBlobs(ctx, digests, op) // needs a lookup first
		}
		if d != "" && !slices.Contains(ds, d) {
			ds = append(ds, d)
		}
	}
	if len(ds) == 0 || len(ds) > gcTxnDigests {
		return r.holdBlobs(ctx, digests, op)
	}
	lease, err := r.gcLease(ctx)
	if err != nil {
		return fmt.Errorf("registry: recording the push for garbage collection: %w", err)
	}
	id := r.gcKey("inflight", randomID())
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	cmps := make([]clientv3.Cmp, 0, len(ds))
	ops := []clientv3.Op{clientv3.OpPut(id, fmt.Sprintf("%s %d digests from %s", ds[0], len(ds), time.Now().UTC().Format(time.RFC3339Nano)), clientv3.WithLease(lease))}
	for _, d := range ds {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(r.gcKey("tomb", d)), "=", 0))
		ops = append(ops, clientv3.OpPut(r.gcKey("touch", d), now))
	}
	var held bool
	var txnErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := r.cfg.Store.Client().Txn(ctx).If(cmps...).Then(ops...).Commit()
		held, txnErr = err == nil && resp.Succeeded, err
	}()
	var opErr error
	func() {
		defer func() {
			if p := recover(); p != nil {
				<-done
				r.releaseHold(id, false)
				panic(p)
			}
		}()
		opErr = op()
	}()
	<-done
	switch {
	case txnErr != nil:
		r.releaseHold(id, false)
		return fmt.Errorf("registry: recording the push for garbage collection: %w", txnErr)
	case !held:
		// A sweep of one of the digests is running; what op wrote may
		// go with it. Again, after the sweep.
		return r.holdBlobs(ctx, digests, op)
	case opErr != nil:
		r.releaseHold(id, false)
		return opErr
	case !r.releaseHold(id, true):
		return errLostHold
	}
	return nil
}

// releaseHold ends a hold and, when check is set, reports whether its
// inflight key still existed. The key is deleted by a background batcher
// (gcReleaser), so the request waits for a read only.
func (r *Registry) releaseHold(id string, check bool) bool {
	held := true
	if check {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := r.cfg.Store.Client().Get(ctx, id, clientv3.WithCountOnly())
		cancel()
		held = err == nil && resp.Count > 0
	}
	r.releaser().release(id)
	return held
}

// gcReleasers keeps each Registry's batcher of inflight-key deletes.
var gcReleasers sync.Map // *Registry → *gcReleaser

func (r *Registry) releaser() *gcReleaser {
	if v, ok := gcReleasers.Load(r); ok {
		return v.(*gcReleaser)
	}
	v, _ := gcReleasers.LoadOrStore(r, &gcReleaser{cli: r.cfg.Store.Client()})
	return v.(*gcReleaser)
}

// gcReleaser deletes ended holds' inflight keys: one goroutine runs while
// any are queued, each round deleting all that were queued before it, up
// to gcTxnDigests keys per transaction.
type gcReleaser struct {
	cli     *clientv3.Client
	mu      sync.Mutex
	queue   []string
	running bool
}

func (g *gcReleaser) release(id string) {
	g.mu.Lock()
	g.queue = append(g.queue, id)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	if start {
		go g.run()
	}
}

func (g *gcReleaser) run() {
	for {
		g.mu.Lock()
		ids := g.queue
		g.queue = nil
		if len(ids) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		for len(ids) > 0 {
			n := min(len(ids), gcTxnDigests)
			ops := make([]clientv3.Op, 0, n)
			for _, id := range ids[:n] {
				ops = append(ops, clientv3.OpDelete(id))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			// Failing, the keys go with the registry's lease; a
			// collection waits for them until then.
			_, _ = g.cli.Txn(ctx).Then(ops...).Commit()
			cancel()
			ids = ids[n:]
		}
	}
}

// waitTombs waits until none of digests has a tombstone. A tombstone is
// bound to the collector's session, so a collector that died leaves none
// for long.
func (r *Registry) waitTombs(ctx context.Context, ds []string) error {
	cli := r.cfg.Store.Client()
	for {
		busy := false
		for _, d := range ds {
			resp, err := cli.Get(ctx, r.gcKey("tomb", d), clientv3.WithCountOnly())
			if err != nil {
				return err
			}
			if resp.Count > 0 {
				busy = true
				break
			}
		}
		if !busy {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// gcNamespace wraps the storage namespace so that every repository, the
// App's (HTTP pushes) and the server-side ones (tag, promote, import,
// rebase), takes holds before it makes a blob reachable.
type gcNamespace struct {
	distribution.Namespace
	reg *Registry
}

func (n *gcNamespace) Repository(ctx context.Context, name reference.Named) (distribution.Repository, error) {
	repo, err := n.Namespace.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	return &gcRepository{Repository: repo, reg: n.reg}, nil
}

type gcRepository struct {
	distribution.Repository
	reg *Registry
}

func (g *gcRepository) Blobs(ctx context.Context) distribution.BlobStore {
	return &gcBlobs{BlobStore: g.Repository.Blobs(ctx), reg: g.reg}
}

func (g *gcRepository) Manifests(ctx context.Context, opts ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := g.Repository.Manifests(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return &gcManifests{ManifestService: ms, reg: g.reg}, nil
}

type gcManifests struct {
	distribution.ManifestService
	reg *Registry
}

// Put holds the manifest's own digest and every digest it references.
func (m *gcManifests) Put(ctx context.Context, man distribution.Manifest, opts ...distribution.ManifestServiceOption) (dgst digest.Digest, err error) {
	_, payload, err := man.Payload()
	if err != nil {
		return "", err
	}
	ds := []string{digest.FromBytes(payload).String()}
	for _, d := range man.References() {
		ds = append(ds, d.Digest.String())
	}
	err = m.reg.holdBlobsAlongside(ctx, ds, func() error {
		var err error
		dgst, err = m.ManifestService.Put(ctx, man, opts...)
		return err
	})
	return dgst, err
}

type gcBlobs struct {
	distribution.BlobStore
	reg *Registry
}

func (b *gcBlobs) Put(ctx context.Context, mediaType string, p []byte) (desc v1.Descriptor, err error) {
	err = b.reg.holdBlobs(ctx, []string{digest.FromBytes(p).String()}, func() error {
		var err error
		desc, err = b.BlobStore.Put(ctx, mediaType, p)
		return err
	})
	return desc, err
}

func (b *gcBlobs) Create(ctx context.Context, options ...distribution.BlobCreateOption) (distribution.BlobWriter, error) {
	var opts distribution.CreateOptions
	for _, o := range options {
		if err := o.Apply(&opts); err != nil {
			return nil, err
		}
	}
	if opts.Mount.ShouldMount && opts.Mount.From != nil {
		var w distribution.BlobWriter
		var mounted error
		err := b.reg.holdBlobs(ctx, []string{opts.Mount.From.Digest().String()}, func() error {
			var err error
			w, err = b.BlobStore.Create(ctx, options...)
			if errors.As(err, new(distribution.ErrBlobMounted)) {
				mounted = err
				return nil
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if mounted != nil {
			// The mount succeeded under the hold; answered as distribution does.
			return nil, mounted
		}
		return &gcWriter{BlobWriter: w, reg: b.reg}, nil
	}
	w, err := b.BlobStore.Create(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &gcWriter{BlobWriter: w, reg: b.reg}, nil
}

func (b *gcBlobs) Resume(ctx context.Context, id string) (distribution.BlobWriter, error) {
	w, err := b.BlobStore.Resume(ctx, id)
	if err != nil {
		return nil, err
	}
	return &gcWriter{BlobWriter: w, reg: b.reg}, nil
}

type gcWriter struct {
	distribution.BlobWriter
	reg *Registry
}

// Commit holds the digest the client says the upload has; distribution
// refuses the commit if the data does not match it. A sha512 upload is
// stored under its sha256 digest too: that one is held as well when the
// registry has seen the content before (sha512Lookup); a first sha512
// upload of content that already sits unreferenced under sha256 is the
// one case the hold cannot name in advance.
//
// An upload of content the file system storage does not hold needs no
// hold: no collection can delete it before it is referenced. A collection
// that listed the blobs before this commit does not list it; one that
// lists it later finds it written now (the commit stamps the file,
// fsdriver.go) and spares it for the grace period, as the hold's touch
// would; and a sweep of an earlier copy of the same bytes is over with
// them, since the sweep moves a blob's directory away in one rename
// (fastFSDriver.Delete) before it removes it, after it removed the links.
// That takes a raft write and a linearizable read (each waits for etcd's
// log sync) off the path of every new layer. Content already stored (a
// collection may have picked it) and a sha512 upload take the hold.
func (w *gcWriter) Commit(ctx context.Context, provisional v1.Descriptor) (desc v1.Descriptor, err error) {
	if w.reg.freshBlob(ctx, provisional.Digest) {
		return w.BlobWriter.Commit(ctx, provisional)
	}
	err = w.reg.holdBlobs(ctx, []string{provisional.Digest.String()}, func() error {
		var err error
		desc, err = w.BlobWriter.Commit(ctx, provisional)
		return err
	})
	return desc, err
}

// freshBlob reports whether an upload commit of d needs no hold (see
// gcWriter.Commit): the file system storage (fsdriver.go), a sha256
// digest, no bytes stored under it.
func (r *Registry) freshBlob(ctx context.Context, d digest.Digest) bool {
	if r.fsRoot == "" || r.driver == nil || d.Algorithm() != digest.SHA256 || d.Validate() != nil {
		return false
	}
	var missing storagedriver.PathNotFoundError
	_, err := r.driver.Stat(ctx, blobDataPath(d))
	return errors.As(err, &missing)
}

// Remove keeps distribution's repository deletion, which the App finds by
// a type assertion on its namespace.
func (n *gcNamespace) Remove(ctx context.Context, name reference.Named) error {
	rm, ok := n.Namespace.(distribution.RepositoryRemover)
	if !ok {
		return errors.New("registry: this storage cannot remove repositories")
	}
	return rm.Remove(ctx, name)
}
