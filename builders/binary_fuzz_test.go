package builders

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fuzzTar writes a tar of headers (bodies are "x" repeated to Size).
func fuzzTar(hs ...tar.Header) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		h := h
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if tw.WriteHeader(&h) != nil {
			return buf.Bytes()
		}
		tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
	}
	tw.Close()
	return buf.Bytes()
}

// FuzzExtractContext feeds arbitrary bytes to the upload extraction of
// binary builds: no panic; a refusal is ErrHostileArchive; and nothing,
// hostile or not, is written next to the context directory or into the
// directory beside it that a link might aim at.
//
//	go test -run='^$' -fuzz=FuzzExtractContext -fuzztime=20s ./builders/
func FuzzExtractContext(f *testing.F) {
	reg := func(name string, size int64) tar.Header {
		return tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}
	}
	link := func(name, target string, typ byte) tar.Header {
		return tar.Header{Name: name, Linkname: target, Typeflag: typ, Mode: 0o777}
	}
	seeds := [][]byte{
		fuzzTar(tar.Header{Name: "src/", Typeflag: tar.TypeDir, Mode: 0o755}, reg("src/main.go", 12), reg("Dockerfile", 6)),
		fuzzTar(reg("../escape", 1)), fuzzTar(reg("a/../../escape", 1)), fuzzTar(reg("/etc/escape", 1)),
		fuzzTar(link("out", "../side", tar.TypeSymlink), reg("out/escape", 1)),
		fuzzTar(link("out", "/tmp", tar.TypeSymlink), reg("out/escape", 1)),
		fuzzTar(link("d", "..", tar.TypeSymlink), link("d/e", "x", tar.TypeSymlink)),
		fuzzTar(link("h", "../side/planted", tar.TypeLink)), fuzzTar(reg("a", 1), link("h", "a", tar.TypeLink)),
		fuzzTar(tar.Header{Name: "dev", Typeflag: tar.TypeChar}), fuzzTar(tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}),
		fuzzTar(reg("./", 0), reg(".", 0), reg("a//b/./c", 2)), {}, []byte("not a tar"),
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(seeds[0])
	zw.Close()
	seeds = append(seeds, gz.Bytes(), []byte{0x1f, 0x8b, 0, 0})
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		dir, side := filepath.Join(parent, "ctx"), filepath.Join(parent, "side")
		for _, d := range []string{dir, side} {
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		planted := filepath.Join(side, "planted")
		if err := os.WriteFile(planted, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := extractContext(bytes.NewReader(data), dir)
		if err != nil && !errors.Is(err, ErrHostileArchive) {
			t.Fatalf("extractContext = %v, want nil or ErrHostileArchive", err)
		}
		if ents, _ := os.ReadDir(parent); len(ents) != 2 {
			t.Fatalf("extractContext (err %v) wrote next to the context: %v", err, ents)
		}
		if ents, _ := os.ReadDir(side); len(ents) != 1 {
			t.Fatalf("extractContext (err %v) wrote beside the context: %v", err, ents)
		}
		if b, _ := os.ReadFile(planted); string(b) != "keep" {
			t.Fatalf("extractContext (err %v) changed a file outside the context: %q", err, b)
		}
	})
}
