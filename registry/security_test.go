package registry_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// The registry's fixes from the security review, black-box: L1 (project
// existence oracle), L7 (foreign-layer URLs), L16 (referrers of nested
// repositories).

func TestMissingProjectAnswersLikePrivate(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "l1-private", false)
	h.pushOK(t, "alice", "l1-private/app:v1", randomImage(t))
	for _, path := range []string{"/manifests/v1", "/tags/list", "/blobs/sha256:" + strings.Repeat("0", 64), "/blobs/uploads/"} {
		method := http.MethodGet
		if strings.HasSuffix(path, "uploads/") {
			method = http.MethodPost
		}
		for _, u := range []string{"bob", ""} {
			missing := h.do(t, req{method: method, path: "/v2/l1-missing/app" + path, user: u})
			private := h.do(t, req{method: method, path: "/v2/l1-private/app" + path, user: u})
			if missing.code != private.code || missing.errCode() != private.errCode() {
				t.Errorf("%s %s as %q: missing project = %d %s, private project = %d %s; want the same", method, path, u, missing.code, missing.errCode(), private.code, private.errCode())
			}
			if u != "" && !strings.Contains(string(missing.body), "new-project l1-missing") {
				t.Errorf("%s %s as %q: %s does not say how to create the project", method, path, u, missing.body)
			}
		}
	}
	// Who may see every project hears that it is missing.
	if r := h.getManifest(t, "admin", "l1-missing/app", "v1"); r.code != http.StatusNotFound || r.errCode() != "NAME_UNKNOWN" {
		t.Errorf("admin GET of a missing project: got %v, want 404 NAME_UNKNOWN", r)
	}
}

func TestForeignLayerURLs(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "l7", false)
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd := h.uploadBlobOK(t, "alice", "l7/app", cfg)
	layer := h.uploadBlobOK(t, "alice", "l7/app", []byte("layer"))
	const nd = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	for i, tc := range []struct {
		mediaType, url string
		ok             bool
	}{
		{nd, "http://127.0.0.1:2379/version", false},
		{nd, "https://169.254.169.254/latest/meta-data/", false},
		{nd, "https://localhost/x", false},
		{nd, "https://0x7f.1/x", false},
		{nd, "https://127.1/x", false},
		{nd, "https://[::ffff:10.0.0.1]/x", false},
		{nd, "https://metadata.google.internal/x", false},
		{nd, "https://store.example.com:8443/x", false},
		{nd, "https://user:pw@store.example.com/x", false},
		{"application/vnd.oci.image.layer.v1.tar+gzip", "https://store.example.com/x", false},
		{"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "https://10.0.0.1/x", false},
		// What the OCI conformance suite pushes.
		{nd, "https://store.example.com/blobs/sha256/x", true},
	} {
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
			`"layers":[{"mediaType":%q,"digest":%q,"size":5,"urls":[%q]}]}`, ociManifestType, cd, len(cfg), tc.mediaType, layer, tc.url)
		tag := fmt.Sprintf("t%d", i)
		r := h.putManifest(t, "alice", "l7/app", tag, ociManifestType, []byte(m))
		if tc.ok {
			if r.code != http.StatusCreated {
				t.Errorf("PUT a %s layer with URL %s: got %v, want 201", tc.mediaType, tc.url, r)
			}
			continue
		}
		if r.code != http.StatusBadRequest || r.errCode() != "MANIFEST_INVALID" || !strings.Contains(string(r.body), "refused") && !strings.Contains(string(r.body), "only non-distributable") {
			t.Errorf("PUT a %s layer with URL %s: got %v, want 400 MANIFEST_INVALID saying why", tc.mediaType, tc.url, r)
		}
		if items := h.history(t, "l7", "app", tag); items != nil {
			t.Errorf("refused manifest moved tag %s: %+v", tag, items)
		}
	}
}

func TestReferrersNestedRepositoryDelete(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "l16", false)
	img := randomImage(t)
	var subject, artifact string
	for _, repo := range []string{"l16/a", "l16/a/b"} {
		subject = h.pushOK(t, "alice", repo+":v1", img)
		empty := h.uploadBlobOK(t, "alice", repo, []byte("{}"))
		m := mustJSON(t, ociManifest{SchemaVersion: 2, MediaType: ociManifestType, ArtifactType: "application/vnd.example.sig",
			Config:  descriptor{MediaType: ociEmptyType, Digest: empty, Size: 2},
			Layers:  []descriptor{{MediaType: ociEmptyType, Digest: empty, Size: 2}},
			Subject: &descriptor{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Digest: subject, Size: int64(len(rawManifest(t, img)))}})
		artifact = sha256Of(m)
		if r := h.putManifest(t, "alice", repo, artifact, ociManifestType, m); r.code != http.StatusCreated {
			t.Fatalf("PUT the referrer to %s: %v", repo, r)
		}
	}
	if r := h.do(t, req{method: http.MethodDelete, path: "/v2/l16/a/manifests/" + artifact, user: "alice"}); r.code != http.StatusAccepted {
		t.Fatalf("DELETE the referrer in l16/a: %v", r)
	}
	has := func(repo string) bool {
		_, idx := h.referrers(t, "alice", repo, subject, "")
		for _, m := range idx.Manifests {
			if m.Digest == artifact {
				return true
			}
		}
		return false
	}
	if has("l16/a") {
		t.Errorf("referrers of l16/a still list the deleted %s", artifact)
	}
	if !has("l16/a/b") {
		t.Errorf("deleting %s in l16/a dropped it from the referrers of l16/a/b", artifact)
	}
}
