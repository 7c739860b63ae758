package scan_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"slipway.dev/slipway/scan"
)

const (
	vulnOpenSSL  = "3.0.11-1~deb12u1"
	fixedOpenSSL = "3.0.13-1~deb12u1"
	critical31   = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" // 9.8
)

func goVersion() string { return strings.TrimPrefix(runtime.Version(), "go") }

// debianApp is a Debian base layer plus a layer with a Go binary.
func debianApp(t *testing.T, opens *atomic.Int64, opensslVersion string) *scan.SBOM {
	t.Helper()
	img := image(t,
		debianLayer(t, opens, opensslVersion),
		layer(t, opens, exe("usr/local/bin/app", goBinary(t)), file("usr/local/bin/README", "not a binary")),
	)
	s, err := scan.NewSBOM(context.Background(), img)
	if err != nil {
		t.Fatalf("NewSBOM: %v", err)
	}
	return s
}

func TestSBOMDebianAndGoBinary(t *testing.T) {
	s := debianApp(t, nil, vulnOpenSSL)
	want := []scan.Package{
		{Ecosystem: "Debian:12", Name: "base-files", Version: "12.4+deb12u5", Locations: []string{"/var/lib/dpkg/status"}},
		{Ecosystem: "Debian:12", Name: "libssl3", Version: vulnOpenSSL, Source: "openssl", Locations: []string{"/var/lib/dpkg/status"}},
		{Ecosystem: "Debian:12", Name: "openssl", Version: vulnOpenSSL, Locations: []string{"/var/lib/dpkg/status"}},
		{Ecosystem: "Go", Name: "example.com/app", Version: "(devel)", Locations: []string{"/usr/local/bin/app"}},
		{Ecosystem: "Go", Name: "example.com/vulnlib", Version: "1.2.3", Locations: []string{"/usr/local/bin/app"}},
		{Ecosystem: "Go", Name: "go", Version: goVersion(), Source: "stdlib", Locations: []string{"/usr/local/bin/app"}},
	}
	if diff := cmp.Diff(want, s.Packages, cmpopts.IgnoreFields(scan.Package{}, "PURL")); diff != "" {
		t.Errorf("NewSBOM packages (-want +got):\n%s", diff)
	}
	for _, p := range s.Packages {
		if p.PURL == "" {
			t.Errorf("package %s has no purl", p.Name)
		}
	}
	if got := s.OS; got != (scan.OS{ID: "debian", VersionID: "12"}) {
		t.Errorf("NewSBOM OS = %+v, want debian 12 (read through the etc/os-release link)", got)
	}
	if !strings.HasPrefix(s.Image, "sha256:") {
		t.Errorf("NewSBOM Image = %q, want the manifest digest", s.Image)
	}

	// The document is CycloneDX 1.6, the same bytes every time.
	var doc struct {
		BOMFormat   string `json:"bomFormat"`
		SpecVersion string `json:"specVersion"`
		Components  []struct {
			Type string `json:"type"`
			Name string `json:"name"`
			PURL string `json:"purl"`
		} `json:"components"`
	}
	if err := json.Unmarshal(s.JSON(), &doc); err != nil {
		t.Fatalf("JSON() is not JSON: %v", err)
	}
	if doc.BOMFormat != "CycloneDX" || doc.SpecVersion != "1.6" || len(doc.Components) != len(want)+1 {
		t.Errorf("JSON() = format %q spec %q with %d components, want CycloneDX 1.6 with %d", doc.BOMFormat, doc.SpecVersion, len(doc.Components), len(want)+1)
	}
	again := debianApp(t, nil, vulnOpenSSL)
	if !bytes.Equal(s.JSON(), again.JSON()) {
		t.Errorf("two SBOMs of the same image differ:\n%s\n%s", s.JSON(), again.JSON())
	}

	parsed, err := scan.ParseSBOM(s.JSON())
	if err != nil {
		t.Fatalf("ParseSBOM: %v", err)
	}
	if diff := cmp.Diff(s, parsed, cmp.AllowUnexported(scan.SBOM{})); diff != "" {
		t.Errorf("ParseSBOM(JSON()) (-made +parsed):\n%s", diff)
	}
}

func TestSBOMAlpine(t *testing.T) {
	s, err := scan.NewSBOM(context.Background(), image(t, alpineLayer(t, "3.1.4-r5")))
	if err != nil {
		t.Fatal(err)
	}
	want := []scan.Package{
		{Ecosystem: "Alpine:v3.19", Name: "busybox", Version: "1.36.1-r15", Locations: []string{"/lib/apk/db/installed"}},
		{Ecosystem: "Alpine:v3.19", Name: "libcrypto3", Version: "3.1.4-r5", Source: "openssl", Locations: []string{"/lib/apk/db/installed"}},
	}
	if diff := cmp.Diff(want, s.Packages, cmpopts.IgnoreFields(scan.Package{}, "PURL")); diff != "" {
		t.Errorf("NewSBOM packages (-want +got):\n%s", diff)
	}
}

// Without os-release the release is unknown: Debian packages are still
// "Debian" (matching every release's advisories), not osv-scalibr's "Linux".
func TestSBOMWithoutOSRelease(t *testing.T) {
	img := image(t, layer(t, nil, file("var/lib/dpkg/status", dpkgStatus([3]string{"openssl", vulnOpenSSL, ""}))))
	s, err := scan.NewSBOM(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Packages) != 1 || s.Packages[0].Ecosystem != "Debian" {
		t.Fatalf("NewSBOM packages = %+v, want openssl in ecosystem Debian", s.Packages)
	}
	if got := testDB(t).Match(s); len(got) != 2 {
		t.Errorf("Match = %+v, want the Debian 12 and Debian 11 advisories", got)
	}
}

// testDB is the database the matching tests use.
func testDB(t *testing.T, extra ...map[string]any) *scan.DB {
	t.Helper()
	records := []map[string]any{
		with(with(advisory("DSA-9001-1", "Debian:12", "openssl", introduced("0"), fixed(fixedOpenSSL)),
			"aliases", []string{"CVE-2099-0001"}),
			"severity", []any{map[string]string{"type": "CVSS_V3", "score": critical31}}),
		// Same package, another release: must not match Debian 12.
		advisory("DSA-9002-1", "Debian:11", "openssl", introduced("0"), fixed("9.9.9-1")),
		with(advisory("ALPINE-CVE-2099-0002", "Alpine:v3.19", "openssl", introduced("0"), fixed("3.1.4-r6")),
			"database_specific", map[string]string{"severity": "MODERATE"}),
		with(advisory("GO-2099-0003", "Go", "example.com/vulnlib", introduced("1.0.0"), fixed("1.2.4")),
			"database_specific", map[string]string{"severity": "HIGH"}),
		// Ends at 1.2.2: 1.2.3 is not affected.
		advisory("GO-2099-0004", "Go", "example.com/vulnlib", introduced("0"), lastAffected("1.2.2")),
	}
	db, err := scan.LoadDB(osvDir(t, append(records, extra...)...))
	if err != nil {
		t.Fatalf("LoadDB: %v", err)
	}
	return db
}

func TestMatchFlagsVulnerableImage(t *testing.T) {
	db := testDB(t)
	got := db.Match(debianApp(t, nil, vulnOpenSSL))
	want := []scan.Finding{
		{ID: "DSA-9001-1", Aliases: []string{"CVE-2099-0001"}, Ecosystem: "Debian:12", Package: "libssl3", Version: vulnOpenSSL,
			FixedIn: fixedOpenSSL, Severity: scan.SeverityCritical, Summary: "DSA-9001-1 in openssl"},
		{ID: "DSA-9001-1", Aliases: []string{"CVE-2099-0001"}, Ecosystem: "Debian:12", Package: "openssl", Version: vulnOpenSSL,
			FixedIn: fixedOpenSSL, Severity: scan.SeverityCritical, Summary: "DSA-9001-1 in openssl"},
		{ID: "GO-2099-0003", Ecosystem: "Go", Package: "example.com/vulnlib", Version: "1.2.3",
			FixedIn: "1.2.4", Severity: scan.SeverityHigh, Summary: "GO-2099-0003 in example.com/vulnlib"},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(scan.Finding{}, "PURL")); diff != "" {
		t.Errorf("Match (-want +got):\n%s", diff)
	}

	alpine, err := scan.NewSBOM(context.Background(), image(t, alpineLayer(t, "3.1.4-r5")))
	if err != nil {
		t.Fatal(err)
	}
	got = db.Match(alpine)
	if len(got) != 1 || got[0].ID != "ALPINE-CVE-2099-0002" || got[0].Package != "libcrypto3" ||
		got[0].FixedIn != "3.1.4-r6" || got[0].Severity != scan.SeverityMedium {
		t.Errorf("Match(alpine) = %+v, want ALPINE-CVE-2099-0002 on libcrypto3, fixed in 3.1.4-r6, MEDIUM", got)
	}
}

func TestMatchCleanImage(t *testing.T) {
	db := testDB(t)
	s := debianApp(t, nil, fixedOpenSSL)
	for _, f := range db.Match(s) {
		if f.Ecosystem != "Go" {
			t.Errorf("Match(clean image) found %s on %s %s, want nothing on the fixed version", f.ID, f.Package, f.Version)
		}
	}
	alpine, err := scan.NewSBOM(context.Background(), image(t, alpineLayer(t, "3.1.4-r6")))
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Match(alpine); len(got) != 0 {
		t.Errorf("Match(clean alpine) = %+v, want none", got)
	}
}

// A database update flags an SBOM made before it, from the stored bytes
// alone: the image's layers are not read again.
func TestRematchStoredSBOMAfterDBUpdate(t *testing.T) {
	var opens atomic.Int64
	stored := debianApp(t, &opens, vulnOpenSSL).JSON()
	readsAfterScan := opens.Load()
	if readsAfterScan == 0 {
		t.Fatal("layers were never opened: the counter does not work")
	}

	before := testDB(t)
	s, err := scan.ParseSBOM(stored)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range before.Match(s) {
		if f.Package == "base-files" {
			t.Fatalf("base-files flagged before the update: %+v", f)
		}
	}

	updated := testDB(t, with(advisory("DSA-9100-1", "Debian:12", "base-files", introduced("0"), fixed("12.4+deb12u6")),
		"severity", []any{map[string]string{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N"}}))
	s, err = scan.ParseSBOM(stored)
	if err != nil {
		t.Fatal(err)
	}
	var got []scan.Finding
	for _, f := range updated.Match(s) {
		if f.ID == "DSA-9100-1" {
			got = append(got, f)
		}
	}
	if len(got) != 1 || got[0].Package != "base-files" || got[0].FixedIn != "12.4+deb12u6" || got[0].Severity != scan.SeverityLow {
		t.Errorf("rematch after update = %+v, want DSA-9100-1 on base-files, fixed in 12.4+deb12u6, LOW (CVSS 3.1)", got)
	}
	if n := opens.Load(); n != readsAfterScan {
		t.Errorf("layers opened %d times during the rematch, want 0", n-readsAfterScan)
	}
}

// TestVersionOrdering checks each ecosystem's ordering through Match.
func TestVersionOrdering(t *testing.T) {
	tests := []struct {
		name      string
		ecosystem string
		version   string
		events    []map[string]string
		want      bool
	}{
		{"epoch beats a larger upstream", "Debian:12", "1:1.0-1", []map[string]string{introduced("0"), fixed("2.0-1")}, false},
		{"no epoch is epoch 0", "Debian:12", "1.0-1", []map[string]string{introduced("0"), fixed("1:0.5-1")}, true},
		{"tilde sorts before the release", "Debian:12", "3.0.11-1~deb12u1", []map[string]string{introduced("0"), fixed("3.0.11-1")}, true},
		{"tilde in upstream", "Debian:12", "1.0~rc1-1", []map[string]string{introduced("0"), fixed("1.0-1")}, true},
		{"security update counter", "Debian:12", "3.0.11-1~deb12u2", []map[string]string{introduced("0"), fixed("3.0.11-1~deb12u2")}, false},
		{"plus sorts after the release", "Debian:12", "3.0.11-1+deb12u1", []map[string]string{introduced("0"), fixed("3.0.11-1")}, false},
		{"numeric not lexical", "Debian:12", "1.10-1", []map[string]string{introduced("0"), fixed("1.9-1")}, false},
		{"last_affected includes itself", "Debian:12", "2.0-1", []map[string]string{introduced("0"), lastAffected("2.0-1")}, true},
		{"last_affected excludes later", "Debian:12", "2.0-2", []map[string]string{introduced("0"), lastAffected("2.0-1")}, false},
		{"before introduced", "Debian:12", "1.0-1", []map[string]string{introduced("1.5-1"), fixed("2.0-1")}, false},
		{"second range", "Debian:12", "2.5-1", []map[string]string{introduced("1.0-1"), fixed("1.5-1"), introduced("2.0-1"), fixed("3.0-1")}, true},
		{"between ranges", "Debian:12", "1.7-1", []map[string]string{introduced("1.0-1"), fixed("1.5-1"), introduced("2.0-1"), fixed("3.0-1")}, false},
		{"events out of order", "Debian:12", "2.5-1", []map[string]string{fixed("3.0-1"), introduced("2.0-1"), fixed("1.5-1"), introduced("1.0-1")}, true},
		{"alpine revision", "Alpine:v3.19", "1.36.1-r15", []map[string]string{introduced("0"), fixed("1.36.1-r16")}, true},
		{"alpine numeric", "Alpine:v3.19", "3.1.10-r0", []map[string]string{introduced("0"), fixed("3.1.4-r6")}, false},
		{"alpine rc before release", "Alpine:v3.19", "1.2.0_rc1-r0", []map[string]string{introduced("0"), fixed("1.2.0-r0")}, true},
		{"go numeric", "Go", "1.10.0", []map[string]string{introduced("0"), fixed("1.9.0")}, false},
		{"go prerelease", "Go", "1.2.0-rc.1", []map[string]string{introduced("0"), fixed("1.2.0")}, true},
		{"go pseudo-version", "Go", "0.0.0-20240101000000-abcdef123456", []map[string]string{introduced("0"), fixed("0.1.0")}, true},
		{"go devel never matches", "Go", "(devel)", []map[string]string{introduced("0")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := "pkg"
			if tt.ecosystem == "Go" {
				name = "example.com/pkg"
			}
			db, err := scan.LoadDB(osvDir(t, advisory("TEST-1", tt.ecosystem, name, tt.events...)))
			if err != nil {
				t.Fatal(err)
			}
			s := &scan.SBOM{Packages: []scan.Package{{Ecosystem: tt.ecosystem, Name: name, Version: tt.version}}}
			if got := len(db.Match(s)) == 1; got != tt.want {
				t.Errorf("%s %s affected by %v = %v, want %v", tt.ecosystem, tt.version, tt.events, got, tt.want)
			}
		})
	}
}

func TestMatchVersionsListAndReleases(t *testing.T) {
	db, err := scan.LoadDB(osvDir(t,
		map[string]any{"id": "LIST-1", "affected": []any{map[string]any{
			"package":  map[string]string{"ecosystem": "Debian", "name": "zlib"},
			"versions": []string{"1:1.2.13.dfsg-1"},
		}}},
		with(advisory("WD-1", "Debian:12", "zlib", introduced("0")), "withdrawn", "2024-01-01T00:00:00Z"),
	))
	if err != nil {
		t.Fatal(err)
	}
	pkgs := []scan.Package{
		{Ecosystem: "Debian:12", Name: "zlib1g", Source: "zlib", Version: "1:1.2.13.dfsg-1"}, // listed, any release
		{Ecosystem: "Debian:12", Name: "zlib1g-dev", Source: "zlib", Version: "1:1.2.13.dfsg-2"},
	}
	got := db.Match(&scan.SBOM{Packages: pkgs})
	if len(got) != 1 || got[0].ID != "LIST-1" || got[0].Package != "zlib1g" || got[0].Severity != scan.SeverityUnknown {
		t.Errorf("Match = %+v, want only LIST-1 on zlib1g (exact version listed; withdrawn WD-1 ignored), UNKNOWN severity", got)
	}
	if db.Len() != 1 {
		t.Errorf("Len() = %d, want 1 (withdrawn records are dropped)", db.Len())
	}
}

func TestSeverity(t *testing.T) {
	tests := []struct {
		name string
		set  func(map[string]any) map[string]any
		want scan.Severity
	}{
		{"cvss 3.1 critical", func(r map[string]any) map[string]any {
			return with(r, "severity", []any{map[string]string{"type": "CVSS_V3", "score": critical31}})
		}, scan.SeverityCritical},
		{"cvss 3.0 medium", func(r map[string]any) map[string]any {
			return with(r, "severity", []any{map[string]string{"type": "CVSS_V3", "score": "CVSS:3.0/AV:N/AC:L/PR:L/UI:N/S:U/C:L/I:L/A:N"}})
		}, scan.SeverityMedium},
		{"cvss 4.0 wins over 3.1", func(r map[string]any) map[string]any {
			return with(r, "severity", []any{
				map[string]string{"type": "CVSS_V3", "score": critical31},
				map[string]string{"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:L/VI:N/VA:N/SC:N/SI:N/SA:N"},
			})
		}, scan.SeverityMedium},
		{"cvss beats database_specific", func(r map[string]any) map[string]any {
			r = with(r, "database_specific", map[string]string{"severity": "LOW"})
			return with(r, "severity", []any{map[string]string{"type": "CVSS_V3", "score": critical31}})
		}, scan.SeverityCritical},
		{"github moderate", func(r map[string]any) map[string]any {
			return with(r, "database_specific", map[string]string{"severity": "MODERATE"})
		}, scan.SeverityMedium},
		{"bad vector falls back", func(r map[string]any) map[string]any {
			r = with(r, "database_specific", map[string]string{"severity": "HIGH"})
			return with(r, "severity", []any{map[string]string{"type": "CVSS_V3", "score": "CVSS:3.1/garbage"}})
		}, scan.SeverityHigh},
		{"nothing", func(r map[string]any) map[string]any { return r }, scan.SeverityUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := scan.LoadDB(osvDir(t, tt.set(advisory("SEV-1", "Go", "example.com/x", introduced("0")))))
			if err != nil {
				t.Fatal(err)
			}
			got := db.Match(&scan.SBOM{Packages: []scan.Package{{Ecosystem: "Go", Name: "example.com/x", Version: "1.0.0"}}})
			if len(got) != 1 || got[0].Severity != tt.want {
				t.Errorf("Match severity = %+v, want %s", got, tt.want)
			}
		})
	}
}

func TestLoadDBZipMatchesDir(t *testing.T) {
	rec := with(advisory("DSA-9001-1", "Debian:12", "openssl", introduced("0"), fixed(fixedOpenSSL)),
		"severity", []any{map[string]string{"type": "CVSS_V3", "score": critical31}})
	b, _ := json.Marshal(rec)
	db, err := scan.LoadDB(osvZip(t, map[string][]byte{"DSA-9001-1.json": b}))
	if err != nil {
		t.Fatalf("LoadDB(zip): %v", err)
	}
	s := &scan.SBOM{Packages: []scan.Package{{Ecosystem: "Debian:12", Name: "openssl", Version: vulnOpenSSL}}}
	if got := db.Match(s); len(got) != 1 || got[0].Severity != scan.SeverityCritical {
		t.Errorf("Match with zip database = %+v, want DSA-9001-1 CRITICAL", got)
	}
}

func TestLoadDBRejectsBadInput(t *testing.T) {
	good, _ := json.Marshal(advisory("GOOD-1", "Go", "example.com/x", introduced("0")))
	bigRecord := append([]byte(`{"id":"BIG-1","details":"`), bytes.Repeat([]byte("a"), scan.MaxRecordBytes)...)
	bigRecord = append(bigRecord, `"}`...)
	dirWith := func(name, body string) string {
		dir := osvDir(t, advisory("GOOD-1", "Go", "example.com/x", introduced("0")))
		if err := os.WriteFile(dir+"/"+name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	notZip := t.TempDir() + "/all.zip"
	if err := os.WriteFile(notZip, []byte("this is not a zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		path     string
		mentions string
	}{
		{"not json", dirWith("broken.json", "{not json"), "broken.json"},
		{"json but not osv", dirWith("other.json", `{"name": "a package.json"}`), "other.json: not an OSV record: no id"},
		{"array", dirWith("list.json", `[1, 2, 3]`), "list.json"},
		{"event with two versions", dirWith("ev.json", `{"id":"EV-1","affected":[{"package":{"ecosystem":"Go","name":"x"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0","fixed":"1.0.0"}]}]}]}`), "ev.json"},
		{"affected without package", dirWith("nopkg.json", `{"id":"NP-1","affected":[{"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`), "nopkg.json"},
		{"zip slip", osvZip(t, map[string][]byte{"GOOD-1.json": good, "../../evil.json": good}), `"../../evil.json"`},
		{"absolute zip name", osvZip(t, map[string][]byte{"/etc/evil.json": good}), `"/etc/evil.json"`},
		{"huge record", osvZip(t, map[string][]byte{"BIG-1.json": bigRecord}), "BIG-1.json"},
		{"not a zip", notZip, "all.zip"},
		{"empty directory", t.TempDir(), "no OSV records"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := scan.LoadDB(tt.path)
			if err == nil {
				t.Fatalf("LoadDB(%s) = nil error, want one naming %q", tt.name, tt.mentions)
			}
			if !strings.Contains(err.Error(), tt.mentions) {
				t.Errorf("LoadDB error = %q, want it to name %q", err, tt.mentions)
			}
			if tt.name != "missing" && !errors.Is(err, scan.ErrInvalidDB) {
				t.Errorf("LoadDB error = %v, want ErrInvalidDB", err)
			}
		})
	}
	if _, err := scan.LoadDB(t.TempDir() + "/missing.zip"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadDB(missing file) = %v, want ErrNotExist", err)
	}
}

func TestApplyIgnores(t *testing.T) {
	db := testDB(t)
	findings := db.Match(debianApp(t, nil, vulnOpenSSL))
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	ignores := []scan.Ignore{
		// By alias, one package only, still valid.
		{ID: "CVE-2099-0001", Package: "libssl3", Reason: "not reachable: no TLS server", Expires: now.Add(24 * time.Hour)},
		// Expired: must not apply.
		{ID: "GO-2099-0003", Reason: "was waiting for upstream", Expires: now.Add(-time.Second)},
	}
	kept, ignored := scan.Apply(findings, ignores, now)
	if len(ignored) != 1 || ignored[0].Package != "libssl3" || ignored[0].IgnoreReason != "not reachable: no TLS server" {
		t.Errorf("Apply ignored = %+v, want only DSA-9001-1 on libssl3 with its reason", ignored)
	}
	var keptIDs []string
	for _, f := range kept {
		keptIDs = append(keptIDs, f.ID+"/"+f.Package)
	}
	if diff := cmp.Diff([]string{"DSA-9001-1/openssl", "GO-2099-0003/example.com/vulnlib"}, keptIDs); diff != "" {
		t.Errorf("Apply kept (-want +got):\n%s", diff)
	}
	// With no expiry the ignore is permanent; at its expiry instant it stops.
	if _, ig := scan.Apply(findings, []scan.Ignore{{ID: "GO-2099-0003", Reason: "r"}}, now); len(ig) != 1 {
		t.Errorf("Apply with a zero Expires ignored %d findings, want 1", len(ig))
	}
	if _, ig := scan.Apply(findings, []scan.Ignore{{ID: "GO-2099-0003", Reason: "r", Expires: now}}, now); len(ig) != 0 {
		t.Errorf("Apply at the expiry instant ignored %d findings, want 0", len(ig))
	}
}

func TestParseSBOMOtherTools(t *testing.T) {
	// Components as syft writes them: no slipway properties, purls only.
	doc := `{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[
	 {"type":"library","name":"libssl3","version":"3.0.11-1~deb12u1","purl":"pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&upstream=openssl&distro=debian-12"},
	 {"type":"library","name":"libcrypto3","version":"3.1.4-r5","purl":"pkg:apk/alpine/libcrypto3@3.1.4-r5?arch=x86_64&upstream=openssl&distro=alpine-3.19.1"},
	 {"type":"library","name":"github.com/foo/bar","version":"v1.2.3","purl":"pkg:golang/github.com/foo/bar@v1.2.3"},
	 {"type":"operating-system","name":"debian","version":"12"},
	 {"type":"file","name":"README"}]}`
	s, err := scan.ParseSBOM([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []scan.Package{
		{Ecosystem: "", Name: "README"},
		{Ecosystem: "Alpine:v3.19", Name: "libcrypto3", Version: "3.1.4-r5", Source: "openssl"},
		{Ecosystem: "Debian:12", Name: "libssl3", Version: "3.0.11-1~deb12u1", Source: "openssl"},
		{Ecosystem: "Go", Name: "github.com/foo/bar", Version: "1.2.3"},
	}
	if diff := cmp.Diff(want, s.Packages, cmpopts.IgnoreFields(scan.Package{}, "PURL")); diff != "" {
		t.Errorf("ParseSBOM packages (-want +got):\n%s", diff)
	}
	if s.OS != (scan.OS{ID: "debian", VersionID: "12"}) {
		t.Errorf("ParseSBOM OS = %+v", s.OS)
	}
	for _, bad := range []string{"", "{", `{"bomFormat":"SPDX"}`, `[1]`} {
		if _, err := scan.ParseSBOM([]byte(bad)); !errors.Is(err, scan.ErrInvalidSBOM) {
			t.Errorf("ParseSBOM(%q) = %v, want ErrInvalidSBOM", bad, err)
		}
	}
}
