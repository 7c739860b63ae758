package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"slipway.dev/slipway/api"
)

// Online garbage collection of blobs: mark from every manifest revision of
// every repository, sweep blobs nobody references that were neither
// written nor touched by a push within the grace period. Pushes go on
// meanwhile; gchold.go says why none of them can lose a blob.
//
// Manifests are roots as long as a repository links them: pruning
// (prune.go) and a mirror's expiry of what nobody pulls (mirrorexpire.go)
// remove those links, and the next collection frees the bytes.

const blobsRoot = "/docker/registry/v2/blobs/"

// DefaultGCGrace spares blobs pushed or referenced within the last hour.
const DefaultGCGrace = time.Hour

// GCOptions configures one collection.
type GCOptions struct {
	// Grace spares blobs written or referenced more recently. Default
	// DefaultGCGrace; zero is not allowed (use a second in tests).
	Grace time.Duration
	// DryRun reports what would be deleted and deletes nothing.
	DryRun bool
}

// GCBlob is one blob the collection deleted (or would delete).
type GCBlob struct {
	Digest       string    `json:"digest"`
	Size         int64     `json:"size"`
	LastWritten  time.Time `json:"lastWritten"`
	LastTouched  time.Time `json:"lastTouched,omitzero"`
	Repositories []string  `json:"repositories,omitempty"` // that linked it as a layer
}

// GCReport is what `slipway adm gc` prints.
type GCReport struct {
	DryRun       bool          `json:"dryRun"`
	Grace        string        `json:"grace"`
	Repositories int           `json:"repositories"`
	Manifests    int           `json:"manifests"`
	Blobs        int           `json:"blobs"`
	Marked       int           `json:"marked"`
	Deleted      []GCBlob      `json:"deleted"`
	BytesFreed   int64         `json:"bytesFreed"`
	Spared       int           `json:"sparedByGrace"`
	Rereferenced int           `json:"rereferenced"`
	MarkTime     time.Duration `json:"markTimeNanos"`
	SweepTime    time.Duration `json:"sweepTimeNanos"`
}

// gcScan is what one walk of the storage found.
type gcScan struct {
	repos     map[string]bool
	revisions map[string][]string // manifest digest → repositories linking it
	layers    map[string][]string // blob digest → repositories linking it
	refs      map[string][]string // blob digest → manifests referencing it
	marked    map[string]bool
}

// blobDataPath is where distribution keeps a blob's bytes.
func blobDataPath(d digest.Digest) string {
	return blobsRoot + d.Algorithm().String() + "/" + d.Encoded()[:2] + "/" + d.Encoded() + "/data"
}

// scan walks every repository's manifest revisions and layer links, and
// marks every manifest linked and every digest those manifests reference.
func (r *Registry) scan(ctx context.Context, why bool) (*gcScan, error) {
	s := &gcScan{repos: map[string]bool{}, revisions: map[string][]string{}, layers: map[string][]string{}, refs: map[string][]string{}, marked: map[string]bool{}}
	err := r.driver.Walk(ctx, strings.TrimSuffix(repositoriesRoot, "/"), func(fi storagedriver.FileInfo) error {
		p := strings.TrimPrefix(fi.Path(), repositoriesRoot)
		if fi.IsDir() {
			base := p[strings.LastIndex(p, "/")+1:]
			if base == "_uploads" || strings.HasSuffix(p, "/_manifests/tags") {
				return storagedriver.ErrSkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, "/link") {
			return nil
		}
		var repo, rest string
		var into map[string][]string
		if i := strings.Index(p, "/_manifests/revisions/"); i > 0 {
			repo, rest, into = p[:i], p[i+len("/_manifests/revisions/"):], s.revisions
		} else if i := strings.Index(p, "/_layers/"); i > 0 {
			repo, rest, into = p[:i], p[i+len("/_layers/"):], s.layers
		} else {
			return nil
		}
		// rest is ALG/HEX/link
		parts := strings.Split(rest, "/")
		if len(parts) != 3 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
		if d.Validate() != nil {
			return nil
		}
		s.repos[repo] = true
		into[d.String()] = append(into[d.String()], repo)
		return nil
	})
	var missing storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &missing) {
		return nil, fmt.Errorf("registry: walking the repositories: %w", err)
	}
	// Manifests are read by a few workers: the reads wait on the disk
	// (or the object store), not on the CPU.
	type read struct {
		m    string
		refs []string
		err  error
	}
	todo := make(chan string)
	done := make(chan read)
	var wg sync.WaitGroup
	for range gcWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range todo {
				if refs, ok := knownRefs.get(m); ok {
					done <- read{m, refs, nil}
					continue
				}
				b, err := r.driver.GetContent(ctx, blobDataPath(digest.Digest(m)))
				var gone storagedriver.PathNotFoundError
				if errors.As(err, &gone) {
					done <- read{m, nil, nil} // a revision whose bytes are gone holds nothing
					continue
				}
				if err == nil && digest.Digest(m).Algorithm().Available() && digest.Digest(m).Algorithm().FromBytes(b) != digest.Digest(m) {
					// Being rewritten by a push of the same manifest: a
					// partial read must not mark too little.
					err = errors.New("its bytes changed while being read; run the collection again")
				}
				refs := manifestRefs(b)
				if err == nil {
					knownRefs.put(m, refs)
				}
				done <- read{m, refs, err}
			}
		}()
	}
	go func() {
		for m := range s.revisions {
			todo <- m
		}
		close(todo)
		wg.Wait()
		close(done)
	}()
	var readErr error
	for rd := range done {
		s.marked[rd.m] = true
		if rd.err != nil && readErr == nil {
			readErr = fmt.Errorf("registry: reading manifest %s: %w", rd.m, rd.err)
		}
		for _, ref := range rd.refs {
			s.marked[ref] = true
			if why {
				s.refs[ref] = append(s.refs[ref], rd.m)
			}
		}
	}
	if readErr != nil {
		return nil, readErr
	}
	// Layers pushed by sha512 digest are stored under sha256; the edge
	// records the mapping (serve.go).
	for d := range s.marked {
		if d256, ok := r.sha512Lookup(ctx, d); ok && !s.marked[d256] {
			s.marked[d256] = true
			if why {
				s.refs[d256] = append(s.refs[d256], s.refs[d]...)
			}
		}
	}
	return s, nil
}

// refsCache remembers what each manifest references. Manifests are
// content-addressed, so an entry is never stale; the next collection
// reads only manifests it has not seen. It is dropped whole at its bound.
type refsCache struct {
	mu sync.Mutex
	m  map[string][]string
}

const maxKnownRefs = 500_000

var knownRefs = &refsCache{m: map[string][]string{}}

func (c *refsCache) get(d string) ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	refs, ok := c.m[d]
	return refs, ok
}

func (c *refsCache) put(d string, refs []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxKnownRefs {
		clear(c.m)
	}
	c.m[d] = refs
}

// manifestRefs lists every digest a manifest of any known kind names:
// config, layers, index children, subject, and schema1 layers.
func manifestRefs(b []byte) []string {
	type desc struct {
		Digest string `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
		Blobs     []desc `json:"blobs"`
		Subject   *desc  `json:"subject"`
		FSLayers  []struct {
			BlobSum string `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	var out []string
	add := func(d string) {
		if d != "" {
			out = append(out, d)
		}
	}
	if m.Config != nil {
		add(m.Config.Digest)
	}
	if m.Subject != nil {
		add(m.Subject.Digest)
	}
	for _, l := range append(append(m.Layers, m.Manifests...), m.Blobs...) {
		add(l.Digest)
	}
	for _, l := range m.FSLayers {
		add(l.BlobSum)
	}
	return out
}

// storedBlob is one blob's bytes in storage.
type storedBlob struct {
	size    int64
	written time.Time
}

func (r *Registry) listBlobs(ctx context.Context) (map[string]storedBlob, error) {
	out := map[string]storedBlob{}
	err := r.driver.Walk(ctx, strings.TrimSuffix(blobsRoot, "/"), func(fi storagedriver.FileInfo) error {
		if fi.IsDir() || !strings.HasSuffix(fi.Path(), "/data") {
			return nil
		}
		parts := strings.Split(strings.TrimPrefix(fi.Path(), blobsRoot), "/")
		if len(parts) != 4 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		if d.Validate() == nil {
			out[d.String()] = storedBlob{size: fi.Size(), written: fi.ModTime()}
		}
		return nil
	})
	var missing storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &missing) {
		return nil, fmt.Errorf("registry: walking the blobs: %w", err)
	}
	return out, nil
}

// touch is one digest's last hold: when, and at which etcd revision.
type touch struct {
	at  time.Time
	rev int64
}

// touches reads every touch key, a page at a time.
func (r *Registry) touches(ctx context.Context) (map[string]touch, error) {
	cli := r.cfg.Store.Client()
	prefix := r.gcKey("touch", "")
	end := clientv3.GetPrefixRangeEnd(prefix)
	out := map[string]touch{}
	key := prefix
	for {
		resp, err := cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(5000))
		if err != nil {
			return nil, err
		}
		for _, kv := range resp.Kvs {
			ns, _ := strconv.ParseInt(string(kv.Value), 10, 64)
			out[strings.TrimPrefix(string(kv.Key), prefix)] = touch{at: time.Unix(0, ns), rev: kv.ModRevision}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// GC runs one collection. Only one runs at a time in the cluster; others
// wait for it.
func (r *Registry) GC(ctx context.Context, opts GCOptions) (*GCReport, error) {
	if r.driver == nil {
		return nil, errors.New("registry: storage is not ready yet; try again")
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGCGrace
	}
	if opts.Grace < 0 {
		return nil, fmt.Errorf("registry: the grace period %s is negative", opts.Grace)
	}
	cli := r.cfg.Store.Client()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(gcLeaseTTL), concurrency.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	mu := concurrency.NewMutex(sess, r.cfg.Store.Prefix()+gcPrefix+"lock")
	if err := mu.Lock(ctx); err != nil {
		return nil, fmt.Errorf("registry: waiting for another collection: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = mu.Unlock(uctx)
	}()
	rep := &GCReport{DryRun: opts.DryRun, Grace: opts.Grace.String(), Deleted: []GCBlob{}}
	start := time.Now()
	// R: every hold taken from here on touches its digests after R.
	put, err := cli.Put(ctx, r.cfg.Store.Prefix()+gcPrefix+"mark", strconv.FormatInt(start.UnixNano(), 10))
	if err != nil {
		return nil, err
	}
	markRev := put.Header.Revision
	if err := r.waitInflight(ctx, markRev); err != nil {
		return nil, err
	}
	// The clock cut-off is taken after the wait, so a blob written by a
	// hold that just ended is younger than it.
	cutoff := time.Now().Add(-opts.Grace)
	s, err := r.scan(ctx, false)
	if err != nil {
		return nil, err
	}
	blobs, err := r.listBlobs(ctx)
	if err != nil {
		return nil, err
	}
	touched, err := r.touches(ctx)
	if err != nil {
		return nil, err
	}
	rep.Repositories, rep.Manifests, rep.Blobs = len(s.repos), len(s.revisions), len(blobs)
	var candidates []GCBlob
	for d, b := range blobs {
		if s.marked[d] {
			rep.Marked++
			continue
		}
		t := touched[d]
		if b.written.After(cutoff) || t.at.After(cutoff) || t.rev >= markRev {
			rep.Spared++
			continue
		}
		candidates = append(candidates, GCBlob{Digest: d, Size: b.size, LastWritten: b.written.UTC(), LastTouched: t.at.UTC(), Repositories: s.layers[d]})
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].Digest < candidates[j].Digest })
	rep.MarkTime = time.Since(start)
	sweep := time.Now()
	if opts.DryRun {
		for _, c := range candidates {
			rep.Deleted = append(rep.Deleted, c)
			rep.BytesFreed += c.Size
		}
	}
	for start := 0; !opts.DryRun && start < len(candidates); start += gcSweepBatch {
		batch := candidates[start:min(start+gcSweepBatch, len(candidates))]
		swept, err := r.sweepBlobs(ctx, sess, markRev, batch)
		for i, ok := range swept {
			if ok {
				rep.Deleted = append(rep.Deleted, batch[i])
				rep.BytesFreed += batch[i].Size
			} else {
				rep.Rereferenced++
			}
		}
		if err != nil {
			rep.SweepTime = time.Since(sweep)
			return rep, err
		}
	}
	rep.SweepTime = time.Since(sweep)
	return rep, nil
}

// gcInflightWait bounds how long a collection waits for the holds taken
// before it started; a hold lasts as long as one write, and a crashed
// registry's holds go with its lease.
const gcInflightWait = 2 * time.Minute

// waitInflight waits until every hold taken before rev has ended. (Not
// WithCountOnly: etcd counts before it filters by creation revision, and
// the holds taken since would keep the count above zero.)
func (r *Registry) waitInflight(ctx context.Context, rev int64) error {
	cli := r.cfg.Store.Client()
	prefix := r.gcKey("inflight", "")
	deadline := time.Now().Add(gcInflightWait)
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithMaxCreateRev(rev-1))
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry: %d pushes that started before this collection have not finished after %s (the first holds %s); nothing was deleted, try again", len(resp.Kvs), gcInflightWait, resp.Kvs[0].Value)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("registry: waiting for %d pushes in progress: %w", len(resp.Kvs), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// gcSweepBatch is how many blobs one tombstone transaction covers.
const gcSweepBatch = 50

// gcWorkers is how many storage reads or deletes a collection has in
// flight.
const gcWorkers = 8

// sweepBlobs tombstones the blobs no hold touched since markRev, then
// deletes their bytes and every layer link to them, then drops the
// tombstones and touch keys. It reports, per blob, whether it was deleted
// (false: a push got there first). The tombstones of a batch are written
// in one transaction when no blob of it was touched, else one by one.
func (r *Registry) sweepBlobs(ctx context.Context, sess *concurrency.Session, markRev int64, batch []GCBlob) ([]bool, error) {
	cli := r.cfg.Store.Client()
	tombOps := func(bs []GCBlob) (cmps []clientv3.Cmp, puts []clientv3.Op) {
		for _, b := range bs {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(r.gcKey("touch", b.Digest)), "<", markRev))
			puts = append(puts, clientv3.OpPut(r.gcKey("tomb", b.Digest), "", clientv3.WithLease(sess.Lease())))
		}
		return
	}
	swept := make([]bool, len(batch))
	cmps, puts := tombOps(batch)
	resp, err := cli.Txn(ctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		for i := range swept {
			swept[i] = true
		}
	} else {
		for i, b := range batch {
			c, p := tombOps([]GCBlob{b})
			resp, err := cli.Txn(ctx).If(c...).Then(p...).Commit()
			if err != nil {
				return nil, err
			}
			swept[i] = resp.Succeeded
		}
	}
	// Deleted by a few workers: each delete waits on the storage.
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	sem := make(chan struct{}, gcWorkers)
	for i, b := range batch {
		if !swept[i] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var missing storagedriver.PathNotFoundError
			d := digest.Digest(b.Digest)
			for _, repo := range b.Repositories {
				p := repositoriesRoot + repo + "/_layers/" + d.Algorithm().String() + "/" + d.Encoded()
				if err := r.driver.Delete(ctx, p); err != nil && !errors.As(err, &missing) {
					errs[i] = fmt.Errorf("registry: removing the link to %s in %s: %w", d, repo, err)
					return
				}
			}
			dir := strings.TrimSuffix(blobDataPath(d), "/data")
			if err := r.driver.Delete(ctx, dir); err != nil && !errors.As(err, &missing) {
				errs[i] = fmt.Errorf("registry: removing blob %s: %w", d, err)
			}
		}()
	}
	wg.Wait()
	var done []clientv3.Op
	var firstErr error
	for i, b := range batch {
		if !swept[i] {
			continue
		}
		if errs[i] != nil {
			// Left tombstoned until the session ends; deleted by the
			// next collection.
			swept[i] = false
			if firstErr == nil {
				firstErr = errs[i]
			}
			continue
		}
		// The touch key goes with the tombstone: the blob is gone, and a
		// push of it later starts afresh.
		done = append(done, clientv3.OpDelete(r.gcKey("tomb", b.Digest)), clientv3.OpDelete(r.gcKey("touch", b.Digest)))
	}
	for len(done) > 0 {
		n := min(len(done), 100)
		if _, err := cli.Txn(ctx).Then(done[:n]...).Commit(); err != nil {
			return swept, err
		}
		done = done[n:]
	}
	return swept, firstErr
}

// BlobHolder is one thing that keeps a blob.
type BlobHolder struct {
	Kind string `json:"kind"` // Manifest, Tag, LayerLink, RecentPush
	Name string `json:"name"`
	// Via is the manifest through which a tag holds the blob.
	Via string `json:"via,omitempty"`
}

// BlobWhy answers "why is this blob still here?".
type BlobWhy struct {
	Digest  string       `json:"digest"`
	Stored  bool         `json:"stored"`
	Size    int64        `json:"size,omitempty"`
	Holders []BlobHolder `json:"holders"`
	// Verdict says what the next collection does with it.
	Verdict string `json:"verdict"`
}

// WhyBlob names the holders of a blob (or manifest) digest: the manifests
// that reference it and the tags (history entries) that hold those
// manifests, the repositories that link it, and a recent push.
func (r *Registry) WhyBlob(ctx context.Context, dgst string, grace time.Duration) (*BlobWhy, error) {
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, fmt.Errorf("%q is not a digest (sha256:…): %w", dgst, err)
	}
	if r.driver == nil {
		return nil, errors.New("registry: storage is not ready yet; try again")
	}
	if grace == 0 {
		grace = DefaultGCGrace
	}
	s, err := r.scan(ctx, true)
	if err != nil {
		return nil, err
	}
	w := &BlobWhy{Digest: d.String(), Holders: []BlobHolder{}}
	fi, err := r.driver.Stat(ctx, blobDataPath(d))
	if err == nil {
		w.Stored, w.Size = true, fi.Size()
	}
	var manifests []string
	if len(s.revisions[d.String()]) > 0 {
		manifests = append(manifests, d.String())
	}
	manifests = append(manifests, s.refs[d.String()]...)
	seen := map[string]bool{}
	for _, m := range manifests {
		for _, repo := range s.revisions[m] {
			if seen[repo+"@"+m] {
				continue
			}
			seen[repo+"@"+m] = true
			w.Holders = append(w.Holders, BlobHolder{Kind: "Manifest", Name: repo + "@" + m})
			project, stream, _ := strings.Cut(repo, "/")
			o, ok := r.streams.Get(project, stream)
			if !ok {
				continue
			}
			for _, tg := range o.(*api.ImageStream).Status.Tags {
				for i, ev := range tg.Items {
					if ev.Image == m {
						w.Holders = append(w.Holders, BlobHolder{Kind: "Tag", Name: fmt.Sprintf("%s:%s (history entry %d of %d)", repo, tg.Tag, i+1, len(tg.Items)), Via: m})
					}
				}
			}
		}
	}
	for _, repo := range s.layers[d.String()] {
		w.Holders = append(w.Holders, BlobHolder{Kind: "LayerLink", Name: repo})
	}
	resp, err := r.cfg.Store.Client().Get(ctx, r.gcKey("touch", d.String()))
	if err != nil {
		return nil, err
	}
	var last time.Time
	if len(resp.Kvs) > 0 {
		ns, _ := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
		last = time.Unix(0, ns)
	}
	if fi != nil && fi.ModTime().After(last) {
		last = fi.ModTime()
	}
	recent := !last.IsZero() && time.Since(last) < grace
	if recent {
		w.Holders = append(w.Holders, BlobHolder{Kind: "RecentPush", Name: fmt.Sprintf("pushed or referenced at %s, within the grace period %s", last.UTC().Format(time.RFC3339), grace)})
	}
	switch {
	case !w.Stored:
		w.Verdict = "not stored: nothing to collect"
	case s.marked[d.String()]:
		w.Verdict = "kept: a manifest that a repository links references it; prune the image (slipway adm prune images) to release it"
	case recent:
		w.Verdict = "kept for now: unreferenced, but within the grace period; a collection after " + last.Add(grace).UTC().Format(time.RFC3339) + " deletes it"
	default:
		w.Verdict = "unreferenced: the next collection deletes it"
	}
	return w, nil
}
