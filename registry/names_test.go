package registry_test

import (
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// treeOutsideStorage lists every path under dir (the test's temp dir, the
// data dir's parent), skipping the registry's storage root and etcd's own
// files, which change on their own.
func treeOutsideStorage(t *testing.T, dir, dataDir string) []string {
	t.Helper()
	storage := filepath.Join(dataDir, "registry", "storage")
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == storage {
			return fs.SkipDir
		}
		if d.IsDir() && strings.Contains(filepath.Base(p), "etcd") && strings.HasPrefix(p, dataDir) {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	slices.Sort(out)
	return out
}

func TestBadNames(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p", false)
	h.pushOK(t, "alice", "p/s:v1", randomImage(t))
	parent := filepath.Dir(h.env.DataDir)
	before := treeOutsideStorage(t, parent, h.env.DataDir)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	long := strings.Repeat("a", 300)
	sha999 := "sha999:" + strings.Repeat("ab", 32)

	cases := []struct {
		name, method, path string
		body               []byte
		status             int
		code               string
	}{
		{"dot-dot in the name", http.MethodGet, "/v2/p/../x/manifests/latest", nil, 400, "NAME_INVALID"},
		{"dot-dot as the project", http.MethodGet, "/v2/../x/manifests/latest", nil, 400, "NAME_INVALID"},
		{"escaped traversal", http.MethodGet, "/v2/p/..%2F..%2Fetc/manifests/x", nil, 400, "NAME_INVALID"},
		{"escaped traversal PUT", http.MethodPut, "/v2/p/..%2F..%2Fetc/manifests/x", manifest, 400, "NAME_INVALID"},
		{"escaped traversal upload", http.MethodPost, "/v2/p/..%2F..%2F..%2Fetc/blobs/uploads/", nil, 400, "NAME_INVALID"},
		{"escaped dots", http.MethodPut, "/v2/p/%2e%2e/%2e%2e/etc/manifests/x", manifest, 400, "NAME_INVALID"},
		{"escaped slash in a component", http.MethodGet, "/v2/p/s%2Fx/manifests/v1", nil, 400, "NAME_INVALID"},
		{"traversal in the tag", http.MethodPut, "/v2/p/s/manifests/..%2F..%2Fx", manifest, 400, "TAG_INVALID"},
		{"uppercase stream", http.MethodGet, "/v2/p/Stream/manifests/v1", nil, 400, "NAME_INVALID"},
		{"uppercase project", http.MethodPut, "/v2/P/s/manifests/v1", manifest, 400, "NAME_INVALID"},
		{"uppercase upload", http.MethodPost, "/v2/p/UP/blobs/uploads/", nil, 400, "NAME_INVALID"},
		{"no project", http.MethodGet, "/v2/s/manifests/v1", nil, 400, "NAME_INVALID"},
		{"300-character tag GET", http.MethodGet, "/v2/p/s/manifests/" + long, nil, 400, "TAG_INVALID"},
		{"300-character tag PUT", http.MethodPut, "/v2/p/s/manifests/" + long, manifest, 400, "TAG_INVALID"},
		{"tag starting with a dot", http.MethodPut, "/v2/p/s/manifests/.hidden", manifest, 400, "TAG_INVALID"},
		{"unknown algorithm manifest", http.MethodGet, "/v2/p/s/manifests/" + sha999, nil, 400, "DIGEST_INVALID"},
		{"unknown algorithm manifest PUT", http.MethodPut, "/v2/p/s/manifests/" + sha999, manifest, 400, "DIGEST_INVALID"},
		{"unknown algorithm blob", http.MethodGet, "/v2/p/s/blobs/" + sha999, nil, 400, "DIGEST_INVALID"},
		{"unknown algorithm referrers", http.MethodGet, "/v2/p/s/referrers/" + sha999, nil, 400, "DIGEST_INVALID"},
		{"malformed digest blob", http.MethodGet, "/v2/p/s/blobs/sha256:..%2F..%2Fx", nil, 400, "DIGEST_INVALID"},
		{"short sha256 blob", http.MethodGet, "/v2/p/s/blobs/sha256:abc", nil, 400, "DIGEST_INVALID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hdr := http.Header{}
			if c.body != nil {
				hdr.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			}
			r := h.do(t, req{method: c.method, path: c.path, user: "alice", header: hdr, body: c.body})
			if r.code != c.status || r.errCode() != c.code {
				t.Errorf("%s %s: got %v (code %q), want %d %s", c.method, c.path, r, r.errCode(), c.status, c.code)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("%s %s: Content-Type: got %q, want application/json", c.method, c.path, ct)
			}
		})
	}

	t.Run("unknown algorithm at upload close", func(t *testing.T) {
		r := h.uploadBlob(t, "alice", "p/s", []byte("data"), sha999)
		if r.code != http.StatusBadRequest || r.errCode() != "DIGEST_INVALID" {
			t.Errorf("PUT ?digest=%s: got %v (code %q), want 400 DIGEST_INVALID", sha999, r, r.errCode())
		}
	})

	t.Run("nothing written outside the storage root", func(t *testing.T) {
		after := treeOutsideStorage(t, parent, h.env.DataDir)
		var added []string
		for _, p := range after {
			if !slices.Contains(before, p) {
				added = append(added, p)
			}
		}
		if len(added) > 0 {
			t.Errorf("new paths outside registry/storage: got %v, want none", added)
		}
		if got := h.history(t, "p", "s", "x"); got != nil {
			t.Errorf("tag p/s:x: got history %+v, want none", got)
		}
	})
}
