package api

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// ImageStream is a named set of tags in a project. Every push, build, import
// or promotion that lands in PROJECT/NAME moves one of its tags; the tag's
// history keeps every digest it pointed at, newest first.
type ImageStream struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ImageStreamSpec   `json:"spec"`
	Status     ImageStreamStatus `json:"status,omitempty"`
}

// ImageStreamSpec holds tags that follow something else: an alias of
// another tag, or an external image to import.
type ImageStreamSpec struct {
	Tags []TagReference `json:"tags,omitempty"`
}

// TagReference says where a spec tag comes from.
type TagReference struct {
	Name string `json:"name"`
	// From is an ImageStreamTag ("stream:tag", a tracking alias), an
	// ImageStreamImage ("stream@sha256:…") or a DockerImage (an external
	// reference).
	From *ObjectReference `json:"from,omitempty"`
	// Alias makes the tag follow From as it moves.
	Alias        bool              `json:"alias,omitempty"`
	ImportPolicy TagImportPolicy   `json:"importPolicy,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// TagImportPolicy controls imports of external images.
type TagImportPolicy struct {
	Scheduled bool `json:"scheduled,omitempty"`
	Insecure  bool `json:"insecure,omitempty"`
}

// ObjectReference points at another object.
type ObjectReference struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// ImageStreamStatus is written by the registry and the import controller.
type ImageStreamStatus struct {
	// DockerImageRepository is where to pull from, such as
	// 127.0.0.1:5000/shop/web.
	DockerImageRepository string              `json:"dockerImageRepository,omitempty"`
	Tags                  []NamedTagEventList `json:"tags,omitempty"`
}

// NamedTagEventList is one tag's history, newest first.
type NamedTagEventList struct {
	Tag        string              `json:"tag"`
	Items      []TagEvent          `json:"items"`
	Conditions []TagEventCondition `json:"conditions,omitempty"`
}

// TagEvent is one position a tag took.
type TagEvent struct {
	Created              time.Time `json:"created"`
	DockerImageReference string    `json:"dockerImageReference"`
	Image                string    `json:"image"` // digest
	Generation           int64     `json:"generation"`
	// By is the user who pushed, tagged or imported.
	By string `json:"by,omitempty"`
}

// TagEventCondition records a failure for one tag, such as an import error,
// with a message the user can act on.
type TagEventCondition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	Generation         int64     `json:"generation"`
}

// Image is the metadata of one manifest in one project, named by its digest.
type Image struct {
	TypeMeta             `json:",inline"`
	ObjectMeta           `json:"metadata"`
	DockerImageReference string            `json:"dockerImageReference,omitempty"`
	MediaType            string            `json:"mediaType"`
	Size                 int64             `json:"size"`
	ArtifactType         string            `json:"artifactType,omitempty"`
	Subject              string            `json:"subject,omitempty"`
	ManifestAnnotations  map[string]string `json:"manifestAnnotations,omitempty"`
	Config               *ImageConfig      `json:"config,omitempty"`
	Layers               []ImageLayer      `json:"layers,omitempty"`
	// Manifests lists the children of an index.
	Manifests []ImageManifest `json:"manifests,omitempty"`
}

// ImageConfig is what the image's config blob says.
type ImageConfig struct {
	Digest       string            `json:"digest"`
	Size         int64             `json:"size,omitempty"`
	OS           string            `json:"os,omitempty"`
	Architecture string            `json:"architecture,omitempty"`
	Created      *time.Time        `json:"created,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Env          []string          `json:"env,omitempty"`
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
}

// ImageLayer is one layer of a manifest.
type ImageLayer struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType"`
}

// ImageManifest is one child of an index.
type ImageManifest struct {
	Digest       string `json:"digest"`
	MediaType    string `json:"mediaType"`
	Size         int64  `json:"size"`
	OS           string `json:"os,omitempty"`
	Architecture string `json:"architecture,omitempty"`
	Variant      string `json:"variant,omitempty"`
}

var digestName = regexp.MustCompile(`^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$`)

// ValidateDigestName accepts sha256 and sha512 digests as names.
func ValidateDigestName(name string) []string {
	if !digestName.MatchString(name) {
		return []string{"must be a digest: sha256: and 64 hex digits, or sha512: and 128"}
	}
	return nil
}

// The image resources.
var (
	ImageStreams = Register(&Resource{
		Name: "imagestreams", Kind: "ImageStream", ShortNames: []string{"is"},
		Namespaced: true, HasStatus: true,
		New:          func() Object { return &ImageStream{} },
		ValidateName: ValidateStreamName,
		Validate: func(o Object) FieldErrors {
			var errs FieldErrors
			seen := map[string]bool{}
			for i, t := range o.(*ImageStream).Spec.Tags {
				if msgs := ValidateTagName(t.Name); len(msgs) > 0 {
					errs.Add(fieldIndex("spec.tags", i, "name"), FieldValueInvalid, "%s", msgs[0])
				}
				if seen[t.Name] {
					errs.Add(fieldIndex("spec.tags", i, "name"), FieldValueInvalid, "tag %q appears twice", t.Name)
				}
				seen[t.Name] = true
			}
			return errs
		},
		Columns: []Column{
			{Header: "IMAGE REPOSITORY", Path: "status.dockerImageRepository"},
			{Header: "TAGS", Path: "status.tags"},
		},
	})
	Images = Register(&Resource{
		Name: "images", Kind: "Image", Namespaced: true,
		New:          func() Object { return &Image{} },
		ValidateName: ValidateDigestName,
		Columns: []Column{
			{Header: "MEDIA TYPE", Path: "mediaType"},
			{Header: "SIZE", Path: "size"},
			{Header: "SUBJECT", Path: "subject", Wide: true},
		},
	})
)

var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)

// ValidateStreamName accepts the part of a repository name after the
// project: path components as the OCI distribution spec allows them,
// separated by "/", up to 200 characters.
func ValidateStreamName(name string) []string {
	if len(name) > 200 {
		return []string{fmt.Sprintf("must be no more than 200 characters, not %d", len(name))}
	}
	for _, c := range strings.Split(name, "/") {
		if !pathComponent.MatchString(c) {
			return []string{"each /-separated part must be lower-case letters and digits, separated by '.', '_', '__' or dashes"}
		}
	}
	return nil
}

var tagName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// ValidateTagName accepts tags as the OCI distribution spec defines them.
func ValidateTagName(tag string) []string {
	if !tagName.MatchString(tag) {
		return []string{"a tag is 1-128 letters, digits, '_', '.' or '-', and does not start with '.' or '-'"}
	}
	return nil
}
