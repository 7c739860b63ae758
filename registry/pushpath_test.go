package registry_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"slipway.dev/slipway/registry"
)

// The push path's storage (issue 13 item 5): an upload in progress is
// written in distribution's layout without syncing, what each PATCH
// acknowledged is in the upload's file for the next request, the
// committed blob is whole; and a tag move writes no distribution tag
// link (tags are read from the ImageStream), while every tag operation
// still works.
func TestPushPathStorage(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "pp", false)
	const repo = "pp/app"
	repoDir := filepath.Join(h.env.DataDir, "registry", "storage", "docker", "registry", "v2", "repositories", "pp", "app")

	t.Run("chunked upload", func(t *testing.T) {
		a, b := bytes.Repeat([]byte("a"), 3000), bytes.Repeat([]byte("b"), 1000)
		loc := h.startUpload(t, "alice", repo)
		r := h.patchChunk(t, loc, 0, a)
		loc = r.header.Get("Location")
		id := r.header.Get("Docker-Upload-UUID")
		data := filepath.Join(repoDir, "_uploads", id, "data")
		if got, err := os.ReadFile(data); err != nil || !bytes.Equal(got, a) {
			t.Fatalf("the upload's data file after the first PATCH: %d bytes, %v; want the 3000 bytes acknowledged", len(got), err)
		}
		r = h.patchChunk(t, loc, 3000, b)
		whole := append(append([]byte{}, a...), b...)
		d := sha256Of(whole)
		r = h.do(t, req{method: http.MethodPut, path: h.next(t, r.header.Get("Location"), url.Values{"digest": {d}}), user: "alice"})
		if r.code != http.StatusCreated {
			t.Fatalf("closing PUT: got %v, want 201", r)
		}
		blob := filepath.Join(h.env.DataDir, "registry", "storage", "docker", "registry", "v2", "blobs", "sha256", d[7:9], d[7:], "data")
		if got, err := os.ReadFile(blob); err != nil || !bytes.Equal(got, whole) {
			t.Errorf("the committed blob: %d bytes, %v; want the 4000 bytes", len(got), err)
		}
		if _, err := os.Stat(filepath.Join(repoDir, "_uploads", id)); !os.IsNotExist(err) {
			t.Errorf("the upload's directory after the commit: %v, want it removed", err)
		}
		if got := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/blobs/" + d, user: "alice"}); got.code != http.StatusOK || !bytes.Equal(got.body, whole) {
			t.Errorf("GET the blob: %v", got)
		}
	})

	// A small upload's hash states are kept in memory (fsdriver.go): none
	// is written to the upload's directory, and an upload whose states
	// are gone (another registry process serves its next request, or
	// this one restarted) is hashed again from its data at the commit,
	// which still tells a right digest from a wrong one.
	chunked := func(t *testing.T, forget bool, digestOf func(whole []byte) string) (resp, []byte) {
		t.Helper()
		a, b := bytes.Repeat([]byte("x"), 5000), bytes.Repeat([]byte("y"), 700)
		loc := h.startUpload(t, "alice", repo)
		r := h.patchChunk(t, loc, 0, a)
		id := r.header.Get("Docker-Upload-UUID")
		if _, err := os.Stat(filepath.Join(repoDir, "_uploads", id, "hashstates")); !os.IsNotExist(err) {
			t.Errorf("the upload's hashstates directory after a 5000-byte PATCH: %v, want none written", err)
		}
		if forget && !registry.ForgetHashStates(h.env.Server.Registry) {
			t.Fatal("the registry kept no hash state after the first PATCH")
		}
		r = h.patchChunk(t, r.header.Get("Location"), 5000, b)
		if forget {
			registry.ForgetHashStates(h.env.Server.Registry)
		}
		whole := append(append([]byte{}, a...), b...)
		return h.do(t, req{method: http.MethodPut, path: h.next(t, r.header.Get("Location"), url.Values{"digest": {digestOf(whole)}}), user: "alice"}), whole
	}
	for _, forget := range []bool{false, true} {
		name := "hash states in memory"
		if forget {
			name = "hash states forgotten between requests"
		}
		t.Run(name, func(t *testing.T) {
			r, whole := chunked(t, forget, sha256Of)
			if r.code != http.StatusCreated {
				t.Fatalf("closing PUT with the right digest: got %v, want 201", r)
			}
			d := sha256Of(whole)
			if got := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/blobs/" + d, user: "alice"}); got.code != http.StatusOK || !bytes.Equal(got.body, whole) {
				t.Errorf("GET the blob: %v", got)
			}
			r, whole = chunked(t, forget, func(whole []byte) string { return sha256Of(append(whole[:len(whole):len(whole)], 'z')) })
			if r.code != http.StatusBadRequest || !strings.Contains(string(r.body), "DIGEST_INVALID") {
				t.Fatalf("closing PUT with a wrong digest: got %v, want 400 DIGEST_INVALID", r)
			}
			if got := h.do(t, req{method: http.MethodHead, path: "/v2/" + repo + "/blobs/" + sha256Of(append(whole, 'z')), user: "alice"}); got.code != http.StatusNotFound {
				t.Errorf("HEAD the wrong digest's blob: %v, want 404", got)
			}
		})
	}

	// Past memHashStateMax the state is written to the upload's directory
	// as before, and the commit still removes all of it.
	t.Run("large upload's hash state on disk", func(t *testing.T) {
		big := bytes.Repeat([]byte("L"), 5<<20)
		loc := h.startUpload(t, "alice", repo)
		r := h.patchChunk(t, loc, 0, big)
		id := r.header.Get("Docker-Upload-UUID")
		states, err := os.ReadDir(filepath.Join(repoDir, "_uploads", id, "hashstates", "sha256"))
		if err != nil || len(states) != 1 || states[0].Name() != "5242880" {
			t.Fatalf("the upload's hash states on disk after 5 MiB: %v %v, want the one at 5242880", states, err)
		}
		d := sha256Of(big)
		r = h.do(t, req{method: http.MethodPut, path: h.next(t, r.header.Get("Location"), url.Values{"digest": {d}}), user: "alice"})
		if r.code != http.StatusCreated {
			t.Fatalf("closing PUT: got %v, want 201", r)
		}
		if _, err := os.Stat(filepath.Join(repoDir, "_uploads", id)); !os.IsNotExist(err) {
			t.Errorf("the upload's directory after the commit: %v, want it removed", err)
		}
	})

	// distribution writes a manifest's revision link on every put of it;
	// a link that already holds the same content is left in place.
	t.Run("revision link written once", func(t *testing.T) {
		img := randomImage(t)
		d := h.pushOK(t, "alice", repo+"@"+digestOf(t, img), img)
		link := filepath.Join(repoDir, "_manifests", "revisions", "sha256", d[7:], "link")
		before, err := os.Stat(link)
		if err != nil {
			t.Fatalf("the revision link after a push by digest: %v", err)
		}
		g := h.getManifest(t, "alice", repo, d)
		if r := h.putManifest(t, "alice", repo, "again", g.header.Get("Content-Type"), g.body); r.code != http.StatusCreated {
			t.Fatalf("PUT the same manifest by tag: %v, want 201", r)
		}
		after, err := os.Stat(link)
		if err != nil {
			t.Fatalf("the revision link after the put by tag: %v", err)
		}
		if !os.SameFile(before, after) {
			t.Errorf("the revision link was replaced by the put by tag, want it left in place")
		}
		if b, err := os.ReadFile(link); err != nil || string(b) != d {
			t.Errorf("the revision link holds %q (%v), want %s", b, err, d)
		}
		if r := h.getManifest(t, "alice", repo, "again"); r.code != http.StatusOK || r.header.Get("Docker-Content-Digest") != d {
			t.Errorf("GET %s:again: %v, want 200 with %s", repo, r, d)
		}
	})

	t.Run("no distribution tag links", func(t *testing.T) {
		img := randomImage(t)
		d := h.pushOK(t, "alice", repo+":v1", img)
		if _, err := os.Stat(filepath.Join(repoDir, "_manifests", "tags", "v1")); !os.IsNotExist(err) {
			t.Errorf("distribution's tag link for v1: %v, want none written", err)
		}
		if r := h.getManifest(t, "alice", repo, "v1"); r.code != http.StatusOK || r.header.Get("Docker-Content-Digest") != d {
			t.Errorf("GET %s:v1: %v, want 200 with digest %s", repo, r, d)
		}
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/tags/list", user: "alice"}); r.code != http.StatusOK || !strings.Contains(string(r.body), `"v1"`) {
			t.Errorf("tags/list: %v, want v1 listed", r)
		}
		if r := h.do(t, req{method: http.MethodDelete, path: "/v2/" + repo + "/manifests/v1", user: "alice"}); r.code != http.StatusAccepted {
			t.Fatalf("DELETE tag v1: %v, want 202", r)
		}
		if r := h.getManifest(t, "alice", repo, "v1"); r.code != http.StatusNotFound {
			t.Errorf("GET %s:v1 after the tag was deleted: %v, want 404", repo, r)
		}
		if r := h.getManifest(t, "alice", repo, d); r.code != http.StatusOK {
			t.Errorf("GET %s@%s after its tag was deleted: %v, want 200", repo, d, r)
		}
	})
}

// What distribution accepts but the Image record cannot hold (a subject
// that is not a descriptor; distribution v3.1.2 does not read subject) is
// refused before anything is stored (FuzzManifestPut found one).
func TestManifestPutRefusesWhatTheRecordCannotHold(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "rr", false)
	for _, body := range []string{
		`{"000000000000":[],"suBjeCt":""}`,
		`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}`,
	} {
		r := h.putManifest(t, "alice", "rr/app", "v1", "application/vnd.oci.image.manifest.v1+json", []byte(body))
		if r.code != http.StatusBadRequest || r.errCode() != "MANIFEST_INVALID" {
			t.Errorf("PUT %s: %v, want 400 MANIFEST_INVALID", body, r)
			continue
		}
		if g := h.getManifest(t, "alice", "rr/app", sha256Of([]byte(body))); g.code != http.StatusNotFound {
			t.Errorf("GET the refused manifest by digest: %v, want 404", g)
		}
		if g := h.getManifest(t, "alice", "rr/app", "v1"); g.code != http.StatusNotFound {
			t.Errorf("GET rr/app:v1 after the refused put: %v, want 404", g)
		}
	}
}

// patchChunk sends one chunk of an upload at loc, starting at offset, and
// fails the test unless it is accepted.
func (h *harness) patchChunk(t *testing.T, loc string, offset int, chunk []byte) resp {
	t.Helper()
	r := h.do(t, req{method: http.MethodPatch, path: h.next(t, loc, nil), user: "alice",
		header: http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {fmt.Sprintf("%d-%d", offset, offset+len(chunk)-1)}}, body: chunk})
	if r.code != http.StatusAccepted {
		t.Fatalf("PATCH of %d bytes at %d: got %v, want 202", len(chunk), offset, r)
	}
	return r
}
