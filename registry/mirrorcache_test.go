package registry_test

// How long the mirror trusts its cache (a tag's TTL, the expiry of what
// nobody pulls, garbage collection of what expired) and how it logs in to
// an upstream that wants credentials. The upstreams are standalone
// distribution registries on 127.0.0.1; the clocks of TTL and expiry are
// the test's.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"

	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server/servertest"
)

// startMirrors starts Slipway with mirrors ms (every upstream on
// loopback, allow-listed with hosts), each on the returned clock.
func startMirrors(t *testing.T, hosts []string, ms ...registry.Mirror) (*harness, *clockwork.FakeClock) {
	t.Helper()
	h := start(t,
		servertest.WithImport(registry.ImportPolicy{Registries: hosts, CIDRs: []netip.Prefix{loopback}}),
		servertest.WithMirrors(ms...))
	clock := clockwork.NewFakeClockAt(time.Now())
	for _, m := range ms {
		registry.SetMirrorClock(h.env.Server.Registry, m.Name, clock.Now)
	}
	return h, clock
}

// TestMirrorTagTTL: a tag moved upstream is served as it was until the
// TTL has passed, without the upstream hearing a request, and as it is
// now after; with the upstream stopped, the cached tag is served past the
// TTL, and content by digest never expires from the TTL.
func TestMirrorTagTTL(t *testing.T) {
	src := newSourceRegistry(t)
	d1 := pushSource(t, src.host(), "library/app:1", randomImage(t))
	h, clock := startMirrors(t, []string{src.host()}, registry.Mirror{Name: "docker.io", URL: "http://" + src.host(), TagTTL: 10 * time.Minute})
	if _, dd, err := h.pull(t, "alice", "docker.io/library/app:1"); err != nil || dd != d1 {
		t.Fatalf("first pull = %s, %v; want %s", dd, err, d1)
	}
	img2 := randomImage(t)
	d2 := pushSource(t, src.host(), "library/app:1", img2)

	clock.Advance(9 * time.Minute)
	hits := src.hits.Load()
	if _, dd, err := h.pull(t, "bob", "docker.io/library/app:1"); err != nil || dd != d1 {
		t.Fatalf("pull within the TTL after the upstream moved the tag = %s, %v; want the cached %s", dd, err, d1)
	}
	if n := src.hits.Load() - hits; n != 0 {
		t.Fatalf("a pull within the TTL sent %d requests upstream; want none", n)
	}

	clock.Advance(2 * time.Minute)
	if _, dd, err := h.pull(t, "bob", "docker.io/library/app:1"); err != nil || dd != d2 {
		t.Fatalf("pull after the TTL = %s, %v; want the upstream's new %s", dd, err, d2)
	}
	if _, err := h.pullImage(t, "alice", "docker.io/library/app:1"); err != nil {
		t.Fatalf("pull the moved tag whole: %v", err)
	}
	// The old image is still there by digest.
	if _, dd, err := h.pull(t, "alice", "docker.io/library/app@"+d1); err != nil || dd != d1 {
		t.Fatalf("pull the old image by digest = %s, %v", dd, err)
	}

	// The upstream stops; past the TTL, the tag is served from the cache.
	src.Close()
	clock.Advance(time.Hour)
	got, err := h.pullImage(t, "carol", "docker.io/library/app:1")
	if err != nil {
		t.Fatalf("pull past the TTL with the upstream stopped: %v", err)
	}
	if want := rawManifest(t, img2); string(got) != string(want) {
		t.Fatalf("cached manifest past the TTL differs from the upstream's last:\n%s\n%s", got, want)
	}
}

// TestMirrorExpire: cached content nobody pulls for the expiry is
// unlinked, tags and all, and the next garbage collection frees its
// blobs; what was pulled meanwhile stays, and the collection before the
// expiry frees nothing of the mirror's.
func TestMirrorExpire(t *testing.T) {
	src := newSourceRegistry(t)
	imgA, imgB := randomImage(t), randomImage(t)
	dA := pushSource(t, src.host(), "library/app:a", imgA)
	dB := pushSource(t, src.host(), "library/app:b", imgB)
	h, clock := startMirrors(t, []string{src.host()}, registry.Mirror{Name: "docker.io", URL: "http://" + src.host(), Expire: 24 * time.Hour})
	reg := h.env.Server.Registry
	for _, tag := range []string{"a", "b"} {
		if _, err := h.pullImage(t, "alice", "docker.io/library/app:"+tag); err != nil {
			t.Fatalf("pull app:%s: %v", tag, err)
		}
	}
	// Blobs must be older than the collection's grace to be candidates.
	time.Sleep(1100 * time.Millisecond)
	ctx := ctxT(t)
	gc := func() map[string]bool {
		t.Helper()
		rep, err := reg.GC(ctx, registry.GCOptions{Grace: time.Second})
		if err != nil {
			t.Fatalf("GC: %v", err)
		}
		freed := map[string]bool{}
		for _, b := range rep.Deleted {
			freed[b.Digest] = true
		}
		return freed
	}
	digests := func(img v1.Image) []string {
		ds := []string{digestOf(t, img)}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, m.Config.Digest.String())
		for _, l := range m.Layers {
			ds = append(ds, l.Digest.String())
		}
		return ds
	}
	if freed := gc(); len(freed) != 0 {
		t.Fatalf("GC with everything cached in use freed %v; want nothing", freed)
	}
	if rep, err := reg.ExpireMirrors(ctx); err != nil || len(rep.Manifests) != 0 {
		t.Fatalf("ExpireMirrors at once = %+v, %v; want nothing expired", rep, err)
	}

	clock.Advance(20 * time.Hour)
	if _, err := h.pullImage(t, "bob", "docker.io/library/app:a"); err != nil {
		t.Fatalf("pull app:a again: %v", err)
	}
	clock.Advance(5 * time.Hour) // a: pulled 5 h ago; b: 25 h ago
	rep, err := reg.ExpireMirrors(ctx)
	if err != nil {
		t.Fatalf("ExpireMirrors: %v", err)
	}
	if want := []string{"docker.io/library/app@" + dB}; !slices.Equal(rep.Manifests, want) || !slices.Equal(rep.Tags, []string{"docker.io/library/app:b"}) {
		t.Fatalf("ExpireMirrors = manifests %v, tags %v; want %v and docker.io/library/app:b", rep.Manifests, rep.Tags, want)
	}
	freed := gc()
	for _, d := range digests(imgB) {
		if !freed[d] {
			t.Errorf("GC after the expiry kept %s of the expired image; freed %v", d, freed)
		}
	}
	for _, d := range digests(imgA) {
		if freed[d] {
			t.Errorf("GC freed %s of the image pulled within the expiry", d)
		}
	}

	// With the upstream stopped, the kept image is whole in the cache and
	// the expired one is gone from it.
	src.Close()
	if got, err := h.pullImage(t, "carol", "docker.io/library/app:a"); err != nil || digest.FromBytes(got).String() != dA {
		t.Fatalf("pull the kept image with the upstream stopped: %v", err)
	}
	rs := h.getManifest(t, "carol", "docker.io/library/app", "b")
	if rs.code != http.StatusServiceUnavailable || !strings.Contains(string(rs.body), "no cached copy") {
		t.Fatalf("pull the expired image with the upstream stopped = %s; want 503, no cached copy", rs)
	}
}

// newAuthRegistry starts a distribution registry that wants user:pass
// (htpasswd, basic auth) for everything, and returns it with the image it
// holds as library/app:1. front sends blob reads to cdn, another host,
// as registries send them to their storage; cdn serves them, and counts
// the requests that came with an Authorization header.
type authUpstream struct {
	front, cdn *countingServer
	withAuth   atomic.Int64 // requests cdn saw carrying an Authorization header
	user, pass string
}

func newAuthUpstream(t *testing.T) *authUpstream {
	t.Helper()
	logrus.SetLevel(logrus.FatalLevel)
	u := &authUpstream{user: "mirror", pass: "s3cret-upstream-pw"}
	hash, err := bcrypt.GenerateFromPassword([]byte(u.pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ht := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(ht, []byte(u.user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"inmemory":    configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "upstream", "path": ht}}
	cfg.HTTP.Secret = "auth-upstream"
	cfg.HTTP.RelativeURLs = true
	app := handlers.NewApp(context.Background(), cfg)
	u.cdn = newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			u.withAuth.Add(1)
		}
		r.SetBasicAuth(u.user, u.pass) // the storage's own access, not the client's
		app.ServeHTTP(w, r)
	}))
	u.front = newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Header.Get("Authorization") != "" {
			// Only a reader that may read it is sent to the storage.
			rec := httptest.NewRecorder()
			app.ServeHTTP(rec, r.Clone(r.Context()))
			if rec.Code == http.StatusOK {
				http.Redirect(w, r, u.cdn.URL+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
		}
		app.ServeHTTP(w, r)
	}))
	return u
}

func (u *authUpstream) push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref := mustRef(t, u.front.host()+"/"+repoTag)
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: u.user, Password: u.pass})); err != nil {
		t.Fatalf("push %s to the upstream: %v", repoTag, err)
	}
	return digestOf(t, img)
}

// TestMirrorCredentials: an upstream that wants credentials is pulled
// through with the admin's credentials file; wrong credentials, or none,
// are a clear error that shows no secret; the credentials never go to the
// host a blob read is redirected to; the file is read at every fetch, so
// fixing it needs no restart.
func TestMirrorCredentials(t *testing.T) {
	up := newAuthUpstream(t)
	img := randomImage(t)
	d := up.push(t, "library/app:1", img)
	creds := filepath.Join(t.TempDir(), "hub.cred")
	if err := os.WriteFile(creds, []byte(up.user+":wrong-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h, clock := startMirrors(t, []string{up.front.host(), up.cdn.host()},
		registry.Mirror{Name: "docker.io", URL: "http://" + up.front.host(), CredentialsFile: creds},
		registry.Mirror{Name: "quay.io", URL: "http://" + up.front.host()})

	rs := h.getManifest(t, "alice", "docker.io/library/app", "1")
	if rs.code != http.StatusBadGateway || rs.errCode() != "DENIED" || !strings.Contains(string(rs.body), "refused the mirror's credentials") {
		t.Fatalf("pull with wrong upstream credentials = %s; want 502 DENIED, refused the mirror's credentials", rs)
	}
	rs = h.getManifest(t, "alice", "quay.io/library/app", "1")
	if rs.code != http.StatusBadGateway || rs.errCode() != "DENIED" || !strings.Contains(string(rs.body), "refused anonymous access") || !strings.Contains(string(rs.body), "credentials=FILE") {
		t.Fatalf("pull from an upstream that wants credentials, with none = %s; want 502 DENIED, refused anonymous access, naming credentials=FILE", rs)
	}

	// The admin fixes the file: the next pull logs in with it.
	if err := os.WriteFile(creds, []byte(up.user+":"+up.pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := h.pullImage(t, "alice", "docker.io/library/app:1")
	if err != nil {
		t.Fatalf("pull with the upstream's credentials: %v", err)
	}
	if string(got) != string(rawManifest(t, img)) {
		t.Fatalf("manifest through the mirror differs from the upstream's")
	}
	if up.cdn.hits.Load() == 0 {
		t.Fatalf("no blob read was redirected to the storage host; the test shows nothing")
	}
	if n := up.withAuth.Load(); n != 0 {
		t.Fatalf("the storage host a blob read was redirected to got %d requests with an Authorization header; want none", n)
	}

	// The password goes bad again: past the TTL the cached tag is served
	// (the upstream refusing is like the upstream being down), what is not
	// cached is the clear error, and no answer carries the secret.
	if err := os.WriteFile(creds, []byte(up.user+":wrong-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, dd, err := h.pull(t, "bob", "docker.io/library/app:1"); err != nil || dd != d {
		t.Fatalf("pull of a cached tag with refused credentials = %s, %v; want the cached %s", dd, err, d)
	}
	rs = h.getManifest(t, "bob", "docker.io/library/other", "1")
	if rs.code != http.StatusBadGateway || rs.errCode() != "DENIED" {
		t.Fatalf("pull of an uncached tag with refused credentials = %s; want 502 DENIED", rs)
	}
	for _, secret := range []string{up.pass, "wrong-password", creds} {
		if strings.Contains(string(rs.body), secret) {
			t.Fatalf("the answer shows %q: %s", secret, rs)
		}
	}
}

func TestParseMirrorOptions(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "c")
	for _, tc := range []struct {
		in   string
		want registry.Mirror
	}{
		{"docker.io=https://h.example", registry.Mirror{Name: "docker.io", URL: "https://h.example"}},
		{"docker.io=https://h.example,ttl=10m,expire=48h,credentials=" + creds, registry.Mirror{Name: "docker.io", URL: "https://h.example", TagTTL: 10 * time.Minute, Expire: 48 * time.Hour, CredentialsFile: creds}},
		{"docker.io=https://h.example,ttl=0,expire=0", registry.Mirror{Name: "docker.io", URL: "https://h.example", TagTTL: -1, Expire: -1}},
	} {
		got, err := registry.ParseMirror(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMirror(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"docker.io=https://h.example,ttl=soon", "docker.io=https://h.example,ttl=-1m", "docker.io=https://h.example,secret=x", "docker.io=https://h.example,credentials=", "docker.io=https://h.example/,x"} {
		if _, err := registry.ParseMirror(bad); err == nil {
			t.Errorf("ParseMirror(%q) = nil error; want refused", bad)
		}
	}
	// The credentials file must be there, and hold USERNAME:PASSWORD.
	p := registry.ImportPolicy{Registries: []string{"h.example"}}
	m := registry.Mirror{Name: "docker.io", URL: "https://h.example", CredentialsFile: creds}
	if err := registry.ValidateMirrors([]registry.Mirror{m}, p); err == nil {
		t.Errorf("ValidateMirrors(credentials file missing) = nil; want an error")
	}
	if err := os.WriteFile(creds, []byte("only-a-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := registry.ValidateMirrors([]registry.Mirror{m}, p); err == nil || !strings.Contains(err.Error(), "USERNAME:PASSWORD") || strings.Contains(err.Error(), "only-a-token") {
		t.Errorf("ValidateMirrors(credentials not USERNAME:PASSWORD) = %v; want an error naming the form, not the content", err)
	}
	if err := os.WriteFile(creds, []byte("u:p:with:colons\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := registry.ValidateMirrors([]registry.Mirror{m}, p); err != nil {
		t.Errorf("ValidateMirrors(good credentials) = %v", err)
	}
}
