package scan_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"slipway.dev/slipway/store/storetest"
)

// shared holds what tests build once: the Go binary.
var shared string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scantest")
	if err != nil {
		panic(err)
	}
	shared = dir
	code := storetest.Main(m) // the controller's tests need a store
	os.RemoveAll(dir)
	os.Exit(code)
}

// entry is one tar entry of a test layer.
type entry struct {
	name string
	body []byte
	link string
	typ  byte
	mode int64
}

func file(name, body string) entry {
	return entry{name: name, body: []byte(body), typ: tar.TypeReg, mode: 0o644}
}
func exe(name string, body []byte) entry {
	return entry{name: name, body: body, typ: tar.TypeReg, mode: 0o755}
}
func symlink(name, target string) entry {
	return entry{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, target string) entry {
	return entry{name: name, link: target, typ: tar.TypeLink, mode: 0o644}
}

func tarBytes(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer makes a layer of the entries; opens, if not nil, counts how often
// its bytes are read.
func layer(t *testing.T, opens *atomic.Int64, entries ...entry) v1.Layer {
	t.Helper()
	data := tarBytes(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		if opens != nil {
			opens.Add(1)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

const debianOSRelease = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
`

const alpineOSRelease = `NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
`

// dpkgStatus writes a var/lib/dpkg/status with the packages given as
// name, version, source triples; source may be "".
func dpkgStatus(pkgs ...[3]string) string {
	var b bytes.Buffer
	for _, p := range pkgs {
		fmt.Fprintf(&b, "Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\n", p[0])
		if p[2] != "" {
			fmt.Fprintf(&b, "Source: %s\n", p[2])
		}
		fmt.Fprintf(&b, "Version: %s\nDescription: test package %s\n\n", p[1], p[0])
	}
	// A package that was removed: dpkg keeps its record, it is not installed.
	b.WriteString("Package: removed-thing\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0-1\nDescription: gone\n\n")
	return b.String()
}

// debianLayer is a Debian-like base layer: os-release behind the same link
// Debian has, and a dpkg database.
func debianLayer(t *testing.T, opens *atomic.Int64, opensslVersion string) v1.Layer {
	return layer(t, opens,
		file("usr/lib/os-release", debianOSRelease),
		symlink("etc/os-release", "../usr/lib/os-release"),
		file("var/lib/dpkg/status", dpkgStatus(
			[3]string{"base-files", "12.4+deb12u5", ""},
			[3]string{"openssl", opensslVersion, ""},
			[3]string{"libssl3", opensslVersion, "openssl"},
		)),
	)
}

func alpineLayer(t *testing.T, libcryptoVersion string) v1.Layer {
	installed := "C:Q1abc=\nP:busybox\nV:1.36.1-r15\nA:x86_64\no:busybox\nT:Size optimized toolbox\n\n" +
		"C:Q1def=\nP:libcrypto3\nV:" + libcryptoVersion + "\nA:x86_64\no:openssl\nT:Crypto library from openssl\n\n"
	return layer(t, nil,
		file("etc/os-release", alpineOSRelease),
		file("lib/apk/db/installed", installed),
	)
}

var (
	goBinOnce sync.Once
	goBin     []byte
	goBinErr  error
)

// goBinary builds a small program that depends on example.com/vulnlib
// v1.2.3, served by a file-system module proxy made here, so the build
// needs no network and its build info lists that module and version.
func goBinary(t *testing.T) []byte {
	t.Helper()
	goBinOnce.Do(func() { goBin, goBinErr = buildGoBinary(filepath.Join(shared, "gobin")) })
	if goBinErr != nil {
		t.Fatal(goBinErr)
	}
	return goBin
}

func buildGoBinary(dir string) ([]byte, error) {
	lib := filepath.Join(dir, "vulnlib")
	app := filepath.Join(dir, "app")
	proxy := filepath.Join(dir, "proxy", "example.com", "vulnlib", "@v")
	for _, d := range []string{lib, app, proxy} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	const libMod = "module example.com/vulnlib\n\ngo 1.22\n"
	files := map[string]string{
		filepath.Join(lib, "go.mod"):        libMod,
		filepath.Join(lib, "vulnlib.go"):    "package vulnlib\n\nfunc Hello() string { return \"hello\" }\n",
		filepath.Join(app, "go.mod"):        "module example.com/app\n\ngo 1.22\n\nrequire example.com/vulnlib v1.2.3\n",
		filepath.Join(app, "main.go"):       "package main\n\nimport \"example.com/vulnlib\"\n\nfunc main() { println(vulnlib.Hello()) }\n",
		filepath.Join(proxy, "list"):        "v1.2.3\n",
		filepath.Join(proxy, "v1.2.3.mod"):  libMod,
		filepath.Join(proxy, "v1.2.3.info"): `{"Version":"v1.2.3","Time":"2024-01-01T00:00:00Z"}`,
	}
	for p, c := range files {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return nil, err
		}
	}
	zf, err := os.Create(filepath.Join(proxy, "v1.2.3.zip"))
	if err != nil {
		return nil, err
	}
	if err := modzip.CreateFromDir(zf, module.Version{Path: "example.com/vulnlib", Version: "v1.2.3"}, lib); err != nil {
		return nil, err
	}
	if err := zf.Close(); err != nil {
		return nil, err
	}
	out := filepath.Join(dir, "app-bin")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, ".")
	cmd.Dir = app
	cmd.Env = append(os.Environ(),
		"GOPROXY=file://"+filepath.Join(dir, "proxy"), "GOSUMDB=off", "GOFLAGS=-mod=mod -modcacherw",
		"GOMODCACHE="+filepath.Join(dir, "modcache"), "GOWORK=off", "GOTOOLCHAIN=local", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, b)
	}
	return os.ReadFile(out)
}

// osvDir writes OSV records as DIR/<id>.json.
func osvDir(t *testing.T, records ...map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	for _, r := range records {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, r["id"].(string)+".json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// osvZip writes files into a zip as osv.dev's all.zip exports are laid out.
func osvZip(t *testing.T, files map[string][]byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "all.zip")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// advisory is an OSV record for one package with one ECOSYSTEM range.
func advisory(id, ecosystem, name string, events ...map[string]string) map[string]any {
	typ := "ECOSYSTEM"
	if ecosystem == "Go" {
		typ = "SEMVER"
	}
	return map[string]any{
		"id": id, "modified": "2024-01-01T00:00:00Z", "summary": id + " in " + name,
		"affected": []any{map[string]any{
			"package": map[string]any{"ecosystem": ecosystem, "name": name},
			"ranges":  []any{map[string]any{"type": typ, "events": events}},
		}},
	}
}

func introduced(v string) map[string]string   { return map[string]string{"introduced": v} }
func fixed(v string) map[string]string        { return map[string]string{"fixed": v} }
func lastAffected(v string) map[string]string { return map[string]string{"last_affected": v} }

func with(r map[string]any, k string, v any) map[string]any { r[k] = v; return r }
