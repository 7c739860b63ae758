// Package imagestreams keeps ImageStreams, Images, tags and their history.
//
// The registry calls a Recorder on every manifest PUT: the Image is stored
// first, then the tag moves, with the previous digest kept in the tag's
// history. Tags are read back from the ImageStream, so a tag is never
// visible without its record. Every tag move is a MODIFIED watch event on
// the ImageStream; triggers consume exactly that.
package imagestreams

import (
	"cmp"
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

// Default limits inside one ImageStream, used when the store's Limits
// leave them 0.
const (
	// DefaultHistoryPerTag bounds a tag's history; the oldest entries are
	// dropped.
	DefaultHistoryPerTag = 200
	// DefaultTagsPerStream bounds the tags of one stream; a push of a new
	// tag beyond it is refused.
	DefaultTagsPerStream = 1000
	// MaxHistoryBytes bounds the encoded history of all of a stream's tags
	// together; past it the oldest entries (never a tag's current one) are
	// dropped, longest history first. A stream is one etcd value, which
	// etcd refuses above 4 MiB, so without it a busy stream would fail
	// every push once its history grew (1000 tags of 200 entries of about
	// 330 bytes are 66 MB).
	MaxHistoryBytes = 1 << 20
)

// Recorder writes images and tag moves into the store.
type Recorder struct {
	Store *store.Store
	// Registry is the host:port images are pulled from, as recorded in
	// dockerImageReference. Default 127.0.0.1:5000.
	Registry string
	Now      func() time.Time
	// Cached, when set, returns the stream as a cache (an informer) holds
	// it; a tag move starts from it and writes with one compare-and-swap,
	// reading etcd only when the cache was behind. The object is not
	// modified.
	Cached func(project, stream string) (api.Object, bool)
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
// An Image already there is found by a read, which costs etcd no write
// (a create whose compare fails is still one): a push by tag of a
// manifest pushed by digest just before records nothing again.
func (r *Recorder) RecordImage(ctx context.Context, project string, img *api.Image) error {
	img.Namespace = project
	if ok, err := r.Store.Exists(ctx, api.Images, project, img.Name); err == nil && ok {
		return nil
	}
	return r.RecordNewImage(ctx, project, img)
}

// RecordNewImage is RecordImage for an image that is most likely not
// recorded yet (a manifest this repository did not have): it goes
// straight to the create, without the read.
func (r *Recorder) RecordNewImage(ctx context.Context, project string, img *api.Image) error {
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
	if is, ok, err := r.moveCached(ctx, project, stream, tag, ev); ok || err != nil {
		return is, err
	}
	for {
		obj, err := r.Store.GuaranteedUpdate(ctx, api.ImageStreams, project, stream, store.UpdateOptions{Status: true}, func(o api.Object) error {
			is := o.(*api.ImageStream)
			ev.Generation = is.Generation
			if err := r.pushTag(is, tag, ev); err != nil {
				return err
			}
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

// moveCached moves the tag starting from the cached stream. ok is false
// when there is nothing cached or the cache was behind: the caller reads
// etcd then.
func (r *Recorder) moveCached(ctx context.Context, project, stream, tag string, ev api.TagEvent) (*api.ImageStream, bool, error) {
	if r.Cached == nil {
		return nil, false, nil
	}
	o, ok := r.Cached(project, stream)
	if !ok {
		return nil, false, nil
	}
	rev, err := store.ParseResourceVersion(o.GetObjectMeta().ResourceVersion)
	if err != nil || rev == 0 {
		return nil, false, nil
	}
	// The bytes as stored (no resourceVersion), and a copy to change.
	stored := *o.(*api.ImageStream)
	stored.ResourceVersion = ""
	old, err := json.Marshal(&stored)
	if err != nil {
		return nil, false, nil
	}
	is := &api.ImageStream{}
	if err := json.Unmarshal(old, is); err != nil {
		return nil, false, nil
	}
	ev.Generation = is.Generation
	if err := r.pushTag(is, tag, ev); err != nil {
		return nil, true, err
	}
	is.Status.DockerImageRepository = r.registry() + "/" + project + "/" + stream
	err = r.Store.UpdateStatusFrom(ctx, api.ImageStreams, is, old, rev)
	if errors.Is(err, store.ErrConflict) {
		return nil, false, nil
	}
	return is, err == nil, err
}

// limits are the tag and history limits: the store's, or the defaults.
func (r *Recorder) limits() (tags, history int) {
	l := r.Store.Limits()
	return cmp.Or(l.TagsPerStream, DefaultTagsPerStream), cmp.Or(l.HistoryPerTag, DefaultHistoryPerTag)
}

// CheckTag refuses, before anything is stored, a push that would add a
// tag to a stream already at the tag limit (a *store.LimitError). A
// missing stream or an existing tag is fine; MoveTag checks again.
func (r *Recorder) CheckTag(ctx context.Context, project, stream, tag string) error {
	o, err := r.Store.Get(ctx, api.ImageStreams, project, stream)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return r.mayAddTag(o.(*api.ImageStream), tag)
}

// CheckTagOn is CheckTag on a stream already read.
func (r *Recorder) CheckTagOn(is *api.ImageStream, tag string) error {
	return r.mayAddTag(is, tag)
}

func (r *Recorder) mayAddTag(is *api.ImageStream, tag string) error {
	max, _ := r.limits()
	if len(is.Status.Tags) < max || slices.ContainsFunc(is.Status.Tags, func(t api.NamedTagEventList) bool { return t.Tag == tag }) {
		return nil
	}
	hint := r.Store.Limits().Hint
	if hint == "" {
		hint = "ask a cluster admin to raise the platform's limit"
	}
	return &store.LimitError{Project: is.Namespace, What: fmt.Sprintf("tags in image stream %q", is.Name), Limit: int64(max),
		Hint: "use another image stream, or " + hint}
}

// pushTag puts ev at the head of tag's history unless the tag already
// points at that digest. A new tag beyond the tag limit is refused.
func (r *Recorder) pushTag(is *api.ImageStream, tag string, ev api.TagEvent) error {
	_, history := r.limits()
	defer trimHistory(is, MaxHistoryBytes)
	for i := range is.Status.Tags {
		t := &is.Status.Tags[i]
		if t.Tag != tag {
			continue
		}
		if len(t.Items) > 0 && t.Items[0].Image == ev.Image {
			return nil
		}
		t.Items = append([]api.TagEvent{ev}, t.Items...)
		if len(t.Items) > history {
			t.Items = t.Items[:history]
		}
		return nil
	}
	if err := r.mayAddTag(is, tag); err != nil {
		return err
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
	return nil
}

// trimHistory drops the oldest history entries, from the tag with the
// longest history first, until the stream's tag events encode to at most
// budget bytes. A tag's current entry is never dropped.
func trimHistory(is *api.ImageStream, budget int) {
	size := func(ev api.TagEvent) int {
		b, _ := json.Marshal(ev)
		return len(b) + 1
	}
	total := 0
	for _, t := range is.Status.Tags {
		for _, ev := range t.Items {
			total += size(ev)
		}
	}
	for total > budget {
		longest := -1
		for i, t := range is.Status.Tags {
			if len(t.Items) > 1 && (longest < 0 || len(t.Items) > len(is.Status.Tags[longest].Items)) {
				longest = i
			}
		}
		if longest < 0 {
			return
		}
		t := &is.Status.Tags[longest]
		total -= size(t.Items[len(t.Items)-1])
		t.Items = t.Items[:len(t.Items)-1]
	}
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
		img.Config = &api.ImageConfig{Digest: probe.Config.Digest.String(), Size: probe.Config.Size}
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
