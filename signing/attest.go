package signing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	slsacommon "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/common"
	slsa1 "github.com/in-toto/in-toto-golang/in_toto/slsa_provenance/v1"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	cremote "github.com/sigstore/cosign/v2/pkg/cosign/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigoptions "github.com/sigstore/sigstore/pkg/signature/options"
)

const (
	// PredicateSLSAProvenance is the predicate type of SLSA v1 provenance.
	PredicateSLSAProvenance = slsa1.PredicateSLSAProvenance
	// BuildType is the SLSA buildType of Slipway builds: it fixes the shape
	// of externalParameters and internalParameters (see Provenance).
	BuildType = "https://slipway.dev/build/v1"
)

// Statement is what an attestation says about an image: a predicate and its
// type. The in-toto statement around it (subject = the image's name and
// digest) is made by Attest.
type Statement struct {
	// PredicateType is a URI, e.g. PredicateSLSAProvenance.
	PredicateType string
	// Predicate is the predicate as a JSON object.
	Predicate json.RawMessage
}

// Provenance is what Slipway records about the build of an image, written
// as a SLSA v1 provenance predicate (buildType BuildType).
type Provenance struct {
	// BuilderID is runDetails.builder.id: the platform that ran the build,
	// e.g. the server's URL. Required.
	BuilderID string
	// BuildName is the Build resource, "project/name";
	// runDetails.metadata.invocationId. Required.
	BuildName string
	// SourceRepo and SourceCommit are externalParameters.source; a commit
	// is also listed in resolvedDependencies. Both are empty for a build
	// that has no repository (a binary or inline Dockerfile build).
	SourceRepo, SourceCommit string
	// Strategy is externalParameters.strategy ("Docker", "Source", …).
	Strategy string
	// BuildArgs are externalParameters.buildArgs.
	BuildArgs map[string]string
	// BaseImages are resolvedDependencies: the images the build started
	// from, each by digest.
	BaseImages []Image
	// Internal is internalParameters: what the platform chose and the user
	// did not (builder version, node, …).
	Internal map[string]any
	// StartedOn and FinishedOn are runDetails.metadata; zero is left out.
	StartedOn, FinishedOn time.Time
}

// Image is an image by name and digest.
type Image struct {
	// Name is how the build referred to it, e.g. "127.0.0.1:5000/proj/base:1".
	Name string
	// Digest is "sha256:<hex>".
	Digest string
}

// Predicate is p as a SLSA v1 provenance predicate.
func (p *Provenance) Predicate() (*slsa1.ProvenancePredicate, error) {
	if p.BuilderID == "" || p.BuildName == "" {
		return nil, errors.New("signing: provenance needs a builder id and a build name")
	}
	ext := map[string]any{"strategy": p.Strategy}
	if p.SourceRepo != "" || p.SourceCommit != "" {
		ext["source"] = map[string]string{"repository": p.SourceRepo, "commit": p.SourceCommit}
	}
	if len(p.BuildArgs) > 0 {
		ext["buildArgs"] = maps.Clone(p.BuildArgs)
	}
	var deps []slsa1.ResourceDescriptor
	if p.SourceCommit != "" {
		deps = append(deps, slsa1.ResourceDescriptor{
			URI:    "git+" + p.SourceRepo + "@" + p.SourceCommit,
			Digest: slsacommon.DigestSet{"gitCommit": p.SourceCommit},
		})
	}
	for _, b := range p.BaseImages {
		alg, hex, ok := strings.Cut(b.Digest, ":")
		if !ok || hex == "" {
			return nil, fmt.Errorf("signing: base image %s: digest %q is not alg:hex", b.Name, b.Digest)
		}
		deps = append(deps, slsa1.ResourceDescriptor{Name: b.Name, URI: imageURI(b), Digest: slsacommon.DigestSet{alg: hex}})
	}
	pred := &slsa1.ProvenancePredicate{
		BuildDefinition: slsa1.ProvenanceBuildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   ext,
			ResolvedDependencies: deps,
		},
		RunDetails: slsa1.ProvenanceRunDetails{
			Builder:       slsa1.Builder{ID: p.BuilderID},
			BuildMetadata: slsa1.BuildMetadata{InvocationID: p.BuildName},
		},
	}
	if len(p.Internal) > 0 {
		pred.BuildDefinition.InternalParameters = maps.Clone(p.Internal)
	}
	if !p.StartedOn.IsZero() {
		t := p.StartedOn.UTC()
		pred.RunDetails.BuildMetadata.StartedOn = &t
	}
	if !p.FinishedOn.IsZero() {
		t := p.FinishedOn.UTC()
		pred.RunDetails.BuildMetadata.FinishedOn = &t
	}
	return pred, nil
}

// imageURI is the image pinned to its digest: name without tag, "@", digest.
func imageURI(b Image) string {
	ref, err := name.ParseReference(b.Name)
	if err != nil {
		return ""
	}
	return ref.Context().Name() + "@" + b.Digest
}

// Statement is p as an attestation statement.
func (p *Provenance) Statement() (Statement, error) {
	pred, err := p.Predicate()
	if err != nil {
		return Statement{}, err
	}
	raw, err := json.Marshal(pred)
	if err != nil {
		return Statement{}, fmt.Errorf("signing: encoding provenance: %w", err)
	}
	return Statement{PredicateType: PredicateSLSAProvenance, Predicate: raw}, nil
}

// cosignTypes are the predicate types `cosign attest --type` knows by a
// short name; cosign checks their predicates' shape.
var cosignTypes = map[string]string{
	slsa1.PredicateSLSAProvenance: "slsaprovenance1",
}

// Attest signs st as an in-toto statement about the image ref names (a
// digest reference; a tag is refused) and stores it twice, as `cosign
// attest --key --type <type>` stores it:
//
//   - in cosign's tag layout, a layer of REPO:sha256-<hex>.att holding the
//     DSSE envelope (payloadType application/vnd.in-toto+json, layer media
//     type application/vnd.dsse.envelope.v1+json, layer annotation
//     predicateType); existing attestations are kept;
//   - as an OCI referrer of the image with artifactType
//     application/vnd.in-toto+json, what cosign's WriteAttestationsReferrer
//     writes, holding this one attestation.
//
// For PredicateSLSAProvenance the statement is the one `cosign attest
// --type slsaprovenance1` makes. Attesting twice adds a second attestation:
// DSSE signatures differ each time, so there is nothing to recognise.
func Attest(ctx context.Context, ref name.Reference, s *Signer, st Statement, opts ...Option) error {
	d, err := byDigest("attest", ref)
	if err != nil {
		return err
	}
	if st.PredicateType == "" || !json.Valid(st.Predicate) {
		return errors.New("signing: an attestation needs a predicate type and a JSON predicate")
	}
	o := makeOptions(opts)
	if err := exists(ctx, d, o); err != nil {
		return err
	}
	typ, ok := cosignTypes[st.PredicateType]
	if !ok {
		typ = st.PredicateType // cosign's "custom" path: the URI is the type
	}
	statement, err := attestation.GenerateStatement(attestation.GenerateOpts{
		Predicate: bytes.NewReader(st.Predicate),
		Type:      typ,
		Digest:    d.DigestStr()[strings.Index(d.DigestStr(), ":")+1:],
		Repo:      d.Repository.String(),
	})
	if err != nil {
		return fmt.Errorf("signing: statement for %s: %w", d, err)
	}
	payload, err := json.Marshal(statement)
	if err != nil {
		return fmt.Errorf("signing: statement for %s: %w", d, err)
	}
	envelope, err := dsse.WrapSigner(s.sv, ctypes.IntotoPayloadType).SignMessage(bytes.NewReader(payload), sigoptions.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("signing: signing the statement for %s: %w", d, err)
	}
	att, err := static.NewAttestation(envelope,
		static.WithLayerMediaType(ctypes.DssePayloadType),
		static.WithAnnotations(map[string]string{"predicateType": st.PredicateType}))
	if err != nil {
		return fmt.Errorf("signing: attestation for %s: %w", d, err)
	}

	ociOpts := o.oci(ctx)
	se := ociremote.SignedUnknown(d, ociOpts...)
	withAtt, err := mutate.AttachAttestationToEntity(se, att, mutate.WithDupeDetector(cremote.NewDupeDetector(s.sv)))
	if err != nil {
		return fmt.Errorf("signing: attaching the attestation to %s: %w", d, err)
	}
	if err := ociremote.WriteAttestations(d.Repository, withAtt, ociOpts...); err != nil {
		return fmt.Errorf("signing: writing %s: %w", attTag(d), err)
	}
	one, err := detached(d, nil, att)
	if err != nil {
		return err
	}
	if err := ociremote.WriteAttestationsReferrer(d, one, ociOpts...); err != nil {
		return fmt.Errorf("signing: writing the attestation of %s as a referrer: %w", d, err)
	}
	return nil
}
