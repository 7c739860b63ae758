package registry_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
)

// TestPromotionCopyIsServerSide: CopyImage links an image and its
// referrer into another project's repository and PromoteTag moves the
// stage's tag, as the pipeline owner and only with the owner's rights; no
// promoter account or token is made for it.
func TestPromotionCopyIsServerSide(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	reg := h.env.Server.Registry
	h.project(t, "alice", "dev", false)
	h.project(t, "bob", "prod", false)
	img := randomImage(t)
	dgst := h.pushOK(t, "alice", "dev/shop:latest", img)
	// A referrer of it, as a signature or SBOM is stored.
	desc, err := partial.Descriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	sig := mutate.Subject(randomImage(t), *desc).(v1.Image)
	h.pushOK(t, "alice", "dev/shop@"+digestOf(t, sig), sig)

	// alice may pull from dev but may not promote into prod.
	err = reg.CopyImage(ctx, "alice", "dev", "prod", "shop", dgst)
	var denied *registry.PromotionDeniedError
	if !errors.As(err, &denied) {
		t.Fatalf("copy by an owner without the promote right in prod: %v, want PromotionDeniedError", err)
	}
	if _, err := h.image(t, "prod", dgst); err == nil {
		t.Errorf("a refused copy recorded the image in prod")
	}
	h.grant(t, "prod", "admin", "alice")
	// The registry sees the new binding once its cache has it.
	eventually(t, "the copy with alice's new right", func() (bool, string) {
		err := reg.CopyImage(ctx, "alice", "dev", "prod", "shop", dgst)
		if errors.As(err, &denied) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatalf("copy: %v", err)
		}
		return true, ""
	})
	if err := reg.PromoteTag(ctx, "alice", "prod", "shop", "live", dgst); err != nil {
		t.Fatalf("tag: %v", err)
	}
	hist := h.history(t, "prod", "shop", "live")
	if len(hist) != 1 || hist[0].Image != dgst || hist[0].By != api.ServiceAccountUser("prod", registry.PromoterServiceAccount) {
		t.Errorf("prod/shop:live history %+v", hist)
	}
	// Pulled from prod, blobs and all; the referrer came along.
	got, err := remote.Image(h.ref(t, "prod/shop:live"), remote.WithAuth(&authn.Basic{Username: "bob", Password: h.token(t, "bob")}))
	if err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, got); d != dgst {
		t.Errorf("prod/shop:live is %s, want %s", d, dgst)
	}
	ls, _ := got.Layers()
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer not served from prod: %v", err)
		}
		rc.Close()
	}
	idx, err := remote.Referrers(h.ref(t, "prod/shop@"+dgst).Context().Digest(dgst), remote.WithAuth(&authn.Basic{Username: "bob", Password: h.token(t, "bob")}))
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := idx.IndexManifest(); len(m.Manifests) != 1 {
		t.Errorf("referrers in prod: %+v, want the signature", m)
	}
	if _, err := h.env.Admin.Get(ctx, api.ServiceAccounts, "prod", registry.PromoterServiceAccount); err == nil {
		t.Errorf("a server-side copy made the promoter account")
	}
}

// TestPromotionCopyRespectsRegistryQuota: a server-side promotion copy
// puts bytes into the target project as a push does, so the target's hard
// registry.bytes limit refuses it the same way (DENIED, what to do), and
// a refused copy links and records nothing there.
func TestPromotionCopyRespectsRegistryQuota(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	reg := h.env.Server.Registry
	h.project(t, "alice", "dev", false)
	h.project(t, "alice", "prod", false)
	if err := h.env.Admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{
		ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "prod"},
		Spec:       api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: "256Ki"}},
	}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	img := quotaImage(t, randomLayer(t, 1<<20))
	dgst := h.pushOK(t, "alice", "dev/shop:latest", img)

	err := reg.CopyImage(ctx, "alice", "dev", "prod", "shop", dgst)
	if err == nil {
		t.Fatalf("copy of a 1 MiB image into a project whose hard registry.bytes is 256Ki succeeded")
	}
	for _, want := range []string{"exceeded quota registry: registry.bytes used", "hard 256Ki (project prod)", "slipway adm prune images"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("copy error %q does not contain %q", err, want)
		}
	}
	if _, err := h.image(t, "prod", dgst); !api.IsNotFound(err) {
		t.Errorf("the refused copy's image record in prod: %v, want not found", err)
	}
	for _, path := range []string{"/v2/prod/shop/manifests/" + dgst, "/v2/prod/shop/blobs/" + layerDigest(t, img)} {
		if r := h.do(t, req{method: http.MethodHead, path: path, user: "alice"}); r.code != http.StatusNotFound {
			t.Errorf("HEAD %s after the refused copy answered %d, want 404", path, r.code)
		}
	}
	if n, err := h.env.Server.Store.RegistryBytes(ctx, "prod"); err != nil || n != 0 {
		t.Errorf("prod's registry.bytes usage after the refused copy: %d, %v; want 0", n, err)
	}
	if err := reg.PromoteTag(ctx, "alice", "prod", "shop", "live", dgst); err == nil {
		t.Errorf("the stage tag moved to an image the refused copy did not bring")
	}
}
