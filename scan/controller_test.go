package scan_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

// fakeRegistry serves images by reference and keeps SBOMs in memory.
type fakeRegistry struct {
	mu     sync.Mutex
	images map[string]v1.Image // REPO@DIGEST -> image
	sboms  map[string][]byte   // REPO@DIGEST -> document
	dbs    map[string]string   // REPO@DIGEST -> zip file
	reads  map[string]int      // REPO@DIGEST -> layer reads
}

func (r *fakeRegistry) Image(_ context.Context, ref string) (v1.Image, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reads[ref]++
	if img, ok := r.images[ref]; ok {
		return img, nil
	}
	return nil, errors.New("MANIFEST_UNKNOWN " + ref)
}

func (r *fakeRegistry) PutSBOM(_ context.Context, ref string, doc []byte) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := sha256.Sum256(doc)
	d := "sha256:" + hex.EncodeToString(sum[:])
	r.sboms[ref[:strings.LastIndex(ref, "@")]+"@"+d] = doc
	return d, nil
}

func (r *fakeRegistry) GetSBOM(_ context.Context, repo, digest string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if doc, ok := r.sboms[repo+"@"+digest]; ok {
		return doc, nil
	}
	return nil, errors.New("MANIFEST_UNKNOWN " + repo + "@" + digest)
}

func (r *fakeRegistry) Fetch(_ context.Context, ref, path string) error {
	r.mu.Lock()
	src, ok := r.dbs[ref]
	r.mu.Unlock()
	if !ok {
		return errors.New("MANIFEST_UNKNOWN " + ref)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// The controller on a real store: the scan of a digest is the platform's
// record, which forged ImageScans and Image records do not reach; records
// of digests no project holds are dropped at the next database load.
func TestControllerRecords(t *testing.T) {
	st := storetest.New(t)
	ctx := storetest.Context(t)
	reg := &fakeRegistry{images: map[string]v1.Image{}, sboms: map[string][]byte{}, dbs: map[string]string{}, reads: map[string]int{}}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go (&scan.Controller{Store: st, Registry: reg, RegistryHost: "reg:5000"}).Run(runCtx)

	vuln := image(t, debianLayer(t, nil, vulnOpenSSL))
	vd, err := vuln.Digest()
	if err != nil {
		t.Fatal(err)
	}
	record := func(ns, ref string, img v1.Image) {
		t.Helper()
		d, _ := img.Digest()
		reg.mu.Lock()
		reg.images[ref] = img
		reg.mu.Unlock()
		ls, _ := img.Layers()
		var layers []api.ImageLayer
		for _, l := range ls {
			ld, _ := l.Digest()
			mt, _ := l.MediaType()
			layers = append(layers, api.ImageLayer{Digest: ld.String(), MediaType: string(mt)})
		}
		cd, _ := img.ConfigName()
		if err := st.Create(ctx, api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: d.String(), Namespace: ns}, DockerImageReference: ref,
			Config: &api.ImageConfig{Digest: cd.String()}, Layers: layers}); err != nil {
			t.Fatal(err)
		}
	}
	waitScan := func(ns, digest, what string, cond func(api.ImageScanStatus) bool) api.ImageScanStatus {
		t.Helper()
		var last api.ImageScanStatus
		storetest.Eventually(t, ctx, ns+" scan of "+digest+": "+what, func() bool {
			o, err := st.Get(ctx, api.ImageScans, ns, digest)
			if err != nil {
				return false
			}
			last = o.(*api.ImageScan).Status
			return cond(last)
		})
		return last
	}
	reads := func(ref string) int {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		return reg.reads[ref]
	}
	var od v1.Hash // of the image project d holds
	lookup := func(digest string) *api.ImageScan {
		t.Helper()
		sc, err := scan.Lookup(ctx, st, digest)
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}

	zip := osvZip(t, map[string][]byte{"DSA-9001-1.json": mustJSON(t, advisory("DSA-9001-1", "Debian:12", "openssl", introduced("0"), fixed(fixedOpenSSL)))})

	t.Run("M1 without a database the findings are unknown", func(t *testing.T) {
		record("a", "reg:5000/a/app@"+vd.String(), vuln)
		s := waitScan("a", vd.String(), "scanned", func(s api.ImageScanStatus) bool { return s.Phase == scan.PhaseScanned })
		if s.DBVersion != "" || s.Message != scan.NoDatabaseMessage {
			t.Errorf("scan without a database = %+v; want no dbVersion and %q", s, scan.NoDatabaseMessage)
		}
	})

	t.Run("a database from project vulndb is loaded and matches the records", func(t *testing.T) {
		good := "reg:5000/vulndb/osv@sha256:" + strings.Repeat("2", 64)
		reg.mu.Lock()
		reg.dbs[good] = zip
		reg.mu.Unlock()
		if err := st.Create(ctx, api.VulnerabilityDatabases, &api.VulnerabilityDatabase{ObjectMeta: api.ObjectMeta{Name: scan.DatabaseName, Annotations: map[string]string{scan.DatabaseSourceAnnotation: good}}}); err != nil {
			t.Fatal(err)
		}
		s := waitScan("a", vd.String(), "matched", func(s api.ImageScanStatus) bool { return s.DBVersion != "" })
		if s.DBVersion != good[strings.LastIndex(good, "@")+1:] || len(s.Findings) != 2 || s.Message != "" {
			t.Errorf("scan after the database loads = %+v; want database %s, the openssl and libssl3 findings and no message", s, good)
		}
	})

	t.Run("H5 a forged ImageScan is neither read nor copied", func(t *testing.T) {
		// A project admin writes b's ImageScan before b has the image.
		forged := &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: vd.String(), Namespace: "b"}}
		if err := st.Create(ctx, api.ImageScans, forged); err != nil {
			t.Fatal(err)
		}
		if _, err := st.GuaranteedUpdate(ctx, api.ImageScans, "b", vd.String(), store.UpdateOptions{Status: true}, func(o api.Object) error {
			o.(*api.ImageScan).Status = api.ImageScanStatus{Phase: scan.PhaseScanned, SBOMDigest: "sha256:" + strings.Repeat("f", 64), DBVersion: "forged"}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if sc := lookup(vd.String()); sc == nil || len(sc.Status.Findings) != 2 {
			t.Fatalf("Lookup = %+v; want the record's findings", sc)
		}
		record("b", "reg:5000/b/app@"+vd.String(), vuln)
		s := waitScan("b", vd.String(), "the record's copy", func(s api.ImageScanStatus) bool { return s.DBVersion != "forged" })
		if len(s.Findings) != 2 || s.SBOMDigest == "sha256:"+strings.Repeat("f", 64) {
			t.Errorf("b's scan = %+v; want a copy of the record", s)
		}
		if n := reads("reg:5000/b/app@" + vd.String()); n != 0 {
			t.Errorf("b's copy of a scanned digest read the layers %d times; want the record taken", n)
		}
	})

	t.Run("H5 an Image record naming another image is not scanned for it", func(t *testing.T) {
		clean := image(t, debianLayer(t, nil, fixedOpenSSL))
		cd, _ := clean.Digest()
		other := image(t, debianLayer(t, nil, vulnOpenSSL), layer(t, nil, file("marker", "x")))
		od, _ = other.Digest()
		reg.mu.Lock()
		reg.images["reg:5000/c/clean@"+cd.String()] = clean
		reg.mu.Unlock()
		// c's record of od points at its clean image.
		if err := st.Create(ctx, api.Images, &api.Image{ObjectMeta: api.ObjectMeta{Name: od.String(), Namespace: "c"}, DockerImageReference: "reg:5000/c/clean@" + cd.String(),
			Config: &api.ImageConfig{Digest: "sha256:" + strings.Repeat("c", 64)}, Layers: []api.ImageLayer{{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip"}}}); err != nil {
			t.Fatal(err)
		}
		// The next image is handled after it (one worker, in order).
		record("d", "reg:5000/d/app@"+od.String(), other)
		s := waitScan("d", od.String(), "scanned", func(s api.ImageScanStatus) bool { return s.Phase != "" })
		if len(s.Findings) != 2 {
			t.Errorf("d's scan of %s = %+v; want its own openssl and libssl3 findings", od, s)
		}
		if _, err := st.Get(ctx, api.ImageScans, "c", od.String()); err == nil {
			t.Errorf("c's fake record was scanned")
		}
		if reads("reg:5000/c/clean@"+cd.String()) != 0 {
			t.Errorf("the scanner read c's clean image for the fake record")
		}
	})

	t.Run("records of digests no project holds are dropped at the next database load", func(t *testing.T) {
		for _, ns := range []string{"a", "b"} {
			if _, err := st.Delete(ctx, api.Images, ns, vd.String(), ""); err != nil {
				t.Fatal(err)
			}
		}
		next := "reg:5000/vulndb/osv@sha256:" + strings.Repeat("3", 64)
		reg.mu.Lock()
		reg.dbs[next] = zip
		reg.mu.Unlock()
		if _, err := st.GuaranteedUpdate(ctx, api.VulnerabilityDatabases, "", scan.DatabaseName, store.UpdateOptions{}, func(o api.Object) error {
			o.GetObjectMeta().Annotations[scan.DatabaseSourceAnnotation] = next
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		storetest.Eventually(t, ctx, "the record of "+vd.String()+" is dropped", func() bool { return lookup(vd.String()) == nil })
		if sc := lookup(od.String()); sc == nil {
			t.Errorf("the record of %s, which project d holds, was dropped too", od)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
