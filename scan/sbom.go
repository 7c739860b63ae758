package scan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	cpb "github.com/google/osv-scalibr/binary/proto/config_go_proto"
	"github.com/google/osv-scalibr/extractor"
	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/extractor/filesystem/language/golang/gobinary"
	"github.com/google/osv-scalibr/extractor/filesystem/os/apk"
	apkmeta "github.com/google/osv-scalibr/extractor/filesystem/os/apk/metadata"
	"github.com/google/osv-scalibr/extractor/filesystem/os/dpkg"
	dpkgmeta "github.com/google/osv-scalibr/extractor/filesystem/os/dpkg/metadata"
	"github.com/google/osv-scalibr/extractor/filesystem/os/osrelease"
	scalibrfs "github.com/google/osv-scalibr/fs"
	scalibrlog "github.com/google/osv-scalibr/log"
	"github.com/google/osv-scalibr/stats"
)

var (
	// ErrTooLarge is returned when an image exceeds one of the limits set
	// by the options of NewSBOM.
	ErrTooLarge = errors.New("scan: image too large")
	// ErrInvalidSBOM is returned by ParseSBOM for bytes that are not a
	// CycloneDX JSON document.
	ErrInvalidSBOM = errors.New("scan: invalid SBOM")
)

// SBOM is the software bill of materials of one image: the packages found
// in it, and the CycloneDX JSON document that records them.
type SBOM struct {
	// Image is the digest of the scanned image's manifest; "" if the image
	// could not say.
	Image string
	// OS is the distribution named by the image's /etc/os-release; zero if
	// it has none (a FROM scratch image).
	OS OS
	// Packages are sorted by ecosystem, name and version; each appears once,
	// with every place it was found.
	Packages []Package

	doc []byte
}

// OS identifies a distribution release, from os-release(5).
type OS struct {
	ID        string `json:"id,omitempty"`        // "debian", "alpine"
	VersionID string `json:"versionId,omitempty"` // "12", "3.19.1"
}

// Package is one installed package or Go module.
type Package struct {
	// Ecosystem is the OSV ecosystem, with the distribution release when the
	// image names one: "Debian:12", "Alpine:v3.19", "Go". A dpkg or apk
	// database in an image without os-release gives "Debian" or "Alpine".
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	PURL      string `json:"purl,omitempty"`
	// Source is the name vulnerability databases file this package under,
	// when it is not Name: the Debian source package (libssl3 is built from
	// openssl), the Alpine origin, or "stdlib" for the Go toolchain.
	Source string `json:"source,omitempty"`
	// Locations are the absolute paths in the image the package was read
	// from: a package database or a Go binary.
	Locations []string `json:"locations,omitempty"`
}

// advisoryName is the name OSV advisories use for the package.
func (p Package) advisoryName() string {
	if p.Source != "" {
		return p.Source
	}
	return p.Name
}

// JSON returns the SBOM as a CycloneDX 1.6 JSON document. For an SBOM made
// by ParseSBOM it returns exactly the bytes that were parsed. The same image
// always gives the same bytes: the document carries no timestamp or random
// serial number.
func (s *SBOM) JSON() []byte { return s.doc }

// Option changes a limit of NewSBOM.
type Option func(*options)

type options struct {
	maxImageBytes int64
	maxFileBytes  int64
	maxKeptBytes  int64
	maxMetaBytes  int64
}

// WithMaxImageBytes bounds the uncompressed bytes read from all layers
// together; past it NewSBOM fails with ErrTooLarge. The default is 16 GiB.
func WithMaxImageBytes(n int64) Option { return func(o *options) { o.maxImageBytes = n } }

// WithMaxFileBytes sets the size above which a package database or binary
// is skipped rather than read. The default is 512 MiB.
func WithMaxFileBytes(n int64) Option { return func(o *options) { o.maxFileBytes = n } }

// WithMaxMemoryBytes bounds the bytes of package databases and Go binaries
// kept in memory for the extractors; past it NewSBOM fails with
// ErrTooLarge. One more file, up to the WithMaxFileBytes limit, is held
// while it is examined. The default is 2 GiB.
func WithMaxMemoryBytes(n int64) Option { return func(o *options) { o.maxKeptBytes = n } }

var quietScalibr sync.Once

// slogScalibr sends osv-scalibr's log lines to slog at debug level: its
// warnings are about single files of scanned images (a package with no
// status field, no os-release in a scratch image) and not actionable here.
type slogScalibr struct{}

func (slogScalibr) Errorf(f string, a ...any) {
	slog.Debug(fmt.Sprintf(f, a...), "from", "osv-scalibr")
}
func (slogScalibr) Error(a ...any)           { slog.Debug(fmt.Sprint(a...), "from", "osv-scalibr") }
func (slogScalibr) Warnf(f string, a ...any) { slog.Debug(fmt.Sprintf(f, a...), "from", "osv-scalibr") }
func (slogScalibr) Warn(a ...any)            { slog.Debug(fmt.Sprint(a...), "from", "osv-scalibr") }
func (slogScalibr) Infof(f string, a ...any) { slog.Debug(fmt.Sprintf(f, a...), "from", "osv-scalibr") }
func (slogScalibr) Info(a ...any)            { slog.Debug(fmt.Sprint(a...), "from", "osv-scalibr") }
func (slogScalibr) Debugf(f string, a ...any) {
	slog.Debug(fmt.Sprintf(f, a...), "from", "osv-scalibr")
}
func (slogScalibr) Debug(a ...any) { slog.Debug(fmt.Sprint(a...), "from", "osv-scalibr") }

// extractors are the osv-scalibr plugins NewSBOM runs: Debian packages
// (var/lib/dpkg/status and distroless status.d), Alpine packages
// (lib/apk/db/installed) and the module list of Go binaries.
func extractors() ([]filesystem.Extractor, error) {
	var out []filesystem.Extractor
	for _, newExt := range []func(*cpb.PluginConfig) (filesystem.Extractor, error){dpkg.New, apk.New, gobinary.New} {
		ex, err := newExt(&cpb.PluginConfig{})
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		out = append(out, ex)
	}
	return out, nil
}

// NewSBOM lists the packages installed in img: Debian (dpkg) and Alpine (apk)
// packages, and the modules and Go version of every Go binary.
//
// The layers are read once, as the flattened filesystem a container would
// see. Only package databases, os-release and Go binaries are kept, in
// memory; nothing is written to disk, and links resolve inside the image.
// An image whose layers name paths outside the root ("../x") is refused.
// The limits are set by options; ctx cancels the read.
func NewSBOM(ctx context.Context, img v1.Image, opts ...Option) (*SBOM, error) {
	o := options{maxImageBytes: 16 << 30, maxFileBytes: 512 << 20, maxKeptBytes: 2 << 30, maxMetaBytes: 128 << 20}
	for _, opt := range opts {
		opt(&o)
	}
	quietScalibr.Do(func() { scalibrlog.SetLogger(slogScalibr{}) })
	exts, err := extractors()
	if err != nil {
		return nil, err
	}
	fsys, err := flatten(ctx, img, exts, o)
	if err != nil {
		return nil, err
	}
	inv, status, err := filesystem.Run(ctx, &filesystem.Config{
		Extractors: exts,
		ScanRoots:  []*scalibrfs.ScanRoot{{FS: fsys}},
		Stats:      stats.NoopCollector{},
	})
	if err != nil {
		return nil, fmt.Errorf("scan: extract packages: %w", err)
	}
	for _, st := range status {
		// A database an extractor could not parse: the SBOM would silently
		// miss its packages, so the scan fails.
		if st.Status == nil || st.Status.FailureReason == "" {
			continue
		}
		if fe := st.Status.FileErrors; len(fe) > 0 {
			return nil, fmt.Errorf("scan: %s: /%s: %s", st.Name, fe[0].FilePath, fe[0].ErrorMessage)
		}
		return nil, fmt.Errorf("scan: %s: %s", st.Name, st.Status.FailureReason)
	}
	s := &SBOM{Packages: mergePackages(inv.Packages)}
	if d, err := img.Digest(); err == nil {
		s.Image = d.String()
	}
	if rel, err := osrelease.GetOSRelease(fsys); err == nil {
		s.OS = OS{ID: rel["ID"], VersionID: rel["VERSION_ID"]}
	}
	if s.doc, err = encodeCycloneDX(s); err != nil {
		return nil, err
	}
	return s, nil
}

// mergePackages converts osv-scalibr's packages and folds duplicates (the
// Go toolchain of every binary, a module in several binaries) into one
// Package with several locations.
func mergePackages(in []*extractor.Package) []Package {
	type key struct{ eco, name, version, purl string }
	byKey := map[key]*Package{}
	for _, sp := range in {
		p := fromScalibr(sp)
		k := key{p.Ecosystem, p.Name, p.Version, p.PURL}
		if have, ok := byKey[k]; ok {
			have.Locations = append(have.Locations, p.Locations...)
			continue
		}
		byKey[k] = &p
	}
	out := make([]Package, 0, len(byKey))
	for _, p := range byKey {
		slices.Sort(p.Locations)
		p.Locations = slices.Compact(p.Locations)
		out = append(out, *p)
	}
	sortPackages(out)
	return out
}

func sortPackages(ps []Package) {
	slices.SortFunc(ps, func(a, b Package) int {
		return cmp.Or(cmp.Compare(a.Ecosystem, b.Ecosystem), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Version, b.Version), cmp.Compare(a.PURL, b.PURL))
	})
}

func fromScalibr(sp *extractor.Package) Package {
	p := Package{Ecosystem: sp.Ecosystem().String(), Name: sp.Name, Version: sp.Version}
	if u := sp.PURL(); u != nil {
		p.PURL = u.String()
	}
	switch m := sp.Metadata.(type) {
	case *dpkgmeta.Metadata:
		p.Source = m.SourceName
		if m.OSID == "" {
			// No os-release: osv-scalibr says "Linux", which no advisory
			// names. Match Debian advisories of every release instead of
			// none.
			p.Ecosystem = "Debian"
		}
	case *apkmeta.Metadata:
		p.Source = m.OriginName
		if p.Ecosystem == "" {
			p.Ecosystem = "Alpine"
		}
	}
	if p.Ecosystem == "Go" && p.Name == "go" {
		p.Source = "stdlib"
	}
	if p.Source == p.Name {
		p.Source = ""
	}
	if loc := sp.Location.PathOrEmpty(); loc != "" {
		p.Locations = []string{"/" + loc}
	}
	return p
}
