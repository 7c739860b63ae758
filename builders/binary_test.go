package builders

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type entry struct {
	name, link string
	typ        byte
	body       string
}

func archive(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func TestExtractContext(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		hostile bool
	}{
		{"plain files and dirs", []entry{{name: "src/", typ: tar.TypeDir}, {name: "src/main.go", typ: tar.TypeReg, body: "package main"}, {name: "Dockerfile", typ: tar.TypeReg, body: "FROM x"}}, false},
		{"a link inside", []entry{{name: "a", typ: tar.TypeReg, body: "a"}, {name: "b", link: "a", typ: tar.TypeSymlink}}, false},
		{"dot-dot", []entry{{name: "../escape", typ: tar.TypeReg, body: "x"}}, true},
		{"nested dot-dot", []entry{{name: "a/../../escape", typ: tar.TypeReg, body: "x"}}, true},
		{"absolute", []entry{{name: "/etc/escape", typ: tar.TypeReg, body: "x"}}, true},
		{"write through a symlink to outside", []entry{{name: "out", link: "/tmp", typ: tar.TypeSymlink}, {name: "out/escape", typ: tar.TypeReg, body: "x"}}, true},
		{"write through a relative symlink to outside", []entry{{name: "out", link: "../..", typ: tar.TypeSymlink}, {name: "out/escape", typ: tar.TypeReg, body: "x"}}, true},
		{"hard link to outside", []entry{{name: "h", link: "../../etc/passwd", typ: tar.TypeLink}}, true},
		{"device", []entry{{name: "dev", typ: tar.TypeChar}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "ctx")
			os.Mkdir(dir, 0o700)
			err := extractContext(bytes.NewReader(archive(t, tt.entries...)), dir)
			if got := errors.Is(err, ErrHostileArchive); got != tt.hostile {
				t.Fatalf("extractContext(%s) = %v, hostile %v; want hostile %v", tt.name, err, got, tt.hostile)
			}
			// Nothing may appear next to the context, hostile or not.
			if ents, _ := os.ReadDir(parent); len(ents) != 1 {
				t.Errorf("extractContext(%s) wrote outside the context: %v", tt.name, ents)
			}
			if _, err := os.Stat("/tmp/escape"); err == nil {
				t.Errorf("extractContext(%s) wrote /tmp/escape", tt.name)
			}
		})
	}
}
