package signing

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/cosign/v2/pkg/cosign"
	"github.com/sigstore/cosign/v2/pkg/oci"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"
)

var (
	// ErrUnsigned means the image has no signature at all where Verify
	// looked.
	ErrUnsigned = errors.New("signing: image is not signed")
	// ErrNoAttestation means the image has no attestation of the asked
	// predicate type where VerifyAttestation looked.
	ErrNoAttestation = errors.New("signing: image has no attestation of that type")
	// ErrInvalidSignature means signatures are there but none verifies
	// with any trusted key: tampered, or made by another key.
	ErrInvalidSignature = errors.New("signing: invalid signature")
	// ErrDigestMismatch means a signature verifies with a trusted key but
	// is over another image: it was copied. Errors carrying it are
	// *DigestMismatchError.
	ErrDigestMismatch = errors.New("signing: signature is for another image")
)

// DigestMismatchError is a valid signature by a trusted key whose payload
// names another digest than the image it is attached to.
type DigestMismatchError struct {
	// Signed is the digest the signed payload names; Image is the one
	// verified.
	Signed, Image string
	// KeyFingerprint is the key the signature verified with.
	KeyFingerprint string
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("signing: signature is for %s, not %s", e.Signed, e.Image)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestMismatchError) Is(target error) bool { return target == ErrDigestMismatch }

// Result says which trusted key verified an image, when, and what it
// signed.
type Result struct {
	// Digest is the image verified, "sha256:<hex>".
	Digest string
	// Key is the index of the key in the pubKeys argument, and
	// KeyFingerprint its Fingerprint.
	Key            int
	KeyFingerprint string
	// VerifiedAt is when this process checked the signature.
	VerifiedAt time.Time
	// Source is where the signature was found.
	Source Source
	// Annotations are a signature's signed optional claims (see
	// WithAnnotations); nil for attestations.
	Annotations map[string]any
	// PredicateType and Statement are an attestation's: the verified
	// in-toto statement as signed.
	PredicateType string
	Statement     json.RawMessage
}

// Verify checks that the image ref names (a digest reference; a tag is
// refused) has a signature by one of pubKeys (PEM public keys) over that
// digest. It reads the place WithSource names (default: cosign's tag
// layout), checks each signature with cosign's VerifyImageSignature
// offline (no Rekor, no Fulcio, no SCT) and returns the first that
// verifies. Failures: ErrUnsigned (nothing there), *DigestMismatchError (a
// trusted key signed another digest: the signature was copied),
// ErrInvalidSignature (nothing verifies with a trusted key). A registry
// failure is returned as it is: it says nothing about the image.
func Verify(ctx context.Context, ref name.Reference, pubKeys [][]byte, opts ...Option) (*Result, error) {
	d, err := byDigest("verify", ref)
	if err != nil {
		return nil, err
	}
	keys, err := loadVerifiers(pubKeys)
	if err != nil {
		return nil, err
	}
	o := makeOptions(opts)
	h, _ := v1.NewHash(d.DigestStr())
	found, err := fetch(ctx, d, o, false)
	if err != nil {
		return nil, err
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%w: %s has no signature (%s)", ErrUnsigned, d, where(d, o, false))
	}
	res, err := check(ctx, d, h, found, keys, "signature", cosign.VerifyImageSignature, signatureClaims)
	if err != nil {
		return nil, err
	}
	res.Source = o.source
	return res, nil
}

// VerifyAttestation checks that the image ref names has an attestation of
// predicateType signed by one of pubKeys whose statement's subject is that
// digest, the way `cosign verify-attestation --type` does, offline. The
// result carries the verified statement. Failures are as Verify's, with
// ErrNoAttestation for "no attestation of that type".
func VerifyAttestation(ctx context.Context, ref name.Reference, pubKeys [][]byte, predicateType string, opts ...Option) (*Result, error) {
	d, err := byDigest("verify", ref)
	if err != nil {
		return nil, err
	}
	keys, err := loadVerifiers(pubKeys)
	if err != nil {
		return nil, err
	}
	o := makeOptions(opts)
	h, _ := v1.NewHash(d.DigestStr())
	all, err := fetch(ctx, d, o, true)
	if err != nil {
		return nil, err
	}
	// Pick by the (not yet verified) predicate type; verification below
	// covers the whole statement.
	var found []oci.Signature
	for _, a := range all {
		if st, err := statementOf(a); err == nil && st.PredicateType == predicateType {
			found = append(found, a)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("%w: %s has no %s attestation (%s)", ErrNoAttestation, d, predicateType, where(d, o, true))
	}
	claims := func(sig oci.Signature, h v1.Hash, _ map[string]any) error {
		st, err := statementOf(sig)
		if err != nil {
			return err
		}
		if st.PredicateType != predicateType {
			return fmt.Errorf("attestation is of type %s, not %s", st.PredicateType, predicateType)
		}
		var signed string
		for _, s := range st.Subject {
			if hex, ok := s.Digest["sha256"]; ok {
				if "sha256:"+hex == h.String() {
					return nil
				}
				if signed == "" {
					signed = "sha256:" + hex
				}
			}
		}
		return &DigestMismatchError{Signed: signed, Image: h.String()}
	}
	res, err := check(ctx, d, h, found, keys, "attestation", cosign.VerifyBlobAttestation, claims)
	if err != nil {
		return nil, err
	}
	res.Source = o.source
	res.PredicateType = predicateType
	return res, nil
}

// verifyFunc is cosign's check of one signature or attestation:
// VerifyImageSignature, or VerifyBlobAttestation (the per-layer check
// VerifyImageAttestation runs).
type verifyFunc func(context.Context, oci.Signature, v1.Hash, *cosign.CheckOpts) (bool, error)

// check verifies each signature with each key. cosign checks the
// cryptographic signature before the claims, so a mismatch error is only
// ever about a signature a trusted key made.
func check(ctx context.Context, d name.Digest, h v1.Hash, found []oci.Signature, keys []verifierKey, what string, verify verifyFunc, claims func(oci.Signature, v1.Hash, map[string]any) error) (*Result, error) {
	var mismatch *DigestMismatchError
	var failures []string
	for n, sig := range found {
		// Reading the layer checks its digest: a tampered payload fails
		// here. A registry failure is not a verdict on the image.
		sig, err := static.Copy(sig)
		if err != nil {
			var te *transport.Error
			var ue *url.Error
			if errors.As(err, &te) || errors.As(err, &ue) {
				return nil, fmt.Errorf("signing: reading %s %d of %s: %w", what, n+1, d, err)
			}
			failures = append(failures, fmt.Sprintf("%s %d: %v", what, n+1, err))
			continue
		}
		for i, k := range keys {
			co := &cosign.CheckOpts{SigVerifier: k.v, IgnoreTlog: true, IgnoreSCT: true, ClaimVerifier: claims}
			_, err := verify(ctx, sig, h, co)
			if err == nil {
				res := &Result{Digest: h.String(), Key: i, KeyFingerprint: k.fingerprint, VerifiedAt: time.Now()}
				if p, err := sig.Payload(); err == nil {
					if what == "signature" {
						var sci sigpayload.SimpleContainerImage
						if json.Unmarshal(p, &sci) == nil {
							res.Annotations = sci.Optional
						}
					} else if st, err := statementOf(sig); err == nil {
						res.Statement = st.raw
					}
				}
				return res, nil
			}
			var mm *DigestMismatchError
			if errors.As(err, &mm) {
				mm.KeyFingerprint = k.fingerprint
				mismatch = mm
				continue
			}
			failures = append(failures, fmt.Sprintf("%s %d, key %s: %v", what, n+1, k.fingerprint, err))
		}
	}
	if mismatch != nil {
		return nil, mismatch
	}
	return nil, fmt.Errorf("%w: no %s of %s verifies with a trusted key (%s)", ErrInvalidSignature, what, d, strings.Join(failures, "; "))
}

// signatureClaims is cosign's SimpleClaimVerifier with a message that
// names both digests.
func signatureClaims(sig oci.Signature, h v1.Hash, _ map[string]any) error {
	p, err := sig.Payload()
	if err != nil {
		return err
	}
	var sci sigpayload.SimpleContainerImage
	if err := json.Unmarshal(p, &sci); err != nil {
		return fmt.Errorf("the signed payload is not a simple-signing payload: %w", err)
	}
	if sci.Critical.Type != sigpayload.CosignSignatureType {
		return fmt.Errorf("the signed payload is of type %q, not %q", sci.Critical.Type, sigpayload.CosignSignatureType)
	}
	if got := sci.Critical.Image.DockerManifestDigest; got != h.String() {
		return &DigestMismatchError{Signed: got, Image: h.String()}
	}
	return nil
}

type statement struct {
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	raw json.RawMessage
}

// statementOf reads the in-toto statement inside an attestation's DSSE
// envelope, without verifying it.
func statementOf(sig oci.Signature) (*statement, error) {
	p, err := sig.Payload()
	if err != nil {
		return nil, err
	}
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
	}
	if err := json.Unmarshal(p, &env); err != nil {
		return nil, fmt.Errorf("not a DSSE envelope: %w", err)
	}
	if env.PayloadType != ctypes.IntotoPayloadType {
		return nil, fmt.Errorf("DSSE payload type %q is not %q", env.PayloadType, ctypes.IntotoPayloadType)
	}
	raw, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return nil, fmt.Errorf("DSSE payload: %w", err)
	}
	st := &statement{raw: raw}
	if err := json.Unmarshal(raw, st); err != nil {
		return nil, fmt.Errorf("in-toto statement: %w", err)
	}
	return st, nil
}

// fetch lists the signatures (or attestations) of d where o.source says.
func fetch(ctx context.Context, d name.Digest, o *options, attestations bool) ([]oci.Signature, error) {
	ociOpts := o.oci(ctx)
	if o.source == FromReferrers {
		artifactType := "application/vnd.dev.cosign.artifact.sig.v1+json"
		if attestations {
			artifactType = ctypes.IntotoPayloadType
		}
		idx, err := ociremote.Referrers(d, artifactType, ociOpts...)
		if err != nil {
			return nil, fmt.Errorf("signing: listing the referrers of %s: %w", d, err)
		}
		var out []oci.Signature
		for _, m := range idx.Manifests {
			if m.ArtifactType != artifactType {
				continue
			}
			sigs, err := ociremote.Signatures(d.Repository.Digest(m.Digest.String()), ociOpts...)
			if err != nil {
				return nil, fmt.Errorf("signing: reading referrer %s of %s: %w", m.Digest, d, err)
			}
			got, err := sigs.Get()
			if err != nil {
				return nil, fmt.Errorf("signing: reading referrer %s of %s: %w", m.Digest, d, err)
			}
			if !attestations {
				out = append(out, got...)
				continue
			}
			// WriteAttestationsReferrer keeps the layers' bytes but not
			// their annotations, and cosign's signature reader wants the
			// (empty) signature annotation of an attestation.
			for _, g := range got {
				p, err := g.Payload()
				if err != nil {
					return nil, fmt.Errorf("signing: reading referrer %s of %s: %w", m.Digest, d, err)
				}
				a, err := static.NewAttestation(p, static.WithLayerMediaType(ctypes.DssePayloadType))
				if err != nil {
					return nil, fmt.Errorf("signing: reading referrer %s of %s: %w", m.Digest, d, err)
				}
				out = append(out, a)
			}
		}
		return out, nil
	}
	var tag name.Tag
	var err error
	if attestations {
		tag, err = ociremote.AttestationTag(d, ociOpts...)
	} else {
		tag, err = ociremote.SignatureTag(d, ociOpts...)
	}
	if err != nil {
		return nil, fmt.Errorf("signing: %s: %w", d, err)
	}
	sigs, err := ociremote.Signatures(tag, ociOpts...)
	if err != nil {
		return nil, fmt.Errorf("signing: reading %s: %w", tag, err)
	}
	got, err := sigs.Get()
	if err != nil {
		return nil, fmt.Errorf("signing: reading %s: %w", tag, err)
	}
	return got, nil
}

func where(d name.Digest, o *options, attestations bool) string {
	if o.source == FromReferrers {
		return "looked in its OCI referrers"
	}
	if attestations {
		return "looked in " + attTag(d)
	}
	return "looked in " + sigTag(d)
}

// RegistryVerifier checks signatures and attestations of images named as
// REGISTRY/PROJECT/STREAM@DIGEST strings (policies.Verifier), with
// credentials from Auth for each image.
type RegistryVerifier struct {
	// Auth returns the credentials to read ref, and a func to call when
	// done with them.
	Auth func(ctx context.Context, ref string) (Option, func(), error)
}

// VerifySignature returns the fingerprint of the key that signed ref.
func (v RegistryVerifier) VerifySignature(ctx context.Context, ref string, keys [][]byte) (string, error) {
	return v.verify(ctx, ref, func(d name.Digest, opt Option) (*Result, error) { return Verify(ctx, d, keys, opt) })
}

// VerifyAttestation returns the fingerprint of the key that signed ref's
// attestation of predicateType.
func (v RegistryVerifier) VerifyAttestation(ctx context.Context, ref string, keys [][]byte, predicateType string) (string, error) {
	return v.verify(ctx, ref, func(d name.Digest, opt Option) (*Result, error) {
		return VerifyAttestation(ctx, d, keys, predicateType, opt)
	})
}

func (v RegistryVerifier) verify(ctx context.Context, ref string, check func(name.Digest, Option) (*Result, error)) (string, error) {
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	opt, done, err := v.Auth(ctx, ref)
	if err != nil {
		return "", err
	}
	defer done()
	res, err := check(d, opt)
	if err != nil {
		return "", err
	}
	return res.KeyFingerprint, nil
}
