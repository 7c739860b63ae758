package signing_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"slipway.dev/slipway/signing"
)

const (
	sigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	attArtifactType = "application/vnd.in-toto+json"
	sigAnnotation   = "dev.cosignproject.cosign/signature"
)

func TestKeyPair(t *testing.T) {
	kp, err := signing.GenerateKeyPair([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(kp.PrivateKey); b == nil || b.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" {
		t.Fatalf("private key PEM type = %v, want ENCRYPTED SIGSTORE PRIVATE KEY", b)
	}
	if b, _ := pem.Decode(kp.PublicKey); b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("public key PEM type = %v, want PUBLIC KEY", b)
	}
	if bytes.Contains(kp.PrivateKey, []byte("BEGIN PRIVATE KEY")) || bytes.Contains(kp.PrivateKey, []byte("BEGIN EC PRIVATE KEY")) {
		t.Fatal("the private key is stored in the clear")
	}
	s, err := signing.LoadSigner(kp.PrivateKey, []byte("s3cret"))
	if err != nil {
		t.Fatalf("LoadSigner with the right password: %v", err)
	}
	if s.Fingerprint() != kp.Fingerprint || !strings.HasPrefix(kp.Fingerprint, "sha256:") || len(kp.Fingerprint) != len("sha256:")+64 {
		t.Errorf("signer fingerprint = %q, key pair's = %q", s.Fingerprint(), kp.Fingerprint)
	}
	if !bytes.Equal(s.PublicKey(), kp.PublicKey) {
		t.Errorf("signer public key = %s, want %s", s.PublicKey(), kp.PublicKey)
	}
	if _, err := signing.LoadSigner(kp.PrivateKey, []byte("wrong")); err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Errorf("LoadSigner with a wrong password = %v, want a decrypt error", err)
	}
	if _, err := signing.GenerateKeyPair(nil); err == nil {
		t.Error("GenerateKeyPair(no password) succeeded; want refused")
	}
	other, err := signing.GenerateKeyPair([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	if other.Fingerprint == kp.Fingerprint {
		t.Error("two key pairs have the same fingerprint")
	}
}

// TestSignVerify signs in the real registry and checks both places the
// signature goes, and each way Verify must say no.
func TestSignVerify(t *testing.T) {
	f := start(t)
	ctx := ctxT(t)
	kp, signer := key(t, 0)
	other, _ := key(t, 1)
	a := f.push(t, "img", "a")
	b := f.push(t, "img", "b")
	c := f.push(t, "img", "c")

	t.Run("tag refused", func(t *testing.T) {
		tag, _ := name.NewTag(f.env.Registry + "/proj/img:a")
		err := signing.Sign(ctx, tag, signer, f.opts()...)
		if err == nil || !strings.Contains(err.Error(), "sign by digest") || !strings.Contains(err.Error(), "/proj/img@sha256:") {
			t.Fatalf("Sign(tag) = %v, want a 'sign by digest: …@sha256:…' error", err)
		}
		if _, err := signing.Verify(ctx, tag, [][]byte{kp.PublicKey}, f.opts()...); err == nil || !strings.Contains(err.Error(), "verify by digest") {
			t.Errorf("Verify(tag) = %v, want a 'verify by digest' error", err)
		}
		missing := a.Repository.Digest("sha256:" + strings.Repeat("0", 64))
		if err := signing.Sign(ctx, missing, signer, f.opts()...); err == nil || !strings.Contains(err.Error(), "no such image") {
			t.Errorf("Sign(missing image) = %v, want 'no such image'", err)
		}
	})

	for _, d := range []name.Digest{a, c} {
		if err := signing.Sign(ctx, d, signer, f.opts()...); err != nil {
			t.Fatalf("Sign(%s): %v", d, err)
		}
	}

	t.Run("verifies from tag and referrers", func(t *testing.T) {
		for _, src := range []signing.Source{signing.FromTag, signing.FromReferrers} {
			res, err := signing.Verify(ctx, a, [][]byte{other.PublicKey, kp.PublicKey}, f.opts(signing.WithSource(src))...)
			if err != nil {
				t.Fatalf("Verify(%s, %s): %v", a, src, err)
			}
			if res.Key != 1 || res.KeyFingerprint != kp.Fingerprint || res.Digest != a.DigestStr() || res.Source != src || res.VerifiedAt.IsZero() {
				t.Errorf("Verify(%s, %s) = %+v, want key 1 (%s)", a, src, res, kp.Fingerprint)
			}
		}
	})

	t.Run("cosign tag layout", func(t *testing.T) {
		m, _ := f.manifest(t, sigTag(a, "sig"))
		if len(m.Layers) != 1 {
			t.Fatalf("%s has %d layers, want 1", sigTag(a, "sig"), len(m.Layers))
		}
		l := m.Layers[0]
		if l.MediaType != "application/vnd.dev.cosign.simplesigning.v1+json" || l.Annotations[sigAnnotation] == "" {
			t.Errorf("signature layer = %+v, want simple signing with %s", l, sigAnnotation)
		}
		// Signing again with the same key is a no-op in both places.
		if err := signing.Sign(ctx, a, signer, f.opts()...); err != nil {
			t.Fatal(err)
		}
		m2, _ := f.manifest(t, sigTag(a, "sig"))
		if len(m2.Layers) != 1 {
			t.Errorf("after signing twice %s has %d layers, want 1", sigTag(a, "sig"), len(m2.Layers))
		}
		// Another key adds a layer, and both verify.
		_, s2 := key(t, 1)
		if err := signing.Sign(ctx, a, s2, f.opts()...); err != nil {
			t.Fatal(err)
		}
		m3, _ := f.manifest(t, sigTag(a, "sig"))
		if len(m3.Layers) != 2 {
			t.Errorf("after a second key %s has %d layers, want 2", sigTag(a, "sig"), len(m3.Layers))
		}
		res, err := signing.Verify(ctx, a, [][]byte{other.PublicKey}, f.opts()...)
		if err != nil || res.KeyFingerprint != other.Fingerprint {
			t.Errorf("Verify with the second key = %+v, %v", res, err)
		}
	})

	t.Run("referrers API", func(t *testing.T) {
		idx := f.referrers(t, a)
		var sigs []v1.Descriptor
		for _, d := range idx.Manifests {
			if d.ArtifactType == sigArtifactType {
				sigs = append(sigs, d)
			}
		}
		// Two keys, and signing twice with the first wrote the same
		// referrer manifest again.
		if len(sigs) != 2 {
			t.Fatalf("referrers of %s = %+v, want 2 of artifactType %s", a, idx.Manifests, sigArtifactType)
		}
		m, mt := f.manifest(t, a.Repository.Digest(sigs[0].Digest.String()))
		if mt != "application/vnd.oci.image.manifest.v1+json" || m.Subject == nil || m.Subject.Digest.String() != a.DigestStr() ||
			string(m.Config.MediaType) != sigArtifactType || len(m.Layers) != 1 || m.Layers[0].Annotations[sigAnnotation] == "" {
			t.Errorf("referrer manifest = %s %+v", mt, m)
		}
	})

	t.Run("unsigned", func(t *testing.T) {
		for _, src := range []signing.Source{signing.FromTag, signing.FromReferrers} {
			_, err := signing.Verify(ctx, b, [][]byte{kp.PublicKey}, f.opts(signing.WithSource(src))...)
			if !errors.Is(err, signing.ErrUnsigned) {
				t.Errorf("Verify(unsigned, %s) = %v, want ErrUnsigned", src, err)
			}
		}
	})

	t.Run("untrusted key", func(t *testing.T) {
		_, err := signing.Verify(ctx, c, [][]byte{other.PublicKey}, f.opts()...)
		if !errors.Is(err, signing.ErrInvalidSignature) {
			t.Errorf("Verify(signed by another key) = %v, want ErrInvalidSignature", err)
		}
	})

	t.Run("signature copied to another digest", func(t *testing.T) {
		m, mt := f.manifest(t, sigTag(c, "sig"))
		f.putManifest(t, sigTag(b, "sig"), m, mt)
		_, err := signing.Verify(ctx, b, [][]byte{kp.PublicKey}, f.opts()...)
		want := "signature is for " + c.DigestStr() + ", not " + b.DigestStr()
		var mm *signing.DigestMismatchError
		if !errors.Is(err, signing.ErrDigestMismatch) || !errors.As(err, &mm) || !strings.Contains(err.Error(), want) || mm.KeyFingerprint != kp.Fingerprint {
			t.Errorf("Verify(copied signature) = %v, want %q", err, want)
		}
	})

	t.Run("tampered signature", func(t *testing.T) {
		m, mt := f.manifest(t, sigTag(c, "sig"))
		raw, err := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[sigAnnotation])
		if err != nil {
			t.Fatal(err)
		}
		raw[len(raw)-3] ^= 0x01
		m.Layers[0].Annotations[sigAnnotation] = base64.StdEncoding.EncodeToString(raw)
		f.putManifest(t, sigTag(c, "sig"), m, mt)
		_, err = signing.Verify(ctx, c, [][]byte{kp.PublicKey}, f.opts()...)
		if !errors.Is(err, signing.ErrInvalidSignature) || !strings.Contains(err.Error(), "invalid signature") {
			t.Errorf("Verify(tampered) = %v, want ErrInvalidSignature", err)
		}
		// The referrer is a copy of its own, untouched.
		if _, err := signing.Verify(ctx, c, [][]byte{kp.PublicKey}, f.opts(signing.WithSource(signing.FromReferrers))...); err != nil {
			t.Errorf("Verify(tampered tag, from referrers) = %v, want the referrer to verify", err)
		}
	})
}

func testProvenance(base name.Digest) *signing.Provenance {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &signing.Provenance{
		BuilderID:    "https://slipway.test/builder",
		BuildName:    "proj/web-7",
		SourceRepo:   "https://git.example/web.git",
		SourceCommit: "0123456789abcdef0123456789abcdef01234567",
		Strategy:     "Docker",
		BuildArgs:    map[string]string{"VERSION": "7"},
		BaseImages:   []signing.Image{{Name: base.Context().Tag("1").String(), Digest: base.DigestStr()}},
		Internal:     map[string]any{"buildkit": "v0.34.2"},
		StartedOn:    start,
		FinishedOn:   start.Add(90 * time.Second),
	}
}

func TestAttestProvenance(t *testing.T) {
	f := start(t)
	ctx := ctxT(t)
	kp, signer := key(t, 0)
	other, _ := key(t, 1)
	base := f.push(t, "base", "1")
	app := f.push(t, "web", "7")
	app2 := f.push(t, "web", "8")

	st, err := testProvenance(base).Statement()
	if err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(f.env.Registry + "/proj/web:7")
	if err := signing.Attest(ctx, tag, signer, st, f.opts()...); err == nil || !strings.Contains(err.Error(), "attest by digest") {
		t.Fatalf("Attest(tag) = %v, want refused", err)
	}
	if err := signing.Attest(ctx, app, signer, st, f.opts()...); err != nil {
		t.Fatalf("Attest: %v", err)
	}

	for _, src := range []signing.Source{signing.FromTag, signing.FromReferrers} {
		res, err := signing.VerifyAttestation(ctx, app, [][]byte{other.PublicKey, kp.PublicKey}, signing.PredicateSLSAProvenance, f.opts(signing.WithSource(src))...)
		if err != nil {
			t.Fatalf("VerifyAttestation(%s): %v", src, err)
		}
		if res.Key != 1 || res.KeyFingerprint != kp.Fingerprint || res.PredicateType != signing.PredicateSLSAProvenance {
			t.Errorf("VerifyAttestation(%s) = %+v", src, res)
		}
		var got map[string]any
		if err := json.Unmarshal(res.Statement, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"_type":         "https://in-toto.io/Statement/v0.1",
			"predicateType": "https://slsa.dev/provenance/v1",
			"subject": []any{map[string]any{
				"name":   app.Repository.String(),
				"digest": map[string]any{"sha256": strings.TrimPrefix(app.DigestStr(), "sha256:")},
			}},
			"predicate": map[string]any{
				"buildDefinition": map[string]any{
					"buildType": "https://slipway.dev/build/v1",
					"externalParameters": map[string]any{
						"source":    map[string]any{"repository": "https://git.example/web.git", "commit": "0123456789abcdef0123456789abcdef01234567"},
						"strategy":  "Docker",
						"buildArgs": map[string]any{"VERSION": "7"},
					},
					"internalParameters": map[string]any{"buildkit": "v0.34.2"},
					"resolvedDependencies": []any{
						map[string]any{
							"uri":    "git+https://git.example/web.git@0123456789abcdef0123456789abcdef01234567",
							"digest": map[string]any{"gitCommit": "0123456789abcdef0123456789abcdef01234567"},
						},
						map[string]any{
							"name":   base.Context().Tag("1").String(),
							"uri":    base.Context().Name() + "@" + base.DigestStr(),
							"digest": map[string]any{"sha256": strings.TrimPrefix(base.DigestStr(), "sha256:")},
						},
					},
				},
				"runDetails": map[string]any{
					"builder": map[string]any{"id": "https://slipway.test/builder"},
					"metadata": map[string]any{
						"invocationId": "proj/web-7",
						"startedOn":    "2026-03-01T12:00:00Z",
						"finishedOn":   "2026-03-01T12:01:30Z",
					},
				},
			},
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("verified statement (%s), -want +got:\n%s", src, d)
		}
	}

	m, attMT := f.manifest(t, sigTag(app, "att"))
	if len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.dsse.envelope.v1+json" || m.Layers[0].Annotations["predicateType"] != signing.PredicateSLSAProvenance {
		t.Errorf("%s = %+v, want one DSSE layer with predicateType", sigTag(app, "att"), m)
	}
	var atts []v1.Descriptor
	for _, d := range f.referrers(t, app).Manifests {
		if d.ArtifactType == attArtifactType {
			atts = append(atts, d)
		}
	}
	if len(atts) != 1 {
		t.Errorf("referrers of %s: %d of artifactType %s, want 1", app, len(atts), attArtifactType)
	}

	if _, err := signing.VerifyAttestation(ctx, app, [][]byte{kp.PublicKey}, "https://spdx.dev/Document", f.opts()...); !errors.Is(err, signing.ErrNoAttestation) {
		t.Errorf("VerifyAttestation(other type) = %v, want ErrNoAttestation", err)
	}
	if _, err := signing.VerifyAttestation(ctx, app2, [][]byte{kp.PublicKey}, signing.PredicateSLSAProvenance, f.opts()...); !errors.Is(err, signing.ErrNoAttestation) {
		t.Errorf("VerifyAttestation(none) = %v, want ErrNoAttestation", err)
	}
	if _, err := signing.VerifyAttestation(ctx, app, [][]byte{other.PublicKey}, signing.PredicateSLSAProvenance, f.opts()...); !errors.Is(err, signing.ErrInvalidSignature) {
		t.Errorf("VerifyAttestation(untrusted key) = %v, want ErrInvalidSignature", err)
	}
	// The attestation of web:7 copied to web:8.
	f.putManifest(t, sigTag(app2, "att"), m, attMT)
	_, err = signing.VerifyAttestation(ctx, app2, [][]byte{kp.PublicKey}, signing.PredicateSLSAProvenance, f.opts()...)
	if want := "signature is for " + app.DigestStr() + ", not " + app2.DigestStr(); !errors.Is(err, signing.ErrDigestMismatch) || !strings.Contains(err.Error(), want) {
		t.Errorf("VerifyAttestation(copied) = %v, want %q", err, want)
	}
}

func TestProvenanceNeedsBuilder(t *testing.T) {
	if _, err := (&signing.Provenance{BuildName: "p/b"}).Statement(); err == nil {
		t.Error("Statement() without a builder id succeeded")
	}
	p := &signing.Provenance{BuilderID: "x", BuildName: "p/b", BaseImages: []signing.Image{{Name: "r/b:1", Digest: "nodigest"}}}
	if _, err := p.Statement(); err == nil {
		t.Error("Statement() with a base image without a digest succeeded")
	}
}
