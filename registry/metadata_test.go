package registry_test

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// M5: what an Image record keeps of a pushed image (config labels, env,
// entrypoint, command and manifest annotations) lives in etcd, so a push
// whose metadata is over the limit is refused with MANIFEST_INVALID before
// anything is stored, and the stream does not move.
func TestOversizedImageMetadataIsRefused(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p", false)
	base := randomImage(t)
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"bloat": strings.Repeat("x", 100<<10)}
	big, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.push(t, "alice", "p/app:big", big)
	if err == nil || !strings.Contains(err.Error(), "MANIFEST_INVALID") || !strings.Contains(err.Error(), "config labels") {
		t.Fatalf("push with 100 KiB of labels: %v, want MANIFEST_INVALID naming the config labels", err)
	}
	dgst := digestOf(t, big)
	if r := h.getManifest(t, "alice", "p/app", dgst); r.code != 404 {
		t.Errorf("GET p/app@%s after the refused push = %d, want 404 (nothing stored)", dgst, r.code)
	}
	if _, err := h.image(t, "p", dgst); err == nil {
		t.Errorf("an Image record for %s exists after the refused push", dgst)
	}
	// The same image with ordinary metadata goes in.
	h.pushOK(t, "alice", "p/app:small", base)
}
