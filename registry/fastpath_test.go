package registry_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"slipway.dev/slipway/registry"
)

// sameAnswer fails unless two answers agree in status, body and every
// header but Date.
func sameAnswer(t *testing.T, what string, got, want resp) {
	t.Helper()
	if got.code != want.code || !bytes.Equal(got.body, want.body) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
	g, w := got.header.Clone(), want.header.Clone()
	g.Del("Date")
	w.Del("Date")
	keys := func(h http.Header) []string {
		var out []string
		for k, v := range h {
			out = append(out, k+": "+strings.Join(v, ", "))
		}
		sort.Strings(out)
		return out
	}
	if !slices.Equal(keys(g), keys(w)) {
		t.Errorf("%s: headers differ:\n got  %q\n want %q", what, keys(g), keys(w))
	}
}

// slowGet asks distribution itself: a non-matching If-None-Match is
// ignored by distribution and never answered from the cache.
func (h *harness) slowGet(t *testing.T, u, method, repo, ref, accept string) resp {
	t.Helper()
	return h.do(t, req{method: method, path: "/v2/" + repo + "/manifests/" + ref, user: u,
		header: http.Header{"Accept": {accept}, "If-None-Match": {`"no-such-etag"`}}})
}

func (h *harness) getAs(t *testing.T, u, method, repo, ref, accept string) resp {
	t.Helper()
	return h.do(t, req{method: method, path: "/v2/" + repo + "/manifests/" + ref, user: u, header: http.Header{"Accept": {accept}}})
}

func (h *harness) hits() int64 { return registry.FastPathHits(h.env.Server.Registry) }

// quiet waits until nothing else has been answered from the manifest cache
// for two seconds: the scanner reads each pushed image's manifest through
// the registry soon after the push, and its hits would be counted with the
// test's own.
func (h *harness) quiet(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	last, since := h.hits(), time.Now()
	for time.Since(since) < 2*time.Second {
		if time.Now().After(deadline) {
			t.Fatalf("the manifest cache kept being read by something other than the test for 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
		if n := h.hits(); n != last {
			last, since = n, time.Now()
		}
	}
}

// TestManifestFastPath shows that the cached answer to a manifest GET or
// HEAD is distribution's answer, byte for byte and header for header, for
// Docker and OCI manifests and indexes, by tag and by digest, whether the
// cache was filled by the push or by the first read; and that tag moves,
// deletes and deletes behind the registry's back are seen at once.
func TestManifestFastPath(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "fast", false)
	auth := ggcrAuth(t, h, "alice")
	opts := []remote.Option{remote.WithAuth(auth), remote.WithContext(ctxT(t))}

	dockerImg := randomImage(t)
	ociImg := mutate.ConfigMediaType(mutate.MediaType(randomImage(t), types.OCIManifestSchema1), types.OCIConfigJSON)
	ociIdx, err := random.Index(128, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	dockerList := mutate.IndexMediaType(ociIdx, types.DockerManifestList)
	type pushed struct {
		name, repo, tag, dgst, accept string
	}
	var all []pushed
	for _, c := range []struct {
		name   string
		img    v1.Image
		idx    v1.ImageIndex
		accept string
	}{
		{name: "docker", img: dockerImg, accept: manifestAccept},
		{name: "oci", img: ociImg, accept: manifestAccept},
		{name: "ociindex", idx: ociIdx, accept: manifestAccept},
		{name: "dockerlist", idx: dockerList, accept: manifestAccept},
		// Only what the type needs: distribution serves a Docker
		// manifest whatever the client accepts.
		{name: "dockeronly", img: randomImage(t), accept: "application/json"},
	} {
		repo := "fast/" + c.name
		var d v1.Hash
		if c.img != nil {
			d = mustDigest(t, c.img.Digest)
			err = remote.Write(h.ref(t, repo+":v1"), c.img, opts...)
		} else {
			d = mustDigest(t, c.idx.Digest)
			err = remote.WriteIndex(h.ref(t, repo+":v1"), c.idx, opts...)
		}
		if err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		all = append(all, pushed{c.name, repo, "v1", d.String(), c.accept})
	}

	// Filled by the push.
	h.quiet(t)
	for _, p := range all {
		for _, ref := range []string{p.tag, p.dgst} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				what := method + " " + p.repo + "/manifests/" + ref
				before := h.hits()
				fast := h.getAs(t, "alice", method, p.repo, ref, p.accept)
				if h.hits() != before+1 {
					t.Errorf("%s after the push: not answered from the cache (hits %d → %d)", what, before, h.hits())
				}
				if fast.code != http.StatusOK {
					t.Errorf("%s: got %v, want 200", what, fast)
				}
				slow := h.slowGet(t, "alice", method, p.repo, ref, p.accept)
				sameAnswer(t, what+" (filled by the push)", fast, slow)
			}
		}
	}
	// Filled by the first read.
	for _, p := range all {
		for _, ref := range []string{p.tag, p.dgst} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				what := method + " " + p.repo + "/manifests/" + ref
				slow := h.slowGet(t, "alice", method, p.repo, ref, p.accept)
				registry.PurgeManifestCache(h.env.Server.Registry)
				first := h.getAs(t, "alice", method, p.repo, ref, p.accept)
				if method == http.MethodHead {
					// HEAD does not fill; a GET does.
					h.getAs(t, "alice", http.MethodGet, p.repo, ref, p.accept)
				}
				before := h.hits()
				fast := h.getAs(t, "alice", method, p.repo, ref, p.accept)
				if h.hits() != before+1 {
					t.Errorf("%s after a read: not answered from the cache", what)
				}
				sameAnswer(t, what+" (first, uncached)", first, slow)
				sameAnswer(t, what+" (filled by a read)", fast, slow)
			}
		}
	}

	// An OCI manifest asked for by a client that does not accept OCI:
	// distribution's MANIFEST_UNKNOWN, not the cached bytes.
	oci := all[1]
	sameAnswer(t, "OCI manifest to a Docker-only client",
		h.getAs(t, "alice", http.MethodGet, oci.repo, oci.tag, "application/vnd.docker.distribution.manifest.v2+json"),
		h.slowGet(t, "alice", http.MethodGet, oci.repo, oci.tag, "application/vnd.docker.distribution.manifest.v2+json"))
	// A Docker manifest list by tag to a client that accepts only Docker
	// manifests: distribution answers the linux/amd64 child (or nothing);
	// the cache must not answer the list.
	list := all[3]
	sameAnswer(t, "manifest list to a Docker-manifest-only client",
		h.getAs(t, "alice", http.MethodGet, list.repo, list.tag, "application/vnd.docker.distribution.manifest.v2+json"),
		h.slowGet(t, "alice", http.MethodGet, list.repo, list.tag, "application/vnd.docker.distribution.manifest.v2+json"))

	// A tag move is seen at once.
	repo := all[0].repo
	h.getManifest(t, "alice", repo, "v1")
	next := randomImage(t)
	nextDigest := h.pushOK(t, "alice", repo+":v1", next)
	if r := h.getManifest(t, "alice", repo, "v1"); r.code != http.StatusOK || r.header.Get("Docker-Content-Digest") != nextDigest || !bytes.Equal(r.body, rawManifest(t, next)) {
		t.Errorf("GET %s:v1 after the tag moved to %s: got %v (digest %s)", repo, nextDigest, r, r.header.Get("Docker-Content-Digest"))
	}

	// A tag deleted is gone at once.
	h.getManifest(t, "alice", repo, "v1")
	if r := h.do(t, req{method: http.MethodDelete, path: "/v2/" + repo + "/manifests/v1", user: "alice"}); r.code != http.StatusAccepted {
		t.Fatalf("DELETE tag %s:v1: got %v, want 202", repo, r)
	}
	if r := h.getManifest(t, "alice", repo, "v1"); r.code != http.StatusNotFound {
		t.Errorf("GET %s:v1 after the tag was deleted: got %v, want 404", repo, r)
	}

	// A manifest deleted answers 404 at once, by digest and by tag.
	del := all[1]
	h.getManifest(t, "alice", del.repo, del.dgst)
	if r := h.do(t, req{method: http.MethodDelete, path: "/v2/" + del.repo + "/manifests/" + del.dgst, user: "alice"}); r.code != http.StatusAccepted {
		t.Fatalf("DELETE %s@%s: got %v, want 202", del.repo, del.dgst, r)
	}
	for _, ref := range []string{del.dgst, del.tag} {
		r := h.getManifest(t, "alice", del.repo, ref)
		if r.code != http.StatusNotFound {
			t.Errorf("GET %s/manifests/%s after the manifest was deleted: got %v, want 404", del.repo, ref, r)
		}
		sameAnswer(t, "deleted "+ref, r, h.slowGet(t, "alice", http.MethodGet, del.repo, ref, manifestAccept))
	}

	// Another replica deleting the manifest removes distribution's
	// revision link in the shared storage; this replica never hears of
	// it but must answer 404 at once. Removing the link by hand is what
	// that replica's delete does to the storage. The fast path holds a
	// link file open once it has been quiet for QuietFor, and checks the
	// open file: so each case runs with the link file held too, and with
	// the link file also hard-linked elsewhere (as by a backup made with
	// cp -al or rsync --link-dest), where the inode stays linked.
	revDir := func(p pushed) string {
		return filepath.Join(h.env.DataDir, "registry", "storage", "docker", "registry", "v2", "repositories", p.repo,
			"_manifests", "revisions", "sha256", strings.TrimPrefix(p.dgst, "sha256:"))
	}
	backup := t.TempDir()
	for i, c := range []struct {
		what     string
		p        pushed
		held     bool
		hardlink bool
	}{
		{what: "unheld", p: all[2]},
		{what: "held", p: all[3], held: true},
		{what: "held and hard-linked elsewhere", p: all[4], held: true, hardlink: true},
	} {
		gone := c.p
		if !c.held {
			// A link file changed just now is not held.
			now := time.Now()
			if err := os.Chtimes(filepath.Join(revDir(gone), "link"), now, now); err != nil {
				t.Fatal(err)
			}
		} else if i == 1 {
			time.Sleep(registry.QuietFor + time.Second)
		}
		for range 2 {
			if r := h.getAs(t, "alice", http.MethodGet, gone.repo, gone.dgst, gone.accept); r.code != http.StatusOK {
				t.Fatalf("%s: GET %s@%s: got %v", c.what, gone.repo, gone.dgst, r)
			}
		}
		if held := registry.LinkHeld(h.env.Server.Registry, gone.repo, gone.dgst); held != c.held {
			t.Fatalf("%s: link file held open: %v, want %v", c.what, held, c.held)
		}
		if c.hardlink {
			if err := os.Link(filepath.Join(revDir(gone), "link"), filepath.Join(backup, strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
			// A backup made long before the delete: the link file's
			// ctime moved with the new name, and the fast path looked
			// at the file since.
			time.Sleep(registry.QuietFor + time.Second)
			before := h.hits()
			if r := h.getAs(t, "alice", http.MethodGet, gone.repo, gone.dgst, gone.accept); r.code != http.StatusOK || h.hits() != before+1 {
				t.Fatalf("%s: GET %s@%s after the backup: got %v, from the cache: %v", c.what, gone.repo, gone.dgst, r, h.hits() == before+1)
			}
		}
		if err := os.RemoveAll(revDir(gone)); err != nil {
			t.Fatal(err)
		}
		for _, ref := range []string{gone.dgst, gone.tag} {
			if r := h.getAs(t, "alice", http.MethodGet, gone.repo, ref, gone.accept); r.code != http.StatusNotFound {
				t.Errorf("%s: GET %s/manifests/%s after another replica deleted it: got %v, want 404", c.what, gone.repo, ref, r)
			}
		}
	}
	// Nothing holds a removed link file of this server open (other
	// tests' servers, in this process, have their own).
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if p, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(p, h.env.DataDir+"/") && strings.Contains(p, "/_manifests/revisions/") && strings.HasSuffix(p, " (deleted)") {
			t.Errorf("a removed link file is still held open: %s", p)
		}
	}
}

func mustDigest(t *testing.T, f func() (v1.Hash, error)) v1.Hash {
	t.Helper()
	d, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestManifestFastPathAuthorization shows that a cached manifest is still
// authorized per request: a token for another repository, an expired
// token that verified (and was cached) before, anonymous users and users
// of other projects are refused as on the slow path.
func TestManifestFastPathAuthorization(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "fa", false)
	h.project(t, "bob", "fb", false)
	dgst := h.pushOK(t, "alice", "fa/app:v1", randomImage(t))
	h.pushOK(t, "alice", "fa/other:v1", randomImage(t))
	const repo = "fa/app"
	if r := h.getManifest(t, "alice", repo, "v1"); r.code != http.StatusOK {
		t.Fatalf("GET as alice: %v", r)
	}
	h.quiet(t)
	before := h.hits()
	if r := h.getManifest(t, "alice", repo, "v1"); r.code != http.StatusOK || h.hits() != before+1 {
		t.Fatalf("GET as alice: %v, from the cache: %v", r, h.hits() == before+1)
	}

	for _, ref := range []string{"v1", dgst} {
		h.challengeOK(t, "anonymous GET "+ref, h.getManifest(t, "", repo, ref))
		if r := h.getManifest(t, "bob", repo, ref); r.code != http.StatusForbidden {
			t.Errorf("GET %s as bob (another project): got %v, want 403", ref, r)
		}
		other := h.registryToken(t, "alice", "repository:fa/other:pull")
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/" + ref, bearer: other, header: http.Header{"Accept": {manifestAccept}}}); r.code != http.StatusForbidden {
			t.Errorf("GET %s with a token for fa/other: got %v, want 403", ref, r)
		}
	}

	// A token signed with the registry's own key, valid now only thanks
	// to the 5 s leeway for clock skew: it verifies and is cached, and
	// once past its expiry it is refused although it is cached.
	kid, key := newestKey(t, filepath.Join(h.env.DataDir, "registry", "token-keys"))
	exp := time.Now().Add(-2 * time.Second).Truncate(time.Second)
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": "slipway", "aud": []string{"slipway-registry"}, "sub": "alice",
		"iat": exp.Add(-time.Minute).Unix(), "nbf": exp.Add(-time.Minute).Unix(), "exp": exp.Unix(), "jti": "short",
		"access": []map[string]any{{"type": "repository", "name": repo, "actions": []string{"pull"}}},
	})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	get := func() resp {
		return h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/v1", bearer: signed, header: http.Header{"Accept": {manifestAccept}}})
	}
	if r := get(); r.code != http.StatusOK {
		t.Fatalf("GET with a token within its leeway: got %v, want 200", r)
	}
	if r := get(); r.code != http.StatusOK {
		t.Fatalf("GET again with the (now cached) token: got %v, want 200", r)
	}
	time.Sleep(time.Until(exp.Add(6 * time.Second)))
	r := get()
	h.challengeOK(t, "GET with a cached token past its expiry", r)
	if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `error="invalid_token"`) {
		t.Errorf("GET with a cached token past its expiry: challenge %q, want invalid_token", ch)
	}
}

// newestKey reads the registry's current signing key.
func newestKey(t *testing.T, dir string) (string, any) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pem") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatalf("no keys in %s", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, names[len(names)-1]))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(names[len(names)-1], ".pem"), k
}
