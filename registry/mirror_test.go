package registry_test

// The pull-through mirror, with a standalone distribution registry on
// 127.0.0.1 as its upstream: pulls through it are byte-for-byte the
// upstream's, a stopped upstream is served from the cache, and the mirror
// is read-only, for signed-in users, behind the import guard.

import (
	"bytes"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server/servertest"
)

// startMirror starts Slipway with docker.io mirroring src, and src allowed
// (on loopback) for the import guard.
func startMirror(t *testing.T, src *countingServer) *harness {
	t.Helper()
	return start(t,
		servertest.WithImport(registry.ImportPolicy{Registries: []string{src.host()}, CIDRs: []netip.Prefix{loopback}}),
		servertest.WithMirrors(registry.Mirror{Name: "docker.io", URL: "http://" + src.host()}))
}

// pullImage reads a whole image through the mirror as u, every blob
// verified against its digest, and returns its manifest bytes.
func (h *harness) pullImage(t *testing.T, u, ref string) ([]byte, error) {
	t.Helper()
	img, err := remote.Image(h.ref(t, ref), remote.WithAuth(ggcrAuth(t, h, u)), remote.WithContext(ctxT(t)))
	if err != nil {
		return nil, err
	}
	if err := validate.Image(img); err != nil {
		return nil, err
	}
	return img.RawManifest()
}

func TestMirrorPullThrough(t *testing.T) {
	src := newSourceRegistry(t)
	img := randomImage(t)
	d := pushSource(t, src.host(), "library/app:1", img)
	// A cosign-style signature under the tag scheme, and an OCI referrer
	// (an SBOM-like artifact whose subject is the image).
	sig := randomImage(t)
	sigTag := "sha256-" + strings.TrimPrefix(d, "sha256:") + ".sig"
	dSig := pushSource(t, src.host(), "library/app:"+sigTag, sig)
	subject, err := remote.Head(mustRef(t, src.host()+"/library/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	sbom := mutate.Subject(randomImage(t), *subject).(v1.Image)
	dSBOM := digestOf(t, sbom)
	pushSource(t, src.host(), "library/app@"+dSBOM, sbom)

	h := startMirror(t, src)
	h.project(t, "admin", "shop", false)

	// Any signed-in user pulls it, and gets the upstream's bytes.
	got, err := h.pullImage(t, "alice", "docker.io/library/app:1")
	if err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}
	if want := rawManifest(t, img); !bytes.Equal(got, want) {
		t.Fatalf("manifest through the mirror differs from the upstream's:\n%s\n%s", got, want)
	}
	// Short Docker Hub names mean library/.
	if _, dd, err := h.pull(t, "bob", "docker.io/app:1"); err != nil || dd != d {
		t.Fatalf("pull docker.io/app:1 = %s, %v; want %s", dd, err, d)
	}
	// The signature tag and the referrer come through, digests intact.
	if _, dd, err := h.pull(t, "alice", "docker.io/library/app:"+sigTag); err != nil || dd != dSig {
		t.Fatalf("pull the signature tag = %s, %v; want %s", dd, err, dSig)
	}
	rs := h.do(t, req{method: "GET", path: "/v2/docker.io/library/app/referrers/" + d, user: "alice"})
	if rs.code != http.StatusOK || !strings.Contains(string(rs.body), dSBOM) {
		t.Fatalf("referrers through the mirror = %s; want %s listed", rs, dSBOM)
	}
	if _, dd, err := h.pull(t, "alice", "docker.io/library/app@"+dSBOM); err != nil || dd != dSBOM {
		t.Fatalf("pull the referrer = %s, %v; want %s", dd, err, dSBOM)
	}
	// A copy into a project mounts the mirror's blobs.
	if err := remote.Write(h.ref(t, "shop/app:1"), mustImage(t, h, "admin", "docker.io/library/app:1"), remote.WithAuth(ggcrAuth(t, h, "admin"))); err != nil {
		t.Fatalf("copy from the mirror into a project: %v", err)
	}

	// The upstream stops: the cache serves what was pulled, by tag and
	// by digest, blobs included; what was never pulled is UNAVAILABLE.
	src.Close()
	got, err = h.pullImage(t, "bob", "docker.io/library/app:1")
	if err != nil {
		t.Fatalf("pull from the cache with the upstream stopped: %v", err)
	}
	if !bytes.Equal(got, rawManifest(t, img)) {
		t.Fatalf("cached manifest differs from the upstream's")
	}
	if _, dd, err := h.pull(t, "bob", "docker.io/library/app@"+d); err != nil || dd != d {
		t.Fatalf("pull by digest from the cache = %s, %v", dd, err)
	}
	if _, dd, err := h.pull(t, "bob", "docker.io/library/app:"+sigTag); err != nil || dd != dSig {
		t.Fatalf("pull the signature from the cache = %s, %v; want %s", dd, err, dSig)
	}
	rs = h.do(t, req{method: "GET", path: "/v2/docker.io/library/app/referrers/" + d, user: "alice"})
	if rs.code != http.StatusOK || !strings.Contains(string(rs.body), dSBOM) {
		t.Fatalf("referrers from the cache = %s; want %s listed", rs, dSBOM)
	}
	rs = h.getManifest(t, "bob", "docker.io/library/other", "1")
	if rs.code != http.StatusServiceUnavailable || rs.errCode() != "UNAVAILABLE" || !strings.Contains(string(rs.body), "no cached copy") {
		t.Fatalf("uncached pull with the upstream stopped = %s; want 503 UNAVAILABLE, no cached copy", rs)
	}
}

func TestMirrorAccess(t *testing.T) {
	src := newSourceRegistry(t)
	img := randomImage(t)
	pushSource(t, src.host(), "library/app:1", img)
	h := startMirror(t, src)
	if _, err := h.pullImage(t, "alice", "docker.io/library/app:1"); err != nil {
		t.Fatalf("pull through the mirror: %v", err)
	}
	hits := src.hits.Load()

	// Anonymous: challenged, and the upstream hears nothing.
	rs := h.getManifest(t, "", "docker.io/library/app", "1")
	if rs.code != http.StatusUnauthorized || !strings.Contains(rs.header.Get("WWW-Authenticate"), "docker.io/library/app:pull") {
		t.Fatalf("anonymous pull = %s; want 401 with a challenge", rs)
	}
	if _, _, err := h.pull(t, "", "docker.io/library/app:1"); err == nil {
		t.Fatalf("anonymous pull through the token flow succeeded")
	}
	rs = h.getManifest(t, "", "docker.io/library/never", "1")
	if rs.code != http.StatusUnauthorized || src.hits.Load() != hits {
		t.Fatalf("anonymous pull of an uncached image = %s, upstream requests %d → %d; want 401 and none", rs, hits, src.hits.Load())
	}
	if g := grantedActions(t, h.registryToken(t, "", "repository:docker.io/library/app:pull"), "docker.io/library/app"); len(g) != 0 {
		t.Fatalf("anonymous token grants %v on the mirror; want nothing", g)
	}

	// Nobody pushes, tags or deletes there, not even a cluster admin.
	if g := grantedActions(t, h.registryToken(t, "admin", "repository:docker.io/library/app:pull,push,delete"), "docker.io/library/app"); strings.Join(g, ",") != "pull" {
		t.Fatalf("admin's token grants %v on the mirror; want pull only", g)
	}
	if code, err := h.push(t, "admin", "docker.io/library/app:evil", randomImage(t)); err == nil || code == http.StatusCreated {
		t.Fatalf("push into the mirror = %d, %v; want refused", code, err)
	}
	// (ggcr's push asked whether the blobs exist first: signed-in reads,
	// which the mirror may ask the upstream about. It returns at the
	// first refusal while its other layers' requests may still be on the
	// way, so wait until the upstream hears nothing more: on a fresh
	// root one arrived after the count was taken.)
	hits = settledHits(src)
	rs = h.do(t, req{method: "POST", path: "/v2/docker.io/library/app/blobs/uploads/", user: "admin"})
	if rs.code != http.StatusForbidden || rs.errCode() != "DENIED" || !strings.Contains(string(rs.body), "read-only") {
		t.Fatalf("upload into the mirror = %s; want 403 DENIED, read-only", rs)
	}
	rs = h.putManifest(t, "admin", "docker.io/library/app", "evil", "application/vnd.oci.image.manifest.v1+json", rawManifest(t, img))
	if rs.code != http.StatusForbidden || rs.errCode() != "DENIED" {
		t.Fatalf("manifest PUT into the mirror = %s; want 403 DENIED", rs)
	}
	rs = h.do(t, req{method: "DELETE", path: "/v2/docker.io/library/app/manifests/" + digestOf(t, img), user: "admin"})
	if rs.code != http.StatusForbidden || rs.errCode() != "DENIED" {
		t.Fatalf("DELETE in the mirror = %s; want 403 DENIED", rs)
	}

	// Names that try to leave the namespace are not names.
	for _, p := range []string{"/v2/docker.io/../shop/x/manifests/1", "/v2/docker.io/%2e%2e/shop/x/manifests/1", "/v2/docker.io/library/../../x/manifests/1", "/v2/docker.io//x/manifests/1"} {
		rs := h.do(t, req{method: "GET", path: p, user: "alice"})
		if rs.code != http.StatusBadRequest || rs.errCode() != "NAME_INVALID" {
			t.Errorf("GET %s = %s; want 400 NAME_INVALID", p, rs)
		}
	}
	if src.hits.Load() != hits {
		t.Fatalf("refused requests reached the upstream: %d → %d", hits, src.hits.Load())
	}
}

// TestMirrorGuard: the upstream must be allowed, by host at start and by
// address on every dial.
func TestMirrorGuard(t *testing.T) {
	err := registry.ValidateMirrors([]registry.Mirror{{Name: "docker.io", URL: "https://registry-1.docker.io"}}, registry.ImportPolicy{Registries: []string{"quay.io"}})
	if err == nil || !strings.Contains(err.Error(), "--import-allow registry-1.docker.io") {
		t.Fatalf("ValidateMirrors(upstream not allowed) = %v; want an error naming --import-allow", err)
	}
	for _, bad := range []string{"docker.io", "hub=https://h.example", "docker.io=ftp://h.example", "docker.io=https://h.example/path", "Docker.io=https://h.example", "a/b.io=https://h.example"} {
		if _, err := registry.ParseMirror(bad); err == nil {
			t.Errorf("ParseMirror(%q) = nil error; want refused", bad)
		}
	}
	if _, err := registry.ParseMirror("docker.io=https://registry-1.docker.io"); err != nil {
		t.Errorf("ParseMirror(docker.io=https://registry-1.docker.io) = %v", err)
	}

	// Allowed by host, but on loopback with no CIDR letting it in: the
	// dial is refused and the upstream never hears from Slipway.
	src := newSourceRegistry(t)
	pushSource(t, src.host(), "library/app:1", randomImage(t))
	hits := src.hits.Load()
	h := start(t,
		servertest.WithImport(registry.ImportPolicy{Registries: []string{src.host()}}),
		servertest.WithMirrors(registry.Mirror{Name: "docker.io", URL: "http://" + src.host()}))
	rs := h.getManifest(t, "alice", "docker.io/library/app", "1")
	if rs.code != http.StatusForbidden || rs.errCode() != "DENIED" || !strings.Contains(string(rs.body), "internal address") {
		t.Fatalf("pull from a loopback upstream without --import-allow-cidr = %s; want 403 DENIED, internal address", rs)
	}
	if src.hits.Load() != hits {
		t.Fatalf("the refused upstream heard %d requests", src.hits.Load()-hits)
	}
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustImage(t *testing.T, h *harness, u, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(h.ref(t, ref), remote.WithAuth(ggcrAuth(t, h, u)), remote.WithContext(ctxT(t)))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestMirrorImage(t *testing.T) {
	const reg = "127.0.0.1:5000"
	names := []string{"docker.io", "quay.io"}
	for _, tc := range []struct{ image, want string }{
		{"nginx", reg + "/docker.io/library/nginx:latest"},
		{"nginx:1.27", reg + "/docker.io/library/nginx:1.27"},
		{"docker.io/library/nginx@sha256:" + strings.Repeat("a", 64), reg + "/docker.io/library/nginx@sha256:" + strings.Repeat("a", 64)},
		{"bitnami/redis:7", reg + "/docker.io/bitnami/redis:7"},
		{"quay.io/org/app:1", reg + "/quay.io/org/app:1"},
		{"ghcr.io/org/app:1", ""},            // no mirror for it
		{reg + "/shop/app:1", ""},            // already the integrated registry
		{reg + "/docker.io/library/x:1", ""}, // already through the mirror
		{"Not A Reference", ""},
	} {
		got, ok := registry.MirrorImage(reg, names, tc.image)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("MirrorImage(%q) = %q, %v; want %q", tc.image, got, ok, tc.want)
		}
	}
	if got, ok := registry.MirrorImage(reg, nil, "nginx"); ok {
		t.Errorf("MirrorImage with no mirrors = %q; want none", got)
	}
}

// settledHits is the upstream's request count once it has not moved for
// half a second.
func settledHits(src *countingServer) int64 {
	last := src.hits.Load()
	for {
		time.Sleep(500 * time.Millisecond)
		n := src.hits.Load()
		if n == last {
			return n
		}
		last = n
	}
}
