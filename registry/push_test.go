package registry_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestPushRecordsImageAndTag(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "alice-app", false)

	img1 := randomImage(t)
	d1 := digestOf(t, img1)
	img2 := randomImage(t)
	d2 := digestOf(t, img2)

	t.Run("push answers 201", func(t *testing.T) {
		code, err := h.push(t, "alice", "alice-app/web:v1", img1)
		if err != nil {
			t.Fatalf("push: %v", err)
		}
		if got, want := code, http.StatusCreated; got != want {
			t.Errorf("manifest PUT status: got %d, want %d", got, want)
		}
	})

	t.Run("tag history names the pusher", func(t *testing.T) {
		items := h.history(t, "alice-app", "web", "v1")
		if got, want := len(items), 1; got != want {
			t.Fatalf("history of v1: got %d items (%+v), want %d", got, items, want)
		}
		if got, want := items[0].Image, d1; got != want {
			t.Errorf("history[0].image: got %s, want %s", got, want)
		}
		if got, want := items[0].By, "alice"; got != want {
			t.Errorf("history[0].by: got %q, want %q", got, want)
		}
		if got, want := items[0].DockerImageReference, h.env.Registry+"/alice-app/web@"+d1; got != want {
			t.Errorf("history[0].dockerImageReference: got %q, want %q", got, want)
		}
	})

	t.Run("image record describes the manifest", func(t *testing.T) {
		rec, err := h.image(t, "alice-app", d1)
		if err != nil {
			t.Fatalf("get image %s: %v", d1, err)
		}
		m, err := img1.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if rec.Config == nil {
			t.Fatalf("image record has no config: %+v", rec)
		}
		if got, want := rec.Config.Digest, m.Config.Digest.String(); got != want {
			t.Errorf("config digest: got %s, want %s", got, want)
		}
		var got, want []string
		for _, l := range rec.Layers {
			got = append(got, l.Digest)
		}
		for _, l := range m.Layers {
			want = append(want, l.Digest.String())
		}
		if !slices.Equal(got, want) {
			t.Errorf("layers: got %v, want %v", got, want)
		}
		if got, want := rec.Size, int64(len(rawManifest(t, img1))); got != want {
			t.Errorf("size: got %d, want %d", got, want)
		}
	})

	t.Run("re-tagging prepends history", func(t *testing.T) {
		h.pushOK(t, "alice", "alice-app/web:v1", img2)
		items := h.history(t, "alice-app", "web", "v1")
		var got []string
		for _, it := range items {
			got = append(got, it.Image)
		}
		if want := []string{d2, d1}; !slices.Equal(got, want) {
			t.Errorf("history of v1: got %v, want %v", got, want)
		}
		if _, err := h.image(t, "alice-app", d2); err != nil {
			t.Errorf("image record for %s: %v", d2, err)
		}
	})

	t.Run("pull by tag and by digest give the same bytes", func(t *testing.T) {
		byTag, tagDigest, err := h.pull(t, "alice", "alice-app/web:v1")
		if err != nil {
			t.Fatalf("pull by tag: %v", err)
		}
		byDigest, _, err := h.pull(t, "alice", "alice-app/web@"+d2)
		if err != nil {
			t.Fatalf("pull by digest: %v", err)
		}
		if !bytes.Equal(byTag, byDigest) {
			t.Errorf("manifest by tag and by digest differ:\n%s\n%s", byTag, byDigest)
		}
		if got, want := byTag, rawManifest(t, img2); !bytes.Equal(got, want) {
			t.Errorf("manifest by tag: got %s, want %s", got, want)
		}
		if got, want := tagDigest, d2; got != want {
			t.Errorf("digest by tag: got %s, want %s", got, want)
		}
		// The first image is still there by digest.
		old, _, err := h.pull(t, "alice", "alice-app/web@"+d1)
		if err != nil {
			t.Fatalf("pull %s by digest: %v", d1, err)
		}
		if got, want := old, rawManifest(t, img1); !bytes.Equal(got, want) {
			t.Errorf("old manifest: got %s, want %s", got, want)
		}
	})
}

func TestUploadIntegrity(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "integ", false)
	const repo = "integ/app"

	t.Run("wrong digest at close is DIGEST_INVALID", func(t *testing.T) {
		data := []byte("the blob's real content")
		r := h.uploadBlob(t, "alice", repo, data, sha256Of([]byte("something else")))
		if got, want := r.code, http.StatusBadRequest; got != want {
			t.Fatalf("PUT with a wrong digest: got %v, want %d", r, want)
		}
		if got, want := r.errCode(), "DIGEST_INVALID"; got != want {
			t.Errorf("error code: got %q, want %q", got, want)
		}
		// Nothing under either digest.
		for _, d := range []string{sha256Of(data), sha256Of([]byte("something else"))} {
			if got := h.do(t, req{method: http.MethodHead, path: "/v2/" + repo + "/blobs/" + d, user: "alice"}).code; got != http.StatusNotFound {
				t.Errorf("HEAD blob %s after a failed upload: got %d, want 404", d, got)
			}
		}
	})

	t.Run("out-of-order chunk is 416", func(t *testing.T) {
		loc := h.startUpload(t, "alice", repo)
		chunk := []byte("0123456789")
		r := h.do(t, req{method: http.MethodPatch, path: h.next(t, loc, nil), user: "alice",
			header: http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {"0-9"}}, body: chunk})
		if got, want := r.code, http.StatusAccepted; got != want {
			t.Fatalf("first PATCH: got %v, want %d", r, want)
		}
		loc = r.header.Get("Location")
		r = h.do(t, req{method: http.MethodPatch, path: h.next(t, loc, nil), user: "alice",
			header: http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {"20-29"}}, body: chunk})
		if got, want := r.code, http.StatusRequestedRangeNotSatisfiable; got != want {
			t.Fatalf("PATCH at offset 20 of a 10-byte upload: got %v, want %d", r, want)
		}
		// A chunk at the right offset still continues the upload.
		r = h.do(t, req{method: http.MethodPatch, path: h.next(t, loc, nil), user: "alice",
			header: http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {"10-19"}}, body: chunk})
		if got, want := r.code, http.StatusAccepted; got != want {
			t.Fatalf("PATCH at offset 10: got %v, want %d", r, want)
		}
		whole := append(slices.Clone(chunk), chunk...)
		r = h.do(t, req{method: http.MethodPut, path: h.next(t, r.header.Get("Location"), url.Values{"digest": {sha256Of(whole)}}), user: "alice"})
		if got, want := r.code, http.StatusCreated; got != want {
			t.Fatalf("closing PUT: got %v, want %d", r, want)
		}
	})

	t.Run("manifest with a missing blob is MANIFEST_BLOB_UNKNOWN", func(t *testing.T) {
		cfg := h.uploadBlobOK(t, "alice", repo, []byte("{}"))
		missing := sha256Of([]byte("never uploaded"))
		m := mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: ociManifestType,
			Config: descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: cfg, Size: 2},
			Layers: []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: missing, Size: 14}}})
		r := h.putManifest(t, "alice", repo, "broken", ociManifestType, m)
		if got, want := r.code, http.StatusBadRequest; got != want {
			t.Fatalf("PUT manifest: got %v, want %d", r, want)
		}
		if got, want := r.errCode(), "MANIFEST_BLOB_UNKNOWN"; got != want {
			t.Errorf("error code: got %q, want %q", got, want)
		}
		if items := h.history(t, "integ", "app", "broken"); items != nil {
			t.Errorf("tag broken: got history %+v, want none", items)
		}
		if _, err := h.image(t, "integ", sha256Of(m)); err == nil {
			t.Errorf("an image record exists for a refused manifest")
		}
	})

	t.Run("concurrent pushes to one tag", func(t *testing.T) {
		const n = 20
		imgs := make([]v1.Image, n)
		for i := range imgs {
			imgs[i] = randomImage(t)
		}
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range imgs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = h.push(t, "alice", "integ/race:latest", imgs[i])
			}()
		}
		wg.Wait()
		var acked []string
		for i, err := range errs {
			if err != nil {
				t.Errorf("push %d: %v", i, err)
				continue
			}
			acked = append(acked, digestOf(t, imgs[i]))
		}
		for i, img := range imgs {
			if errs[i] != nil {
				continue
			}
			d := digestOf(t, img)
			r := h.getManifest(t, "alice", "integ/race", d)
			if r.code != http.StatusOK || !bytes.Equal(r.body, rawManifest(t, img)) {
				t.Errorf("pull %s by digest: got %v, want 200 with the pushed bytes", d, r)
			}
			if _, err := h.image(t, "integ", d); err != nil {
				t.Errorf("image record %s: %v", d, err)
			}
		}
		items := h.history(t, "integ", "race", "latest")
		var hist []string
		for _, it := range items {
			hist = append(hist, it.Image)
		}
		for _, d := range acked {
			if !slices.Contains(hist, d) {
				t.Errorf("history lacks acknowledged digest %s", d)
			}
		}
		if got, want := len(hist), n; got != want {
			t.Errorf("history length: got %d, want %d (%v)", got, want, hist)
		}
		if len(hist) > 0 {
			r := h.getManifest(t, "alice", "integ/race", "latest")
			if got, want := r.header.Get("Docker-Content-Digest"), hist[0]; r.code != http.StatusOK || got != want {
				t.Errorf("tag latest: got %v digest %s, want 200 and the history's head %s", r, got, want)
			}
		}
		if t.Failed() {
			t.Log(fmt.Sprint("acknowledged: ", acked))
		}
	})
}
