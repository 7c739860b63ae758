package registry

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/schema2"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
)

// The manifest GET fast path. A plain GET or HEAD of a manifest, by tag or
// sha256 digest, that has passed the edge's authentication and
// authorization (ServeHTTP decides exactly as for any other request, before
// this is reached) is answered from memory with the bytes and headers
// distribution would send, when:
//
//   - the bytes of that digest in that repository are cached (filled by a
//     manifest PUT through this registry, or by the first GET that
//     distribution answered);
//   - for a tag, the image-stream cache names the tag's digest (tag reads
//     come from there on the slow path too: tags.Get);
//   - the repository still links that digest: distribution's revision
//     link in the shared storage is looked at on every request (a stat of
//     its path, or, on filesystem storage once the link file has been
//     quiet for a while, an fstat of the link file held open, trusted
//     only while its inode is unchanged: see linked);
//   - the Accept header lets distribution answer the stored media type as
//     it is (no conversion, no MANIFEST_UNKNOWN for an unaccepted type), and
//     there is no If-None-Match.
//
// Everything else (sha512, referrers, conversions, conditional requests,
// errors, misses) goes to distribution unchanged.
//
// Staleness across replicas. Content under a digest never changes, so a
// cached entry can only become wrong by the digest leaving the repository
// (manifest delete, project deletion on any replica): the per-request look
// at the revision link sees that at once, on every replica, because the
// storage is shared. A held link file sees it too: the delete unlinks
// that very inode, which changes its link count and its ctime. Which
// digest a tag names comes from the image-stream informer, as on the slow
// path, so a tag move or delete on another replica is seen here exactly
// when this replica's uncached GETs would see it: after the etcd watch
// delivers it (the replica that moved the tag waits for its own informer
// before answering the push, so it sees it at once). The fast path adds
// no staleness of its own.

// maxManifestCache bounds the cached manifest bytes (LRU by bytes).
const maxManifestCache = 64 << 20

// maxCachedManifest is the largest manifest kept; distribution accepts up
// to 4 MiB.
const maxCachedManifest = 4 << 20

// manifestKey names a manifest in a repository.
type manifestKey struct{ repo, dgst string }

type manifestEntry struct {
	key       manifestKey
	mediaType string
	body      []byte
	hdr       http.Header // prebuilt, shared: copied into each response
	// link is the revision link file, held open once the entry is read
	// (filesystem storage only; see linked). Set and cleared under the
	// cache's lock, while the entry is in the cache; read without it.
	link atomic.Pointer[heldLink]
}

type manifestCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	lru   *list.List // of *manifestEntry, most recent first
	items map[manifestKey]*list.Element
	held  int          // entries holding their link file open
	hits  atomic.Int64 // requests answered from the cache, for tests
}

func newManifestCache(max int64) *manifestCache {
	return &manifestCache{max: max, lru: list.New(), items: map[manifestKey]*list.Element{}}
}

func (c *manifestCache) get(repo, dgst string) *manifestEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[manifestKey{repo, dgst}]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(el)
	return el.Value.(*manifestEntry)
}

// put caches body as the manifest dgst of repo. The caller has checked
// that body hashes to dgst.
func (c *manifestCache) put(repo, dgst, mediaType string, body []byte) {
	if int64(len(body)) > c.max || len(body) > maxCachedManifest {
		return
	}
	e := &manifestEntry{key: manifestKey{repo, dgst}, mediaType: mediaType, body: body, hdr: http.Header{
		// As distribution's GetManifest and its configured headers
		// (New: X-Content-Type-Options) send them.
		"Content-Type":           {mediaType},
		"Content-Length":         {strconv.Itoa(len(body))},
		"Docker-Content-Digest":  {dgst},
		"Etag":                   {`"` + dgst + `"`},
		"X-Content-Type-Options": {"nosniff"},
		apiVersionHeader:         apiVersion,
	}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.drop(el)
	}
	c.items[e.key] = c.lru.PushFront(e)
	c.size += int64(len(body))
	for c.size > c.max {
		c.drop(c.lru.Back())
	}
}

// drop removes an entry, and closes its link file. c.mu is held.
func (c *manifestCache) drop(el *list.Element) {
	e := el.Value.(*manifestEntry)
	c.lru.Remove(el)
	delete(c.items, e.key)
	c.size -= int64(len(e.body))
	if h := e.link.Swap(nil); h != nil {
		c.held--
		h.f.Close()
	}
}

func (c *manifestCache) remove(repo, dgst string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[manifestKey{repo, dgst}]; ok {
		c.drop(el)
	}
}

// removeProject drops every entry of the project's repositories.
func (c *manifestCache) removeProject(project string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, el := range c.items {
		if strings.HasPrefix(k.repo, project+"/") {
			c.drop(el)
		}
	}
}

// purge drops every entry.
func (c *manifestCache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range c.items {
		c.drop(el)
	}
}

func (c *manifestCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// cacheableTypes are the media types whose stored bytes distribution
// serves as they are.
var cacheableTypes = map[string]bool{
	schema2.MediaTypeManifest:          true,
	manifestlist.MediaTypeManifestList: true,
	v1.MediaTypeImageManifest:          true,
	v1.MediaTypeImageIndex:             true,
}

// acceptServes reports whether distribution's GetManifest, given these
// Accept headers, answers a stored manifest of mediaType with its own
// bytes. It parses Accept as GetManifest does. It is stricter than
// distribution where that is simpler (an OCI index needs its type
// accepted), which only sends more requests down the slow path.
func acceptServes(accept []string, mediaType string, byTag bool) bool {
	switch mediaType {
	case schema2.MediaTypeManifest:
		return true
	case manifestlist.MediaTypeManifestList:
		if !byTag {
			return true
		}
	case v1.MediaTypeImageManifest, v1.MediaTypeImageIndex:
	default:
		return false
	}
	for _, h := range accept {
		for mt := range strings.SplitSeq(h, ",") {
			// A bare type is what clients send, and what ParseMediaType
			// would make of it anyway; the parse allocates.
			if strings.TrimSpace(mt) == mediaType {
				return true
			}
			if mt, _, err := mime.ParseMediaType(mt); err == nil && mt == mediaType {
				return true
			}
		}
	}
	return false
}

// revisionLink is where distribution records that repo has manifest dgst
// (sha256:hex).
func revisionLink(repo, dgst string) string {
	alg, hx, _ := strings.Cut(dgst, ":")
	return repositoriesRoot + repo + "/_manifests/revisions/" + alg + "/" + hx + "/link"
}

// linked reports whether e's repository links its manifest now, as
// distribution's manifest Get finds out, from the shared storage.
//
// On filesystem storage it asks the file system directly (the driver's
// own Stat, with path checks, tracing and a semaphore, cost as much again
// as the stat itself). The first time, it opens the link file by its path,
// and keeps it open with the entry (up to maxHeldLinks); later requests
// fstat the open file, which costs a sixth of a stat of the fifteen-part
// path, and believe it only while the file's inode is exactly as it was
// when found by its path: still linked (nlink > 0) and its ctime
// unchanged. Removing the link (a manifest delete on any replica, a
// project's deletion, the collector, a repository removed and made
// again) unlinks that inode, and any link, unlink or rename of it changes
// its ctime; then the path is asked again. So a held file says "linked"
// only of the very file the path named, still named: what a stat of the
// path would say, given that nothing renames a repository's directories
// without removing them (nothing in Slipway or distribution does). On NFS
// both ask the client's attribute cache, alike.
func (r *Registry) linked(ctx context.Context, e *manifestEntry) bool {
	repo, dgst := e.key.repo, e.key.dgst
	if r.fsRoot == "" {
		_, err := r.driver.Stat(ctx, revisionLink(repo, dgst))
		return err == nil
	}
	if h := e.link.Load(); h != nil {
		if h.unchanged() {
			return true
		}
		r.manifests.unhold(e, h)
	}
	p := filepath.Join(r.fsRoot, revisionLink(repo, dgst))
	fi, err := os.Stat(p)
	if err != nil || fi.IsDir() {
		return false
	}
	if r.manifests.mayHold(e, fi) {
		if f, err := os.Open(p); err == nil && !r.manifests.hold(e, f, fi) {
			f.Close()
		}
	}
	return true
}

// maxHeldLinks bounds the link files held open; entries beyond it are
// checked by their path on every request.
const maxHeldLinks = 1024

// quietFor is how long a link file's inode must have been unchanged
// before it is held: a change in the same tick of the file system's
// coarse clock could leave its ctime as it was.
const quietFor = 2 * time.Second

// heldLink is an open revision link file and what it was when found by
// its path.
type heldLink struct {
	f        *os.File
	dev, ino uint64
	ctime    syscall.Timespec
}

// unchanged reports whether the file is still linked and its inode
// untouched since it was found by its path.
func (h *heldLink) unchanged() bool {
	fi, err := h.f.Stat() // holds the descriptor while in use: a concurrent Close waits
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink > 0 && uint64(st.Dev) == h.dev && st.Ino == h.ino && st.Ctim == h.ctime
}

// mayHold reports whether e's link file, found to be fi, is worth
// opening to hold: it has been quiet for quietFor, e holds none and fewer
// than maxHeldLinks are held.
func (c *manifestCache) mayHold(e *manifestEntry, fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || time.Since(time.Unix(st.Ctim.Unix())) < quietFor || e.link.Load() != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held < maxHeldLinks
}

// hold keeps f, just opened by the path that was found to be fi, open
// with e, if it is the same inode, unchanged, and e is still cached and
// holds none; it reports whether it kept f.
func (c *manifestCache) hold(e *manifestEntry, f *os.File, fi os.FileInfo) bool {
	was, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	h := &heldLink{f: f, dev: uint64(was.Dev), ino: was.Ino, ctime: was.Ctim}
	if !h.unchanged() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; !ok || el.Value != e || c.held >= maxHeldLinks || e.link.Load() != nil {
		return false
	}
	e.link.Store(h)
	c.held++
	return true
}

// unhold closes h, if it is still e's.
func (c *manifestCache) unhold(e *manifestEntry, h *heldLink) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e.link.CompareAndSwap(h, nil) {
		c.held--
		h.f.Close()
	}
}

// isSHA256 reports whether d is a well-formed sha256 digest.
func isSHA256(d string) bool {
	hx, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hx) != 64 {
		return false
	}
	for i := 0; i < len(hx); i++ {
		if c := hx[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// serveManifestFast answers an authorized manifest GET or HEAD from the
// cache, or reports false having written nothing.
func (r *Registry) serveManifestFast(w http.ResponseWriter, req *http.Request, rt route) bool {
	if r.manifests == nil || r.driver == nil || len(req.Header["If-None-Match"]) > 0 {
		return false
	}
	dgst, byTag := rt.reference, false
	if !isSHA256(dgst) {
		if strings.Contains(dgst, ":") {
			return false // sha512, or anything else distribution decides
		}
		project, stream, _ := strings.Cut(rt.name, "/")
		o, ok := r.streams.Get(project, stream)
		if !ok {
			return false
		}
		ev, ok := imagestreams.Latest(o.(*api.ImageStream), rt.reference)
		if !ok || !isSHA256(ev.Image) {
			return false
		}
		dgst, byTag = ev.Image, true
	}
	e := r.manifests.get(rt.name, dgst)
	if e == nil || !acceptServes(req.Header["Accept"], e.mediaType, byTag) {
		return false
	}
	if !r.linked(req.Context(), e) {
		// Deleted here or on another replica (or storage trouble):
		// distribution answers.
		r.manifests.remove(rt.name, dgst)
		return false
	}
	r.manifests.hits.Add(1)
	h := w.Header()
	for k, v := range e.hdr {
		h[k] = v
	}
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_, _ = w.Write(e.body)
	}
	return true
}

// fillOnRead wraps the response to a manifest GET that distribution
// answers, so that a 200 with a cacheable manifest is cached. What is
// cached is exactly what distribution sent, checked against its digest.
func (r *Registry) fillOnRead(w http.ResponseWriter, req *http.Request, rt route) (http.ResponseWriter, func()) {
	if r.manifests == nil || req.Method != http.MethodGet || len(req.Header["If-None-Match"]) > 0 ||
		(strings.Contains(rt.reference, ":") && !isSHA256(rt.reference)) {
		return w, func() {}
	}
	c := &captureWriter{ResponseWriter: w}
	return c, func() {
		if c.code != http.StatusOK || c.over {
			return
		}
		h := w.Header()
		mt, dgst := h.Get("Content-Type"), h.Get("Docker-Content-Digest")
		if !cacheableTypes[mt] || !isSHA256(dgst) || h.Get("Content-Length") != strconv.Itoa(c.buf.Len()) {
			return
		}
		body := bytes.Clone(c.buf.Bytes())
		if sum := sha256.Sum256(body); "sha256:"+hex.EncodeToString(sum[:]) != dgst {
			return
		}
		r.manifests.put(rt.name, dgst, mt, body)
	}
}

// captureWriter keeps a copy of what is written, up to maxCachedManifest.
type captureWriter struct {
	http.ResponseWriter
	code int
	buf  bytes.Buffer
	over bool
}

func (c *captureWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	if !c.over {
		if c.buf.Len()+len(b) > maxCachedManifest {
			c.over = true
			c.buf = bytes.Buffer{}
		} else {
			c.buf.Write(b)
		}
	}
	return c.ResponseWriter.Write(b)
}

func (c *captureWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *captureWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// fillOnPush caches a manifest just stored by a PUT through this registry,
// when its bytes name their media type (so a GET's Content-Type is that
// type; distribution decides by the same field).
func (r *Registry) fillOnPush(repo, dgst, mediaType string, payload []byte) {
	if r.manifests == nil || !cacheableTypes[mediaType] || !isSHA256(dgst) {
		return
	}
	var v struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	if json.Unmarshal(payload, &v) != nil || v.SchemaVersion != 2 || v.MediaType != mediaType {
		return
	}
	if sum := sha256.Sum256(payload); "sha256:"+hex.EncodeToString(sum[:]) != dgst {
		return
	}
	r.manifests.put(repo, dgst, mediaType, bytes.Clone(payload))
}
