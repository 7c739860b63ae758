package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
)

// Server-side rebase: a BuildConfig with rebase: true gets the new base
// swapped in under its output's current image inside the registry, with no
// build, no HTTP and no token. Requests that arrive together are handled
// together (group commit):
//
//  1. each image is read from storage, and its new config and manifest are
//     computed exactly as a rebase build computes them (builders.Rebase);
//  2. config blobs, manifests and the new base's layer links are written
//     to storage without a sync each, then the file system is synced once
//     (syncfs) for the whole group;
//  3. in a project whose builds are signed (it has a "default" signing
//     key), each image is signed and its provenance attested, in this
//     process as the project's builder account (Config.SignRebase, through
//     LocalTransport: no connection, no token), before its tag moves;
//  4. per image the Image record, the tag move, the BuildConfig's next
//     version, a Build recorded as Complete and a scan derived from the
//     scans already known are written in one etcd transaction, up to
//     rebaseTxnImages images per transaction.
//
// The transaction is the commit point: storage written before it and no
// transaction leaves blobs no tag names (harmless: a retry writes the same
// bytes), so a crash at any moment leaves each image either old or new.
//
// Everything is checked with the rights of the requester (who), as a push
// to the output's project and a pull from the base's, never the
// registry's.

// NotRebasableError says why a config cannot be rebased server-side; the
// caller runs a build instead (which rebases or builds in full).
type NotRebasableError struct{ Reason string }

func (e *NotRebasableError) Error() string { return "not rebased server-side: " + e.Reason }

// NotRebasable is the reason, for the API server.
func (e *NotRebasableError) NotRebasable() string { return e.Reason }

func notRebasable(format string, args ...any) error {
	return &NotRebasableError{Reason: fmt.Sprintf(format, args...)}
}

// RebaseDeniedError is a rebase the requester has no right to.
type RebaseDeniedError struct{ Reason string }

func (e *RebaseDeniedError) Error() string { return e.Reason }

// Denied is the reason, for the API server.
func (e *RebaseDeniedError) Denied() string { return e.Reason }

const (
	// rebaseMaxBatch bounds one group of requests.
	rebaseMaxBatch = 1000
	// rebaseTxnImages bounds the images of one etcd transaction: each is
	// up to six writes (BuildConfig, Image, ImageStream, Build, ScanRecord,
	// ImageScan), plus two per project limit counted, under etcd's
	// default of 128 operations per transaction.
	rebaseTxnImages = 18
	// rebaseSigners sign at once: each signing waits mostly on etcd's
	// log syncs (its manifests' records and tag moves), which etcd
	// shares between concurrent writes.
	rebaseSigners = 32
)

type rebaseReq struct {
	ctx             context.Context
	who             identity.Info
	project, config string
	done            chan rebaseResult
}

type rebaseResult struct {
	build *api.Build
	err   error
}

type rebaser struct {
	once sync.Once
	ch   chan *rebaseReq
	// hold, for tests: set, each group waits this long between its
	// storage writes and its etcd transaction.
	hold time.Duration
}

// RebaseBuildConfig rebases the output of BuildConfig project/config onto
// the image its base tag holds now, with who's rights, and returns the
// Build that records it (Complete). A *NotRebasableError says the config
// needs a build; a *RebaseDeniedError that who may not do it.
func (r *Registry) RebaseBuildConfig(ctx context.Context, who identity.Info, project, config string) (*api.Build, error) {
	r.rebase.once.Do(func() {
		r.rebase.ch = make(chan *rebaseReq, rebaseMaxBatch)
		if d, err := time.ParseDuration(os.Getenv(RebaseHoldEnv)); err == nil {
			r.rebase.hold = d
		}
		go r.rebaseLoop()
	})
	req := &rebaseReq{ctx: ctx, who: who, project: project, config: config, done: make(chan rebaseResult, 1)}
	select {
	case r.rebase.ch <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case res := <-req.done:
		return res.build, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// rebaseLoop takes whatever requests are waiting, up to rebaseMaxBatch,
// and handles them as one group.
func (r *Registry) rebaseLoop() {
	for first := range r.rebase.ch {
		batch := []*rebaseReq{first}
	more:
		for len(batch) < rebaseMaxBatch {
			select {
			case q := <-r.rebase.ch:
				batch = append(batch, q)
			default:
				break more
			}
		}
		r.rebaseGroup(batch)
	}
}

// rebaseItem is one request on its way through a group.
type rebaseItem struct {
	req        *rebaseReq
	bc         store.Raw
	out        store.Raw // the output stream, as rebasePrepare read it
	stream     string    // output stream and tag
	tag        string
	baseNS     string
	baseStream string
	newBase    string // digest the base tag holds
	newRef     string // REGISTRY/NS/STREAM@DIGEST of the new base
	cur        string // digest the output tag holds
	oldBase    string // digest of the old base, from the image's annotations
	oldRepo    string // NS/STREAM of the old base
	manifest   []byte
	mediaType  string
	config     []byte
	digest     string
	newLinks   []digest.Digest // layers of the new base to link into the output repository
	image      *api.Image
	build      *api.Build
	buildName  string // set for RebaseBuild: the Build being run
	noop       bool
	sign       bool // the project signs what it builds: rebaseSign signs this one
	err        error
}

func (it *rebaseItem) fail(err error) {
	if it.err == nil {
		it.err = err
	}
}

// rebaseGroup runs one group of requests to the end, answering each.
func (r *Registry) rebaseGroup(batch []*rebaseReq) {
	ctx := context.Background()
	start := time.Now()
	// One request per output stream in a group: a second waits for the
	// next group (its tag move must see the first).
	seen := map[string]bool{}
	var items []*rebaseItem
	var later []*rebaseReq
	for _, q := range batch {
		if q.ctx.Err() != nil {
			q.done <- rebaseResult{err: q.ctx.Err()}
			continue
		}
		key := q.project + "/" + q.config
		if seen[key] {
			later = append(later, q)
			continue
		}
		seen[key] = true
		items = append(items, &rebaseItem{req: q})
	}
	r.rebasePrepare(ctx, items)
	tPrep := time.Since(start)
	// Streams, too, once per group.
	streams := map[string]bool{}
	for _, it := range items {
		if it.err != nil || it.noop {
			continue
		}
		k := it.req.project + "/" + it.stream
		if streams[k] {
			it.err = errRetryNextGroup
			continue
		}
		streams[k] = true
	}
	r.rebaseWriteStorage(ctx, items)
	r.rebaseSign(ctx, items, start)
	tStore := time.Since(start)
	var chunks [][]*rebaseItem
	var chunk []*rebaseItem
	for _, it := range items {
		if it.err != nil || it.noop {
			continue
		}
		if chunk = append(chunk, it); len(chunk) == rebaseTxnImages {
			chunks, chunk = append(chunks, chunk), nil
		}
	}
	if len(chunk) > 0 {
		chunks = append(chunks, chunk)
	}
	var rev atomic.Int64
	commit := func(chunk []*rebaseItem) {
		moves := false
		for _, it := range chunk {
			moves = moves || !it.noop
		}
		// Only a transaction that moved a tag is waited for below: the
		// stream cache sees no revision of one that did not.
		if rv := r.rebaseCommit(ctx, chunk); moves {
			for cur := rev.Load(); rv > cur && !rev.CompareAndSwap(cur, rv); cur = rev.Load() {
			}
		}
	}
	if len(chunks) > 0 {
		commit(chunks[0])
		if r.rebase.hold > 0 && len(chunks) > 1 {
			// A test setting: the e2e test kills the server here, with
			// one transaction of the group committed and the group's
			// storage written for every image.
			slog.Warn("registry: rebase group holds after its first transaction (test setting)", "hold", r.rebase.hold, "images", len(items))
			time.Sleep(r.rebase.hold)
		}
		// The transactions touch disjoint objects: several at once, so
		// etcd puts them in one WAL sync.
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(4, len(chunks)-1) {
			wg.Go(func() {
				for {
					i := int(next.Add(1))
					if i >= len(chunks) {
						return
					}
					commit(chunks[i])
				}
			})
		}
		wg.Wait()
	}
	tCommit := time.Since(start)
	if rv := rev.Load(); rv > 0 {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = r.streams.WaitFor(wctx, rv)
		cancel()
	}
	done := 0
	for _, it := range items {
		if errors.Is(it.err, errRetryNextGroup) {
			later = append(later, it.req)
			continue
		}
		if it.err != nil {
			it.req.done <- rebaseResult{err: it.err}
			continue
		}
		done++
		if it.noop {
			// Nothing to do, and nothing recorded: the answer says so.
			ref := r.recorder.Reference(it.req.project, it.stream, it.cur)
			it.req.done <- rebaseResult{build: &api.Build{
				ObjectMeta: api.ObjectMeta{Namespace: it.req.project, Labels: map[string]string{builders.BuildConfigLabel: it.req.config}},
				Status: api.BuildStatus{Phase: api.BuildComplete, BaseImage: it.newRef, OutputDockerImageReference: ref, OutputDigest: it.cur, RebasedFrom: it.cur,
					Message: fmt.Sprintf("%s:%s is already on base %s; nothing to rebase, no build recorded", it.stream, it.tag, it.newBase)},
			}}
			continue
		}
		it.req.done <- rebaseResult{build: it.buildResult()}
	}
	slog.Debug("registry: rebase group", "requests", len(batch), "rebased", done, "took", time.Since(start),
		"prepare", tPrep, "storage", tStore-tPrep, "commit", tCommit-tStore)
	for _, q := range later {
		go func() {
			b, err := r.RebaseBuildConfig(q.ctx, q.who, q.project, q.config)
			q.done <- rebaseResult{build: b, err: err}
		}()
	}
}

var errRetryNextGroup = errors.New("registry: in the next group")

// buildResult is the Build the group committed for this item.
func (it *rebaseItem) buildResult() *api.Build { return it.build }

// rebasePrepare reads what each item needs and computes its new image.
func (r *Registry) rebasePrepare(ctx context.Context, items []*rebaseItem) {
	var names [][2]string
	for _, it := range items {
		names = append(names, [2]string{it.req.project, it.req.config})
	}
	bcs, err := r.cfg.Store.GetMany(ctx, api.BuildConfigs, names)
	if err != nil {
		for _, it := range items {
			it.fail(err)
		}
		return
	}
	var streamNames [][2]string
	signs := map[string]bool{}
	for _, it := range items {
		if _, ok := signs[it.req.project]; !ok {
			_, err := r.cfg.Store.Get(ctx, api.SigningKeys, it.req.project, signingKey)
			signs[it.req.project] = err == nil
		}
		if signs[it.req.project] {
			if r.cfg.SignRebase == nil {
				// No signer in this process: a rebase build signs.
				it.fail(notRebasable("project %s signs what it builds (signing key %q) and this registry cannot sign: its rebases run as builds, which sign them", it.req.project, signingKey))
				continue
			}
			it.sign = true
		}
		raw, ok := bcs[it.req.project+"/"+it.req.config]
		if !ok {
			it.fail(api.NewStatus(404, api.ReasonNotFound, "build config %s/%s not found", it.req.project, it.req.config))
			continue
		}
		it.bc = raw
		if err := r.rebaseTargets(it); err != nil {
			it.fail(err)
			continue
		}
		streamNames = append(streamNames, [2]string{it.req.project, it.stream}, [2]string{it.baseNS, it.baseStream})
	}
	streams, err := r.cfg.Store.GetMany(ctx, api.ImageStreams, streamNames)
	if err != nil {
		for _, it := range items {
			it.fail(err)
		}
		return
	}
	var imageNames [][2]string
	for _, it := range items {
		if it.err != nil {
			continue
		}
		bs, ok := streams[it.baseNS+"/"+it.baseStream]
		ev, found := api.TagEvent{}, false
		if ok {
			ev, found = imagestreams.Latest(bs.Object.(*api.ImageStream), it.baseTag())
		}
		if !found {
			it.fail(notRebasable("the base %s/%s has no image yet", it.baseNS, it.baseTagRef()))
			continue
		}
		it.newBase = ev.Image
		it.newRef = r.recorder.Reference(it.baseNS, it.baseStream, ev.Image)
		out, ok := streams[it.req.project+"/"+it.stream]
		cur, found := api.TagEvent{}, false
		if ok {
			cur, found = imagestreams.Latest(out.Object.(*api.ImageStream), it.tag)
		}
		if !found {
			it.fail(notRebasable("the output tag %s:%s has no image yet", it.stream, it.tag))
			continue
		}
		it.cur, it.out = cur.Image, out
		imageNames = append(imageNames, [2]string{it.req.project, it.cur})
	}
	images, err := r.cfg.Store.GetMany(ctx, api.Images, imageNames)
	if err != nil {
		for _, it := range items {
			it.fail(err)
		}
		return
	}
	bases := &baseCache{r: r, ctx: ctx, m: map[string]*rawImage{}}
	var compute []*rebaseItem
	for _, it := range items {
		if it.err != nil {
			continue
		}
		raw, ok := images[it.req.project+"/"+it.cur]
		if !ok {
			it.fail(notRebasable("no record of the output image %s", it.cur))
			continue
		}
		rec := raw.Object.(*api.Image)
		oldName, oldDigest := rec.ManifestAnnotations[builders.BaseNameAnnotation], rec.ManifestAnnotations[builders.BaseDigestAnnotation]
		if oldName == "" || oldDigest == "" {
			it.fail(notRebasable("the output image %s has no %s and %s annotations", it.cur, builders.BaseNameAnnotation, builders.BaseDigestAnnotation))
			continue
		}
		oldRepo, ok := strings.CutPrefix(oldName, r.cfg.Host+"/")
		if !ok || strings.Count(oldRepo, "/") != 1 {
			it.fail(notRebasable("the old base %s is not in the integrated registry", oldName))
			continue
		}
		it.oldBase, it.oldRepo = oldDigest, oldRepo
		if err := r.rebaseAllowed(ctx, it); err != nil {
			it.fail(err)
			continue
		}
		if oldDigest == it.newBase {
			it.noop, it.digest = true, it.cur
			continue
		}
		compute = append(compute, it)
	}
	eachItem(compute, 4, func(it *rebaseItem) {
		if err := r.rebaseCompute(ctx, it, bases); err != nil {
			it.fail(err)
		}
	})
	tally := &bytesTally{}
	for _, it := range compute {
		if it.err == nil {
			it.fail(r.rebaseBytes(ctx, it, tally))
		}
	}
}

// rebaseBytes refuses, as a *RebaseDeniedError, a rebased image whose new
// blobs (the new base's layers, the config, the manifest) take its
// project over a hard registry.bytes limit, as its push would be.
func (r *Registry) rebaseBytes(ctx context.Context, it *rebaseItem, tally *bytesTally) error {
	set := map[string]int64{}
	store.ImageBlobs(it.image, set)
	err := r.checkProjectBytes(ctx, it.req.project, it.stream, set, tally)
	if why, ok := quotaDenied(err); ok {
		return &RebaseDeniedError{"rebasing " + it.stream + ":" + it.tag + " onto " + it.newRef + ": " + why}
	}
	return err
}

// eachItem runs fn on items, workers at once.
func eachItem(items []*rebaseItem, workers int, fn func(*rebaseItem)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, len(items)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(items) {
					return
				}
				fn(items[i])
			}
		})
	}
	wg.Wait()
}

func (it *rebaseItem) baseTag() string {
	_, tag, ok := strings.Cut(it.baseTagRef(), ":")
	if !ok {
		return "latest"
	}
	return tag
}

func (it *rebaseItem) baseTagRef() string {
	return it.bc.Object.(*api.BuildConfig).Spec.Strategy.BaseImage().Name
}

// rebaseTargets checks the config and finds its output and base.
func (r *Registry) rebaseTargets(it *rebaseItem) error {
	bc := it.bc.Object.(*api.BuildConfig)
	switch {
	case !bc.Spec.Rebase:
		return notRebasable("build config %s does not say rebase: true (its upper layers may depend on the base); run a build", bc.Name)
	case bc.Spec.PostCommit != nil:
		return notRebasable("build config %s has a postCommit test, which only a build runs", bc.Name)
	}
	to := bc.Spec.Output.To
	if to == nil || to.Kind != "ImageStreamTag" || (to.Namespace != "" && to.Namespace != bc.Namespace) {
		return notRebasable("the output of %s is not an image stream tag of its project", bc.Name)
	}
	var ok bool
	if it.stream, it.tag, ok = strings.Cut(to.Name, ":"); !ok {
		it.tag = "latest"
	}
	from := bc.Spec.Strategy.BaseImage()
	if from == nil || from.Kind != "ImageStreamTag" {
		return notRebasable("the base of %s is not an image stream tag", bc.Name)
	}
	it.baseNS = from.Namespace
	if it.baseNS == "" {
		it.baseNS = bc.Namespace
	}
	it.baseStream, _, _ = strings.Cut(from.Name, ":")
	return nil
}

// rebaseAllowed checks, with the requester's rights, a push to the output
// project and pulls from the new and the old base's projects, and that no
// pipeline stage owns the output tag.
func (r *Registry) rebaseAllowed(ctx context.Context, it *rebaseItem) error {
	who := it.req.who
	if ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "update", Resource: "imagestreams", Subresource: "layers", Namespace: it.req.project}); !ok {
		return &RebaseDeniedError{fmt.Sprintf("%s may not push to project %s (update imagestreams/layers), so may not rebase its images", who.Name, it.req.project)}
	}
	for _, p := range []string{it.baseNS, strings.SplitN(it.oldRepo, "/", 2)[0]} {
		if p == it.req.project {
			continue
		}
		if why := r.mayPull(ctx, who, p); why != "" {
			return &RebaseDeniedError{why}
		}
	}
	repo := &repository{reg: r, project: it.req.project, stream: it.stream}
	if err := repo.mayMoveTag(identity.WithInfo(ctx, who), it.tag); err != nil {
		return &RebaseDeniedError{err.Error()}
	}
	return nil
}

// mayPull says why who may not pull from project, or "".
func (r *Registry) mayPull(ctx context.Context, who identity.Info, project string) string {
	if p, err := r.cfg.Project(ctx, project); err == nil && p.Spec.Public {
		return ""
	}
	if ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: project}); ok {
		return ""
	}
	return fmt.Sprintf("%s may not pull from project %s (get imagestreams/layers), where the base image is; an admin of %s can grant it with `slipway policy add-role-to-user image-puller %s -n %s`", who.Name, project, project, who.Name, project)
}

// rebaseCompute makes the new config and manifest of one item.
func (r *Registry) rebaseCompute(ctx context.Context, it *rebaseItem, bases *baseCache) error {
	orig, err := r.readImage(ctx, it.req.project+"/"+it.stream, it.cur)
	if err != nil {
		return fmt.Errorf("reading the image to rebase %s: %w", it.cur, err)
	}
	oldBase, err := bases.get(it.oldRepo, it.oldBase)
	if err != nil {
		return notRebasable("reading the old base %s@%s: %v", it.oldRepo, it.oldBase, err)
	}
	newBase, err := bases.get(it.baseNS+"/"+it.baseStream, it.newBase)
	if err != nil {
		return fmt.Errorf("reading the new base %s: %w", it.newRef, err)
	}
	if it.buildName == "" {
		bc := it.bc.Object.(*api.BuildConfig)
		it.buildName = fmt.Sprintf("%s-%d", bc.Name, bc.Status.LastVersion+1)
	}
	name := it.buildName
	img, err := builders.RebaseImage(orig.img, oldBase.img, newBase.img, name, it.req.project, r.cfg.Host+"/"+it.baseNS+"/"+it.baseStream, it.newBase)
	if err != nil {
		if errors.Is(err, builders.ErrNoRebase) {
			return notRebasable("%v", err)
		}
		return err
	}
	if it.manifest, err = img.RawManifest(); err != nil {
		return err
	}
	if it.config, err = img.RawConfigFile(); err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	it.mediaType = string(mt)
	it.digest = digest.FromBytes(it.manifest).String()
	// The new base's layers the output repository does not link yet.
	have := map[digest.Digest]bool{}
	for _, l := range orig.man.Layers {
		have[l.Digest] = true
	}
	for _, l := range newBase.man.Layers {
		if !have[l.Digest] && len(l.URLs) == 0 {
			it.newLinks = append(it.newLinks, l.Digest)
		}
	}
	rec, err := imagestreams.ImageFromManifest(it.digest, it.mediaType, it.manifest, it.config)
	if err != nil {
		return err
	}
	imagestreams.BoundImageMetadata(rec)
	rec.DockerImageReference = r.recorder.Reference(it.req.project, it.stream, it.digest)
	it.image = rec
	return nil
}

// rebaseWriteStorage writes every item's blobs and links without a sync
// each and syncs the file system once, all under one garbage-collection
// hold for every digest the group makes reachable (what a push of each
// manifest would hold, in a few etcd transactions for the group rather
// than two or three each).
func (r *Registry) rebaseWriteStorage(ctx context.Context, items []*rebaseItem) {
	var write []*rebaseItem
	var ds []string
	seen := map[string]bool{}
	hold := func(d string) {
		if !seen[d] {
			seen[d] = true
			ds = append(ds, d)
		}
	}
	mans := map[*rebaseItem]*ocispec.Manifest{}
	for _, it := range items {
		if it.err != nil || it.noop {
			continue
		}
		var man ocispec.Manifest
		if err := json.Unmarshal(it.manifest, &man); err != nil {
			it.fail(err)
			continue
		}
		mans[it] = &man
		write = append(write, it)
		hold(it.digest)
		hold(man.Config.Digest.String())
		for _, l := range man.Layers {
			hold(l.Digest.String())
		}
	}
	if len(write) == 0 {
		return
	}
	var store func(it *rebaseItem) error
	if r.fsRoot != "" {
		fs := &rebaseFS{root: r.fsRoot, src: map[string]error{}}
		store = func(it *rebaseItem) error { return fs.store(it, mans[it]) }
	} else {
		ns, err := r.unsyncedNamespace(ctx)
		if err != nil {
			for _, it := range write {
				it.fail(err)
			}
			return
		}
		store = func(it *rebaseItem) error { return r.rebaseStore(ctx, ns, it) }
	}
	err := r.holdBlobs(ctx, ds, func() error {
		// Mostly file creates and renames, which wait on the file
		// system: several at once.
		eachItem(write, 8, func(it *rebaseItem) { it.fail(store(it)) })
		if err := r.syncStorage(); err != nil {
			return fmt.Errorf("syncing storage: %w", err)
		}
		return nil
	})
	if err != nil {
		for _, it := range write {
			it.fail(err)
		}
	}
}

func (r *Registry) rebaseStore(ctx context.Context, ns distribution.Namespace, it *rebaseItem) error {
	named, err := reference.WithName(it.req.project + "/" + it.stream)
	if err != nil {
		return err
	}
	repo, err := ns.Repository(ctx, named)
	if err != nil {
		return err
	}
	baseNamed, err := reference.WithName(it.baseNS + "/" + it.baseStream)
	if err != nil {
		return err
	}
	blobs := repo.Blobs(ctx)
	for _, d := range it.newLinks {
		if err := mountBlob(ctx, blobs, baseNamed, d); err != nil {
			return err
		}
	}
	if _, err := blobs.Put(ctx, "application/octet-stream", it.config); err != nil {
		return fmt.Errorf("storing the config: %w", err)
	}
	man, _, err := distribution.UnmarshalManifest(it.mediaType, it.manifest)
	if err != nil {
		return err
	}
	ms, err := repo.Manifests(ctx)
	if err != nil {
		return err
	}
	got, err := ms.Put(ctx, man)
	if err != nil {
		return fmt.Errorf("storing the manifest: %w", err)
	}
	if got.String() != it.digest {
		return fmt.Errorf("registry: stored manifest has digest %s, want %s", got, it.digest)
	}
	return nil
}

// rebaseSign signs each stored image of a project whose builds are signed
// (rebasePrepare marked it) and attests its provenance, as a rebase build
// signs and attests its output, but before the tag moves: the tag never
// names an unsigned image of such a project. An item whose signing fails
// fails, and nothing of it is recorded. The signatures' own tags
// (sha256-HEX.sig and .att) move in the output stream, so the item's
// transaction reads the stream again.
func (r *Registry) rebaseSign(ctx context.Context, items []*rebaseItem, started time.Time) {
	var sign []*rebaseItem
	for _, it := range items {
		if it.sign && it.err == nil && !it.noop {
			sign = append(sign, it)
		}
	}
	eachItem(sign, rebaseSigners, func(it *rebaseItem) {
		image := r.recorder.Reference(it.req.project, it.stream, it.digest)
		bc := it.bc.Object.(*api.BuildConfig)
		baseName, _, _ := strings.Cut(it.newRef, "@")
		prov := &signing.Provenance{
			BuildName: it.req.project + "/" + it.buildName, Strategy: string(bc.Spec.Strategy.Type), BuildArgs: map[string]string{},
			BaseImages: []signing.Image{{Name: baseName, Digest: it.newBase}},
			Internal: map[string]any{"registry": r.cfg.Host, "rebase": map[string]string{
				"from": it.cur, "oldBase": r.cfg.Host + "/" + it.oldRepo + "@" + it.oldBase, "requestedBy": it.req.who.Name}},
			StartedOn: started.UTC(), FinishedOn: time.Now().UTC(),
		}
		if ds := bc.Spec.Strategy.DockerStrategy; ds != nil {
			for _, a := range ds.BuildArgs {
				prov.BuildArgs[a.Name] = a.Value
			}
		}
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := r.cfg.SignRebase(sctx, it.req.project, image, prov); err != nil {
			it.fail(fmt.Errorf("signing the rebased image %s: %w", image, err))
			return
		}
		it.out = store.Raw{} // read again by the transaction
	})
}

// rebaseCommit writes the etcd side of a chunk of items in one
// transaction; on a conflict it reads again and retries, then gives up on
// the chunk. It returns the revision, 0 if nothing committed.
func (r *Registry) rebaseCommit(ctx context.Context, chunk []*rebaseItem) int64 {
	var lastErr error
	for attempt := 0; attempt < 20; attempt++ {
		rev, err := r.rebaseTxn(ctx, chunk, attempt > 0)
		if err == nil {
			return rev
		}
		lastErr = err
		if !errors.Is(err, store.ErrConflict) {
			break
		}
		// Something else wrote one of the objects (a push, a build, a
		// create in the project): read again, a little later.
		time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
	}
	for _, it := range chunk {
		it.fail(fmt.Errorf("recording the rebase: %w", lastErr))
	}
	return 0
}

// The first attempt writes over the build configs and streams as
// rebasePrepare read them (the transaction compares their revisions); a
// retry after a conflict reads them again.
func (r *Registry) rebaseTxn(ctx context.Context, chunk []*rebaseItem, reread bool) (int64, error) {
	var bcNames, streamNames, imageNames, scanNames [][2]string
	bcs, streams := map[string]store.Raw{}, map[string]store.Raw{}
	for _, it := range chunk {
		bcNames = append(bcNames, [2]string{it.req.project, it.req.config})
		streamNames = append(streamNames, [2]string{it.req.project, it.stream})
		imageNames = append(imageNames, [2]string{it.req.project, it.digest})
		scanNames = append(scanNames, [2]string{"", it.digest}, [2]string{"", it.cur}, [2]string{"", it.oldBase}, [2]string{"", it.newBase})
		if it.bc.Object == nil || it.out.Object == nil {
			reread = true
		}
		bcs[it.req.project+"/"+it.req.config], streams[it.req.project+"/"+it.stream] = it.bc, it.out
	}
	var err error
	if reread {
		if bcs, err = r.cfg.Store.GetMany(ctx, api.BuildConfigs, bcNames); err != nil {
			return 0, err
		}
		if streams, err = r.cfg.Store.GetMany(ctx, api.ImageStreams, streamNames); err != nil {
			return 0, err
		}
	}
	images, err := r.cfg.Store.GetMany(ctx, api.Images, imageNames)
	if err != nil {
		return 0, err
	}
	scans, err := r.cfg.Store.GetMany(ctx, api.ScanRecords, scanNames)
	if err != nil {
		return 0, err
	}
	imageScans, err := r.cfg.Store.GetMany(ctx, api.ImageScans, imageNames)
	if err != nil {
		return 0, err
	}
	b := r.cfg.Store.NewBatch()
	now := time.Now().UTC().Truncate(time.Second)
	for _, it := range chunk {
		if it.err != nil {
			continue // failed in an earlier attempt at this chunk
		}
		raw, ok := bcs[it.req.project+"/"+it.req.config]
		if !ok {
			return 0, fmt.Errorf("build config %s/%s was deleted", it.req.project, it.req.config)
		}
		bc := raw.Object.(*api.BuildConfig)
		bc.Status.LastVersion++
		name := fmt.Sprintf("%s-%d", bc.Name, bc.Status.LastVersion)
		sraw, ok := streams[it.req.project+"/"+it.stream]
		if !ok {
			return 0, fmt.Errorf("image stream %s/%s was deleted", it.req.project, it.stream)
		}
		is := sraw.Object.(*api.ImageStream)
		// Checked before anything of the item is written: an item that
		// fails here leaves nothing in the batch.
		if cur, ok := imagestreams.Latest(is, it.tag); !ok || cur.Image != it.cur {
			// The tag moved since the image was read: the new image
			// would undo that push. Not an error of the batch.
			it.fail(notRebasable("%s:%s moved while it was rebased (to %s); run the rebase again", it.stream, it.tag, cur.Image))
			continue
		}
		if name != it.buildName {
			// The image's build label names the build it was made for.
			it.fail(notRebasable("build config %s started build %s while it was rebased; run the rebase again", bc.Name, name))
			continue
		}
		if err := b.UpdateStatus(api.BuildConfigs, bc, raw.Data, raw.Rev); err != nil {
			return 0, err
		}
		{
			if _, ok := images[it.req.project+"/"+it.digest]; !ok && !b.Has(api.Images, it.req.project, it.digest) {
				copied := *it.image
				img := &copied
				img.ObjectMeta = api.ObjectMeta{Name: it.digest, Namespace: it.req.project}
				if err := b.Create(api.Images, img); err != nil {
					return 0, err
				}
			}
			if err := r.recorder.ApplyTagMove(is, it.tag, it.digest, it.req.who.Name); err != nil {
				return 0, err
			}
			if err := b.UpdateStatus(api.ImageStreams, is, sraw.Data, sraw.Rev); err != nil {
				return 0, err
			}
			if _, ok := scans["/"+it.digest]; !ok && !b.Has(api.ScanRecords, "", it.digest) {
				if rec := deriveScan(scans, it, now); rec != nil {
					if err := b.Create(api.ScanRecords, rec); err != nil {
						return 0, err
					}
					// And the project's copy, which the scanner would
					// otherwise write for each image after the fact.
					if _, ok := imageScans[it.req.project+"/"+it.digest]; !ok {
						cp := &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: it.digest, Namespace: it.req.project}, Status: rec.Status}
						if err := b.Create(api.ImageScans, cp); err != nil {
							return 0, err
						}
					}
				}
			}
		}
		ref := r.recorder.Reference(it.req.project, it.stream, it.digest)
		build := &api.Build{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: it.req.project, Labels: map[string]string{builders.BuildConfigLabel: bc.Name}},
			Spec:       bc.Spec.BuildSpec(),
		}
		build.Status = api.BuildStatus{Phase: api.BuildComplete, StartTimestamp: &now, CompletionTimestamp: &now,
			BaseImage: it.newRef, OutputDockerImageReference: ref, OutputDigest: it.digest, RebasedFrom: it.cur,
			Message: "pushed " + ref}
		if it.noop {
			build.Status.LogTail = fmt.Sprintf("The output %s is already on base %s; nothing to rebase\n", it.cur, it.newBase)
		} else {
			build.Status.LogTail = fmt.Sprintf("Rebased %s from %s to %s in the registry (no build run), requested by %s\n", it.cur, it.oldBase, it.newBase, it.req.who.Name)
		}
		if err := b.Create(api.Builds, build); err != nil {
			return 0, err
		}
		it.build = build
	}
	rev, err := b.Commit(ctx)
	if err != nil {
		return 0, err
	}
	for _, it := range chunk {
		if it.build != nil {
			it.build.ResourceVersion = store.RevisionString(rev)
		}
	}
	return rev, nil
}

// deriveScan is the scan of a rebased image, known without reading a
// layer: the new base's findings, and the image's own findings less the
// old base's, under the assumption every rebase makes (the layers above
// the base do not touch it). Only when all three scans are done with the
// same vulnerability database (or all three without one); otherwise nil,
// and the scanner scans the image as it scans every new image. The record
// has no SBOM: a new database makes the scanner scan it in full
// (scan.IsDerived).
func deriveScan(scans map[string]store.Raw, it *rebaseItem, now time.Time) *api.ScanRecord {
	get := func(d string) *api.ScanRecord {
		raw, ok := scans["/"+d]
		if !ok {
			return nil
		}
		rec := raw.Object.(*api.ScanRecord)
		if rec.Status.Phase != scan.PhaseScanned {
			return nil
		}
		return rec
	}
	orig, oldB, newB := get(it.cur), get(it.oldBase), get(it.newBase)
	if orig == nil || oldB == nil || newB == nil || orig.Status.DBVersion != oldB.Status.DBVersion || orig.Status.DBVersion != newB.Status.DBVersion {
		return nil
	}
	key := func(f api.Finding) string { return f.ID + "\x00" + f.Package + "\x00" + f.Version }
	inOld := map[string]bool{}
	for _, f := range oldB.Status.Findings {
		inOld[key(f)] = true
	}
	st := api.ImageScanStatus{Phase: scan.PhaseScanned, DBVersion: newB.Status.DBVersion, ScannedAt: &now, Counts: map[string]int{},
		Packages: max(0, newB.Status.Packages+orig.Status.Packages-oldB.Status.Packages),
		Message:  fmt.Sprintf("%s the scan of base %s, and of %s less its base %s", scan.DerivedPrefix, it.newBase, it.cur, it.oldBase)}
	if st.DBVersion != "" {
		st.MatchedAt = &now
	} else {
		st.Message += "; findings unknown: no vulnerability database is loaded"
	}
	seen := map[string]bool{}
	add := func(f api.Finding) {
		if !seen[key(f)] {
			seen[key(f)] = true
			st.Findings = append(st.Findings, f)
			st.Counts[f.Severity]++
		}
	}
	for _, f := range newB.Status.Findings {
		add(f)
	}
	for _, f := range orig.Status.Findings {
		if !inOld[key(f)] {
			add(f)
		}
	}
	return &api.ScanRecord{ObjectMeta: api.ObjectMeta{Name: it.digest}, Status: st}
}

// signingKey is the key a project's builds are signed with
// (server.DefaultSigningKey).
const signingKey = "default"

// RebaseHoldEnv, when set to a duration in the server's environment, makes
// each rebase group of more than one transaction wait that long after its
// first: the e2e kill -9 test uses it to kill mid-group.
const RebaseHoldEnv = "SLIPWAY_TEST_REBASE_HOLD"
