package registry_test

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"slipway.dev/slipway/imagestreams"
)

// M5: what an Image record keeps of a pushed image lives in etcd, whose
// quota the platform shares, so it is bounded; the push itself is taken
// (the OCI conformance suite pushes a manifest with 3.9 MB of annotations,
// and the registry must accept it) and the registry keeps the manifest and
// config whole. The record keeps the platform's own keys and says it was
// trimmed.
func TestLargeImageMetadataIsTrimmedInTheRecord(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p", false)
	base := randomImage(t)
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{
		"bloat":                              strings.Repeat("x", 100<<10),
		"org.opencontainers.image.base.name": "p/base:1",
	}
	big, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	dgst := h.pushOK(t, "alice", "p/app:big", big)
	manifest, got, err := h.pull(t, "alice", "p/app@"+dgst)
	if err != nil || got != dgst {
		t.Fatalf("pull p/app@%s = %s, %v; want the pushed manifest", dgst, got, err)
	}
	if want, _ := big.RawManifest(); string(manifest) != string(want) {
		t.Errorf("the pulled manifest differs from the pushed one")
	}
	img, err := h.image(t, "p", dgst)
	if err != nil {
		t.Fatal(err)
	}
	if img.Config == nil || img.Config.Labels["bloat"] != "" || img.Config.Labels["org.opencontainers.image.base.name"] != "p/base:1" {
		t.Errorf("record labels = %v; want the base label kept and the 100 KiB one dropped", img.Config)
	}
	if img.Annotations[imagestreams.TrimmedAnnotation] != "true" {
		t.Errorf("record annotations = %v, want %s", img.Annotations, imagestreams.TrimmedAnnotation)
	}
	if err := imagestreams.CheckImageMetadata(img); err != nil {
		t.Errorf("the stored record is still over the bound: %v", err)
	}
	small := h.pushOK(t, "alice", "p/app:small", base)
	if img, err := h.image(t, "p", small); err != nil || img.Annotations[imagestreams.TrimmedAnnotation] != "" {
		t.Errorf("an ordinary image's record: %v, %v; want it untrimmed", img, err)
	}
}
