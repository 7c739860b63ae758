package registry_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
)

type referrersIndex struct {
	SchemaVersion int        `json:"schemaVersion"`
	MediaType     string     `json:"mediaType"`
	Manifests     []referrer `json:"manifests"`
}

type referrer struct {
	MediaType    string `json:"mediaType"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`
	ArtifactType string `json:"artifactType"`
}

func (h *harness) referrers(t *testing.T, u, repo, subject, query string) (resp, referrersIndex) {
	t.Helper()
	r := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/referrers/" + subject + query, user: u})
	var idx referrersIndex
	if r.code == http.StatusOK {
		if err := json.Unmarshal(r.body, &idx); err != nil {
			t.Fatalf("referrers body %s: %v", r.body, err)
		}
	}
	// The platform's scanner attaches a CycloneDX SBOM to every image it
	// scans; these tests are about the test's own artifacts.
	idx.Manifests = slices.DeleteFunc(idx.Manifests, func(m referrer) bool { return m.ArtifactType == "application/vnd.cyclonedx+json" })
	return r, idx
}

func TestReferrersAndSHA512(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "ref-a", false)
	h.project(t, "bob", "ref-b", false)

	img := randomImage(t)
	subject := h.pushOK(t, "alice", "ref-a/app:v1", img)
	// bob has the very same image, in his own repository.
	h.pushOK(t, "bob", "ref-b/app:v1", img)

	const sbomType = "application/vnd.example.sbom"
	var artifact string

	t.Run("push an artifact with a subject", func(t *testing.T) {
		empty := h.uploadBlobOK(t, "alice", "ref-a/app", []byte("{}"))
		sbom := []byte(`{"spdxVersion":"SPDX-2.3"}`)
		layer := h.uploadBlobOK(t, "alice", "ref-a/app", sbom)
		m := mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: ociManifestType, ArtifactType: sbomType,
			Config:  descriptor{MediaType: ociEmptyType, Digest: empty, Size: 2},
			Layers:  []descriptor{{MediaType: "application/spdx+json", Digest: layer, Size: int64(len(sbom))}},
			Subject: &descriptor{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Digest: subject, Size: int64(len(rawManifest(t, img)))}})
		artifact = sha256Of(m)
		r := h.putManifest(t, "alice", "ref-a/app", artifact, ociManifestType, m)
		if got, want := r.code, http.StatusCreated; got != want {
			t.Fatalf("PUT artifact: got %v, want %d", r, want)
		}
		if got, want := r.header.Get("OCI-Subject"), subject; got != want {
			t.Errorf("OCI-Subject: got %q, want %q", got, want)
		}
		rec, err := h.image(t, "ref-a", artifact)
		if err != nil {
			t.Fatalf("image record for the artifact: %v", err)
		}
		if rec.Subject != subject || rec.ArtifactType != sbomType {
			t.Errorf("artifact record: got subject %q type %q, want %q %q", rec.Subject, rec.ArtifactType, subject, sbomType)
		}
	})
	if artifact == "" {
		t.FailNow()
	}

	t.Run("referrers lists it", func(t *testing.T) {
		r, idx := h.referrers(t, "alice", "ref-a/app", subject, "")
		if r.code != http.StatusOK {
			t.Fatalf("GET referrers: got %v, want 200", r)
		}
		if got, want := r.header.Get("Content-Type"), "application/vnd.oci.image.index.v1+json"; got != want {
			t.Errorf("Content-Type: got %q, want %q", got, want)
		}
		if idx.SchemaVersion != 2 || idx.MediaType != "application/vnd.oci.image.index.v1+json" {
			t.Errorf("index: got schemaVersion %d mediaType %q, want 2 and an OCI index", idx.SchemaVersion, idx.MediaType)
		}
		if len(idx.Manifests) != 1 {
			t.Fatalf("referrers: got %d (%s), want 1", len(idx.Manifests), r.body)
		}
		m := idx.Manifests[0]
		if m.Digest != artifact || m.ArtifactType != sbomType || m.MediaType != ociManifestType {
			t.Errorf("referrer: got %+v, want digest %s artifactType %s mediaType %s", m, artifact, sbomType, ociManifestType)
		}
		if r.header.Get("OCI-Filters-Applied") != "" {
			t.Errorf("OCI-Filters-Applied without a filter: got %q, want none", r.header.Get("OCI-Filters-Applied"))
		}
	})

	t.Run("artifactType filter", func(t *testing.T) {
		r, idx := h.referrers(t, "alice", "ref-a/app", subject, "?artifactType=other")
		if r.code != http.StatusOK {
			t.Fatalf("GET referrers?artifactType=other: got %v, want 200", r)
		}
		if got, want := r.header.Get("OCI-Filters-Applied"), "artifactType"; got != want {
			t.Errorf("OCI-Filters-Applied: got %q, want %q", got, want)
		}
		if len(idx.Manifests) != 0 {
			t.Errorf("referrers of type other: got %s, want none", r.body)
		}
		var raw map[string]json.RawMessage
		if json.Unmarshal(r.body, &raw) != nil || string(raw["manifests"]) != "[]" {
			t.Errorf("manifests of an empty answer: got %s, want []", raw["manifests"])
		}
		r, idx = h.referrers(t, "alice", "ref-a/app", subject, "?artifactType="+url.QueryEscape(sbomType))
		if r.header.Get("OCI-Filters-Applied") != "artifactType" || len(idx.Manifests) != 1 {
			t.Errorf("referrers of type %s: got %v, want 1 with the filter header", sbomType, r)
		}
	})

	t.Run("referrers are per repository", func(t *testing.T) {
		r, idx := h.referrers(t, "bob", "ref-b/app", subject, "")
		if r.code != http.StatusOK || len(idx.Manifests) != 0 {
			t.Errorf("bob's referrers of the same digest in ref-b/app: got %v, want 200 and none", r)
		}
		r, idx = h.referrers(t, "alice", "ref-a/other", subject, "")
		if r.code != http.StatusOK || len(idx.Manifests) != 0 {
			t.Errorf("referrers in ref-a/other: got %v, want 200 and none", r)
		}
		deniedOK(t, "bob reads ref-a/app's referrers", h.do(t, req{method: http.MethodGet, path: "/v2/ref-a/app/referrers/" + subject, user: "bob"}))
		h.challengeOK(t, "anonymous reads ref-a/app's referrers", h.do(t, req{method: http.MethodGet, path: "/v2/ref-a/app/referrers/" + subject}))
	})

	t.Run("deleting the artifact drops it from referrers", func(t *testing.T) {
		r := h.do(t, req{method: http.MethodDelete, path: "/v2/ref-a/app/manifests/" + artifact, user: "alice"})
		if got, want := r.code, http.StatusAccepted; got != want {
			t.Fatalf("DELETE artifact: got %v, want %d", r, want)
		}
		r, idx := h.referrers(t, "alice", "ref-a/app", subject, "")
		if r.code != http.StatusOK || len(idx.Manifests) != 0 {
			t.Errorf("referrers after the delete: got %v, want 200 and none", r)
		}
	})

	data := []byte("a blob addressed by sha512")
	d512 := sha512Of(data)

	t.Run("sha512 upload", func(t *testing.T) {
		r := h.uploadBlob(t, "alice", "ref-a/app", data, d512)
		if got, want := r.code, http.StatusCreated; got != want {
			t.Fatalf("PUT ?digest=sha512: got %v, want %d", r, want)
		}
		if got, want := r.header.Get("Docker-Content-Digest"), d512; got != want {
			t.Errorf("Docker-Content-Digest: got %q, want %q", got, want)
		}
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			r := h.do(t, req{method: m, path: "/v2/ref-a/app/blobs/" + d512, user: "alice"})
			if r.code != http.StatusOK {
				t.Errorf("%s blob by sha512: got %v, want 200", m, r)
				continue
			}
			if got, want := r.header.Get("Docker-Content-Digest"), d512; got != want {
				t.Errorf("%s blob by sha512: Docker-Content-Digest: got %q, want %q", m, got, want)
			}
			if m == http.MethodGet && !bytes.Equal(r.body, data) {
				t.Errorf("GET blob by sha512: got %q, want %q", r.body, data)
			}
		}
	})

	t.Run("wrong sha512 is refused", func(t *testing.T) {
		other := []byte("not the same bytes")
		r := h.uploadBlob(t, "alice", "ref-a/app", other, sha512Of([]byte("claimed")))
		if r.code != http.StatusBadRequest || r.errCode() != "DIGEST_INVALID" {
			t.Errorf("PUT with a wrong sha512: got %v, want 400 DIGEST_INVALID", r)
		}
		if r := h.do(t, req{method: http.MethodHead, path: "/v2/ref-a/app/blobs/" + sha512Of([]byte("claimed")), user: "alice"}); r.code != http.StatusNotFound {
			t.Errorf("HEAD the claimed sha512: got %v, want 404", r)
		}
	})

	t.Run("another project cannot read it by sha512", func(t *testing.T) {
		r := h.do(t, req{method: http.MethodGet, path: "/v2/ref-b/app/blobs/" + d512, user: "bob"})
		if r.code != http.StatusNotFound || bytes.Equal(r.body, data) {
			t.Errorf("bob GET ref-b/app blob by sha512: got %v, want 404", r)
		}
		deniedOK(t, "bob GET ref-a/app blob by sha512", h.do(t, req{method: http.MethodGet, path: "/v2/ref-a/app/blobs/" + d512, user: "bob"}))
		r = h.do(t, req{method: http.MethodPost, path: "/v2/ref-b/app/blobs/uploads/?mount=" + d512 + "&from=ref-a/app", user: "bob"})
		if got, want := r.code, http.StatusAccepted; got != want {
			t.Errorf("bob mounts the sha512 blob from ref-a/app: got %v, want %d", r, want)
		}
		// Nor can another repository of the same project.
		r = h.do(t, req{method: http.MethodGet, path: "/v2/ref-a/other/blobs/" + d512, user: "alice"})
		if r.code != http.StatusNotFound {
			t.Errorf("alice GET ref-a/other blob by sha512: got %v, want 404", r)
		}
	})

	t.Run("sha512 manifest", func(t *testing.T) {
		empty := h.uploadBlobOK(t, "alice", "ref-a/app", []byte("{}"))
		m := mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: ociManifestType, ArtifactType: "application/vnd.example.note",
			Config: descriptor{MediaType: ociEmptyType, Digest: empty, Size: 2}, Layers: []descriptor{},
			Annotations: map[string]string{"note": "sha512"}})
		m512 := sha512Of(m)
		r := h.putManifest(t, "alice", "ref-a/app", sha512Of(append([]byte("x"), m...)), ociManifestType, m)
		if r.code != http.StatusBadRequest || r.errCode() != "DIGEST_INVALID" {
			t.Errorf("PUT manifest under a sha512 that is not its own: got %v, want 400 DIGEST_INVALID", r)
		}
		r = h.putManifest(t, "alice", "ref-a/app", m512, ociManifestType, m)
		if got, want := r.code, http.StatusCreated; got != want {
			t.Fatalf("PUT manifest by sha512: got %v, want %d", r, want)
		}
		if got, want := r.header.Get("Docker-Content-Digest"), m512; got != want {
			t.Errorf("Docker-Content-Digest: got %q, want %q", got, want)
		}
		r = h.getManifest(t, "alice", "ref-a/app", m512)
		if r.code != http.StatusOK || !bytes.Equal(r.body, m) || r.header.Get("Docker-Content-Digest") != m512 {
			t.Errorf("GET manifest by sha512: got %v digest %q, want 200, the bytes and %s", r, r.header.Get("Docker-Content-Digest"), m512)
		}
		if r := h.getManifest(t, "bob", "ref-b/app", m512); r.code != http.StatusNotFound {
			t.Errorf("bob GET ref-b/app manifest by alice's sha512: got %v, want 404", r)
		}
	})

	t.Run("the sha512 map cannot be repointed", func(t *testing.T) {
		// bob uploads bytes that ref-a/app also holds (the shared image's
		// config), naming alice's sha512 in the query and the bytes' sha256
		// in a url-encoded body. distribution verifies the body's digest;
		// the edge records the query's.
		evil, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		loc := h.startUpload(t, "bob", "ref-b/evil")
		r := h.do(t, req{method: http.MethodPatch, path: h.next(t, loc, nil), user: "bob",
			header: http.Header{"Content-Type": {"application/octet-stream"}}, body: evil})
		if r.code != http.StatusAccepted {
			t.Fatalf("PATCH: got %v, want 202", r)
		}
		r = h.do(t, req{method: http.MethodPut, path: h.next(t, r.header.Get("Location"), url.Values{"digest": {d512}}), user: "bob",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: []byte("digest=" + url.QueryEscape(sha256Of(evil)))})
		if r.code == http.StatusCreated {
			t.Errorf("closing bob's upload as %s with a sha256 in the body: got %v, want a 4xx", d512, r)
		}
		r = h.do(t, req{method: http.MethodGet, path: "/v2/ref-a/app/blobs/" + d512, user: "alice"})
		if r.code != http.StatusOK || !bytes.Equal(r.body, data) {
			t.Errorf("alice GET her blob by sha512 afterwards: got %v, want 200 %q", r, data)
		}
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/ref-b/app/blobs/" + d512, user: "bob"}); r.code == http.StatusOK {
			t.Errorf("bob GET ref-b/app blob by alice's sha512 afterwards: got %v, want 404", r)
		}
	})
}
