package registry_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"slipway.dev/slipway/identity"
)

// TestLocalTransportAuthorizesAsItsIdentity: an in-process request is
// authorized as the identity its transport carries, per project, exactly
// as the same request from the network: alice pushes to her project and
// reads back what the network serves (HEAD, manifest, streamed layer
// bytes), is refused another user's private project with nothing
// written, and the anonymous identity is challenged.
func TestLocalTransportAuthorizesAsItsIdentity(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.project(t, "alice", "team", false)
	h.project(t, "bob", "other", false)
	reg := h.env.Server.Registry
	as := func(who identity.Info) []remote.Option {
		return []remote.Option{remote.WithTransport(reg.LocalTransport(who)), remote.WithContext(ctx)}
	}
	alice := identity.Info{Name: "alice", Groups: []string{identity.GroupAuthenticated}}
	img := randomImage(t)

	if err := remote.Write(h.ref(t, "team/app:v1"), img, as(alice)...); err != nil {
		t.Fatalf("in-process push as alice to her project: %v", err)
	}
	man, dgst, err := h.pull(t, "alice", "team/app:v1")
	if err != nil {
		t.Fatalf("pull over the network: %v", err)
	}
	if !bytes.Equal(man, rawManifest(t, img)) || dgst != digestOf(t, img) {
		t.Errorf("the network serves %s, the in-process push wrote %s", dgst, digestOf(t, img))
	}
	desc, err := remote.Head(h.ref(t, "team/app@"+dgst), as(alice)...)
	if err != nil || desc.Digest.String() != dgst || desc.Size != int64(len(man)) {
		t.Errorf("in-process HEAD: %+v, %v; want %s, %d bytes", desc, err, dgst, len(man))
	}
	got, err := remote.Image(h.ref(t, "team/app:v1"), as(alice)...)
	if err != nil {
		t.Fatalf("in-process pull: %v", err)
	}
	gl, _ := got.Layers()
	wl, _ := img.Layers()
	for i := range wl {
		want, _ := wl[i].Compressed()
		wb, _ := io.ReadAll(want)
		rc, err := gl[i].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(b, wb) {
			t.Errorf("layer %d read in-process: %d bytes, %v; want the %d pushed", i, len(b), err, len(wb))
		}
	}

	err = remote.Write(h.ref(t, "other/app:v1"), img, as(alice)...)
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusForbidden {
		t.Fatalf("in-process push as alice to bob's project: %v, want 403", err)
	}
	if _, err := h.stream(t, "other", "app"); err == nil {
		t.Error("the refused push created other/app")
	}
	anon := &http.Client{Transport: reg.LocalTransport(identity.Anonymous)}
	resp, err := anon.Get("http://" + h.env.Registry + "/v2/team/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("in-process GET as the anonymous user: %s, challenge %q; want 401 with a challenge", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
}
