package scan_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/scan"
)

// gzipLayer streams n tar entries made by mk into a gzip layer, as an
// attacker would upload it: a few KiB that expand to hundreds of MiB of
// names and link targets.
func gzipLayer(t *testing.T, n int, mk func(i int) *tar.Header) (v1.Layer, int) {
	t.Helper()
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	for i := range n {
		hdr := mk(i)
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l, len(data)
}

// peakHeap runs fn and samples the heap in use while it runs.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	<-done
	return peak.Load()
}

// M4: a layer of entries with huge names or link targets (PAX records
// allow ~1 MiB each) must fail its scan with the reason, holding little
// memory, instead of being kept: the flattening keeps every name and the
// scanner every link. The first rows would hold about 150 MiB each
// without the limits.
func TestHostileMetadataBombs(t *testing.T) {
	long := strings.Repeat("a/", 500_000) // 1 MB
	for _, tc := range []struct {
		name string
		n    int
		mk   func(i int) *tar.Header
		opts []scan.Option
		want string
	}{
		{"M4 symlinks with 1 MB targets", 150, func(i int) *tar.Header {
			return &tar.Header{Name: fmt.Sprintf("l%d", i), Typeflag: tar.TypeSymlink, Linkname: long}
		}, nil, "link target"},
		{"M4 hard links with 1 MB targets", 150, func(i int) *tar.Header {
			return &tar.Header{Name: fmt.Sprintf("h%d", i), Typeflag: tar.TypeLink, Linkname: strings.Repeat("b", 1_000_000)}
		}, nil, "link target"},
		{"M4 whiteouts with 1 MB names (kept by the flattening)", 150, func(i int) *tar.Header {
			return &tar.Header{Name: fmt.Sprintf("%s/.wh.f%d", strings.Repeat("c", 1_000_000), i), Typeflag: tar.TypeReg}
		}, nil, "paths are at most"},
		{"M4 names of 20 KB", 40, func(i int) *tar.Header {
			return &tar.Header{Name: strings.Repeat("d/", 10_000) + fmt.Sprint(i), Typeflag: tar.TypeSymlink, Linkname: "x"}
		}, nil, "paths are at most"},
		{"M4 names 200 deep", 40, func(i int) *tar.Header {
			return &tar.Header{Name: strings.Repeat("d/", 200) + fmt.Sprint(i), Typeflag: tar.TypeSymlink, Linkname: "x"}
		}, nil, "directories deep"},
		{"M4 many long, deep names (the flattening walks every parent of each)", 1000, func(i int) *tar.Header {
			return &tar.Header{Name: strings.Repeat(strings.Repeat("d", 30)+"/", 127) + fmt.Sprint(i), Typeflag: tar.TypeReg}
		}, []scan.Option{scan.WithMaxMetadataBytes(8 << 20)}, "too deep to flatten"},
		{"M4 many legal links over the metadata budget", 2000, func(i int) *tar.Header {
			return &tar.Header{Name: fmt.Sprintf("m/%d-%s", i, strings.Repeat("n", 3000)), Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("t", 4000)}
		}, []scan.Option{scan.WithMaxMetadataBytes(4 << 20)}, "exceed"},
		{"M4 many legal links over the memory budget", 2000, func(i int) *tar.Header {
			return &tar.Header{Name: fmt.Sprintf("m/%d", i), Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("t", 4000)}
		}, []scan.Option{scan.WithMaxMemoryBytes(2 << 20)}, "links, package databases and Go binaries exceed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, size := gzipLayer(t, tc.n, tc.mk)
			img := image(t, l)
			var err error
			peak := peakHeap(func() { _, err = scan.NewSBOM(context.Background(), img, tc.opts...) })
			t.Logf("%d KiB layer: NewSBOM = %v; peak heap in use %d MiB", size>>10, err, peak>>20)
			if !errors.Is(err, scan.ErrTooLarge) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewSBOM = %v; want ErrTooLarge saying %q", err, tc.want)
			}
			if peak > 64<<20 {
				t.Errorf("the scanner held %d MiB for one %d KiB layer", peak>>20, size>>10)
			}
		})
	}
}

// The limits leave real images alone: long-ish paths, deep-ish trees and
// many links scan as before.
func TestMetadataLimitsKeepRealImages(t *testing.T) {
	var entries []entry
	entries = append(entries, file("var/lib/dpkg/status", dpkgStatus([3]string{"bash", "5.2-1", ""})))
	for i := range 5000 {
		entries = append(entries, symlink(fmt.Sprintf("usr/lib/x86_64-linux-gnu/lib%d.so", i), fmt.Sprintf("lib%d.so.1.2.3", i)))
	}
	entries = append(entries, symlink(strings.Repeat("deep/", 100)+"link", "/"+strings.Repeat("p", 4000)))
	s, err := scan.NewSBOM(context.Background(), image(t, layer(t, nil, entries...)))
	if err != nil {
		t.Fatalf("NewSBOM: %v", err)
	}
	if len(s.Packages) != 1 {
		t.Errorf("packages = %+v, want bash", s.Packages)
	}
}
