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
//   - the repository still links that digest: one Stat of distribution's
//     revision link in the shared storage, per request;
//   - the Accept header lets distribution answer the stored media type as
//     it is (no conversion, no MANIFEST_UNKNOWN for an unaccepted type), and
//     there is no If-None-Match.
//
// Everything else (sha512, referrers, conversions, conditional requests,
// errors, misses) goes to distribution unchanged.
//
// Staleness across replicas. Content under a digest never changes, so a
// cached entry can only become wrong by the digest leaving the repository
// (manifest delete, project deletion on any replica): the per-request Stat
// of the revision link sees that at once, on every replica, because the
// storage is shared. Which digest a tag names comes from the image-stream
// informer, as on the slow path, so a tag move or delete on another
// replica is seen here exactly when that replica's uncached GETs would see
// it: after the etcd watch delivers it (the replica that moved the tag
// waits for its own informer before answering the push, so it sees it at
// once). The fast path adds no staleness of its own.

// maxManifestCache bounds the cached manifest bytes (LRU by bytes).
const maxManifestCache = 64 << 20

// maxCachedManifest is the largest manifest kept; distribution accepts up
// to 4 MiB.
const maxCachedManifest = 4 << 20

type manifestEntry struct {
	key       string // repo + "@" + digest
	mediaType string
	body      []byte
	hdr       http.Header // prebuilt, shared: copied into each response
}

type manifestCache struct {
	mu    sync.Mutex
	max   int64
	size  int64
	lru   *list.List // of *manifestEntry, most recent first
	items map[string]*list.Element
	hits  atomic.Int64 // requests answered from the cache, for tests
}

func newManifestCache(max int64) *manifestCache {
	return &manifestCache{max: max, lru: list.New(), items: map[string]*list.Element{}}
}

func (c *manifestCache) get(repo, dgst string) *manifestEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[repo+"@"+dgst]
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
	e := &manifestEntry{key: repo + "@" + dgst, mediaType: mediaType, body: body, hdr: http.Header{
		// As distribution's GetManifest and its configured headers
		// (New: X-Content-Type-Options) send them.
		"Content-Type":           {mediaType},
		"Content-Length":         {strconv.Itoa(len(body))},
		"Docker-Content-Digest":  {dgst},
		"Etag":                   {`"` + dgst + `"`},
		"X-Content-Type-Options": {"nosniff"},
		apiVersionHeader:         {"registry/2.0"},
	}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.size -= int64(len(el.Value.(*manifestEntry).body))
		c.lru.Remove(el)
	}
	c.items[e.key] = c.lru.PushFront(e)
	c.size += int64(len(body))
	for c.size > c.max {
		el := c.lru.Back()
		old := el.Value.(*manifestEntry)
		c.lru.Remove(el)
		delete(c.items, old.key)
		c.size -= int64(len(old.body))
	}
}

func (c *manifestCache) remove(repo, dgst string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[repo+"@"+dgst]; ok {
		c.lru.Remove(el)
		delete(c.items, repo+"@"+dgst)
		c.size -= int64(len(el.Value.(*manifestEntry).body))
	}
}

// removeProject drops every entry of the project's repositories.
func (c *manifestCache) removeProject(project string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, el := range c.items {
		if strings.HasPrefix(k, project+"/") {
			c.lru.Remove(el)
			delete(c.items, k)
			c.size -= int64(len(el.Value.(*manifestEntry).body))
		}
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

// linked reports whether repo links manifest dgst now, as distribution's
// manifest Get finds out. On filesystem storage it asks the file system
// directly: the driver's own Stat (path checks, tracing, a semaphore)
// cost as much again as the stat itself.
func (r *Registry) linked(ctx context.Context, repo, dgst string) bool {
	p := revisionLink(repo, dgst)
	if r.fsRoot != "" {
		fi, err := os.Stat(filepath.Join(r.fsRoot, p))
		return err == nil && !fi.IsDir()
	}
	_, err := r.driver.Stat(ctx, p)
	return err == nil
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
	if !r.linked(req.Context(), rt.name, dgst) {
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
