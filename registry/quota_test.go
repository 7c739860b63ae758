package registry_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server/servertest"
	"slipway.dev/slipway/store"
)

// quotaImage is an image of the given layers (each random, so its
// compressed size is about its size).
func quotaImage(t *testing.T, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func randomLayer(t *testing.T, size int64) v1.Layer {
	t.Helper()
	l, err := random.Layer(size, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageRecord is the Image record the registry would make of img.
func imageRecord(t *testing.T, img v1.Image) *api.Image {
	t.Helper()
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := imagestreams.ImageFromManifest(digestOf(t, img), string(mt), rawManifest(t, img), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// warnRecorder keeps the Warning headers of a push's answers.
type warnRecorder struct {
	mu    sync.Mutex
	warns []string
}

func (r *warnRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := remote.DefaultTransport.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.warns = append(r.warns, res.Header.Values("Warning")...)
		r.mu.Unlock()
	}
	return res, err
}

// pushWarned pushes img with ggcr and returns the Warning headers seen.
func (h *harness) pushWarned(t *testing.T, u, ref string, img v1.Image) ([]string, error) {
	t.Helper()
	rec := &warnRecorder{}
	err := remote.Write(h.ref(t, ref), img, remote.WithAuth(ggcrAuth(t, h, u)), remote.WithContext(ctxT(t)),
		remote.WithTransport(rec), remote.WithRetryStatusCodes(), remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Steps: 1}))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.warns, err
}

// The registry.bytes quota (issue 15's must-show): a push that crosses
// the hard limit is refused with DENIED and a message that says what to
// do, and nothing of it remains; shared layers count once; freeing room
// lets the push through.
func TestRegistryQuotaRefusesPushOverHardLimit(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "q", false)
	ctx := ctxT(t)
	st := h.env.Server.Store
	if err := h.env.Admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{
		ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "q"},
		Spec:       api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: "3Mi"}, Soft: map[string]string{api.QuotaRegistryBytes: "1Mi"}},
	}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	usage := func() int64 {
		t.Helper()
		n, err := st.RegistryBytes(ctx, "q")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	base := randomLayer(t, 1<<20)
	img1 := quotaImage(t, base)
	warns, err := h.pushWarned(t, "alice", "q/app:one", img1)
	if err != nil {
		t.Fatalf("push of a 1 MiB image under a 3Mi quota: %v", err)
	}
	if !strings.Contains(strings.Join(warns, "\n"), "over the soft limit of quota registry") {
		t.Errorf("push over the soft limit 1Mi: Warning headers %q, want one naming the soft limit", warns)
	}
	u1 := usage()
	img2 := quotaImage(t, base, randomLayer(t, 64<<10))
	d2 := h.pushOK(t, "alice", "q/app:two", img2)
	u2 := usage()
	// The shared layer counts once: the second image adds its small layer,
	// its config and its manifest, not the 1 MiB again.
	if add := u2 - u1; add <= 64<<10 || add > 80<<10 {
		t.Fatalf("usage went from %d to %d: the second image added %d bytes, want its 64 KiB layer plus config and manifest (the shared layer counted once)", u1, u2, u2-u1)
	}

	// Each new 1 MiB layer fits alone, the two together do not: the
	// manifest put is refused.
	img3 := quotaImage(t, randomLayer(t, 1<<20), randomLayer(t, 1<<20))
	// A single new 2 MiB layer crosses the limit at its upload.
	img4 := quotaImage(t, randomLayer(t, 2<<20))
	for _, c := range []struct {
		name string
		img  v1.Image
	}{{"two new layers (refused at the manifest)", img3}, {"one big layer (refused at the blob upload)", img4}} {
		_, err := h.push(t, "alice", "q/app:two", c.img)
		if err == nil {
			t.Fatalf("%s: push over the hard limit 3Mi succeeded", c.name)
		}
		for _, want := range []string{"DENIED", "exceeded quota registry: registry.bytes used", "hard 3Mi (project q)", "slipway adm prune images"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: push error %q does not contain %q", c.name, err, want)
			}
		}
		d := digestOf(t, c.img)
		if _, _, err := h.pull(t, "alice", "q/app@"+d); err == nil {
			t.Errorf("%s: the refused image %s is pullable", c.name, d)
		}
		if _, err := h.image(t, "q", d); !api.IsNotFound(err) {
			t.Errorf("%s: the refused image's record: %v, want not found", c.name, err)
		}
		if hist := h.history(t, "q", "app", "two"); len(hist) != 1 || hist[0].Image != d2 {
			t.Errorf("%s: tag two moved: history %+v, want only %s", c.name, hist, d2)
		}
		if c.img == img4 {
			// The refused upload is not committed into the repository.
			if r := h.do(t, req{method: http.MethodHead, path: "/v2/q/app/blobs/" + layerDigest(t, img4), user: "alice"}); r.code != http.StatusNotFound {
				t.Errorf("%s: HEAD of the refused layer answered %d, want 404", c.name, r.code)
			}
		}
		// Nothing of the refused image counts. (The total may move: the
		// scanner attaches its reports to the pushed images meanwhile.)
		have, err := st.RegistryBlobs(ctx, "q")
		if err != nil {
			t.Fatal(err)
		}
		refused := map[string]int64{}
		store.ImageBlobs(imageRecord(t, c.img), refused)
		for d := range refused {
			if _, ok := have[d]; ok && d != layerDigest(t, img1) {
				t.Errorf("%s: the refused image's blob %s counts in the project's usage", c.name, d)
			}
		}
	}

	// The quota's status reports the usage (what `slipway describe quota` shows).
	waitFor(t, "quota status used registry.bytes = the project's usage", func() bool {
		want := api.FormatQuota(api.QuotaRegistryBytes, usage())
		o, err := h.env.Admin.Get(ctx, api.ResourceQuotas, "q", "registry")
		return err == nil && o.(*api.ResourceQuota).Status.Used[api.QuotaRegistryBytes] == want
	})

	// Deleting the images frees the room; the big push then goes through.
	for _, img := range []v1.Image{img1, img2} {
		if _, err := h.env.Admin.Delete(ctx, api.Images, "q", digestOf(t, img)); err != nil {
			t.Fatalf("delete image: %v", err)
		}
	}
	if got := usage(); got > 64<<10 {
		t.Fatalf("usage %d after deleting both images, want only the scanner's small reports left", got)
	}
	h.pushOK(t, "alice", "q/app:two", img4)
}

// A cross-repository mount into a project is held to its registry.bytes
// quota (the mount is not performed, and the upload the client falls back
// to is refused), and under such a quota a manifest must state its blobs'
// true sizes, since the usage is counted from them.
func TestRegistryQuotaMountAndDeclaredSizes(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "src", false)
	h.project(t, "alice", "q2", false)
	ctx := ctxT(t)
	if err := h.env.Admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{
		ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "q2"},
		Spec:       api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: "1Mi"}},
	}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	big := randomLayer(t, 2<<20)
	small := randomLayer(t, 16<<10)
	h.pushOK(t, "alice", "src/app:v1", quotaImage(t, big, small))
	mount := func(l v1.Layer) resp {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return h.do(t, req{method: http.MethodPost, path: "/v2/q2/app/blobs/uploads/?mount=" + d.String() + "&from=src/app", user: "alice"})
	}
	if r := mount(small); r.code != http.StatusCreated {
		t.Errorf("mount of a 16 KiB layer under a 1Mi quota: %v, want 201", r)
	}
	if r := mount(big); r.code != http.StatusAccepted {
		t.Errorf("mount of a 2 MiB layer over a 1Mi quota: %v, want 202 (not mounted: upload instead)", r)
	}
	rc, err := big.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if r := h.uploadBlob(t, "alice", "q2/app", data, ""); r.errCode() != "DENIED" || !strings.Contains(string(r.body), "exceeded quota registry") {
		t.Errorf("upload of the 2 MiB layer over a 1Mi quota: %v, want DENIED exceeded quota", r)
	}

	// A manifest that understates its layer's size is refused.
	layer := bytes.Repeat([]byte("x"), 600<<10)
	ld := h.uploadBlobOK(t, "alice", "q2/app", layer)
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd := h.uploadBlobOK(t, "alice", "q2/app", cfg)
	man := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":10}]}`, cd, len(cfg), ld)
	if r := h.putManifest(t, "alice", "q2/app", "lie", "application/vnd.oci.image.manifest.v1+json", []byte(man)); r.errCode() != "MANIFEST_INVALID" {
		t.Errorf("manifest giving a 600 KiB layer size 10: %v, want MANIFEST_INVALID", r)
	}
	if hist := h.history(t, "q2", "app", "lie"); len(hist) != 0 {
		t.Errorf("tag lie moved: %+v", hist)
	}

	// A negative size, which would lower the project's usage for good
	// once recorded, is refused whatever else the manifest says (a
	// foreign layer with URLs is one distribution does not stat).
	neg := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d},{"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"sha256:%064x","size":-1099511627776,"urls":["https://example.com/x"]}]}`, cd, len(cfg), ld, len(layer), 1)
	if r := h.putManifest(t, "alice", "q2/app", "negative", "application/vnd.oci.image.manifest.v1+json", []byte(neg)); r.errCode() != "MANIFEST_INVALID" || !strings.Contains(string(r.body), "0 or more") {
		t.Errorf("manifest giving a layer size -1 TiB: %v, want MANIFEST_INVALID saying sizes are 0 or more", r)
	}
	if hist := h.history(t, "q2", "app", "negative"); len(hist) != 0 {
		t.Errorf("tag negative moved: %+v", hist)
	}
}

// TestRegistryQuotaHoldsForTagsAndImports: a spec tag that follows
// another project's image (slipway tag) links the image in, and an
// import stores an external registry's image, with no push through the
// registry API; under a hard registry.bytes limit both are refused as a
// push would be, with the tag's condition saying which quota and what to
// do, and nothing linked, recorded or moved.
func TestRegistryQuotaHoldsForTagsAndImports(t *testing.T) {
	src := newSourceRegistry(t)
	big := quotaImage(t, randomLayer(t, 1<<20))
	pushSource(t, src.host(), "lib/big:1", big)
	h := start(t, servertest.WithImport(registry.ImportPolicy{Registries: []string{src.host()}, CIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}))
	ctx := ctxT(t)
	h.project(t, "alice", "src", false)
	h.project(t, "alice", "q", false)
	if err := h.env.Admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{
		ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "q"},
		Spec:       api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: "256Ki"}},
	}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	dgst := h.pushOK(t, "alice", "src/app:1", big)
	for _, c := range []struct {
		stream string
		tag    api.TagReference
	}{
		{"followed", api.TagReference{Name: "1", From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "src", Name: "app:1"}}},
		{"imported", importTag("1", src.host()+"/lib/big:1")},
	} {
		if err := h.setSpecTag(t, "alice", "q", c.stream, c.tag); err != nil {
			t.Fatal(err)
		}
		cond := h.waitFailed(t, "q", c.stream, "1")
		for _, want := range []string{"exceeded quota registry: registry.bytes used", "hard 256Ki (project q)", "slipway adm prune images"} {
			if !strings.Contains(cond.Message, want) {
				t.Errorf("q/%s:1 (%s) condition %q does not say %q", c.stream, c.tag.From.Name, cond.Message, want)
			}
		}
		if items := h.history(t, "q", c.stream, "1"); len(items) != 0 {
			t.Errorf("q/%s:1 moved over the quota: %+v", c.stream, items)
		}
		if r := h.do(t, req{method: http.MethodHead, path: "/v2/q/" + c.stream + "/blobs/" + layerDigest(t, big), user: "alice"}); r.code != http.StatusNotFound {
			t.Errorf("q/%s: the 1 MiB layer is linked over the quota (HEAD answered %d)", c.stream, r.code)
		}
	}
	if _, err := h.image(t, "q", dgst); !api.IsNotFound(err) {
		t.Errorf("q's record of the image: %v, want not found", err)
	}
	if n, err := h.env.Server.Store.RegistryBytes(ctx, "q"); err != nil || n != 0 {
		t.Errorf("q's registry.bytes usage: %d, %v; want 0", n, err)
	}
}
