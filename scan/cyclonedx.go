package scan

import (
	"bytes"
	"fmt"
	"strings"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/osv-scalibr/version"
	"github.com/package-url/packageurl-go"
)

// Component properties that carry what a purl cannot say exactly.
const (
	propEcosystem = "slipway:ecosystem"
	propSource    = "slipway:source"
	propLocation  = "slipway:location"
)

// encodeCycloneDX writes s as a CycloneDX 1.6 JSON document.
//
// CycloneDX rather than SPDX: the purl is a field of every component (SPDX
// keeps it among external references), properties carry our ecosystem and
// source name as plain key/values, the same format carries VEX statements
// (vulnerabilities with an analysis) for the ignores, and a document needs
// no creation time or namespace, so one image always gives the same bytes.
// cosign attests it as predicate type "cyclonedx".
func encodeCycloneDX(s *SBOM) ([]byte, error) {
	bom := cdx.NewBOM()
	bom.Metadata = &cdx.Metadata{
		Tools: &cdx.ToolsChoice{Components: &[]cdx.Component{
			{Type: cdx.ComponentTypeApplication, Name: "slipway"},
			{Type: cdx.ComponentTypeLibrary, Group: "github.com/google", Name: "osv-scalibr", Version: version.ScannerVersion},
		}},
	}
	if s.Image != "" {
		bom.Metadata.Component = &cdx.Component{BOMRef: s.Image, Type: cdx.ComponentTypeContainer, Name: s.Image}
	}
	comps := make([]cdx.Component, 0, len(s.Packages)+1)
	if s.OS.ID != "" {
		comps = append(comps, cdx.Component{
			BOMRef: "os:" + s.OS.ID + "@" + s.OS.VersionID, Type: cdx.ComponentTypeOS,
			Name: s.OS.ID, Version: s.OS.VersionID,
		})
	}
	refs := map[string]int{}
	for _, p := range s.Packages {
		props := []cdx.Property{{Name: propEcosystem, Value: p.Ecosystem}}
		if p.Source != "" {
			props = append(props, cdx.Property{Name: propSource, Value: p.Source})
		}
		for _, l := range p.Locations {
			props = append(props, cdx.Property{Name: propLocation, Value: l})
		}
		ref := p.PURL
		if ref == "" {
			ref = p.Ecosystem + "/" + p.Name + "@" + p.Version
		}
		if n := refs[ref]; n > 0 {
			ref = fmt.Sprintf("%s#%d", ref, n)
		}
		refs[ref]++
		comps = append(comps, cdx.Component{
			BOMRef: ref, Type: cdx.ComponentTypeLibrary, Name: p.Name, Version: p.Version,
			PackageURL: p.PURL, Properties: &props,
		})
	}
	bom.Components = &comps
	var buf bytes.Buffer
	enc := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).SetPretty(false).SetEscapeHTML(false)
	if err := enc.EncodeVersion(bom, cdx.SpecVersion1_6); err != nil {
		return nil, fmt.Errorf("scan: encode CycloneDX: %w", err)
	}
	return buf.Bytes(), nil
}

// ParseSBOM reads a CycloneDX JSON document, such as one made by
// (*SBOM).JSON, so that it can be matched again without the image.
//
// Components made by NewSBOM carry their OSV ecosystem as a property. For
// components of other tools it is derived from the purl (deb, apk and
// golang types; the release from a "distro" qualifier such as
// "debian-12"). Components of other types are kept with an empty
// Ecosystem, which Match skips.
func ParseSBOM(data []byte) (*SBOM, error) {
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(bytes.NewReader(data), cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSBOM, err)
	}
	if bom.BOMFormat != cdx.BOMFormat {
		return nil, fmt.Errorf("%w: bomFormat is %q, want %q", ErrInvalidSBOM, bom.BOMFormat, cdx.BOMFormat)
	}
	s := &SBOM{doc: bytes.Clone(data)}
	if bom.Metadata != nil && bom.Metadata.Component != nil && bom.Metadata.Component.Type == cdx.ComponentTypeContainer {
		s.Image = bom.Metadata.Component.Name
	}
	if bom.Components == nil {
		return s, nil
	}
	for _, c := range *bom.Components {
		if c.Type == cdx.ComponentTypeOS {
			s.OS = OS{ID: c.Name, VersionID: c.Version}
			continue
		}
		p := Package{Name: c.Name, Version: c.Version, PURL: c.PackageURL}
		if c.Properties != nil {
			for _, pr := range *c.Properties {
				switch pr.Name {
				case propEcosystem:
					p.Ecosystem = pr.Value
				case propSource:
					p.Source = pr.Value
				case propLocation:
					p.Locations = append(p.Locations, pr.Value)
				}
			}
		}
		if p.Ecosystem == "" && p.PURL != "" {
			fromPURL(&p)
		}
		s.Packages = append(s.Packages, p)
	}
	sortPackages(s.Packages)
	return s, nil
}

// fromPURL fills the ecosystem and source name of a component written by
// another tool (syft, osv-scalibr's own converter) from its purl.
func fromPURL(p *Package) {
	u, err := packageurl.FromString(p.PURL)
	if err != nil {
		return
	}
	q := u.Qualifiers.Map()
	distro := q["distro"]
	switch u.Type {
	case packageurl.TypeDebian:
		p.Ecosystem = "Debian"
		if rel, ok := strings.CutPrefix(distro, "debian-"); ok && rel != "" {
			p.Ecosystem += ":" + strings.SplitN(rel, ".", 2)[0]
		}
		p.Source = firstOf(q["source"], q["upstream"])
	case packageurl.TypeApk:
		p.Ecosystem = "Alpine"
		if rel, ok := strings.CutPrefix(distro, "alpine-"); ok && rel != "" {
			parts := strings.SplitN(rel, ".", 3)
			if len(parts) >= 2 {
				p.Ecosystem += ":v" + parts[0] + "." + parts[1]
			}
		}
		p.Source = firstOf(q["origin"], q["upstream"])
	case packageurl.TypeGolang:
		p.Ecosystem = "Go"
		name := u.Name
		if u.Namespace != "" {
			name = u.Namespace + "/" + u.Name
		}
		if name == "go" || name == "stdlib" {
			p.Source = "stdlib"
		} else if name != p.Name {
			p.Source = name
		}
		p.Version = strings.TrimPrefix(firstOf(p.Version, u.Version), "v")
	}
	// The upstream qualifier of syft may carry "name@version".
	p.Source, _, _ = strings.Cut(p.Source, "@")
	if p.Source == p.Name {
		p.Source = ""
	}
}

func firstOf(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
