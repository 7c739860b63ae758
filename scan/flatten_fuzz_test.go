package scan_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/scan"
)

func fuzzLayerTar(hs ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		h := h
		body := []byte(h.Uname) // the body rides in Uname in these seeds
		h.Uname = ""
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(body))
		}
		if tw.WriteHeader(&h) != nil {
			return buf.Bytes()
		}
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzNewSBOM scans a one-layer image whose layer is arbitrary bytes: no
// panic, the limits hold (ErrTooLarge, not memory growth), and a layer
// naming a path outside the root is refused.
//
//	go test -run='^$' -fuzz=FuzzNewSBOM -fuzztime=20s ./scan/
func FuzzNewSBOM(f *testing.F) {
	file := func(name, body string) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Uname: body}
	}
	link := func(name, target string, typ byte) tar.Header {
		return tar.Header{Name: name, Linkname: target, Typeflag: typ, Mode: 0o777}
	}
	status := "Package: bash\nStatus: install ok installed\nVersion: 5.2-1\nArchitecture: amd64\n\n"
	for _, s := range [][]byte{
		fuzzLayerTar(file("var/lib/dpkg/status", status), file("etc/os-release", "ID=debian\nVERSION_ID=12\n")),
		fuzzLayerTar(file("lib/apk/db/installed", "P:musl\nV:1.2.4-r2\nA:x86_64\n\n")),
		fuzzLayerTar(link("var/lib/dpkg/status", "/etc/shadow", tar.TypeSymlink)),
		fuzzLayerTar(link("var/lib/dpkg", "../../../..", tar.TypeSymlink)),
		fuzzLayerTar(link("a", "b", tar.TypeSymlink), link("b", "a", tar.TypeSymlink), link("var/lib/dpkg/status", "/a", tar.TypeSymlink)),
		fuzzLayerTar(file("../escape", "x")), fuzzLayerTar(file("etc/.wh..wh..opq", ""), file("etc/.wh.os-release", "")),
		fuzzLayerTar(link("h", "var/lib/dpkg/status", tar.TypeLink), file("var/lib/dpkg/status", "garbage\x00")),
		fuzzLayerTar(link("l", strings.Repeat("a/", 600), tar.TypeSymlink)),
		fuzzLayerTar(file("usr/bin/x", "\xff Go buildinf:garbage")), {}, []byte("not a tar"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			return
		}
		img, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err = scan.NewSBOM(ctx, img, scan.WithMaxImageBytes(8<<20), scan.WithMaxMemoryBytes(4<<20), scan.WithMaxFileBytes(1<<20))
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("NewSBOM took over a minute on a %d-byte layer", len(data))
		}
		// A name outside the root, before anything unreadable, must fail.
		tr := tar.NewReader(bytes.NewReader(data))
		for {
			h, rerr := tr.Next()
			if rerr != nil {
				break
			}
			if c := path.Clean(h.Name); c == ".." || strings.HasPrefix(c, "../") {
				if err == nil {
					t.Fatalf("NewSBOM accepted a layer with entry %q outside the root", h.Name)
				}
				break
			}
		}
	})
}
