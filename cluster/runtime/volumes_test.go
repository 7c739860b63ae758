package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// M2: a deleted project's persistent volumes are removed, and only its
// own; removing them again, or those of a project that had none, succeeds.
func TestRemoveProjectVolumes(t *testing.T) {
	data := t.TempDir()
	d, err := NewDocker(Config{Host: "unix:///nonexistent/docker.sock", Prefix: "vol", DataDir: data, PauseBinary: "/bin/true"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got, err := d.VolumeProjects(); err != nil || len(got) != 0 {
		t.Fatalf("VolumeProjects on a fresh node = %v, %v; want none", got, err)
	}
	for _, f := range []string{"volumes/gone/data/creds", "volumes/gone/other/x", "volumes/gone2/data/creds"} {
		p := filepath.Join(data, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("db-password=hunter2"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := d.VolumeProjects(); err != nil || !slices.Equal(got, []string{"gone", "gone2"}) {
		t.Fatalf("VolumeProjects = %v, %v; want [gone gone2]", got, err)
	}
	for range 2 {
		if err := d.RemoveProjectVolumes("gone"); err != nil {
			t.Fatalf("RemoveProjectVolumes(gone): %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "volumes", "gone")); !os.IsNotExist(err) {
		t.Errorf("DATA/volumes/gone after its removal: %v, want it gone", err)
	}
	if _, err := os.Stat(filepath.Join(data, "volumes", "gone2", "data", "creds")); err != nil {
		t.Errorf("another project's volume after removing gone's: %v, want it kept", err)
	}
	for _, bad := range []string{"", "..", "a/b"} {
		if err := d.RemoveProjectVolumes(bad); err == nil {
			t.Errorf("RemoveProjectVolumes(%q) = nil, want an error", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "volumes", "gone2")); err != nil {
		t.Errorf("DATA/volumes/gone2 after refused removals: %v", err)
	}
}
