package imagestreams

import (
	"encoding/json"
	"strings"
	"testing"
)

// M5: an image whose config or manifest carries more than 64 KiB of
// labels, env or annotations is refused with the reason; ordinary ones
// are recorded as before.
func TestImageMetadataLimit(t *testing.T) {
	manifest := func(ann map[string]string) []byte {
		b, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
			"config":      map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + strings.Repeat("a", 64), "size": 2},
			"annotations": ann,
		})
		return b
	}
	config := func(env []string, labels map[string]string) []byte {
		b, _ := json.Marshal(map[string]any{"os": "linux", "architecture": "amd64", "config": map[string]any{"Env": env, "Labels": labels}})
		return b
	}
	big := strings.Repeat("x", 70<<10)
	for _, tc := range []struct {
		name     string
		payload  []byte
		config   []byte
		wantPart string // "" accepted
	}{
		{"an ordinary image", manifest(map[string]string{"org.opencontainers.image.source": "https://example.com/x"}), config([]string{"PATH=/usr/bin"}, map[string]string{"a": "b"}), ""},
		{"M5 70 KiB of env", manifest(nil), config([]string{"BIG=" + big}, nil), "config env"},
		{"M5 70 KiB of labels", manifest(nil), config(nil, map[string]string{"big": big}), "config labels"},
		{"M5 70 KiB of manifest annotations", manifest(map[string]string{"big": big}), nil, "manifest annotations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := ImageFromManifest("sha256:"+strings.Repeat("b", 64), "", tc.payload, tc.config)
			if err != nil {
				t.Fatalf("ImageFromManifest: %v", err)
			}
			err = CheckImageMetadata(img)
			if tc.wantPart == "" {
				if err != nil {
					t.Fatalf("CheckImageMetadata: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantPart) || !strings.Contains(err.Error(), "64 KiB") {
				t.Errorf("CheckImageMetadata = %v; want a refusal naming the %s and the 64 KiB limit", err, tc.wantPart)
			}
		})
	}
}
