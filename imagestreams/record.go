// Package imagestreams keeps ImageStreams, Images, tags and their history.
//
// The registry calls a Recorder on every manifest PUT: the Image is stored
// first, then the tag moves, with the previous digest kept in the tag's
// history. Tags are read back from the ImageStream, so a tag is never
// visible without its record. Every tag move is a MODIFIED watch event on
// the ImageStream; triggers consume exactly that.
package imagestreams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// ErrTagNotFound is returned when a stream or tag does not exist.
var ErrTagNotFound = errors.New("imagestreams: tag not found")

// MaxHistory bounds a tag's history; the oldest entries are dropped.
const MaxHistory = 200

// Recorder writes images and tag moves into the store.
type Recorder struct {
	Store *store.Store
	// Registry is the host:port images are pulled from, as recorded in
	// dockerImageReference. Default 127.0.0.1:5000.
	Registry string
	Now      func() time.Time
}

func (r *Recorder) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

func (r *Recorder) registry() string {
	if r.Registry == "" {
		return "127.0.0.1:5000"
	}
	return r.Registry
}

// Reference is PROJECT/STREAM@DIGEST on this registry.
func (r *Recorder) Reference(project, stream, digest string) string {
	return r.registry() + "/" + project + "/" + stream + "@" + digest
}

// RecordImage stores img in project unless it is already there. It is
// idempotent: pushing the same manifest twice keeps the first record.
func (r *Recorder) RecordImage(ctx context.Context, project string, img *api.Image) error {
	img.Namespace = project
	err := r.Store.Create(ctx, api.Images, img)
	if errors.Is(err, store.ErrExists) {
		return nil
	}
	return err
}

// MoveTag points stream:tag at digest, putting the previous position into
// history. When the stream does not exist, create is called; it returns an
// error to refuse (for example when the pusher may not create streams).
func (r *Recorder) MoveTag(ctx context.Context, project, stream, tag, digest, by string, create func() error) (*api.ImageStream, error) {
	ev := api.TagEvent{
		Created:              r.now().Truncate(time.Millisecond),
		DockerImageReference: r.Reference(project, stream, digest),
		Image:                digest,
		By:                   by,
	}
	for {
		obj, err := r.Store.GuaranteedUpdate(ctx, api.ImageStreams, project, stream, store.UpdateOptions{Status: true}, func(o api.Object) error {
			is := o.(*api.ImageStream)
			ev.Generation = is.Generation
			pushTag(is, tag, ev)
			is.Status.DockerImageRepository = r.registry() + "/" + project + "/" + stream
			return nil
		})
		if err == nil {
			return obj.(*api.ImageStream), nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if err := create(); err != nil {
			return nil, err
		}
		is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: stream, Namespace: project}}
		is.Status.DockerImageRepository = r.registry() + "/" + project + "/" + stream
		if err := r.Store.Create(ctx, api.ImageStreams, is); err != nil && !errors.Is(err, store.ErrExists) {
			return nil, err
		}
		// Loop: the status update above now finds the stream. Create
		// ignores status, so the tag is written by the update.
	}
}

// pushTag puts ev at the head of tag's history unless the tag already
// points at that digest.
func pushTag(is *api.ImageStream, tag string, ev api.TagEvent) {
	for i := range is.Status.Tags {
		t := &is.Status.Tags[i]
		if t.Tag != tag {
			continue
		}
		if len(t.Items) > 0 && t.Items[0].Image == ev.Image {
			return
		}
		t.Items = append([]api.TagEvent{ev}, t.Items...)
		if len(t.Items) > MaxHistory {
			t.Items = t.Items[:MaxHistory]
		}
		return
	}
	is.Status.Tags = append(is.Status.Tags, api.NamedTagEventList{Tag: tag, Items: []api.TagEvent{ev}})
	slices.SortFunc(is.Status.Tags, func(a, b api.NamedTagEventList) int {
		if a.Tag < b.Tag {
			return -1
		}
		if a.Tag > b.Tag {
			return 1
		}
		return 0
	})
}

// Latest returns where a tag points now.
func Latest(is *api.ImageStream, tag string) (api.TagEvent, bool) {
	for _, t := range is.Status.Tags {
		if t.Tag == tag && len(t.Items) > 0 {
			return t.Items[0], true
		}
	}
	return api.TagEvent{}, false
}

// Untag removes a tag and its history, and returns the stream as stored.
func (r *Recorder) Untag(ctx context.Context, project, stream, tag string) (*api.ImageStream, error) {
	found := false
	obj, err := r.Store.GuaranteedUpdate(ctx, api.ImageStreams, project, stream, store.UpdateOptions{Status: true}, func(o api.Object) error {
		is := o.(*api.ImageStream)
		found = false
		is.Status.Tags = slices.DeleteFunc(is.Status.Tags, func(t api.NamedTagEventList) bool {
			if t.Tag == tag {
				found = true
				return true
			}
			return false
		})
		return nil
	})
	if errors.Is(err, store.ErrNotFound) || (err == nil && !found) {
		return nil, fmt.Errorf("%s/%s:%s: %w", project, stream, tag, ErrTagNotFound)
	}
	if err != nil {
		return nil, err
	}
	return obj.(*api.ImageStream), nil
}

// Rollback moves a tag back to history entry n (0 is the current one) by
// pushing that entry's digest to the head again, so the rollback itself is
// recorded.
func (r *Recorder) Rollback(ctx context.Context, project, stream, tag string, n int, by string) (*api.ImageStream, error) {
	is, err := r.Store.Get(ctx, api.ImageStreams, project, stream)
	if err != nil {
		return nil, err
	}
	for _, t := range is.(*api.ImageStream).Status.Tags {
		if t.Tag != tag {
			continue
		}
		if n < 0 || n >= len(t.Items) {
			return nil, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "tag %s has %d history entries (0 is the current one); --to %d is out of range", tag, len(t.Items), n)
		}
		return r.MoveTag(ctx, project, stream, tag, t.Items[n].Image, by, func() error { return nil })
	}
	return nil, fmt.Errorf("%s/%s:%s: %w", project, stream, tag, ErrTagNotFound)
}

// ImageFromManifest describes a manifest. config is the config blob of an
// image manifest, or nil (an index, or an artifact whose config is not an
// image config).
func ImageFromManifest(digest, mediaType string, payload, config []byte) (*api.Image, error) {
	var probe struct {
		MediaType    string            `json:"mediaType"`
		ArtifactType string            `json:"artifactType"`
		Config       *v1.Descriptor    `json:"config"`
		Layers       []v1.Descriptor   `json:"layers"`
		Manifests    []v1.Descriptor   `json:"manifests"`
		Subject      *v1.Descriptor    `json:"subject"`
		Annotations  map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return nil, fmt.Errorf("imagestreams: manifest %s is not JSON: %w", digest, err)
	}
	if mediaType == "" {
		mediaType = probe.MediaType
	}
	img := &api.Image{
		ObjectMeta:          api.ObjectMeta{Name: digest},
		MediaType:           mediaType,
		Size:                int64(len(payload)),
		ArtifactType:        probe.ArtifactType,
		ManifestAnnotations: probe.Annotations,
	}
	if probe.Subject != nil {
		img.Subject = probe.Subject.Digest.String()
	}
	for _, l := range probe.Layers {
		img.Layers = append(img.Layers, api.ImageLayer{Digest: l.Digest.String(), Size: l.Size, MediaType: l.MediaType})
	}
	for _, m := range probe.Manifests {
		c := api.ImageManifest{Digest: m.Digest.String(), MediaType: m.MediaType, Size: m.Size}
		if m.Platform != nil {
			c.OS, c.Architecture, c.Variant = m.Platform.OS, m.Platform.Architecture, m.Platform.Variant
		}
		img.Manifests = append(img.Manifests, c)
	}
	if probe.Config != nil {
		img.Config = &api.ImageConfig{Digest: probe.Config.Digest.String()}
		var cfg v1.Image
		if len(config) > 0 && json.Unmarshal(config, &cfg) == nil {
			img.Config.OS, img.Config.Architecture = cfg.OS, cfg.Architecture
			img.Config.Created = cfg.Created
			img.Config.Labels = cfg.Config.Labels
			img.Config.Env = cfg.Config.Env
			img.Config.Entrypoint = cfg.Config.Entrypoint
			img.Config.Cmd = cfg.Config.Cmd
			img.Config.User = cfg.Config.User
			img.Config.WorkingDir = cfg.Config.WorkingDir
		}
	}
	return img, nil
}

// IsImageConfig reports whether a config media type is an image config
// worth reading (artifacts carry other configs).
func IsImageConfig(mediaType string) bool {
	return mediaType == v1.MediaTypeImageConfig || mediaType == "application/vnd.docker.container.image.v1+json"
}
