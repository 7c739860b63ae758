package signing

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	ggcrstatic "github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	cremote "github.com/sigstore/cosign/v2/pkg/cosign/remote"
	"github.com/sigstore/cosign/v2/pkg/oci"
	"github.com/sigstore/cosign/v2/pkg/oci/empty"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	sigoptions "github.com/sigstore/sigstore/pkg/signature/options"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"
)

// Sign signs the image ref names, which must be a digest reference
// (name.Digest): a tag can move between signing and use, so a tag is
// refused. It writes the signature twice, as `cosign sign --key` writes it:
//
//   - in cosign's tag layout, a layer of REPO:sha256-<hex>.sig with the
//     simple-signing payload and the annotation
//     dev.cosignproject.cosign/signature; existing signatures there are kept,
//     and one by the same key over the same payload is not added again;
//   - as an OCI referrer of the image, what `cosign sign
//     --registry-referrers-mode=oci-1-1` writes: a manifest whose subject is
//     the image and whose artifactType is
//     application/vnd.dev.cosign.artifact.sig.v1+json, holding this one
//     signature.
//
// The image must exist in the registry. Nothing is sent to a transparency
// log. Re-signing with the same key and annotations writes nothing new.
func Sign(ctx context.Context, ref name.Reference, s *Signer, opts ...Option) error {
	d, err := byDigest("sign", ref)
	if err != nil {
		return err
	}
	o := makeOptions(opts)
	if err := exists(ctx, d, o); err != nil {
		return err
	}
	payload, err := (&sigpayload.Cosign{Image: d, Annotations: o.annotations}).MarshalJSON()
	if err != nil {
		return fmt.Errorf("signing: payload for %s: %w", d, err)
	}
	raw, err := s.sv.SignMessage(bytes.NewReader(payload), sigoptions.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("signing: signing %s: %w", d, err)
	}
	sig, err := static.NewSignature(payload, base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		return fmt.Errorf("signing: signing %s: %w", d, err)
	}

	ociOpts := o.oci(ctx)
	se := ociremote.SignedUnknown(d, ociOpts...)
	// A signature by this key over this payload already in the tag layout
	// is reused, so that its referrer is the same manifest too.
	dd := cremote.NewDupeDetector(s.sv)
	existing, err := se.Signatures()
	if err != nil {
		return fmt.Errorf("signing: reading the signatures of %s: %w", d, err)
	}
	if dupe, err := dd.Find(existing, sig); err != nil {
		return fmt.Errorf("signing: reading the signatures of %s: %w", d, err)
	} else if dupe != nil {
		if sig, err = static.Copy(dupe); err != nil {
			return fmt.Errorf("signing: reading the signatures of %s: %w", d, err)
		}
	} else {
		withSig, err := mutate.AttachSignatureToEntity(se, sig, mutate.WithDupeDetector(dd))
		if err != nil {
			return fmt.Errorf("signing: attaching the signature to %s: %w", d, err)
		}
		if err := ociremote.WriteSignatures(d.Repository, withSig, ociOpts...); err != nil {
			return fmt.Errorf("signing: writing %s: %w", sigTag(d), err)
		}
	}

	one, err := detached(d, sig, nil)
	if err != nil {
		return err
	}
	if err := writeSignatureReferrer(ctx, d, one, o); err != nil {
		return fmt.Errorf("signing: writing the signature of %s as a referrer: %w", d, err)
	}
	return nil
}

// sigArtifactType is what cosign's oci-1-1 signature referrers carry.
const sigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// referrerManifest is a manifest with an artifactType, as cosign writes
// it for a referrer.
type referrerManifest struct {
	v1.Manifest
	ArtifactType string `json:"artifactType,omitempty"`
}

func (r referrerManifest) RawManifest() ([]byte, error) { return json.Marshal(r) }
func (r referrerManifest) MediaType() (types.MediaType, error) {
	return types.OCIManifestSchema1, nil
}

// writeSignatureReferrer writes se's signatures as one OCI referrer of d,
// the bytes cosign's WriteSignaturesExperimentalOCI writes
// (TestCosignSigns compares them), without the line that
// function prints to the process's stderr for every image: a server
// signing a rebase wave would print thousands.
func writeSignatureReferrer(ctx context.Context, d name.Digest, se oci.SignedEntity, o *options) error {
	ropts := o.remote(ctx)
	desc, err := remote.Head(d, ropts...)
	if err != nil {
		return err
	}
	sigs, err := se.Signatures()
	if err != nil {
		return err
	}
	layers, err := sigs.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		if err := remote.WriteLayer(d.Repository, l, ropts...); err != nil {
			return err
		}
	}
	configBytes, err := sigs.RawConfigFile()
	if err != nil {
		return err
	}
	var configDesc v1.Descriptor
	if err := json.Unmarshal(configBytes, &configDesc); err != nil {
		return err
	}
	if err := remote.WriteLayer(d.Repository, ggcrstatic.NewLayer(configBytes, configDesc.MediaType), ropts...); err != nil {
		return err
	}
	raw, err := sigs.RawManifest()
	if err != nil {
		return err
	}
	var m v1.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	m.Config.MediaType = types.MediaType(sigArtifactType)
	m.Subject = desc
	rm := referrerManifest{m, sigArtifactType}
	b, err := rm.RawManifest()
	if err != nil {
		return err
	}
	h, _, err := v1.SHA256(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return remote.Put(d.Repository.Digest(h.String()), rm, ropts...)
}

// byDigest refuses anything but a digest reference.
func byDigest(verb string, ref name.Reference) (name.Digest, error) {
	if ref == nil {
		return name.Digest{}, fmt.Errorf("signing: %s by digest: no image named", verb)
	}
	d, ok := ref.(name.Digest)
	if !ok {
		return name.Digest{}, fmt.Errorf("signing: %s by digest: %s is a tag, which can move; name the image as %s@sha256:…", verb, ref, ref.Context())
	}
	if _, err := v1.NewHash(d.DigestStr()); err != nil {
		return name.Digest{}, fmt.Errorf("signing: %s by digest: %q: %w", verb, ref.String(), err)
	}
	return d, nil
}

func exists(ctx context.Context, d name.Digest, o *options) error {
	_, err := remote.Head(d, o.remote(ctx)...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return fmt.Errorf("signing: %s: no such image in the registry", d)
	}
	if err != nil {
		return fmt.Errorf("signing: looking up %s: %w", d, err)
	}
	return nil
}

func sigTag(d name.Digest) string {
	t, err := ociremote.SignatureTag(d)
	if err != nil {
		return d.String() + " signatures"
	}
	return t.String()
}

func attTag(d name.Digest) string {
	t, err := ociremote.AttestationTag(d)
	if err != nil {
		return d.String() + " attestations"
	}
	return t.String()
}

// detached is an image known only by digest that carries exactly the given
// signature or attestation: what a referrer manifest holds.
type detachedEntity struct {
	h          v1.Hash
	sigs, atts oci.Signatures
}

var _ oci.SignedEntity = (*detachedEntity)(nil)

func detached(d name.Digest, sig, att oci.Signature) (*detachedEntity, error) {
	h, err := v1.NewHash(d.DigestStr())
	if err != nil {
		return nil, fmt.Errorf("signing: %s: %w", d, err)
	}
	e := &detachedEntity{h: h, sigs: empty.Signatures(), atts: empty.Signatures()}
	if sig != nil {
		if e.sigs, err = mutate.AppendSignatures(e.sigs, false, sig); err != nil {
			return nil, fmt.Errorf("signing: %s: %w", d, err)
		}
	}
	if att != nil {
		if e.atts, err = mutate.AppendSignatures(e.atts, false, att); err != nil {
			return nil, fmt.Errorf("signing: %s: %w", d, err)
		}
	}
	return e, nil
}

func (e *detachedEntity) Digest() (v1.Hash, error)              { return e.h, nil }
func (e *detachedEntity) Signatures() (oci.Signatures, error)   { return e.sigs, nil }
func (e *detachedEntity) Attestations() (oci.Signatures, error) { return e.atts, nil }
func (e *detachedEntity) Attachment(string) (oci.File, error) {
	return nil, errors.New("signing: a referrer carries no attachments")
}
