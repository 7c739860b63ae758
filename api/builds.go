package api

import (
	"net/url"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// BuildConfig says how to turn source into an image: where the source is,
// which strategy builds it, on which base, and which tag receives it.
type BuildConfig struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BuildConfigSpec   `json:"spec"`
	Status     BuildConfigStatus `json:"status,omitempty"`
}

// BuildConfigSpec is the template every Build of a config copies.
type BuildConfigSpec struct {
	Source   BuildSource   `json:"source"`
	Strategy BuildStrategy `json:"strategy"`
	Output   BuildOutput   `json:"output"`
	// RunPolicy is Serial (default), SerialLatestOnly or Parallel.
	RunPolicy string `json:"runPolicy,omitempty"`
	// History limits: how many finished builds to keep. Defaults 5 and 5.
	SuccessfulBuildsHistoryLimit *int32 `json:"successfulBuildsHistoryLimit,omitempty"`
	FailedBuildsHistoryLimit     *int32 `json:"failedBuildsHistoryLimit,omitempty"`
	// Triggers start builds: ConfigChange when the config is created,
	// ImageChange when the strategy's base image tag moves.
	Triggers []BuildTrigger `json:"triggers,omitempty"`
	// Rebase says the image's upper layers do not depend on the base
	// (static binaries, buildpack-style apps): when the base moves, the
	// new base is swapped in under the current output's layers instead of
	// running a build. Builds fall back to a full build when the output
	// has no image yet or does not record its base.
	Rebase bool `json:"rebase,omitempty"`
	// PostCommit runs in the new image before it is pushed; the build
	// fails, and nothing is pushed, if it exits non-zero.
	PostCommit *BuildPostCommit `json:"postCommit,omitempty"`
	// CompletionDeadlineSeconds bounds how long a build may run once it
	// has started; past it the build fails with reason DeadlineExceeded.
	// Default DefaultBuildDeadline.
	CompletionDeadlineSeconds *int64 `json:"completionDeadlineSeconds,omitempty"`
}

// DefaultBuildDeadline is how long a build may run when its spec does not
// say, and MaxBuildDeadline is the most a spec may ask for.
const (
	DefaultBuildDeadline = time.Hour
	MaxBuildDeadline     = 24 * time.Hour
)

// BuildPostCommit is a test run in the new image, as in OpenShift: Script
// runs under /bin/sh -c; otherwise Command (or the image's entrypoint) runs
// with Args.
type BuildPostCommit struct {
	Script  string   `json:"script,omitempty"`
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
}

// BuildTrigger is one reason to start a build.
type BuildTrigger struct {
	Type string `json:"type"` // ConfigChange, ImageChange, Generic or GitHub
	// Secret authenticates webhooks: it is sent in the
	// X-Slipway-Webhook-Secret header (or, in the older URL form, in the
	// path), and GitHub deliveries are signed with it. Anyone who may read
	// the build config but not update it sees it redacted; prefer
	// SecretReference, which the view role cannot read at all.
	Secret string `json:"secret,omitempty"`
	// SecretReference names a Secret of the same project whose
	// WebHookSecretKey holds the webhook's secret, as in OpenShift 3.11.
	SecretReference *SecretLocalReference `json:"secretReference,omitempty"`
}

// SecretLocalReference names a Secret in the same project.
type SecretLocalReference struct {
	Name string `json:"name"`
}

// RedactedSecret replaces an inline webhook secret in what the API shows
// to someone who may not update the build config.
const RedactedSecret = "(redacted)"

// BuildSource is where the build context comes from: a git repository,
// an inline Dockerfile, or both (the inline Dockerfile wins).
type BuildSource struct {
	Git *GitBuildSource `json:"git,omitempty"`
	// Binary is an uploaded archive (start-build --from-dir), stored as a
	// blob in the build's project. On a config, an empty binary: {} says
	// the source always comes that way.
	Binary *BinaryBuildSource `json:"binary,omitempty"`
	// Dockerfile is the Dockerfile itself, inline.
	Dockerfile string `json:"dockerfile,omitempty"`
	// ContextDir is the directory inside the source to build from.
	ContextDir string `json:"contextDir,omitempty"`
}

// BinaryBuildSource names an uploaded tar archive by repository and digest.
type BinaryBuildSource struct {
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
}

// GitBuildSource is a repository and a ref (branch, tag or commit).
type GitBuildSource struct {
	URI string `json:"uri"`
	Ref string `json:"ref,omitempty"`
}

// BuildStrategy names how to build. Today: Docker (BuildKit's Dockerfile
// frontend).
type BuildStrategy struct {
	Type           string               `json:"type"` // Docker or Source
	DockerStrategy *DockerBuildStrategy `json:"dockerStrategy,omitempty"`
	SourceStrategy *SourceBuildStrategy `json:"sourceStrategy,omitempty"`
}

// SourceBuildStrategy is Source-to-Image: From is a builder image whose
// assemble script turns the source into the new image, and whose run
// script becomes its command.
type SourceBuildStrategy struct {
	From *ObjectReference `json:"from"`
	Env  []EnvVar         `json:"env,omitempty"`
	// Incremental runs the previous image's save-artifacts script and
	// hands its output to assemble in DEST/artifacts, as s2i does. Needs
	// /bin/sh in the image.
	Incremental bool `json:"incremental,omitempty"`
}

// BaseImage is the image a strategy builds on: the Docker strategy's from,
// or the Source strategy's builder image. Nil when there is none.
func (s BuildStrategy) BaseImage() *ObjectReference {
	switch {
	case s.DockerStrategy != nil:
		return s.DockerStrategy.From
	case s.SourceStrategy != nil:
		return s.SourceStrategy.From
	}
	return nil
}

// DockerBuildStrategy builds a Dockerfile.
type DockerBuildStrategy struct {
	// From replaces the image of the Dockerfile's last FROM. An
	// ImageStreamTag is resolved to its digest when the build starts.
	From      *ObjectReference `json:"from,omitempty"`
	BuildArgs []EnvVar         `json:"buildArgs,omitempty"`
}

// EnvVar is a name and a value.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// BuildOutput is where the image goes: an ImageStreamTag in the build's
// project.
type BuildOutput struct {
	To *ObjectReference `json:"to,omitempty"`
}

// BuildConfigStatus counts builds.
type BuildConfigStatus struct {
	LastVersion int64 `json:"lastVersion"`
	// LastTriggeredImage is the base digest the ImageChange trigger last
	// built from; a build starts when the base tag points elsewhere.
	LastTriggeredImage string `json:"lastTriggeredImage,omitempty"`
}

// Build is one run of a BuildConfig.
type Build struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       BuildSpec   `json:"spec"`
	Status     BuildStatus `json:"status,omitempty"`
}

// BuildSpec is the config's spec as it was when the build was made.
type BuildSpec struct {
	Source     BuildSource      `json:"source"`
	Strategy   BuildStrategy    `json:"strategy"`
	Output     BuildOutput      `json:"output"`
	Rebase     bool             `json:"rebase,omitempty"`
	PostCommit *BuildPostCommit `json:"postCommit,omitempty"`
	// CompletionDeadlineSeconds: see BuildConfigSpec.
	CompletionDeadlineSeconds *int64 `json:"completionDeadlineSeconds,omitempty"`
}

// Deadline is how long the build may run.
func (s *BuildSpec) Deadline() time.Duration {
	if s.CompletionDeadlineSeconds == nil || *s.CompletionDeadlineSeconds <= 0 {
		return DefaultBuildDeadline
	}
	return min(time.Duration(*s.CompletionDeadlineSeconds)*time.Second, MaxBuildDeadline)
}

// BuildSpec is what a new Build of the config copies.
func (s *BuildConfigSpec) BuildSpec() BuildSpec {
	return BuildSpec{Source: s.Source, Strategy: s.Strategy, Output: s.Output, Rebase: s.Rebase, PostCommit: s.PostCommit, CompletionDeadlineSeconds: s.CompletionDeadlineSeconds}
}

// Build phases.
const (
	BuildNew       = "New"
	BuildPending   = "Pending"
	BuildRunning   = "Running"
	BuildComplete  = "Complete"
	BuildFailed    = "Failed"
	BuildError     = "Error"
	BuildCancelled = "Cancelled"
)

// BuildStatus is written by the build controller.
type BuildStatus struct {
	Phase   string `json:"phase,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// Cancelled asks the controller to stop the build.
	Cancelled           bool       `json:"cancelled,omitempty"`
	StartTimestamp      *time.Time `json:"startTimestamp,omitempty"`
	CompletionTimestamp *time.Time `json:"completionTimestamp,omitempty"`
	// BaseImage is the digest reference the base resolved to.
	BaseImage string `json:"baseImage,omitempty"`
	// OutputDockerImageReference is where the image went, by digest.
	OutputDockerImageReference string `json:"outputDockerImageReference,omitempty"`
	OutputDigest               string `json:"outputDigest,omitempty"`
	// RebasedFrom is the digest a rebase build swapped the base under; the
	// new digest is OutputDigest.
	RebasedFrom string `json:"rebasedFrom,omitempty"`
	// Revision is the commit a git build built.
	Revision string `json:"revision,omitempty"`
	// LogTail is the end of the build log.
	LogTail string `json:"logTail,omitempty"`
	// Restarts counts the times the build was run again because the
	// controller running it stopped.
	Restarts int `json:"restarts,omitempty"`
	// Warnings are what a build that succeeded found wrong with its
	// image, such as an image that runs as root.
	Warnings []string `json:"warnings,omitempty"`
}

// ValidGitURI says what is wrong with a git source URI, or "" when it is
// an http(s) URL with a host. Other transports would read the server's own
// files (file://, plain paths), use its SSH keys (ssh://, user@host:path)
// or dial past the import guard (git://).
func ValidGitURI(uri string) string {
	u, err := url.Parse(uri)
	switch {
	case err != nil:
		return "must be an http(s) URL: " + err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an http(s) URL such as https://github.com/org/repo.git; other transports (file://, ssh://, git://, local paths) could read the server's own files or keys"
	case u.Host == "":
		return "must name a host, as in https://github.com/org/repo.git"
	}
	return ""
}

// RedactURI drops the user and password from a URL, for labels, logs and
// provenance; other strings are returned as they are.
func RedactURI(uri string) string {
	u, err := url.Parse(uri)
	if err != nil || u.User == nil {
		return uri
	}
	u.User = nil
	return u.String()
}

func validateSource(errs *FieldErrors, src BuildSource) {
	if g := src.Git; g != nil {
		if msg := ValidGitURI(g.URI); msg != "" {
			errs.Add("spec.source.git.uri", FieldValueInvalid, "%s", msg)
		}
		if strings.HasPrefix(g.Ref, "-") {
			errs.Add("spec.source.git.ref", FieldValueInvalid, "must be a branch, tag or commit, not an option")
		}
	}
	if d := src.ContextDir; d != "" && (strings.HasPrefix(d, "/") || slices.Contains(strings.Split(d, "/"), "..")) {
		errs.Add("spec.source.contextDir", FieldValueInvalid, "must be a relative path inside the source, without ..")
	}
}

func validateDeadline(errs *FieldErrors, secs *int64) {
	if secs != nil && (*secs <= 0 || time.Duration(*secs)*time.Second > MaxBuildDeadline) {
		errs.Add("spec.completionDeadlineSeconds", FieldValueInvalid, "must be between 1 and %d seconds (%s)", int64(MaxBuildDeadline/time.Second), MaxBuildDeadline)
	}
}

// IsFinished reports whether a phase is final.
func IsFinished(phase string) bool {
	switch phase {
	case BuildComplete, BuildFailed, BuildError, BuildCancelled:
		return true
	}
	return false
}

// The build resources.
var (
	BuildConfigs = Register(&Resource{
		Name: "buildconfigs", Kind: "BuildConfig", ShortNames: []string{"bc"},
		Namespaced: true, HasStatus: true,
		New: func() Object { return &BuildConfig{} },
		Validate: func(o Object) FieldErrors {
			bc := o.(*BuildConfig)
			var errs FieldErrors
			switch st := bc.Spec.Strategy; {
			case st.Type == "Docker":
			case st.Type == "Source" && (st.SourceStrategy == nil || st.SourceStrategy.From == nil):
				errs.Add("spec.strategy.sourceStrategy.from", FieldValueRequired, "Source builds need a builder image")
			case st.Type == "Source":
				if bc.Spec.Source.Dockerfile != "" {
					errs.Add("spec.source.dockerfile", FieldValueInvalid, "Source builds run the builder's assemble script, not a Dockerfile")
				}
			default:
				errs.Add("spec.strategy.type", FieldValueInvalid, "must be Docker or Source, not %q", st.Type)
			}
			if bc.Spec.Source.Dockerfile == "" && bc.Spec.Source.Git == nil && bc.Spec.Source.Binary == nil {
				errs.Add("spec.source", FieldValueRequired, "give a git repository, an inline Dockerfile, or binary: {} for uploads")
			}
			validateSource(&errs, bc.Spec.Source)
			validateDeadline(&errs, bc.Spec.CompletionDeadlineSeconds)
			if bc.Spec.Output.To == nil || bc.Spec.Output.To.Kind != "ImageStreamTag" {
				errs.Add("spec.output.to", FieldValueRequired, "the output must be an ImageStreamTag, such as {kind: ImageStreamTag, name: app:latest}")
			}
			for i, t := range bc.Spec.Triggers {
				switch t.Type {
				case "ConfigChange":
				case "Generic", "GitHub":
					switch ref := t.SecretReference; {
					case ref != nil && t.Secret != "":
						errs.Add(fieldIndex("spec.triggers", i, "secretReference"), FieldValueInvalid, "give either secret or secretReference, not both")
					case ref != nil:
						if msgs := validation.IsDNS1123Subdomain(ref.Name); len(msgs) > 0 {
							errs.Add(fieldIndex("spec.triggers", i, "secretReference.name"), FieldValueInvalid, "%q is not a secret name: %s", ref.Name, strings.Join(msgs, "; "))
						}
					case t.Secret == RedactedSecret:
						errs.Add(fieldIndex("spec.triggers", i, "secret"), FieldValueInvalid, "the secret was redacted when you read this build config; give the real secret, or name a Secret with secretReference")
					case len(t.Secret) < 16:
						errs.Add(fieldIndex("spec.triggers", i, "secret"), FieldValueInvalid, "a webhook needs a secret of at least 16 characters, or a secretReference to a Secret holding it in %s", WebHookSecretKey)
					}
				case "ImageChange":
					if from := bc.Spec.Strategy.BaseImage(); from == nil || from.Kind != "ImageStreamTag" {
						errs.Add(fieldIndex("spec.triggers", i, "type"), FieldValueInvalid, "an ImageChange trigger needs the strategy's from to be an ImageStreamTag")
					}
				default:
					errs.Add(fieldIndex("spec.triggers", i, "type"), FieldValueInvalid, "must be ConfigChange, ImageChange, Generic or GitHub, not %q", t.Type)
				}
			}
			switch bc.Spec.RunPolicy {
			case "", "Serial", "SerialLatestOnly", "Parallel":
			default:
				errs.Add("spec.runPolicy", FieldValueInvalid, "must be Serial, SerialLatestOnly or Parallel")
			}
			return errs
		},
		Columns: []Column{{Header: "TYPE", Path: "spec.strategy.type"}, {Header: "LATEST", Path: "status.lastVersion"}},
	})
	Builds = Register(&Resource{
		Name: "builds", Kind: "Build", Namespaced: true, HasStatus: true,
		New: func() Object { return &Build{} },
		// Builds are also made directly (`slipway start-build` makes them
		// client-side), so they are held to the same rules as configs.
		Validate: func(o Object) FieldErrors {
			b := o.(*Build)
			var errs FieldErrors
			validateSource(&errs, b.Spec.Source)
			validateDeadline(&errs, b.Spec.CompletionDeadlineSeconds)
			return errs
		},
		Columns: []Column{
			{Header: "STATUS", Path: "status.phase"},
			{Header: "REASON", Path: "status.reason"},
			{Header: "IMAGE", Path: "status.outputDockerImageReference", Wide: true},
		},
	})
)
