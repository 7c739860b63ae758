// Command scanbench measures the scan package on real image contents and
// prints a Markdown table:
//
//   - SBOM (scan.NewSBOM) and matching time for a busybox image: FROM
//     scratch + /usr/bin/busybox from busybox-static + an Alpine apk
//     database;
//   - the same for a Debian bookworm image made with
//     `debootstrap --variant=minbase`, as one gzipped layer (the rootfs
//     tarball is cached under -cache, so reruns skip debootstrap);
//   - LoadDB of a synthetic osv.dev-style export (-records OSV records in
//     a zip), and rematching -n stored SBOMs (ParseSBOM + Match of their
//     CycloneDX bytes, no image) after a database update.
//
// osv.dev cannot be reached from here, so the database is synthetic: each
// package of the two images gets -per advisories (most fixed long before
// the installed version, a few not yet fixed, some for other releases),
// and the rest of the records name packages the images do not have.
//
// The peer, if -osv-scanner names its binary, is osv-scanner (built on
// osv-scalibr too) in offline mode on the same images, saved as docker
// archives, and the same records as per-ecosystem all.zip files. grype and
// trivy are not Debian packages and fetch their databases from the
// internet at run time, so they cannot run here.
//
//	go run ./bench/scanbench [-n 1000] [-records 50000] [-cache /tmp/scanbench] [-osv-scanner PATH]
package main

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/scan"
)

func main() {
	n := flag.Int("n", 1000, "stored SBOMs to rematch after the database update")
	records := flag.Int("records", 50000, "OSV records in the synthetic database")
	per := flag.Int("per", 40, "advisories per package of the scanned images")
	runs := flag.Int("runs", 5, "runs of each SBOM measurement (the median is shown)")
	cache := flag.String("cache", "/tmp/scanbench", "where the debootstrap rootfs tarball is kept between runs")
	mirror := flag.String("mirror", "", "Debian mirror for debootstrap (default: the bookworm URI in /etc/apt/sources.list*)")
	peer := flag.String("osv-scanner", "", "an osv-scanner binary to run offline on the same images and database, as the peer")
	flag.Parse()
	log.SetFlags(0)
	ctx := context.Background()

	work, err := os.MkdirTemp("", "scanbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)

	busybox, err := busyboxImage()
	if err != nil {
		log.Fatalf("busybox image: %v", err)
	}
	debian, debNote, err := debianImage(*cache, *mirror)
	if err != nil {
		log.Fatalf("debian image: %v", err)
	}

	type result struct {
		name     string
		img      v1.Image
		sbom     *scan.SBOM
		times    []time.Duration
		alloc    uint64
		imgBytes int64
	}
	measure := func(name string, img v1.Image, runs int) result {
		r := result{name: name, img: img, imgBytes: uncompressedSize(img)}
		for range runs {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			s, err := scan.NewSBOM(ctx, img)
			r.times = append(r.times, time.Since(start))
			runtime.ReadMemStats(&after)
			if err != nil {
				log.Fatalf("NewSBOM(%s): %v", name, err)
			}
			r.sbom, r.alloc = s, after.TotalAlloc-before.TotalAlloc
		}
		return r
	}
	results := []result{measure("busybox + apk db", busybox, *runs), measure("debian bookworm minbase", debian, max(*runs/2, 2))}

	dbPath := filepath.Join(work, "all.zip")
	allPkgs := slices.Concat(results[0].sbom.Packages, results[1].sbom.Packages)
	affected, err := writeDB(dbPath, allPkgs, *records, *per, "")
	if err != nil {
		log.Fatal(err)
	}
	st, _ := os.Stat(dbPath)
	start := time.Now()
	db, err := scan.LoadDB(dbPath)
	loadTime := time.Since(start)
	if err != nil {
		log.Fatal(err)
	}

	fmt.Printf("# scanbench: GOMAXPROCS=%d, %s, %s\n\n", runtime.GOMAXPROCS(0), runtime.Version(), time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | value | notes |")
	fmt.Println("|---|---|---|")
	for _, r := range results {
		matchT := medianOf(20, func() { db.Match(r.sbom) })
		findings := db.Match(r.sbom)
		fmt.Printf("| %s: SBOM (median of %d) | %.1f ms | %d packages, %.1f MiB uncompressed image, %.1f MiB allocated |\n",
			r.name, len(r.times), ms(median(r.times)), len(r.sbom.Packages), mib(r.imgBytes), mib(int64(r.alloc)))
		fmt.Printf("| %s: match (median of 20) | %.3f ms | %d findings |\n", r.name, ms(matchT), len(findings))
		fmt.Printf("| %s: SBOM + match | %.1f ms | SBOM JSON %.1f KiB |\n", r.name, ms(median(r.times)+matchT), float64(len(r.sbom.JSON()))/1024)
	}
	fmt.Printf("| LoadDB of the zip | %.0f ms | %d records (%d affect the images' packages), %.1f MiB zip |\n", ms(loadTime), db.Len(), affected, mib(st.Size()))

	// The stored SBOMs: the two images' documents, each with a different
	// version of one package so that no two are the same bytes.
	stored := make([][]byte, *n)
	for i := range stored {
		src := results[i%2].sbom.JSON()
		at := bytes.Index(src, []byte(`"type":"library"`))
		stored[i] = slices.Concat(src[:at], bytes.Replace(src[at:], []byte(`"version":"`), fmt.Appendf(nil, `"version":"0.%d-`, i), 1))
	}

	updated := filepath.Join(work, "all-updated.zip")
	if _, err := writeDB(updated, allPkgs, *records, *per, "busybox"); err != nil {
		log.Fatal(err)
	}
	start = time.Now()
	db2, err := scan.LoadDB(updated)
	reload := time.Since(start)
	if err != nil {
		log.Fatal(err)
	}
	start = time.Now()
	newly := 0
	for _, b := range stored {
		s, err := scan.ParseSBOM(b)
		if err != nil {
			log.Fatal(err)
		}
		for _, f := range db2.Match(s) {
			if f.ID == "BENCH-UPDATE-1" {
				newly++
				break
			}
		}
	}
	rematch := time.Since(start)
	fmt.Printf("| rematch %d stored SBOMs after an update (ParseSBOM + Match) | %.0f ms, %.0f SBOMs/s | %d flagged by the new advisory; the reload took %.0f ms |\n",
		*n, ms(rematch), float64(*n)/rematch.Seconds(), newly, ms(reload))
	if *peer != "" {
		for _, r := range results {
			t, n, err := runPeer(ctx, *peer, work, r.img, allPkgs, *records, *per)
			if err != nil {
				log.Fatalf("osv-scanner on %s: %v", r.name, err)
			}
			fmt.Printf("| peer: osv-scanner scan image --offline, %s (median of 3) | %.1f ms | %d findings, with this database split per ecosystem |\n", r.name, ms(t), n)
		}
	}
	fmt.Printf("\n%s\n", debNote)
	fmt.Println("grype and trivy are not Debian packages and download their databases at run time; neither can run offline here.")
}

// runPeer times osv-scanner on the image saved as a docker archive, with
// the same synthetic records as per-ecosystem all.zip files where its
// offline mode looks for them. It returns the median time and the number
// of package/vulnerability pairs it reported.
func runPeer(ctx context.Context, bin, work string, img v1.Image, pkgs []scan.Package, records, per int) (time.Duration, int, error) {
	cacheRoot := filepath.Join(work, "osv-cache")
	for _, eco := range []string{"Debian", "Alpine"} {
		var only []scan.Package
		for _, p := range pkgs {
			if strings.HasPrefix(p.Ecosystem, eco) {
				only = append(only, p)
			}
		}
		// Newer releases read osv-scalibr/, older ones osv-scanner/.
		for _, sub := range []string{"osv-scanner", "osv-scalibr"} {
			dir := filepath.Join(cacheRoot, sub, eco)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return 0, 0, err
			}
			if _, err := writeDB(filepath.Join(dir, "all.zip"), only, records/2, per, ""); err != nil {
				return 0, 0, err
			}
		}
	}
	archive := filepath.Join(work, "image.tar")
	tag, err := name.NewTag("scanbench.local/image:1")
	if err != nil {
		return 0, 0, err
	}
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		return 0, 0, err
	}
	var times []time.Duration
	var out []byte
	for range 3 {
		cmd := exec.CommandContext(ctx, bin, "scan", "image", "--archive", archive, "--offline", "--format", "json")
		cmd.Env = append(os.Environ(), "OSV_SCANNER_LOCAL_DB_CACHE_DIRECTORY="+cacheRoot)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		out, err = cmd.Output()
		times = append(times, time.Since(start))
		// Exit status 1 means "vulnerabilities found".
		if ee, ok := err.(*exec.ExitError); err != nil && !(ok && ee.ExitCode() == 1) {
			return 0, 0, fmt.Errorf("%v: %s", err, tail(stderr.Bytes()))
		}
	}
	var res struct {
		Results []struct {
			Packages []struct {
				Vulnerabilities []json.RawMessage `json:"vulnerabilities"`
			} `json:"packages"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, 0, fmt.Errorf("osv-scanner output: %w", err)
	}
	n := 0
	for _, r := range res.Results {
		for _, p := range r.Packages {
			n += len(p.Vulnerabilities)
		}
	}
	return median(times), n, nil
}

// busyboxImage is FROM scratch + /usr/bin/busybox (busybox-static) and an
// Alpine apk database listing it with the packages of a small Alpine base.
func busyboxImage() (v1.Image, error) {
	bb, err := os.ReadFile("/usr/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("%w (apt-get install -y busybox-static)", err)
	}
	var db strings.Builder
	for _, p := range [][3]string{
		{"busybox", "1.36.1-r15", "busybox"}, {"busybox-binsh", "1.36.1-r15", "busybox"},
		{"musl", "1.2.4_git20230717-r4", "musl"}, {"libcrypto3", "3.1.4-r5", "openssl"},
		{"libssl3", "3.1.4-r5", "openssl"}, {"zlib", "1.3.1-r0", "zlib"},
		{"alpine-baselayout", "3.4.3-r2", "alpine-baselayout"}, {"apk-tools", "2.14.0-r5", "apk-tools"},
		{"ca-certificates-bundle", "20240226-r0", "ca-certificates"}, {"scanelf", "1.3.7-r2", "pax-utils"},
	} {
		fmt.Fprintf(&db, "C:Q1AAAA=\nP:%s\nV:%s\nA:x86_64\no:%s\nT:%s\n\n", p[0], p[1], p[2], p[0])
	}
	files := []struct {
		name string
		body []byte
		mode int64
	}{
		{"etc/os-release", []byte("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n"), 0o644},
		{"lib/apk/db/installed", []byte(db.String()), 0o644},
		{"usr/bin/busybox", bb, 0o755},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	for _, l := range []string{"sh", "ls", "cat", "wget"} {
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + l, Linkname: "/usr/bin/busybox", Typeflag: tar.TypeSymlink}); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(empty.Image, layer)
}

// debianImage is one gzipped layer of a debootstrap'ed bookworm minbase,
// made once and kept in cacheDir.
func debianImage(cacheDir, mirror string) (v1.Image, string, error) {
	gz := filepath.Join(cacheDir, "bookworm-minbase.tar.gz")
	note := "Debian image: rootfs tarball reused from " + gz + "."
	if _, err := os.Stat(gz); err != nil {
		if mirror == "" {
			if mirror, err = aptMirror(); err != nil {
				return nil, "", err
			}
		}
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, "", err
		}
		root, err := os.MkdirTemp(cacheDir, "rootfs")
		if err != nil {
			return nil, "", err
		}
		defer os.RemoveAll(root)
		start := time.Now()
		log.Printf("debootstrap --variant=minbase bookworm %s %s (about 2 minutes, once)", root, mirror)
		cmd := exec.Command("debootstrap", "--variant=minbase", "bookworm", root, mirror)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("debootstrap: %v\n%s", err, tail(out))
		}
		tmp := gz + ".tmp"
		if out, err := exec.Command("tar", "--numeric-owner", "-C", root, "-czf", tmp, ".").CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("tar: %v\n%s", err, out)
		}
		if err := os.Rename(tmp, gz); err != nil {
			return nil, "", err
		}
		note = fmt.Sprintf("Debian image: debootstrap from %s took %s; the tarball is cached at %s.", mirror, time.Since(start).Round(time.Second), gz)
	}
	layer, err := tarball.LayerFromFile(gz)
	if err != nil {
		return nil, "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	return img, note, err
}

// aptMirror finds the Debian mirror apt uses for bookworm.
func aptMirror() (string, error) {
	paths, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// deb822 stanzas: URIs and Suites lines.
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var uri string
			var bookworm bool
			for _, line := range strings.Split(stanza, "\n") {
				if v, ok := strings.CutPrefix(line, "URIs:"); ok {
					uri = strings.Fields(v)[0]
				}
				if v, ok := strings.CutPrefix(line, "Suites:"); ok {
					bookworm = slices.Contains(strings.Fields(v), "bookworm")
				}
			}
			if uri != "" && bookworm {
				return uri, nil
			}
		}
	}
	if f, err := os.Open("/etc/apt/sources.list"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 3 && fields[0] == "deb" && fields[2] == "bookworm" {
				return fields[1], nil
			}
		}
	}
	return "", fmt.Errorf("no bookworm mirror in /etc/apt/sources.list*; pass -mirror")
}

// writeDB writes a synthetic osv.dev-style zip. Each package gets per
// advisories: mostly fixed at 0.0.1 (long before any installed version),
// one in twenty not fixed yet, and a fifth for another release. update
// names a package that gets one more advisory, BENCH-UPDATE-1. It returns
// how many records affect a listed package.
func writeDB(path string, pkgs []scan.Package, records, per int, update string) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	write := func(rec map[string]any) error {
		w, err := zw.Create(rec["id"].(string) + ".json")
		if err != nil {
			return err
		}
		return json.NewEncoder(w).Encode(rec)
	}
	rec := func(id, eco, name string, events ...map[string]string) map[string]any {
		typ := "ECOSYSTEM"
		if eco == "Go" {
			typ = "SEMVER"
		}
		return map[string]any{
			"id": id, "modified": "2024-01-01T00:00:00Z", "aliases": []string{"CVE-" + id},
			"summary": "synthetic advisory " + id, "details": strings.Repeat("Details of the flaw. ", 20),
			"severity": []map[string]string{{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:N/A:N"}},
			"affected": []any{map[string]any{
				"package": map[string]string{"ecosystem": eco, "name": name},
				"ranges":  []any{map[string]any{"type": typ, "events": events}},
			}},
		}
	}
	seen := map[string]bool{}
	n, hits := 0, 0
	for _, p := range pkgs {
		base, release, _ := strings.Cut(p.Ecosystem, ":")
		name := p.Name
		if p.Source != "" {
			name = p.Source
		}
		if base == "" || seen[base+name] {
			continue
		}
		seen[base+name] = true
		for i := range per {
			eco, events := p.Ecosystem, []map[string]string{{"introduced": "0"}, {"fixed": "0.0.1"}}
			switch {
			case i%20 == 0:
				events = events[:1] // not fixed yet
				hits++
			case i%5 == 0 && release != "":
				eco = base + ":0"
			}
			if err := write(rec(fmt.Sprintf("BENCH-%d", n), eco, name, events...)); err != nil {
				return 0, err
			}
			n++
		}
	}
	for ; n < records; n++ {
		if err := write(rec(fmt.Sprintf("BENCH-%d", n), "Debian:12", fmt.Sprintf("other-package-%d", n%5000),
			map[string]string{"introduced": "0"}, map[string]string{"fixed": "1.0-1"})); err != nil {
			return 0, err
		}
	}
	if update != "" {
		if err := write(rec("BENCH-UPDATE-1", "Alpine:v3.19", update, map[string]string{"introduced": "0"})); err != nil {
			return 0, err
		}
	}
	return hits, zw.Close()
}

func uncompressedSize(img v1.Image) int64 {
	layers, _ := img.Layers()
	var total int64
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			continue
		}
		n, _ := io.Copy(io.Discard, rc)
		rc.Close()
		total += n
	}
	return total
}

func medianOf(n int, f func()) time.Duration {
	ts := make([]time.Duration, n)
	for i := range ts {
		start := time.Now()
		f()
		ts[i] = time.Since(start)
	}
	return median(ts)
}

func median(ts []time.Duration) time.Duration {
	s := slices.Clone(ts)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func mib(n int64) float64        { return float64(n) / (1 << 20) }

func tail(b []byte) []byte {
	if len(b) > 2000 {
		return b[len(b)-2000:]
	}
	return b
}
