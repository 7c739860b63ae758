package registry_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
)

// challengeOK checks a 401 answer: the spec's error body and a Bearer
// challenge naming this registry's token endpoint.
func (h *harness) challengeOK(t *testing.T, what string, r resp) {
	t.Helper()
	if got, want := r.code, http.StatusUnauthorized; got != want {
		t.Errorf("%s: got %v, want %d", what, r, want)
		return
	}
	if got, want := r.errCode(), "UNAUTHORIZED"; got != want {
		t.Errorf("%s: error code: got %q, want %q", what, got, want)
	}
	ch := r.header.Get("WWW-Authenticate")
	if want := `Bearer realm="http://` + h.env.Registry + `/v2/token"`; !strings.HasPrefix(ch, want) {
		t.Errorf("%s: WWW-Authenticate: got %q, want it to start with %q", what, ch, want)
	}
	if want := `service="slipway-registry"`; !strings.Contains(ch, want) {
		t.Errorf("%s: WWW-Authenticate: got %q, want it to hold %s", what, ch, want)
	}
}

// deniedOK checks a 403 DENIED answer (HEAD answers have no body).
func deniedOK(t *testing.T, what string, r resp) {
	t.Helper()
	if r.code != http.StatusForbidden || (len(r.body) > 0 && r.errCode() != "DENIED") {
		t.Errorf("%s: got %v (code %q), want 403 DENIED", what, r, r.errCode())
	}
}

// errSaysDenied reports whether a client error names a refusal.
func errSaysDenied(err error) bool {
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "denied") || strings.Contains(s, "unauthorized")
}

func TestAccessMatrix(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "team-a", false)
	h.project(t, "bob", "team-b", false)
	h.project(t, "bob", "pub", true)
	h.grant(t, "team-a", "view", "carol")
	h.grant(t, "team-a", "image-pusher", "dave")

	imgA, imgB, imgPub := randomImage(t), randomImage(t), randomImage(t)
	dA := h.pushOK(t, "alice", "team-a/app:v1", imgA)
	dB := h.pushOK(t, "bob", "team-b/app:v1", imgB)
	dPub := h.pushOK(t, "bob", "pub/app:v1", imgPub)
	layerA, layerB := layerDigest(t, imgA), layerDigest(t, imgB)

	// tagAbsent checks that a push that failed wrote no tag.
	tagAbsent := func(t *testing.T, project, stream, tag string, pushed string) {
		t.Helper()
		if items := h.history(t, project, stream, tag); items != nil {
			t.Errorf("tag %s/%s:%s after a refused push: got history %+v, want none", project, stream, tag, items)
		}
		r := h.getManifest(t, "admin", project+"/"+stream, tag)
		if got, want := r.code, http.StatusNotFound; got != want {
			t.Errorf("GET %s/%s:%s after a refused push: got %v, want %d", project, stream, tag, r, want)
		}
		if _, err := h.image(t, project, pushed); !api.IsNotFound(err) {
			t.Errorf("image record %s in %s after a refused push: got err %v, want NotFound", pushed, project, err)
		}
	}

	t.Run("anonymous push is challenged", func(t *testing.T) {
		h.challengeOK(t, "anonymous POST upload", h.do(t, req{method: http.MethodPost, path: "/v2/team-a/app/blobs/uploads/"}))
		r := h.do(t, req{method: http.MethodPost, path: "/v2/team-a/app/blobs/uploads/"})
		if ch, want := r.header.Get("WWW-Authenticate"), `scope="repository:team-a/app:pull,push"`; !strings.Contains(ch, want) {
			t.Errorf("WWW-Authenticate: got %q, want it to hold %s", ch, want)
		}
		h.challengeOK(t, "anonymous PUT manifest", h.putManifest(t, "", "team-a/app", "anon", "application/vnd.docker.distribution.manifest.v2+json", rawManifest(t, imgA)))
		img := randomImage(t)
		_, err := h.push(t, "", "team-a/app:anon", img)
		if err == nil {
			t.Fatalf("anonymous push: got success, want a refusal")
		}
		tagAbsent(t, "team-a", "app", "anon", digestOf(t, img))
	})

	t.Run("view user cannot push", func(t *testing.T) {
		if r := h.getManifest(t, "carol", "team-a/app", "v1"); r.code != http.StatusOK {
			t.Fatalf("carol (view) pulls team-a/app:v1: got %v, want 200", r)
		}
		img := randomImage(t)
		_, err := h.push(t, "carol", "team-a/app:carol", img)
		if err == nil {
			t.Fatalf("push as a view user: got success, want a refusal")
		}
		if !errSaysDenied(err) {
			t.Errorf("push as a view user: got error %q, want one that says denied or unauthorized", err)
		}
		deniedOK(t, "carol POST upload", h.do(t, req{method: http.MethodPost, path: "/v2/team-a/app/blobs/uploads/", user: "carol"}))
		deniedOK(t, "carol PUT manifest", h.putManifest(t, "carol", "team-a/app", "carol", "application/vnd.docker.distribution.manifest.v2+json", rawManifest(t, img)))
		deniedOK(t, "carol DELETE manifest", h.do(t, req{method: http.MethodDelete, path: "/v2/team-a/app/manifests/" + dA, user: "carol"}))
		tagAbsent(t, "team-a", "app", "carol", digestOf(t, img))
	})

	t.Run("image-pusher pushes to an existing stream", func(t *testing.T) {
		img := randomImage(t)
		if _, err := h.push(t, "dave", "team-a/app:dave", img); err != nil {
			t.Fatalf("dave (image-pusher) pushes to the existing team-a/app: %v", err)
		}
		if items := h.history(t, "team-a", "app", "dave"); len(items) == 0 || items[0].By != "dave" {
			t.Errorf("team-a/app:dave history: got %+v, want dave's push", items)
		}
	})

	t.Run("image-pusher creating a stream is DENIED", func(t *testing.T) {
		// A new stream needs "create imagestreams", which image-pusher
		// lacks; the refusal is the spec's 403 DENIED, not a server error.
		img := randomImage(t)
		code, err := h.push(t, "dave", "team-a/newstream:v1", img)
		if err == nil {
			t.Fatalf("dave creates a stream by pushing: got success, want a refusal")
		}
		if got, want := code, http.StatusForbidden; got != want {
			t.Errorf("manifest PUT creating a stream without the right: got %d (%v), want %d DENIED", got, err, want)
		}
		if _, err := h.stream(t, "team-a", "newstream"); !api.IsNotFound(err) {
			t.Errorf("stream team-a/newstream after the refused push: got err %v, want NotFound", err)
		}
	})

	t.Run("another project's manifest", func(t *testing.T) {
		for _, ref := range []string{"v1", dB} {
			deniedOK(t, "alice GET team-b/app:"+ref, h.getManifest(t, "alice", "team-b/app", ref))
			deniedOK(t, "alice HEAD team-b/app:"+ref, h.do(t, req{method: http.MethodHead, path: "/v2/team-b/app/manifests/" + ref, user: "alice"}))
		}
		if _, _, err := h.pull(t, "alice", "team-b/app:v1"); err == nil {
			t.Errorf("alice pulls team-b/app:v1 with a client: got success, want a refusal")
		}
		// Not by digest through her own repository either.
		r := h.getManifest(t, "alice", "team-a/app", dB)
		if got, want := r.code, http.StatusNotFound; got != want {
			t.Errorf("alice GET team-a/app@%s: got %v, want %d", dB, r, want)
		}
		deniedOK(t, "dave GET team-b/app:v1", h.getManifest(t, "dave", "team-b/app", "v1"))
	})

	t.Run("another project's blob", func(t *testing.T) {
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/team-b/app/blobs/" + layerB, user: "bob"}); r.code != http.StatusOK {
			t.Fatalf("bob GET his own blob: got %v, want 200", r)
		}
		for _, m := range []string{http.MethodHead, http.MethodGet} {
			r := h.do(t, req{method: m, path: "/v2/team-a/app/blobs/" + layerB, user: "alice"})
			if got, want := r.code, http.StatusNotFound; got != want {
				t.Errorf("alice %s team-a/app blob %s: got %v, want %d", m, layerB, r, want)
			}
			if m == http.MethodGet && r.errCode() != "BLOB_UNKNOWN" {
				t.Errorf("alice GET team-a/app blob: error code: got %q, want BLOB_UNKNOWN", r.errCode())
			}
			deniedOK(t, "alice "+m+" team-b/app blob", h.do(t, req{method: m, path: "/v2/team-b/app/blobs/" + layerB, user: "alice"}))
		}
	})

	t.Run("mount from a repository you cannot pull is a plain upload", func(t *testing.T) {
		// Control: the owner's mount works.
		r := h.do(t, req{method: http.MethodPost, path: "/v2/team-b/copy/blobs/uploads/?mount=" + layerB + "&from=team-b/app", user: "bob"})
		if got, want := r.code, http.StatusCreated; got != want {
			t.Fatalf("bob mounts within team-b: got %v, want %d", r, want)
		}
		r = h.do(t, req{method: http.MethodPost, path: "/v2/team-a/x/blobs/uploads/?mount=" + layerB + "&from=team-b/app", user: "alice"})
		if got, want := r.code, http.StatusAccepted; got != want {
			t.Errorf("alice mounts from team-b/app: got %v, want %d", r, want)
		}
		if r.header.Get("Docker-Upload-UUID") == "" {
			t.Errorf("alice mounts from team-b/app: no Docker-Upload-UUID, so not an upload session: %v", r)
		}
		if r := h.do(t, req{method: http.MethodHead, path: "/v2/team-a/x/blobs/" + layerB, user: "alice"}); r.code != http.StatusNotFound {
			t.Errorf("HEAD team-a/x blob after the refused mount: got %v, want 404", r)
		}
	})

	t.Run("mount source in a form body is not trusted", func(t *testing.T) {
		// distribution reads "from" with FormValue, which prefers a
		// url-encoded body to the query the edge checks.
		r := h.do(t, req{method: http.MethodPost, path: "/v2/team-a/y/blobs/uploads/?mount=" + layerB, user: "alice",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: []byte("from=team-b%2Fapp&mount=" + layerB)})
		if r.code == http.StatusCreated {
			t.Errorf("alice mounts a team-b blob by naming the source in the body: got %v, want 202 (a plain upload) or a 4xx", r)
		}
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/team-a/y/blobs/" + layerB, user: "alice"}); r.code != http.StatusNotFound {
			t.Errorf("GET team-a/y blob %s: got %v, want 404", layerB, r)
		}
	})

	t.Run("public project", func(t *testing.T) {
		r := h.getManifest(t, "", "pub/app", "v1")
		if r.code != http.StatusOK || !bytes.Equal(r.body, rawManifest(t, imgPub)) {
			t.Errorf("anonymous GET pub/app:v1: got %v, want 200 with the pushed manifest", r)
		}
		m, d, err := h.pull(t, "", "pub/app:v1")
		if err != nil {
			t.Fatalf("anonymous pull of a public image: %v", err)
		}
		if got, want := d, dPub; got != want || !bytes.Equal(m, rawManifest(t, imgPub)) {
			t.Errorf("anonymous pull: got digest %s, want %s", got, want)
		}
		if r := h.getManifest(t, "alice", "pub/app", "v1"); r.code != http.StatusOK {
			t.Errorf("alice (no role) GET pub/app:v1: got %v, want 200", r)
		}
		h.challengeOK(t, "anonymous POST upload to a public project", h.do(t, req{method: http.MethodPost, path: "/v2/pub/app/blobs/uploads/"}))
		deniedOK(t, "alice POST upload to a public project", h.do(t, req{method: http.MethodPost, path: "/v2/pub/app/blobs/uploads/", user: "alice"}))
		h.challengeOK(t, "anonymous DELETE in a public project", h.do(t, req{method: http.MethodDelete, path: "/v2/pub/app/manifests/" + dPub}))
		img := randomImage(t)
		if _, err := h.push(t, "", "pub/app:anon", img); err == nil {
			t.Errorf("anonymous push to a public project: got success, want a refusal")
		}
		tagAbsent(t, "pub", "app", "anon", digestOf(t, img))
		// Private projects stay private to anonymous users.
		h.challengeOK(t, "anonymous GET team-a/app:v1", h.getManifest(t, "", "team-a/app", "v1"))
		if _, _, err := h.pull(t, "", "team-a/app:v1"); err == nil {
			t.Errorf("anonymous pull of a private image: got success, want a refusal")
		}
	})

	t.Run("spec tags cannot copy another project's image", func(t *testing.T) {
		// bob may edit his own streams; a spec tag whose source is
		// team-a/app must not make alice's image pullable in team-b. The
		// sentinel tag, from bob's own stream, shows the tagger has been
		// through the stream.
		is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "loot", Namespace: "team-b"}, Spec: api.ImageStreamSpec{Tags: []api.TagReference{
			{Name: "by-tag", From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "team-a", Name: "app:v1"}},
			{Name: "by-digest", From: &api.ObjectReference{Kind: "ImageStreamImage", Namespace: "team-a", Name: "app@" + dA}},
			{Name: "sentinel", From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:v1"}},
		}}}
		err := h.user(t, "bob").Create(ctxT(t), api.ImageStreams, is)
		if err != nil {
			if !api.IsReason(err, api.ReasonForbidden) {
				t.Fatalf("create the stream: got %v, want success or Forbidden", err)
			}
			return // refused at the door: nothing can leak
		}
		deadline := time.Now().Add(hangGuard)
		for {
			if items := h.history(t, "team-b", "loot", "sentinel"); len(items) > 0 && items[0].Image == dB {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the tagger never moved the sentinel tag to %s", dB)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, tag := range []string{"by-tag", "by-digest"} {
			if items := h.history(t, "team-b", "loot", tag); len(items) > 0 {
				t.Errorf("team-b/loot:%s: got history %+v, want none (bob may not pull team-a)", tag, items)
			}
		}
		if r := h.getManifest(t, "bob", "team-b/loot", dA); r.code == http.StatusOK {
			t.Errorf("bob GET team-b/loot@%s (alice's image): got 200, want 404", dA)
		}
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/team-b/loot/blobs/" + layerA, user: "bob"}); r.code == http.StatusOK {
			t.Errorf("bob GET team-b/loot blob %s (alice's layer): got 200, want 404", layerA)
		}
		if _, err := h.image(t, "team-b", dA); err == nil {
			t.Errorf("team-b holds an image record for alice's %s", dA)
		}
	})
}
