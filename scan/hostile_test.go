package scan_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"strings"
	"testing"

	"slipway.dev/slipway/scan"
)

func hashFile(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// noTempFiles points TMPDIR at an empty directory and checks it is still
// empty when the test ends: scanning writes nothing to disk.
func noTempFiles(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	t.Cleanup(func() {
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("scan left %d files in TMPDIR", len(ents))
		}
	})
}

// A layer naming ../etc/passwd is refused as a whole; nothing is written,
// least of all the host's /etc/passwd.
func TestHostileDotDotEntry(t *testing.T) {
	noTempFiles(t)
	before := hashFile(t, "/etc/passwd")
	img := image(t, layer(t, nil,
		file("var/lib/dpkg/status", dpkgStatus([3]string{"bash", "5.2-1", ""})),
		file("../etc/passwd", "root::0:0:owned:/root:/bin/sh\n"),
		file("../../../../../../../etc/passwd", "root::0:0:owned:/root:/bin/sh\n"),
	))
	_, err := scan.NewSBOM(context.Background(), img)
	if err == nil || !strings.Contains(err.Error(), "../etc/passwd") {
		t.Errorf("NewSBOM(image with ../etc/passwd) = %v, want an error naming the entry", err)
	}
	if hashFile(t, "/etc/passwd") != before {
		t.Fatal("/etc/passwd of the host changed")
	}
}

// Links can only name files of the image: absolute targets start at the
// image root, ".." stops at it, and links that loop end with no package.
// This host is Debian, so a link followed on the host would list its
// packages and its os-release.
func TestHostileLinksStayInImage(t *testing.T) {
	noTempFiles(t)
	img := image(t,
		layer(t, nil,
			file("usr/lib/os-release", "ID=inside-image\nVERSION_ID=1\n"),
			// On the host /etc/os-release says debian; inside the image this
			// is usr/lib/os-release.
			symlink("etc/os-release", "/../../../../../usr/lib/os-release"),
			// Absolute links to the host's package databases.
			symlink("var/lib/dpkg/status", "/var/lib/dpkg/status"),
			symlink("lib/apk/db/installed", "/proc/self/root/var/lib/dpkg/status"),
			// Relative link out of the root (dropped by the flattening).
			symlink("usr/lib/escape", "../../../../../../../etc/passwd"),
			hardlink("usr/bin/passwd-copy", "/etc/passwd"),
			// Loops.
			symlink("a", "b"), symlink("b", "a"), symlink("var/lib/dpkg/status.d/loop", "loop"),
		),
	)
	s, err := scan.NewSBOM(context.Background(), img)
	if err != nil {
		t.Fatalf("NewSBOM: %v", err)
	}
	if len(s.Packages) != 0 {
		t.Errorf("NewSBOM found %d packages (first %+v), want none: links must not reach the host", len(s.Packages), s.Packages[0])
	}
	if s.OS.ID != "inside-image" {
		t.Errorf("NewSBOM OS = %+v, want the image's own os-release (ID=inside-image)", s.OS)
	}
}

// Absolute entry names are paths in the image, not on the host.
func TestAbsoluteEntryNamesAreInImage(t *testing.T) {
	noTempFiles(t)
	img := image(t, layer(t, nil,
		file("/etc/os-release", debianOSRelease),
		file("/var/lib/dpkg/status", dpkgStatus([3]string{"bash", "5.2.15-2+b2", ""})),
	))
	s, err := scan.NewSBOM(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Packages) != 1 || s.Packages[0].Name != "bash" || s.Packages[0].Ecosystem != "Debian:12" {
		t.Errorf("NewSBOM packages = %+v, want the image's bash only", s.Packages)
	}
}

// Upper layers win and whiteouts delete, as in a container.
func TestLayersFlatten(t *testing.T) {
	img := image(t,
		debianLayer(t, nil, vulnOpenSSL),
		layer(t, nil, file("var/lib/dpkg/status", dpkgStatus([3]string{"openssl", fixedOpenSSL, ""}))),
		alpineLayer(t, "3.1.4-r5"),
		layer(t, nil, file("lib/apk/db/.wh.installed", "")),
	)
	s, err := scan.NewSBOM(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range s.Packages {
		got = append(got, p.Name+"@"+p.Version)
	}
	if len(got) != 1 || got[0] != "openssl@"+fixedOpenSSL {
		t.Errorf("NewSBOM packages = %v, want only the upper layer's openssl (apk db whited out)", got)
	}
}

func TestLimits(t *testing.T) {
	zeros := layer(t, nil, file("big/zeros", string(make([]byte, 4<<20))))
	_, err := scan.NewSBOM(context.Background(), image(t, zeros), scan.WithMaxImageBytes(1<<20))
	if !errors.Is(err, scan.ErrTooLarge) {
		t.Errorf("NewSBOM(4 MiB image, 1 MiB limit) = %v, want ErrTooLarge", err)
	}
	if _, err := scan.NewSBOM(context.Background(), image(t, zeros), scan.WithMaxImageBytes(8<<20)); err != nil {
		t.Errorf("NewSBOM(4 MiB image, 8 MiB limit) = %v, want success", err)
	}

	status := dpkgStatus([3]string{"bash", "5.2-1", ""}) + strings.Repeat("#", 64<<10)
	img := image(t, layer(t, nil, file("var/lib/dpkg/status", status)))
	if _, err := scan.NewSBOM(context.Background(), img, scan.WithMaxMemoryBytes(32<<10)); !errors.Is(err, scan.ErrTooLarge) {
		t.Errorf("NewSBOM(64 KiB database, 32 KiB memory) = %v, want ErrTooLarge", err)
	}
	s, err := scan.NewSBOM(context.Background(), img, scan.WithMaxFileBytes(32<<10))
	if err != nil || len(s.Packages) != 0 {
		t.Errorf("NewSBOM(64 KiB database, 32 KiB file limit) = %v, %v; want the database skipped", s, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := scan.NewSBOM(ctx, img); !errors.Is(err, context.Canceled) {
		t.Errorf("NewSBOM(cancelled) = %v, want context.Canceled", err)
	}
}

// An executable without Go build info is not held in memory (here: not
// listed, and under a memory limit smaller than it).
func TestNonGoExecutablesAreNotKept(t *testing.T) {
	notGo := append([]byte("\x7fELF"), bytes.Repeat([]byte{1}, 1<<20)...)
	img := image(t, layer(t, nil, exe("usr/bin/tool", notGo), exe("usr/local/bin/app", goBinary(t))))
	s, err := scan.NewSBOM(context.Background(), img, scan.WithMaxMemoryBytes(int64(len(goBinary(t)))+1))
	if err != nil {
		t.Fatalf("NewSBOM: %v", err)
	}
	for _, p := range s.Packages {
		for _, l := range p.Locations {
			if l != "/usr/local/bin/app" {
				t.Errorf("package %s found at %s", p.Name, l)
			}
		}
	}
	if len(s.Packages) == 0 {
		t.Error("NewSBOM found no Go modules")
	}
}

// A package database the extractor cannot parse fails the scan, naming
// the file, rather than giving an SBOM that silently lacks its packages.
func TestCorruptDatabaseFails(t *testing.T) {
	img := image(t, layer(t, nil, file("var/lib/dpkg/status", "Package: bash\nStatus: bogus\nVersion: 5.2-1\n\n")))
	_, err := scan.NewSBOM(context.Background(), img)
	if err == nil || !strings.Contains(err.Error(), "/var/lib/dpkg/status") {
		t.Errorf("NewSBOM(corrupt dpkg status) = %v, want an error naming /var/lib/dpkg/status", err)
	}
}
