package registry_test

import (
	"bytes"
	"net/http"
	"testing"

	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server/servertest"
)

func TestFaultInjection(t *testing.T) {
	f := &registry.FaultInjector{}
	h := start(t, servertest.WithFaults(f))
	h.project(t, "alice", "p", false)

	points := []string{"before-manifest-put", "before-image-record", "before-tag-move", "after-tag-move"}
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			defer f.Fail(point, 0)
			stream := "s-" + point
			repo := "p/" + stream
			v1img, v2img := randomImage(t), randomImage(t)
			v1 := h.pushOK(t, "alice", repo+":t", v1img)
			v2 := digestOf(t, v2img)

			f.Fail(point, 1)
			code, err := h.push(t, "alice", repo+":t", v2img)
			if err == nil {
				t.Fatalf("push of v2 with a fault %s: got success (manifest PUT %d), want a failure", point, code)
			}
			if code >= 200 && code < 300 {
				t.Errorf("manifest PUT with a fault %s: got %d, want non-2xx", point, code)
			}

			// consistent checks that the tag resolves to a digest that has
			// a record and heads the history.
			consistent := func(t *testing.T, allowed ...string) string {
				t.Helper()
				r := h.getManifest(t, "alice", repo, "t")
				if r.code != http.StatusOK {
					t.Fatalf("GET %s:t: got %v, want 200", repo, r)
				}
				got := r.header.Get("Docker-Content-Digest")
				if sha256Of(r.body) != got {
					t.Errorf("GET %s:t: body digest %s, header %s", repo, sha256Of(r.body), got)
				}
				ok := false
				for _, a := range allowed {
					ok = ok || got == a
				}
				if !ok {
					t.Errorf("tag %s:t resolves to %s, want one of %v (v1=%s v2=%s)", repo, got, allowed, v1, v2)
				}
				if _, err := h.image(t, "p", got); err != nil {
					t.Errorf("tag %s:t resolves to %s, which has no image record: %v", repo, got, err)
				}
				items := h.history(t, "p", stream, "t")
				if len(items) == 0 || items[0].Image != got {
					t.Errorf("tag %s:t resolves to %s, but the history is %+v", repo, got, items)
				}
				return got
			}

			t.Run("after the failure", func(t *testing.T) {
				if point == "after-tag-move" {
					consistent(t, v1, v2)
				} else {
					consistent(t, v1)
				}
				r := h.getManifest(t, "alice", repo, v1)
				if r.code != http.StatusOK || !bytes.Equal(r.body, rawManifest(t, v1img)) {
					t.Errorf("acknowledged v1 by digest: got %v, want 200 with its bytes", r)
				}
			})

			t.Run("retry succeeds", func(t *testing.T) {
				if _, err := h.push(t, "alice", repo+":t", v2img); err != nil {
					t.Fatalf("retry push of v2: %v", err)
				}
				consistent(t, v2)
				items := h.history(t, "p", stream, "t")
				var hist []string
				for _, it := range items {
					hist = append(hist, it.Image)
				}
				if want := []string{v2, v1}; len(hist) != 2 || hist[0] != v2 || hist[1] != v1 {
					t.Errorf("history of %s:t: got %v, want %v", repo, hist, want)
				}
				r := h.getManifest(t, "alice", repo, v1)
				if r.code != http.StatusOK || !bytes.Equal(r.body, rawManifest(t, v1img)) {
					t.Errorf("acknowledged v1 by digest after the retry: got %v, want 200 with its bytes", r)
				}
				if _, err := h.image(t, "p", v1); err != nil {
					t.Errorf("image record for v1: %v", err)
				}
			})
		})
	}
}
