package registry_test

// Imports from an external registry — here a standalone distribution on
// 127.0.0.1 — and the guard around them: the allow-list of hosts (for the
// registry, its redirects and its token realm) and the internal-address
// check after DNS.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server/servertest"
)

// countingServer is an httptest server that counts the requests its
// handler sees.
type countingServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newCountingServer(t *testing.T, h http.Handler) *countingServer {
	t.Helper()
	c := &countingServer{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.hits.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

// host is the server's host:port.
func (c *countingServer) host() string { return strings.TrimPrefix(c.URL, "http://") }

// newSourceRegistry starts a standalone distribution registry with
// in-memory storage, anonymous read and write.
func newSourceRegistry(t *testing.T) *countingServer {
	t.Helper()
	logrus.SetLevel(logrus.FatalLevel)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"inmemory":    configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.HTTP.Secret = "import-test"
	cfg.HTTP.RelativeURLs = true
	return newCountingServer(t, handlers.NewApp(context.Background(), cfg))
}

// pushSource pushes img to the source registry and returns its digest.
func pushSource(t *testing.T, host, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s to the source: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// importTag is a spec tag that imports ref over plain HTTP.
func importTag(tag, ref string) api.TagReference {
	return api.TagReference{Name: tag, From: &api.ObjectReference{Kind: "DockerImage", Name: ref}, ImportPolicy: api.TagImportPolicy{Insecure: true}}
}

// loopback is the range the import tests allow, since every server they
// import from runs on this machine.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// localhost names a 127.0.0.1 host:port by the name localhost.
func localhost(t *testing.T, hostport string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return "localhost:" + port
}

// newChallenger answers every request with a Bearer challenge naming realm.
func newChallenger(t *testing.T, realm string) *countingServer {
	t.Helper()
	return newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service=x`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
}

func TestImport(t *testing.T) {
	src := newSourceRegistry(t)
	img1, img2 := randomImage(t), randomImage(t)
	d1 := pushSource(t, src.host(), "lib/img:1", img1)
	d2 := pushSource(t, src.host(), "lib/img:2", img2)

	// forbidden is on no allow-list: it must never hear from Slipway.
	forbidden := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"token":"t"}`)
	}))
	// redirector is allowed, but sends everything past /v2/ elsewhere.
	redirector := newCountingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, forbidden.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	// challenger is allowed, but names a token realm on forbidden. The
	// realm is a name, not an IP literal: ggcr itself refuses realms on
	// private IP literals, which would hide what Slipway's guard does.
	challenger := newChallenger(t, "http://"+localhost(t, forbidden.host())+"/token")
	// realmOK is allowed, and so is the realm its challenger names: the
	// control showing a realm would be contacted if the guard let it.
	realmOK := newCountingServer(t, forbidden.Config.Handler)
	challengerOK := newChallenger(t, "http://"+localhost(t, realmOK.host())+"/token")

	h := start(t, servertest.WithImport(registry.ImportPolicy{
		Registries: []string{src.host(), redirector.host(), challenger.host(), challengerOK.host(), localhost(t, realmOK.host())},
		CIDRs:      []netip.Prefix{loopback},
	}))
	h.project(t, "alice", "p", false)

	t.Run("imports an image", func(t *testing.T) {
		if err := h.setSpecTag(t, "alice", "p", "imp", importTag("1", src.host()+"/lib/img:1")); err != nil {
			t.Fatal(err)
		}
		st := h.waitHead(t, "p", "imp", "1", d1)
		h.pullSame(t, "alice", "p/imp:1", rawManifest(t, img1))
		rec, err := h.image(t, "p", d1)
		if err != nil {
			t.Fatalf("image record %s in p: %v", d1, err)
		}
		if got, want := rec.DockerImageReference, h.env.Registry+"/p/imp@"+d1; got != want {
			t.Errorf("image dockerImageReference: got %q, want %q", got, want)
		}
		if got, want := st.Items[0].By, "alice"; got != want {
			t.Errorf("history[0].by: got %q, want %q", got, want)
		}
		// The layer is served by Slipway itself.
		if r := h.do(t, req{method: http.MethodHead, path: "/v2/p/imp/blobs/" + layerDigest(t, img1), user: "alice"}); r.code != http.StatusOK {
			t.Errorf("HEAD imported layer: got %v, want 200", r)
		}
		eventually(t, "condition True", func() (bool, string) {
			st, _ := h.tagStatus(t, "p", "imp", "1")
			return len(st.Conditions) > 0 && st.Conditions[0].Status == "True", fmt.Sprintf("%+v", st.Conditions)
		})
	})

	t.Run("a host not on the allow-list is refused", func(t *testing.T) {
		before := src.hits.Load()
		// The same server under another name is another host.
		if err := h.setSpecTag(t, "alice", "p", "notlisted", importTag("1", localhost(t, src.host())+"/lib/img:1")); err != nil {
			t.Fatal(err)
		}
		c := h.waitFailed(t, "p", "notlisted", "1")
		if !strings.Contains(c.Message, "allow-list") {
			t.Errorf("condition message %q does not mention the allow-list", c.Message)
		}
		if n := src.hits.Load() - before; n != 0 {
			t.Errorf("the source saw %d requests for a refused host name, want 0", n)
		}
		if items := h.history(t, "p", "notlisted", "1"); len(items) != 0 {
			t.Errorf("history after a refused import: %+v", items)
		}
	})

	t.Run("a redirect to a host not on the allow-list is refused", func(t *testing.T) {
		if err := h.setSpecTag(t, "alice", "p", "redirected", importTag("1", redirector.host()+"/lib/img:1")); err != nil {
			t.Fatal(err)
		}
		c := h.waitFailed(t, "p", "redirected", "1")
		if !strings.Contains(c.Message, "allow-list") || !strings.Contains(c.Message, forbidden.host()) {
			t.Errorf("condition message %q does not name %s and the allow-list", c.Message, forbidden.host())
		}
		if redirector.hits.Load() == 0 {
			t.Errorf("the redirector saw no request; the test proves nothing")
		}
		if n := forbidden.hits.Load(); n != 0 {
			t.Errorf("the redirect target saw %d requests, want 0", n)
		}
	})

	t.Run("a token realm on a host not on the allow-list is refused", func(t *testing.T) {
		if err := h.setSpecTag(t, "alice", "p", "challenged", importTag("1", challenger.host()+"/lib/img:1")); err != nil {
			t.Fatal(err)
		}
		c := h.waitFailed(t, "p", "challenged", "1")
		if !strings.Contains(c.Message, "allow-list") {
			t.Errorf("condition message %q does not mention the allow-list", c.Message)
		}
		if challenger.hits.Load() == 0 {
			t.Errorf("the challenger saw no request; the test proves nothing")
		}
		if n := forbidden.hits.Load(); n != 0 {
			t.Errorf("the token realm saw %d requests, want 0", n)
		}
	})

	t.Run("a token realm on an allowed host is contacted", func(t *testing.T) {
		if err := h.setSpecTag(t, "alice", "p", "challengedok", importTag("1", challengerOK.host()+"/lib/img:1")); err != nil {
			t.Fatal(err)
		}
		h.waitFailed(t, "p", "challengedok", "1") // the challenger never lets anyone in
		if realmOK.hits.Load() == 0 {
			t.Errorf("the allowed token realm saw no request")
		}
	})

	t.Run("import all tags", func(t *testing.T) {
		is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "all", Namespace: "p", Annotations: map[string]string{
			registry.ImportAllAnnotation:               src.host() + "/lib/img",
			registry.ImportAllAnnotation + "-insecure": "true",
		}}}
		if err := h.user(t, "alice").Create(ctxT(t), api.ImageStreams, is); err != nil {
			t.Fatal(err)
		}
		h.waitHead(t, "p", "all", "1", d1)
		h.waitHead(t, "p", "all", "2", d2)
		h.pullSame(t, "alice", "p/all:2", rawManifest(t, img2))
		got, err := h.stream(t, "p", "all")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tg := range got.Spec.Tags {
			names = append(names, tg.Name)
		}
		if len(names) != 2 {
			t.Errorf("spec tags after import --all: got %v, want [1 2]", names)
		}
	})

	t.Run("import all attributes the tags to the writer", func(t *testing.T) {
		is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "all2", Namespace: "p", Annotations: map[string]string{
			registry.ImportAllAnnotation:               src.host() + "/lib/img",
			registry.ImportAllAnnotation + "-insecure": "true",
			registry.TaggedByAnnotation:                "mallory",
		}}}
		if err := h.user(t, "alice").Create(ctxT(t), api.ImageStreams, is); err != nil {
			t.Fatal(err)
		}
		st := h.waitHead(t, "p", "all2", "1", d1)
		if got, want := st.Items[0].By, "alice"; got != want {
			t.Errorf("history[0].by of a tag imported by --all: got %q, want %q (the writer, not the stream's annotation)", got, want)
		}
	})

	t.Run("changing the source of a tag imports again", func(t *testing.T) {
		if err := h.setSpecTag(t, "alice", "p", "imp", importTag("1", src.host()+"/lib/img:2")); err != nil {
			t.Fatal(err)
		}
		h.waitHead(t, "p", "imp", "1", d2)
	})

	t.Run("without the CIDR, loopback is an internal address", func(t *testing.T) {
		h2 := start(t, servertest.WithImport(registry.ImportPolicy{Registries: []string{src.host(), localhost(t, src.host())}}))
		h2.project(t, "alice", "p", false)
		before := src.hits.Load()
		// By address, and by a name that resolves to loopback.
		for stream, host := range map[string]string{"byaddr": src.host(), "byname": localhost(t, src.host())} {
			if err := h2.setSpecTag(t, "alice", "p", stream, importTag("1", host+"/lib/img:1")); err != nil {
				t.Fatal(err)
			}
			c := h2.waitFailed(t, "p", stream, "1")
			if !strings.Contains(c.Message, "internal address") {
				t.Errorf("%s: condition message %q does not say internal address", stream, c.Message)
			}
		}
		if n := src.hits.Load() - before; n != 0 {
			t.Errorf("the source saw %d requests from a server that may not dial it, want 0", n)
		}
	})
}
