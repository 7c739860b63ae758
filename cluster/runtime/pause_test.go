package runtime

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A static executable goes into the pause image alone; a dynamic one
// (this test binary, when cgo is on) with its loader and libraries. That
// the dynamic one runs is what every pod in the docker tests shows.
func TestExecutableFiles(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed: " + depsHint)
	}
	files, env, err := executableFiles(bb)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"/pause": bb}, files); diff != "" || env != nil {
		t.Errorf("executableFiles(static busybox) = %v, %v; want /pause alone (-want +got):\n%s", files, env, diff)
	}

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	files, env, err = executableFiles(exe)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 1 {
		t.Skip("the test binary is static (CGO_ENABLED=0)")
	}
	if !cmp.Equal(env, []string{"LD_LIBRARY_PATH=/lib"}) {
		t.Errorf("env = %v, want LD_LIBRARY_PATH=/lib", env)
	}
	var libc bool
	for dst, src := range files {
		if !fileExists(src) {
			t.Errorf("%s comes from %s, which is not a file", dst, src)
		}
		libc = libc || strings.HasPrefix(dst, "/lib/libc.so")
	}
	if !libc {
		t.Errorf("files = %v, want libc among them", files)
	}
}
