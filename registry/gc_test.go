package registry_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/scan"
)

// A collection deletes a blob no manifest references once the grace
// period is over, and nothing a tagged image needs; the dry run lists
// exactly what the real run deletes; WhyBlob names a layer's tag.
func TestGCDeletesOnlyUnreferencedBlobs(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "gc", false)
	img := randomImage(t)
	dgst := h.pushOK(t, "alice", "gc/app:1", img)
	lone := h.uploadBlobOK(t, "alice", "gc/app", []byte("a blob no manifest references"))
	reg := h.env.Server.Registry
	ctx := ctxT(t)
	// The scanner stores the image's SBOM as a referrer: its two blobs
	// are unreferenced until their manifest follows, and older than the
	// short grace below if a collection comes between. Wait for the scan.
	waitFor(t, "gc/app:1 to be scanned", func() bool {
		s, err := h.env.Admin.Get(ctx, api.ImageScans, "gc", dgst)
		return err == nil && s.(*api.ImageScan).Status.Phase == scan.PhaseScanned
	})

	// Within the grace period, nothing goes.
	rep, err := reg.GC(ctx, registry.GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 0 {
		t.Fatalf("a collection with a grace of 1h deleted %v, want nothing: every blob is minutes old", rep.Deleted)
	}
	time.Sleep(20 * time.Millisecond) // let the grace below pass
	dry, err := reg.GC(ctx, registry.GCOptions{Grace: 10 * time.Millisecond, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	real, err := reg.GC(ctx, registry.GCOptions{Grace: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	digests := func(r *registry.GCReport) []string {
		var out []string
		for _, b := range r.Deleted {
			out = append(out, b.Digest)
		}
		return out
	}
	if got := digests(real); !slices.Equal(got, []string{lone}) {
		t.Fatalf("the collection deleted %v, want only the unreferenced blob %s", got, lone)
	}
	if !slices.Equal(digests(dry), digests(real)) || dry.BytesFreed != real.BytesFreed {
		t.Errorf("dry run said %v (%d bytes), the real run deleted %v (%d bytes)", digests(dry), dry.BytesFreed, digests(real), real.BytesFreed)
	}
	if r := h.do(t, req{method: http.MethodGet, path: "/v2/gc/app/blobs/" + lone, user: "alice"}); r.code != http.StatusNotFound {
		t.Errorf("GET of the collected blob = %v, want 404", r)
	}
	if _, _, err := h.pull(t, "alice", "gc/app:1"); err != nil {
		t.Errorf("the tagged image does not pull after the collection: %v", err)
	}
	for _, l := range []string{layerDigest(t, img)} {
		if r := h.do(t, req{method: http.MethodGet, path: "/v2/gc/app/blobs/" + l, user: "alice"}); r.code != http.StatusOK {
			t.Errorf("GET of the tagged image's layer %s = %v, want 200", l, r)
		}
	}
	why, err := reg.WhyBlob(ctx, layerDigest(t, img), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var tag bool
	for _, hd := range why.Holders {
		tag = tag || hd.Kind == "Tag" && strings.HasPrefix(hd.Name, "gc/app:1 ")
	}
	if !tag || !strings.HasPrefix(why.Verdict, "kept") {
		t.Errorf("WhyBlob of the layer = %+v, want the tag gc/app:1 among the holders and a verdict 'kept'", why)
	}
	// A blob pushed again after its collection comes back.
	if d := h.uploadBlobOK(t, "alice", "gc/app", []byte("a blob no manifest references")); d != lone {
		t.Fatal(d)
	}
	if r := h.do(t, req{method: http.MethodGet, path: "/v2/gc/app/blobs/" + lone, user: "alice"}); r.code != http.StatusOK {
		t.Errorf("GET of the blob pushed again = %v, want 200", r)
	}
}

// An upload of bytes the storage does not hold takes no hold (no etcd
// write on its path): nothing can collect it before it is referenced, and
// a collection spares it by its time for the grace period. An upload of
// bytes already stored, which a collection may have picked, still takes
// one.
func TestGCNewBlobCommitNeedsNoHold(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "gcnew", false)
	reg := h.env.Server.Registry
	ctx := ctxT(t)
	fresh := h.uploadBlobOK(t, "alice", "gcnew/app", []byte("bytes never stored before"))
	if touched, err := registry.Touched(ctx, reg, fresh); err != nil || touched {
		t.Errorf("upload of new bytes: touched %v (%v), want no hold taken", touched, err)
	}
	rep, err := reg.GC(ctx, registry.GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 0 {
		t.Fatalf("a collection with a grace of 1h deleted %v, want the new blob spared", rep.Deleted)
	}
	if again := h.uploadBlobOK(t, "alice", "gcnew/other", []byte("bytes never stored before")); again != fresh {
		t.Fatal(again)
	}
	if touched, err := registry.Touched(ctx, reg, fresh); err != nil || !touched {
		t.Errorf("upload of bytes already stored: touched %v (%v), want a hold taken", touched, err)
	}
}
