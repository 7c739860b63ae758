package scan

import (
	"strings"

	"slipway.dev/slipway/api"
)

// DerivedPrefix starts the message of a scan record that a server-side
// rebase derived from scans already known (the new base's, and the
// image's own less its old base's), without reading a layer. Such a
// record has no SBOM of its own, so a new vulnerability database cannot
// match it again: loading one drops it and the image is scanned in full.
const DerivedPrefix = "rebased: derived without reading a layer from"

// IsDerived says a record was derived by a rebase.
func IsDerived(s *api.ImageScanStatus) bool {
	return s.SBOMDigest == "" && strings.HasPrefix(s.Message, DerivedPrefix)
}
