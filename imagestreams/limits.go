package imagestreams

import (
	"fmt"
	"strings"

	"slipway.dev/slipway/api"
)

// MaxImageMetadataBytes bounds what one Image record keeps of its manifest
// and config: manifest annotations, config labels, environment, entrypoint
// and command together. Every push stores an Image record (and a referrer
// descriptor with the manifest's annotations) in etcd, whose quota the
// whole platform shares; real images need a few KiB.
const MaxImageMetadataBytes = 64 << 10

// CheckImageMetadata refuses an Image record whose annotations, labels,
// environment, entrypoint and command are over MaxImageMetadataBytes
// together, with an error that names the largest part. The registry calls
// BoundImageMetadata on the record ImageFromManifest makes, on a manifest
// push and on an import, before anything is stored.
func CheckImageMetadata(img *api.Image) error {
	parts := map[string]int{}
	for k, v := range img.ManifestAnnotations {
		parts["manifest annotations"] += len(k) + len(v)
	}
	if c := img.Config; c != nil {
		for k, v := range c.Labels {
			parts["config labels"] += len(k) + len(v)
		}
		for _, e := range c.Env {
			parts["config env"] += len(e)
		}
		for _, e := range c.Entrypoint {
			parts["config entrypoint"] += len(e)
		}
		for _, e := range c.Cmd {
			parts["config cmd"] += len(e)
		}
		parts["config user and workingDir"] += len(c.User) + len(c.WorkingDir)
	}
	total, largest := 0, ""
	for name, n := range parts {
		total += n
		if largest == "" || n > parts[largest] || (n == parts[largest] && name < largest) {
			largest = name
		}
	}
	if total <= MaxImageMetadataBytes {
		return nil
	}
	return fmt.Errorf("image %s: its annotations, labels, environment, entrypoint and command are %d bytes together, over the %d KiB the registry records (the %s alone are %d bytes); keep large data in layers or in an artifact, not in the config or manifest",
		img.Name, total, MaxImageMetadataBytes>>10, largest, parts[largest])
}

// TrimmedAnnotation marks an Image record whose metadata BoundImageMetadata
// cut down; the manifest and config in the registry keep everything.
const TrimmedAnnotation = "slipway.dev/metadata-trimmed"

// BoundImageMetadata keeps an Image record within MaxImageMetadataBytes
// and reports whether it had to cut. A manifest may carry megabytes of
// annotations (the OCI conformance suite pushes 3.9 MB of them, and the
// registry must take it), which the blob store keeps in full; only the
// record in etcd is bounded. It first keeps just the keys the platform
// reads (org.opencontainers.*, io.openshift.*, slipway.dev/*: the base
// image, source and revision that drive rebuilds); if that is still too
// much, the record keeps no annotations, labels, environment or command.
// A trimmed record is annotated with TrimmedAnnotation.
func BoundImageMetadata(img *api.Image) bool {
	if CheckImageMetadata(img) == nil {
		return false
	}
	platform := func(m map[string]string) map[string]string {
		var out map[string]string
		for k, v := range m {
			if strings.HasPrefix(k, "org.opencontainers.") || strings.HasPrefix(k, "io.openshift.") || strings.HasPrefix(k, "slipway.dev/") {
				if out == nil {
					out = map[string]string{}
				}
				out[k] = v
			}
		}
		return out
	}
	img.ManifestAnnotations = platform(img.ManifestAnnotations)
	if c := img.Config; c != nil {
		c.Labels = platform(c.Labels)
	}
	if CheckImageMetadata(img) != nil {
		img.ManifestAnnotations = nil
		if c := img.Config; c != nil {
			c.Labels, c.Env, c.Entrypoint, c.Cmd, c.User, c.WorkingDir = nil, nil, nil, nil, "", ""
		}
	}
	if img.Annotations == nil {
		img.Annotations = map[string]string{}
	}
	img.Annotations[TrimmedAnnotation] = "true"
	return true
}
