package scan

import (
	"archive/zip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/google/osv-scalibr/semantic"
	modsemver "golang.org/x/mod/semver"
)

// ErrInvalidDB is returned by LoadDB for input that is not an OSV export:
// a file that is not an OSV record, an unsafe or oversized zip entry.
var ErrInvalidDB = errors.New("scan: invalid vulnerability database")

const (
	// MaxRecordBytes bounds one OSV record. The largest records osv.dev
	// exports (Linux kernel CVEs with long version lists) are a few MiB.
	MaxRecordBytes = 32 << 20
	// MaxDBBytes bounds the uncompressed bytes of all records LoadDB reads.
	MaxDBBytes = 8 << 30
)

// DB is an offline OSV vulnerability database. It is immutable once loaded
// and safe for concurrent use; a database update is a new LoadDB.
type DB struct {
	// byPackage indexes affected entries by base ecosystem and package
	// name, e.g. {"Debian", "openssl"}.
	byPackage map[pkgKey][]*affected
	ids       map[string]*vuln
}

type pkgKey struct{ ecosystem, name string }

// vuln is what a finding needs from an OSV record.
type vuln struct {
	id       string
	aliases  []string
	summary  string
	severity Severity
}

// affected is one affected[] entry of a record.
type affected struct {
	vuln     *vuln
	release  string // "12" of "Debian:12"; "" matches every release
	versions []string
	ranges   []compiledRange
}

// The parts of the OSV schema (https://ossf.github.io/osv-schema/) that
// matching reads. Unknown fields are ignored, as the schema allows.
type osvRecord struct {
	ID               string          `json:"id"`
	Withdrawn        string          `json:"withdrawn"`
	Aliases          []string        `json:"aliases"`
	Summary          string          `json:"summary"`
	Details          string          `json:"details"`
	Severity         []osvSeverity   `json:"severity"`
	Affected         []osvAffected   `json:"affected"`
	DatabaseSpecific json.RawMessage `json:"database_specific"`
}

type osvSeverity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

type osvAffected struct {
	Package struct {
		Ecosystem string `json:"ecosystem"`
		Name      string `json:"name"`
	} `json:"package"`
	Severity          []osvSeverity   `json:"severity"`
	Ranges            []osvRange      `json:"ranges"`
	Versions          []string        `json:"versions"`
	EcosystemSpecific json.RawMessage `json:"ecosystem_specific"`
	DatabaseSpecific  json.RawMessage `json:"database_specific"`
}

type osvRange struct {
	Type   string     `json:"type"`
	Events []osvEvent `json:"events"`
}

type osvEvent struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

// LoadDB reads OSV records from each path, which is either a zip archive as
// osv.dev exports them (e.g. Debian/all.zip) or a directory searched
// recursively for *.json files. A record whose id appears again in a later
// file replaces the earlier one; withdrawn records are dropped.
//
// Every *.json file must be one OSV record: anything else, a zip entry
// named outside the archive ("../x", "/x"), a record over MaxRecordBytes
// or a database over MaxDBBytes fails the load with ErrInvalidDB and the
// file's name. A database with no records at all is an error too, so that
// a wrong path is not taken for "no vulnerabilities".
func LoadDB(paths ...string) (*DB, error) {
	l := &loader{records: map[string]*osvRecord{}}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("scan: load database: %w", err)
		}
		if st.IsDir() {
			err = l.dir(p)
		} else {
			err = l.zip(p)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(l.records) == 0 {
		return nil, fmt.Errorf("%w: %s: no OSV records", ErrInvalidDB, strings.Join(paths, ", "))
	}
	return buildDB(l.records), nil
}

type loader struct {
	records map[string]*osvRecord
	total   int64
}

func (l *loader) zip(name string) error {
	zr, err := zip.OpenReader(name)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidDB, name, err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		if !safeZipName(f.Name) {
			return fmt.Errorf("%w: %s: entry %q is not a relative path inside the archive", ErrInvalidDB, name, f.Name)
		}
		if f.FileInfo().IsDir() || !strings.HasSuffix(f.Name, ".json") {
			continue
		}
		where := name + ": " + f.Name
		if f.UncompressedSize64 > MaxRecordBytes {
			return fmt.Errorf("%w: %s: %d bytes, over the %d byte limit", ErrInvalidDB, where, f.UncompressedSize64, MaxRecordBytes)
		}
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidDB, where, err)
		}
		err = l.read(where, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// safeZipName accepts the names a well-formed export has: relative,
// slash-separated, clean.
func safeZipName(n string) bool {
	n = strings.TrimSuffix(n, "/")
	return n != "" && fs.ValidPath(n) && !strings.Contains(n, "\\") && n != "."
}

func (l *loader) dir(name string) error {
	root, err := os.OpenRoot(name)
	if err != nil {
		return fmt.Errorf("scan: load database: %w", err)
	}
	defer root.Close()
	// root.FS does not follow links out of the directory; links are not
	// records and are skipped.
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("scan: load database: %w", err)
		}
		if !d.Type().IsRegular() || !strings.HasSuffix(p, ".json") {
			return nil
		}
		where := path.Join(name, p)
		f, err := root.Open(p)
		if err != nil {
			return fmt.Errorf("scan: load database: %w", err)
		}
		defer f.Close()
		return l.read(where, f)
	})
}

// read parses one record, reading at most MaxRecordBytes whatever a header
// claimed.
func (l *loader) read(where string, r io.Reader) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxRecordBytes+1))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidDB, where, err)
	}
	if len(data) > MaxRecordBytes {
		return fmt.Errorf("%w: %s: over the %d byte limit", ErrInvalidDB, where, MaxRecordBytes)
	}
	if l.total += int64(len(data)); l.total > MaxDBBytes {
		return fmt.Errorf("%w: %s: database over %d bytes", ErrInvalidDB, where, int64(MaxDBBytes))
	}
	rec := &osvRecord{}
	if err := json.Unmarshal(data, rec); err != nil {
		return fmt.Errorf("%w: %s: not an OSV record: %w", ErrInvalidDB, where, err)
	}
	if err := rec.validate(); err != nil {
		return fmt.Errorf("%w: %s: not an OSV record: %w", ErrInvalidDB, where, err)
	}
	l.records[rec.ID] = rec
	return nil
}

func (r *osvRecord) validate() error {
	if r.ID == "" {
		return errors.New("no id")
	}
	for i, a := range r.Affected {
		if a.Package.Ecosystem == "" || a.Package.Name == "" {
			// Entries that name only a git repository are valid OSV but
			// never match an SBOM package.
			if slices.ContainsFunc(a.Ranges, func(rg osvRange) bool { return rg.Type != "GIT" }) || len(a.Ranges) == 0 {
				return fmt.Errorf("affected[%d]: package needs an ecosystem and a name", i)
			}
		}
		for j, rg := range a.Ranges {
			if rg.Type == "" {
				return fmt.Errorf("affected[%d].ranges[%d]: no type", i, j)
			}
			if len(rg.Events) == 0 {
				return fmt.Errorf("affected[%d].ranges[%d]: no events", i, j)
			}
			for k, e := range rg.Events {
				n := 0
				for _, v := range []string{e.Introduced, e.Fixed, e.LastAffected, e.Limit} {
					if v != "" {
						n++
					}
				}
				if n != 1 {
					return fmt.Errorf("affected[%d].ranges[%d].events[%d]: want exactly one of introduced, fixed, last_affected, limit", i, j, k)
				}
			}
		}
	}
	return nil
}

func buildDB(records map[string]*osvRecord) *DB {
	db := &DB{byPackage: map[pkgKey][]*affected{}, ids: map[string]*vuln{}}
	ids := make([]string, 0, len(records))
	for id := range records {
		ids = append(ids, id)
	}
	slices.Sort(ids) // findings come out in a stable order
	for _, id := range ids {
		r := records[id]
		if r.Withdrawn != "" {
			continue
		}
		v := &vuln{id: r.ID, aliases: r.Aliases, summary: summary(r), severity: recordSeverity(r)}
		db.ids[r.ID] = v
		for _, a := range r.Affected {
			if a.Package.Ecosystem == "" || a.Package.Name == "" {
				continue
			}
			base, release, _ := strings.Cut(a.Package.Ecosystem, ":")
			e := &affected{vuln: v, release: release, versions: a.Versions}
			for _, rg := range a.Ranges {
				if rg.Type != "ECOSYSTEM" && rg.Type != "SEMVER" {
					continue
				}
				e.ranges = append(e.ranges, compileRange(base, rg))
			}
			if len(e.ranges) == 0 && len(e.versions) == 0 {
				continue
			}
			k := pkgKey{base, a.Package.Name}
			db.byPackage[k] = append(db.byPackage[k], e)
		}
	}
	return db
}

// Len returns the number of records in the database, withdrawn ones not
// counted.
func (db *DB) Len() int { return len(db.ids) }

func summary(r *osvRecord) string {
	s := r.Summary
	if s == "" {
		s, _, _ = strings.Cut(strings.TrimSpace(r.Details), "\n")
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// event is a range event with its version parsed for comparison.
type event struct {
	kind eventKind
	raw  string
	v    semantic.Version // nil for "introduced: 0" and for versions that do not parse
}

type eventKind int

// The order of events at one version: introduced first, so that a range
// fixed at the version it was introduced at (an empty range) affects
// nothing.
const (
	evIntroduced eventKind = iota
	evLastAffected
	evFixed
	evLimit
)

// compiledRange is an ECOSYSTEM or SEMVER range with its events sorted by
// version, as the OSV evaluation algorithm requires. If a version does not
// parse, the events keep the record's order and that event is never
// satisfied.
type compiledRange struct {
	semver bool
	events []event
}

func compileRange(ecosystem string, rg osvRange) compiledRange {
	cr := compiledRange{semver: rg.Type == "SEMVER"}
	sortable := true
	for _, e := range rg.Events {
		ev := event{}
		switch {
		case e.Introduced != "":
			ev.kind, ev.raw = evIntroduced, e.Introduced
		case e.LastAffected != "":
			ev.kind, ev.raw = evLastAffected, e.LastAffected
		case e.Fixed != "":
			ev.kind, ev.raw = evFixed, e.Fixed
		default:
			ev.kind, ev.raw = evLimit, e.Limit
		}
		if !(ev.kind == evIntroduced && ev.raw == "0") {
			v, err := parseVersion(ev.raw, ecosystem, cr.semver)
			if err != nil {
				sortable = false
			} else {
				ev.v = v
			}
		}
		cr.events = append(cr.events, ev)
	}
	if !sortable {
		return cr
	}
	slices.SortStableFunc(cr.events, func(a, b event) int {
		switch {
		case a.v == nil && b.v == nil:
			return 0
		case a.v == nil:
			return -1
		case b.v == nil:
			return 1
		}
		if c, err := a.v.Compare(b.v); err == nil && c != 0 {
			return c
		}
		return int(a.kind) - int(b.kind)
	})
	return cr
}

// parseVersion parses a version in the ordering of its ecosystem (dpkg
// ordering for Debian, apk's for Alpine, semver for Go and for SEMVER
// ranges). Go versions must be valid semver: "(devel)" or a bare
// "1.21rc2" never match rather than match by accident.
func parseVersion(s, ecosystem string, semver bool) (semantic.Version, error) {
	if semver || ecosystem == "Go" {
		if !modsemver.IsValid("v" + strings.TrimPrefix(s, "v")) {
			return nil, fmt.Errorf("invalid semantic version %q", s)
		}
		return semantic.ParseSemverVersion(s), nil
	}
	return semantic.Parse(s, ecosystem)
}
