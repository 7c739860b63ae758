package scan

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/google/osv-scalibr/semantic"
)

// Finding is one vulnerability of one package of an SBOM.
type Finding struct {
	ID        string   `json:"id"`
	Aliases   []string `json:"aliases,omitempty"`
	Ecosystem string   `json:"ecosystem"`
	Package   string   `json:"package"`
	Version   string   `json:"version"`
	PURL      string   `json:"purl,omitempty"`
	// FixedIn is the first fixed version after Version in the range that
	// matched; "" if the database names none.
	FixedIn  string   `json:"fixedIn,omitempty"`
	Severity Severity `json:"severity"`
	Summary  string   `json:"summary,omitempty"`
	// IgnoreReason is the reason of the Ignore that set this finding aside;
	// only findings Apply returns as ignored have one.
	IgnoreReason string `json:"ignoreReason,omitempty"`
}

// Match returns the vulnerabilities of the SBOM's packages, most severe
// first, then by ID and package.
//
// A package matches an advisory's affected entry when the base ecosystems
// are equal ("Debian" of "Debian:12"), the advisory's package name is the
// package's Source (or its Name when it has none), and the releases agree:
// an advisory for "Debian:11" does not match a package of "Debian:12", an
// entry with no release matches every release, and a package whose release
// is unknown matches every entry. Its version is then looked up in the
// entry's versions list and evaluated against its ECOSYSTEM and SEMVER
// ranges (introduced, fixed, last_affected and limit events) with the
// ecosystem's version ordering: dpkg's for Debian and Ubuntu, apk's for
// Alpine, semver for Go. GIT ranges are not evaluated: an SBOM has no
// commits. Packages whose version does not parse are skipped.
func (db *DB) Match(s *SBOM) []Finding {
	type key struct{ id, eco, name, version string }
	type hit struct {
		vuln  *vuln
		fixed string
	}
	// Binary packages built from one source (libssl3 and openssl) share
	// their evaluation.
	type evalKey struct{ base, release, name, version string }
	evaluated := map[evalKey][]hit{}
	seen := map[key]bool{}
	var out []Finding
	for _, p := range s.Packages {
		base, release, _ := strings.Cut(p.Ecosystem, ":")
		if base == "" || p.Version == "" {
			continue
		}
		ek := evalKey{base, release, p.advisoryName(), p.Version}
		hits, done := evaluated[ek]
		if !done {
			pv := &pkgVersion{raw: p.Version, ecosystem: base}
			for _, e := range db.byPackage[pkgKey{base, ek.name}] {
				if e.release != "" && release != "" && e.release != release {
					continue
				}
				if ok, fixed := e.affects(pv); ok {
					hits = append(hits, hit{e.vuln, fixed})
				}
			}
			evaluated[ek] = hits
		}
		for _, h := range hits {
			k := key{h.vuln.id, p.Ecosystem, p.Name, p.Version}
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, Finding{
				ID: h.vuln.id, Aliases: slices.Clone(h.vuln.aliases), Ecosystem: p.Ecosystem,
				Package: p.Name, Version: p.Version, PURL: p.PURL, FixedIn: h.fixed,
				Severity: h.vuln.severity, Summary: h.vuln.summary,
			})
		}
	}
	slices.SortStableFunc(out, func(a, b Finding) int {
		return cmp.Or(b.Severity.Rank()-a.Severity.Rank(), cmp.Compare(a.ID, b.ID),
			cmp.Compare(a.Package, b.Package), cmp.Compare(a.Version, b.Version))
	})
	return out
}

// pkgVersion parses a package's version once per ordering it is compared in.
type pkgVersion struct {
	raw       string
	ecosystem string
	parsed    [2]semantic.Version // [0] ecosystem ordering, [1] semver
	tried     [2]bool
}

func (p *pkgVersion) get(semver bool) semantic.Version {
	i := 0
	if semver {
		i = 1
	}
	if !p.tried[i] {
		p.tried[i] = true
		if v, err := parseVersion(p.raw, p.ecosystem, semver); err == nil {
			p.parsed[i] = v
		}
	}
	return p.parsed[i]
}

// affects reports whether the entry covers the version, and the version
// that fixes it.
func (e *affected) affects(p *pkgVersion) (bool, string) {
	for _, v := range e.versions {
		if v == p.raw || (p.ecosystem == "Go" && strings.TrimPrefix(v, "v") == strings.TrimPrefix(p.raw, "v")) {
			return true, ""
		}
	}
	for _, r := range e.ranges {
		v := p.get(r.semver)
		if v == nil {
			continue
		}
		if hit, fixed := r.contains(v); hit {
			return true, fixed
		}
	}
	return false, ""
}

// contains runs the OSV evaluation algorithm over the sorted events.
func (r compiledRange) contains(v semantic.Version) (bool, string) {
	cmpTo := func(ev event) (int, bool) {
		if ev.v == nil {
			return 0, false
		}
		c, err := v.Compare(ev.v)
		return c, err == nil
	}
	vulnerable := false
	for _, ev := range r.events {
		switch ev.kind {
		case evIntroduced:
			if ev.raw == "0" {
				vulnerable = true
			} else if c, ok := cmpTo(ev); ok && c >= 0 {
				vulnerable = true
			}
		case evFixed, evLimit:
			if c, ok := cmpTo(ev); ok && c >= 0 {
				vulnerable = false
			}
		case evLastAffected:
			if c, ok := cmpTo(ev); ok && c > 0 {
				vulnerable = false
			}
		}
	}
	if !vulnerable {
		return false, ""
	}
	for _, ev := range r.events {
		if c, ok := cmpTo(ev); ev.kind == evFixed && ok && c < 0 {
			return true, ev.raw
		}
	}
	return true, ""
}

// Ignore sets findings aside, VEX-style: the vulnerability ID does not
// affect the package, for Reason, until Expires.
type Ignore struct {
	// ID is the advisory's ID or one of its aliases ("CVE-2024-1234" sets
	// aside the DSA that aliases it).
	ID string `json:"id"`
	// Package limits the ignore to one package name; "" means every
	// package.
	Package string `json:"package,omitempty"`
	Reason  string `json:"reason"`
	// Expires is when the ignore stops applying; zero means never.
	Expires time.Time `json:"expires,omitzero"`
}

func (ig Ignore) applies(f Finding, now time.Time) bool {
	if !ig.Expires.IsZero() && !now.Before(ig.Expires) {
		return false
	}
	if ig.Package != "" && ig.Package != f.Package {
		return false
	}
	return ig.ID == f.ID || slices.Contains(f.Aliases, ig.ID)
}

// Apply splits findings into those no ignore covers at time now and those
// one does; each ignored finding carries the first matching ignore's
// reason. Expired ignores cover nothing. The order of findings is kept.
func Apply(findings []Finding, ignores []Ignore, now time.Time) (kept, ignored []Finding) {
	for _, f := range findings {
		i := slices.IndexFunc(ignores, func(ig Ignore) bool { return ig.applies(f, now) })
		if i < 0 {
			kept = append(kept, f)
			continue
		}
		f.IgnoreReason = ignores[i].Reason
		ignored = append(ignored, f)
	}
	return kept, ignored
}
