package registry_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/registry"
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

// TestWaitQuietCountsNetworkRequestsOnly: a request from the network is in
// flight while it is served (a PATCH whose body is still arriving), and
// ends when it is answered; the server's own in-process requests
// (LocalTransport, which the scanner uses and which waits on this) are
// not counted, or a scan would wait for itself.
func TestWaitQuietCountsNetworkRequestsOnly(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	h.project(t, "alice", "team", false)
	reg := h.env.Server.Registry
	loc := h.startUpload(t, "alice", "team/app")
	body, w := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, h.next(t, loc, nil), body)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("alice", h.token(t, "alice"))
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	if _, err := w.Write([]byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	// The bytes reach the server before its handler starts: wait for it.
	for i := 0; registry.InFlight(reg) != 1; i++ {
		if i == 5000 {
			t.Fatalf("with a PATCH being received, %d requests in flight, want 1", registry.InFlight(reg))
		}
		time.Sleep(time.Millisecond)
	}
	w.Close()
	if resp := <-done; resp != nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("PATCH: %s", resp.Status)
		}
	}
	// The handler returns just after the client has its answer.
	for i := 0; registry.InFlight(reg) != 0; i++ {
		if i == 1000 {
			t.Fatalf("%d requests in flight after the PATCH was answered", registry.InFlight(reg))
		}
		time.Sleep(time.Millisecond)
	}
	// An in-process PATCH is not counted: once its handler has read
	// bytes of the body (an in-process pipe has no buffer), it is being
	// served, and the count stays 0.
	local := &http.Client{Transport: reg.LocalTransport(identity.Info{Name: "alice", Groups: []string{identity.GroupAuthenticated}})}
	loc2 := h.startUpload(t, "alice", "team/app")
	body2, w2 := io.Pipe()
	req2, err := http.NewRequestWithContext(ctx, http.MethodPatch, h.next(t, loc2, nil), body2)
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan *http.Response, 1)
	go func() {
		resp, err := local.Do(req2)
		if err != nil {
			t.Error(err)
		}
		done2 <- resp
	}()
	if _, err := w2.Write([]byte("some bytes")); err != nil {
		t.Fatal(err)
	}
	if n := registry.InFlight(reg); n != 0 {
		t.Errorf("with an in-process PATCH being served, %d requests in flight, want 0", n)
	}
	reg.WaitQuiet(ctx, time.Hour) // returns: nothing from the network is in flight
	w2.Close()
	if resp := <-done2; resp != nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("in-process PATCH: %s", resp.Status)
		}
	}
}
