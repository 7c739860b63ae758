package registry

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestHashStatesKeepSmallLatestAndBounded(t *testing.T) {
	var h hashStates
	const up = "/docker/registry/v2/repositories/p/app/_uploads/u1"
	if kept, _ := h.put(up+"/hashstates/sha256/0", []byte("zero")); !kept {
		t.Error("a state at offset 0 was not taken")
	}
	if got := h.list(up + "/hashstates/sha256"); len(got) != 0 {
		t.Errorf("a state at offset 0 is listed: %v, want it dropped (never read)", got)
	}
	if kept, _ := h.put(up+"/hashstates/sha256/4194304", []byte("big")); kept {
		t.Error("a state at 4 MiB was kept in memory, want it written to the storage")
	}
	if kept, _ := h.put("/docker/registry/v2/repositories/p/app/_layers/sha256/x/link", []byte("l")); kept {
		t.Error("a link was taken as a hash state")
	}
	h.put(up+"/hashstates/sha256/100", []byte("a"))
	h.put(up+"/hashstates/sha256/200", []byte("b"))
	if got := h.list(up + "/hashstates/sha256"); len(got) != 1 || got[0] != up+"/hashstates/sha256/200" {
		t.Errorf("list: %v, want the latest state only", got)
	}
	if _, ok := h.get(up + "/hashstates/sha256/100"); ok {
		t.Error("an earlier state is still read")
	}
	if b, ok := h.get(up + "/hashstates/sha256/200"); !ok || string(b) != "b" {
		t.Errorf("get: %q %v", b, ok)
	}
	h.drop("/docker/registry/v2/repositories/p") // a deleted project
	if _, ok := h.get(up + "/hashstates/sha256/200"); ok {
		t.Error("a deleted repository's upload state is still read")
	}
	for i := range memHashStates + 10 {
		h.put(fmt.Sprintf("/docker/registry/v2/repositories/p/app/_uploads/n%d/hashstates/sha256/1", i), []byte("s"))
	}
	if len(h.m) > memHashStates {
		t.Errorf("%d uploads' states kept, want at most %d", len(h.m), memHashStates)
	}
	h.drop("/docker/registry/v2/repositories/p/app/_uploads/n5")
	if _, ok := h.get("/docker/registry/v2/repositories/p/app/_uploads/n5/hashstates/sha256/1"); ok {
		t.Error("a committed upload's state is still read")
	}
}

// A blob, link or manifest the file system storage writes is durable
// with every directory it needed: each new directory's parent is synced,
// and a blob's directory after its data is moved in.
func TestNewDirectoriesAreSynced(t *testing.T) {
	root := t.TempDir()
	d, err := fastFSFactory{}.Create(context.Background(), map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		synced []string
	)
	real := syncDir
	syncDir = func(dir string) error {
		if rest, ok := strings.CutPrefix(dir, root); ok { // not another test's leftovers
			mu.Lock()
			synced = append(synced, rest)
			mu.Unlock()
		}
		return real(dir)
	}
	t.Cleanup(func() { syncDir = real })
	ctx := context.Background()
	hex := strings.Repeat("ab", 32)

	link := "/docker/registry/v2/repositories/p/app/_manifests/revisions/sha256/" + hex + "/link"
	if err := d.PutContent(ctx, link, []byte("sha256:"+hex)); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "/docker", "/docker/registry", "/docker/registry/v2", "/docker/registry/v2/repositories",
		"/docker/registry/v2/repositories/p", "/docker/registry/v2/repositories/p/app", "/docker/registry/v2/repositories/p/app/_manifests",
		"/docker/registry/v2/repositories/p/app/_manifests/revisions", "/docker/registry/v2/repositories/p/app/_manifests/revisions/sha256"}
	if !slices.Equal(synced, want) {
		t.Errorf("synced for a new link:\n%q\nwant every new directory's parent:\n%q", synced, want)
	}

	synced = nil
	other := "/docker/registry/v2/repositories/p/app/_manifests/revisions/sha256/" + hex + "/other"
	if err := d.PutContent(ctx, other, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if len(synced) != 0 {
		t.Errorf("synced for a file in an existing directory: %q, want nothing more than distribution's own sync", synced)
	}

	upload := "/docker/registry/v2/repositories/p/app/_uploads/u1/data"
	w, err := d.Writer(ctx, upload, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("blob")); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	synced = nil
	blob := "/docker/registry/v2/blobs/sha256/" + hex[:2] + "/" + hex + "/data"
	if err := d.Move(ctx, upload, blob); err != nil {
		t.Fatal(err)
	}
	want = []string{"", "/docker/registry/v2", "/docker/registry/v2/blobs", "/docker/registry/v2/blobs/sha256",
		"/docker/registry/v2/blobs/sha256/" + hex[:2], "/docker/registry/v2/blobs/sha256/" + hex[:2] + "/" + hex}
	want = want[1:] // the root existed, and so did v2
	if !slices.Equal(synced, want) {
		t.Errorf("synced for a blob's move:\n%q\nwant every new directory's parent, then the blob's directory:\n%q", synced, want)
	}
	if b, err := d.GetContent(ctx, blob); err != nil || string(b) != "blob" {
		t.Errorf("the moved blob: %q %v", b, err)
	}
}

// The state memory makes room for goes to the storage, where its upload
// finds it (unless the upload is gone): uploads opened and left cost no
// other upload a second hashing of its data.
func TestHashStateMadeRoomForIsWritten(t *testing.T) {
	old := memHashStates
	memHashStates = 1
	t.Cleanup(func() { memHashStates = old })
	root := t.TempDir()
	d, err := fastFSFactory{}.Create(context.Background(), map[string]any{"rootdirectory": root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const up = "/docker/registry/v2/repositories/p/app/_uploads/"
	if err := d.PutContent(ctx, up+"u1/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	if err := d.PutContent(ctx, up+"u1/hashstates/sha256/100", []byte("state1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, up, "u1/hashstates")); !os.IsNotExist(err) {
		t.Fatalf("u1's state is on disk before anything needed room: %v", err)
	}
	if err := d.PutContent(ctx, up+"u2/hashstates/sha256/7", []byte("state2")); err != nil { // u2 has no directory
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, up, "u1/hashstates/sha256/100")); err != nil || string(b) != "state1" {
		t.Errorf("u1's state after u2 took its place in memory: %q %v, want it written", b, err)
	}
	if got, err := d.List(ctx, up+"u1/hashstates/sha256"); err != nil || !slices.Equal(got, []string{up + "u1/hashstates/sha256/100"}) {
		t.Errorf("List of u1's states: %v %v", got, err)
	}
	if err := d.PutContent(ctx, up+"u3/hashstates/sha256/9", []byte("state3")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, up, "u2")); !os.IsNotExist(err) {
		t.Errorf("u2's state spilled into a directory its upload never had: %v", err)
	}
}
