package scan_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"slipway.dev/slipway/scan"
)

// A stored SBOM is matched again after a database update, without the
// image: NewSBOM(ctx, img) made it once, and its JSON was kept.
func Example() {
	dir, err := os.MkdirTemp("", "osv")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// One record of an osv.dev export (Debian/all.zip holds thousands).
	record := `{"id": "DSA-5678-1", "aliases": ["CVE-2024-0001"], "summary": "openssl: buffer overflow",
	  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
	  "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
	    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.0.13-1~deb12u1"}]}]}]}`
	if err := os.WriteFile(filepath.Join(dir, "DSA-5678-1.json"), []byte(record), 0o644); err != nil {
		log.Fatal(err)
	}
	db, err := scan.LoadDB(dir)
	if err != nil {
		log.Fatal(err)
	}

	stored := []byte(`{"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": [
	  {"type": "library", "name": "libssl3", "version": "3.0.11-1~deb12u1",
	   "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&distro=debian-12&source=openssl"}]}`)
	sbom, err := scan.ParseSBOM(stored)
	if err != nil {
		log.Fatal(err)
	}
	ignores := []scan.Ignore{{ID: "CVE-2024-0001", Package: "libssl3", Reason: "no TLS", Expires: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)}}
	kept, ignored := scan.Apply(db.Match(sbom), ignores, time.Now())
	for _, f := range kept {
		fmt.Println(f.ID, f.Package, f.Version, "fixed in", f.FixedIn, f.Severity)
	}
	fmt.Println(len(ignored), "ignored: the ignore has expired")
	// Output:
	// DSA-5678-1 libssl3 3.0.11-1~deb12u1 fixed in 3.0.13-1~deb12u1 CRITICAL
	// 0 ignored: the ignore has expired
}
