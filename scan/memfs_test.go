package scan

import (
	"errors"
	"io"
	"io/fs"
	"testing"
	"testing/fstest"
	"time"
)

func TestMemFSResolve(t *testing.T) {
	m := newMemFS()
	m.addFile("usr/lib/os-release", []byte("ID=x\n"), 0o644, time.Time{})
	m.addFile("usr/bin/app", []byte("app"), 0o755, time.Time{})
	m.addLink("etc/os-release", "../usr/lib/os-release")
	m.addLink("lib", "usr/lib")                     // relative, usrmerge style
	m.addLink("bin", "/usr/bin")                    // absolute: from the image root
	m.addLink("escape", "../../../../usr/lib")      // ".." stops at the root
	m.addLink("host", "/proc/self/root/etc/passwd") // not in the image
	m.addLink("loop1", "loop2")
	m.addLink("loop2", "loop1")
	m.addLink("self", "./self")
	m.freeze()

	tests := []struct {
		name, want string
		err        error
	}{
		{"etc/os-release", "usr/lib/os-release", nil},
		{"lib/os-release", "usr/lib/os-release", nil},
		{"bin/app", "usr/bin/app", nil},
		{"escape/os-release", "usr/lib/os-release", nil},
		{"host", "", fs.ErrNotExist},
		{"loop1", "", errLinkLoop},
		{"self", "", errLinkLoop},
		{"usr/../../../usr/bin/app", "", fs.ErrInvalid},
	}
	for _, tt := range tests {
		f, err := m.Open(tt.name)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Open(%q) error = %v, want %v", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q) = %v, want %s", tt.name, err, tt.want)
			continue
		}
		got, _ := io.ReadAll(f)
		if want := m.files[tt.want].data; string(got) != string(want) {
			t.Errorf("Open(%q) read %q, want the contents of %s", tt.name, got, tt.want)
		}
		if _, ok := f.(io.ReaderAt); !ok {
			t.Errorf("Open(%q) is not an io.ReaderAt", tt.name)
		}
	}

	// The tree lists files and directories, not links, and behaves as an
	// fs.FS should.
	if err := fstest.TestFS(m, "usr/lib/os-release", "usr/bin/app", "etc"); err != nil {
		t.Error(err)
	}
}
