package api

import (
	"fmt"
	"strconv"
	"time"
)

// Trust: what is in an image (scans), who vouches for it (signing keys),
// what a project accepts (image policies), and how images move between
// stages (pipelines and promotions).

// ImageScan is the SBOM and vulnerability findings of one image in one
// project, named by the image's digest. The SBOM itself is stored in the
// registry as a referrer of the image; a database update rematches it
// without reading layers again.
type ImageScan struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Status     ImageScanStatus `json:"status"`
}

// ImageScanStatus is written by the scanner.
type ImageScanStatus struct {
	// Phase is Pending, Scanned or Failed.
	Phase   string `json:"phase,omitempty"`
	Message string `json:"message,omitempty"`
	// SBOMDigest is the referrer holding the SBOM (CycloneDX JSON).
	SBOMDigest string     `json:"sbomDigest,omitempty"`
	Packages   int        `json:"packages"`
	ScannedAt  *time.Time `json:"scannedAt,omitempty"`
	// DBVersion is the vulnerability database the findings come from.
	DBVersion string     `json:"dbVersion,omitempty"`
	MatchedAt *time.Time `json:"matchedAt,omitempty"`
	Findings  []Finding  `json:"findings,omitempty"`
	// Counts by severity: CRITICAL, HIGH, MEDIUM, LOW, UNKNOWN.
	Counts map[string]int `json:"counts,omitempty"`
}

// Finding is one vulnerability in one package of an image.
type Finding struct {
	ID       string   `json:"id"`
	Aliases  []string `json:"aliases,omitempty"`
	Package  string   `json:"package"`
	Version  string   `json:"version"`
	FixedIn  string   `json:"fixedIn,omitempty"`
	Severity string   `json:"severity"`
	Summary  string   `json:"summary,omitempty"`
	// Ignored says a VEX entry of the project covers it, and why.
	Ignored string `json:"ignored,omitempty"`
}

// Severities from low to high.
var Severities = []string{"UNKNOWN", "LOW", "MEDIUM", "HIGH", "CRITICAL"}

// SeverityRank orders severities; unknown names rank lowest.
func SeverityRank(s string) int {
	for i, x := range Severities {
		if x == s {
			return i
		}
	}
	return 0
}

// VulnerabilityDatabase records the loaded OSV database (cluster-scoped,
// named "default"); its version changes on every import, which rematches
// every stored SBOM.
type VulnerabilityDatabase struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Status     VulnerabilityDatabaseStatus `json:"status"`
}

// VulnerabilityDatabaseStatus describes the loaded database.
type VulnerabilityDatabaseStatus struct {
	Version    string     `json:"version"`
	Advisories int        `json:"advisories"`
	ImportedAt *time.Time `json:"importedAt,omitempty"`
	ImportedBy string     `json:"importedBy,omitempty"`
}

// SigningKey is a project's cosign-compatible key pair. The public key is
// public; the private key is encrypted at rest and never served.
type SigningKey struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	// PublicKey is the PEM public key, as `cosign generate-key-pair`
	// writes cosign.pub.
	PublicKey string `json:"publicKey"`
	// Fingerprint is the SHA-256 of the public key's DER.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// ImagePolicy says what a project accepts, at promotion into it and when
// its pods start. Every rule is optional; an image must pass all of them.
type ImagePolicy struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ImagePolicySpec `json:"spec"`
}

// ImagePolicySpec holds the rules.
type ImagePolicySpec struct {
	// RequireSignatures lists keys, as PROJECT/NAME of SigningKeys or PEM
	// public keys; one valid signature by any of them is required.
	RequireSignatures []string `json:"requireSignatures,omitempty"`
	// MaxSeverity is the highest severity of finding allowed (after VEX
	// ignores), such as HIGH: a CRITICAL finding is then refused. Images
	// not scanned yet are refused when this is set.
	MaxSeverity string `json:"maxSeverity,omitempty"`
	// RequireAttestations lists predicate types that must be attached and
	// signed by a required key, such as https://slsa.dev/provenance/v1.
	RequireAttestations []string `json:"requireAttestations,omitempty"`
	// AllowedRegistries lists registry hosts images may come from; empty
	// allows any.
	AllowedRegistries []string `json:"allowedRegistries,omitempty"`
	// Ignore is the project's VEX: findings it covers do not count.
	Ignore []VulnerabilityIgnore `json:"ignore,omitempty"`
}

// VulnerabilityIgnore says a finding does not apply, why, and until when.
type VulnerabilityIgnore struct {
	ID      string    `json:"id"`
	Package string    `json:"package,omitempty"`
	Reason  string    `json:"reason"`
	Expires time.Time `json:"expires"`
}

// Pipeline lists the stages an application moves through, such as dev →
// qa → prod, each a project and a tag of the app's image stream.
type Pipeline struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       PipelineSpec `json:"spec"`
}

// PipelineSpec is the stream and its stages, in order.
type PipelineSpec struct {
	// Stream is the image stream name in every stage's project.
	Stream string          `json:"stream"`
	Stages []PipelineStage `json:"stages"`
}

// PipelineStage is one step: images arrive in Project as Stream:Tag.
type PipelineStage struct {
	Name    string `json:"name"`
	Project string `json:"project"`
	Tag     string `json:"tag"`
	// RequireApproval makes a promotion into this stage wait for a user
	// with the promote permission in Project.
	RequireApproval bool `json:"requireApproval,omitempty"`
	// MinSoak is how long the image must have been in the previous stage.
	MinSoak Duration `json:"minSoak,omitempty"`
}

// Duration is a time.Duration written as "10m".
type Duration struct{ time.Duration }

// MarshalJSON writes "1h30m".
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(`"` + d.String() + `"`), nil }

// UnmarshalJSON reads "1h30m" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		v, err := time.ParseDuration(s[1 : len(s)-1])
		d.Duration = v
		return err
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("a duration is a string such as \"10m\": %w", err)
	}
	d.Duration = time.Duration(secs * float64(time.Second))
	return nil
}

// Promotion moves one image, by digest, into a pipeline stage.
type Promotion struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       PromotionSpec   `json:"spec"`
	Status     PromotionStatus `json:"status,omitempty"`
}

// PromotionSpec says what moves where, and why.
type PromotionSpec struct {
	Pipeline string `json:"pipeline"`
	// To is the stage's name.
	To string `json:"to"`
	// Image is the digest to promote; empty takes what the previous
	// stage's tag holds when the promotion is made.
	Image  string `json:"image,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Promotion phases.
const (
	PromotionPending  = "Pending"  // gates not passed yet (approval, soak)
	PromotionRefused  = "Refused"  // the policy refused the image
	PromotionComplete = "Complete" // the tag points at the image
	PromotionFailed   = "Failed"   // copying failed
)

// PromotionStatus records the decision and its evidence.
type PromotionStatus struct {
	Phase   string `json:"phase,omitempty"`
	Message string `json:"message,omitempty"`
	// From is the stage the image came from, and Source its reference.
	From   string `json:"from,omitempty"`
	Source string `json:"source,omitempty"`
	// Requester is who asked; Approvals who approved.
	Requester string            `json:"requester,omitempty"`
	Approvals []Approval        `json:"approvals,omitempty"`
	Checks    []PolicyCheck     `json:"checks,omitempty"`
	Completed *time.Time        `json:"completed,omitempty"`
	Revision  int64             `json:"revision,omitempty"`
	Evidence  map[string]string `json:"evidence,omitempty"`
}

// Approval is one user's yes to a promotion into Project. It counts only
// while the stage still goes to Project and the user still holds the
// promote permission there.
type Approval struct {
	User    string    `json:"user"`
	Project string    `json:"project,omitempty"`
	At      time.Time `json:"at"`
}

// PolicyCheck is one rule's result and the evidence it used.
type PolicyCheck struct {
	Rule     string `json:"rule"`
	Passed   bool   `json:"passed"`
	Message  string `json:"message"`
	Evidence string `json:"evidence,omitempty"`
}

// The trust resources.
var (
	ImageScans = Register(&Resource{
		Name: "imagescans", Kind: "ImageScan", Namespaced: true, HasStatus: true,
		New:          func() Object { return &ImageScan{} },
		ValidateName: ValidateDigestName,
		Columns: []Column{
			{Header: "PHASE", Path: "status.phase"},
			{Header: "CRITICAL", Path: "status.counts.CRITICAL"},
			{Header: "HIGH", Path: "status.counts.HIGH"},
			{Header: "DB", Path: "status.dbVersion", Wide: true},
		},
	})
	VulnerabilityDatabases = Register(&Resource{
		Name: "vulnerabilitydatabases", Kind: "VulnerabilityDatabase", HasStatus: true,
		New:     func() Object { return &VulnerabilityDatabase{} },
		Columns: []Column{{Header: "VERSION", Path: "status.version"}, {Header: "ADVISORIES", Path: "status.advisories"}},
	})
	SigningKeys = Register(&Resource{
		Name: "signingkeys", Kind: "SigningKey", Namespaced: true,
		New:     func() Object { return &SigningKey{} },
		Columns: []Column{{Header: "FINGERPRINT", Path: "fingerprint"}},
	})
	ImagePolicies = Register(&Resource{
		Name: "imagepolicies", Kind: "ImagePolicy", Namespaced: true,
		New: func() Object { return &ImagePolicy{} },
		Validate: func(o Object) FieldErrors {
			p := o.(*ImagePolicy)
			var errs FieldErrors
			if s := p.Spec.MaxSeverity; s != "" && SeverityRank(s) == 0 && s != "UNKNOWN" {
				errs.Add("spec.maxSeverity", FieldValueInvalid, "must be one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL")
			}
			for i, ig := range p.Spec.Ignore {
				if ig.ID == "" || ig.Reason == "" || ig.Expires.IsZero() {
					errs.Add(fieldIndex("spec.ignore", i, ""), FieldValueRequired, "an ignore needs an id, a reason and an expiry")
				}
			}
			return errs
		},
	})
	Pipelines = Register(&Resource{
		Name: "pipelines", Kind: "Pipeline", Namespaced: true,
		New: func() Object { return &Pipeline{} },
		Validate: func(o Object) FieldErrors {
			p := o.(*Pipeline)
			var errs FieldErrors
			if msgs := ValidateStreamName(p.Spec.Stream); len(msgs) > 0 {
				errs.Add("spec.stream", FieldValueInvalid, "%s", msgs[0])
			}
			if len(p.Spec.Stages) < 2 {
				errs.Add("spec.stages", FieldValueRequired, "a pipeline needs at least two stages, such as dev and prod")
			}
			seen := map[string]bool{}
			for i, st := range p.Spec.Stages {
				if st.Name == "" || st.Project == "" || st.Tag == "" {
					errs.Add(fieldIndex("spec.stages", i, ""), FieldValueRequired, "a stage needs a name, a project and a tag")
				}
				if seen[st.Name] {
					errs.Add(fieldIndex("spec.stages", i, "name"), FieldValueInvalid, "stage names must be unique")
				}
				seen[st.Name] = true
				if msgs := ValidateTagName(st.Tag); st.Tag != "" && len(msgs) > 0 {
					errs.Add(fieldIndex("spec.stages", i, "tag"), FieldValueInvalid, "%s", msgs[0])
				}
			}
			return errs
		},
		Columns: []Column{{Header: "STREAM", Path: "spec.stream"}},
	})
	Promotions = Register(&Resource{
		Name: "promotions", Kind: "Promotion", Namespaced: true, HasStatus: true,
		New: func() Object { return &Promotion{} },
		Validate: func(o Object) FieldErrors {
			p := o.(*Promotion)
			var errs FieldErrors
			if p.Spec.Pipeline == "" || p.Spec.To == "" {
				errs.Add("spec", FieldValueRequired, "a promotion needs a pipeline and a stage to go to")
			}
			if p.Spec.Image != "" && len(ValidateDigestName(p.Spec.Image)) > 0 {
				errs.Add("spec.image", FieldValueInvalid, "promotions move images by digest (sha256:…), never by tag")
			}
			return errs
		},
		Columns: []Column{
			{Header: "TO", Path: "spec.to"},
			{Header: "PHASE", Path: "status.phase"},
			{Header: "IMAGE", Path: "status.source", Wide: true},
			{Header: "MESSAGE", Path: "status.message"},
		},
	})
)

// SigningKeySecret holds a SigningKey's private key, encrypted with the
// server's key password. Hidden: the API never serves it.
type SigningKeySecret struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	// EncryptedPrivateKey is cosign's "ENCRYPTED SIGSTORE PRIVATE KEY".
	EncryptedPrivateKey string `json:"encryptedPrivateKey"`
}

// SigningKeySecrets is the hidden resource.
var SigningKeySecrets = Register(&Resource{
	Name: "signingkeysecrets", Kind: "SigningKeySecret", Namespaced: true, Hidden: true,
	New: func() Object { return &SigningKeySecret{} },
})

// PipelineOwnerAnnotation records, on a Pipeline, the user the API server
// admitted it for: the last writer of its spec, who held the promote
// permission in every stage's project at the time. The server sets it;
// what a client sends is overwritten. Promotions act as this user.
const PipelineOwnerAnnotation = "slipway.dev/pipeline-owner"

// PipelineOwner is who a pipeline acts for, or "" for one the API server
// never admitted (written before owners were recorded), which counts for
// nothing until it is applied again.
func PipelineOwner(p *Pipeline) string { return p.Annotations[PipelineOwnerAnnotation] }

// PromotedTag returns the pipeline (NAMESPACE/NAME) whose stage, other than
// the first (which receives pushes), owns project/stream:tag, or "". Only
// a promotion may move such a tag. Pipelines without a recorded owner own
// nothing: another tenant's pipeline cannot lock a tag unless the API
// server admitted it, which needs the promote permission in that project.
func PromotedTag(pipelines []Object, project, stream, tag string) string {
	return PromotedTagFor(pipelines, project, stream, tag, nil)
}

// PromotedTagFor is PromotedTag that also asks mayOwn (when not nil)
// whether the pipeline's owner may still own a stage in project, so a
// pipeline whose owner lost the promote permission there releases the tag.
func PromotedTagFor(pipelines []Object, project, stream, tag string, mayOwn func(owner, project string) bool) string {
	for _, o := range pipelines {
		p := o.(*Pipeline)
		owner := PipelineOwner(p)
		if p.Spec.Stream != stream || owner == "" {
			continue
		}
		for i, st := range p.Spec.Stages {
			if i > 0 && st.Project == project && st.Tag == tag && (mayOwn == nil || mayOwn(owner, project)) {
				return p.Namespace + "/" + p.Name
			}
		}
	}
	return ""
}

// Event records something that happened to an object, for people to read
// (`slipway get events`): new vulnerability findings, for example.
type Event struct {
	TypeMeta       `json:",inline"`
	ObjectMeta     `json:"metadata"`
	InvolvedObject ObjectReference `json:"involvedObject"`
	Reason         string          `json:"reason"`
	Message        string          `json:"message"`
	Type           string          `json:"type,omitempty"` // Normal or Warning
	Time           time.Time       `json:"time"`
}

// Events is the resource.
var Events = Register(&Resource{
	Name: "events", Kind: "Event", ShortNames: []string{"ev"}, Namespaced: true,
	New: func() Object { return &Event{} },
	Columns: []Column{
		{Header: "TYPE", Path: "type"},
		{Header: "REASON", Path: "reason"},
		{Header: "OBJECT", Path: "involvedObject.name"},
		{Header: "MESSAGE", Path: "message"},
	},
})
