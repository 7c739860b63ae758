package imagestreams

import (
	"fmt"

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
// it on the record ImageFromManifest makes, on a manifest push and on an
// import, before anything is stored.
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
