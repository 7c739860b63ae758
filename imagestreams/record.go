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
	"strconv"
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
	// MaxHistoryBytes bounds the encoded history of one tag; past it the
	// oldest entries (never the current one) are dropped. A tag is one
	// etcd value (store/streamtags.go), which etcd refuses above 4 MiB;
	// 200 entries are about 66 KB.
	MaxHistoryBytes = 256 << 10
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
//
// The tag is stored under a key of its own (store/streamtags.go): the
// move is one compare-and-swap on it, whatever the number of tags in the
// stream. The stream returned carries the stream's metadata and spec,
// the moved tag only in status.tags, and the revision of the move as its
// resourceVersion.
func (r *Recorder) MoveTag(ctx context.Context, project, stream, tag, digest, by string, create func() error) (*api.ImageStream, error) {
	ev := api.TagEvent{
		Created:              r.now().Truncate(time.Millisecond),
		DockerImageReference: r.Reference(project, stream, digest),
		Image:                digest,
		By:                   by,
	}
	repo := r.registry() + "/" + project + "/" + stream
	if is, ok, err := r.moveCached(ctx, project, stream, tag, ev, repo); ok || err != nil {
		return is, err
	}
	for {
		st, err := r.Store.GetStreamTag(ctx, project, stream, tag)
		if errors.Is(err, store.ErrNotFound) {
			if err := create(); err != nil {
				return nil, err
			}
			is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: stream, Namespace: project}}
			is.Status.DockerImageRepository = repo
			if err := r.Store.Create(ctx, api.ImageStreams, is); err != nil && !errors.Is(err, store.ErrExists) {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if st.Stream.Status.DockerImageRepository != repo {
			// Once per stream (and after the registry's address changes).
			if _, err := r.Store.GuaranteedUpdate(ctx, api.ImageStreams, project, stream, store.UpdateOptions{Status: true}, func(o api.Object) error {
				o.(*api.ImageStream).Status.DockerImageRepository = repo
				return nil
			}); err != nil {
				return nil, err
			}
			continue
		}
		ev.Generation = st.Stream.Generation
		next, changed, err := r.nextTag(st.Stream, st.Tag, st.Tags, tag, ev)
		if err != nil {
			return nil, err
		}
		rev := st.Stream.ResourceVersion
		if changed {
			n, err := r.Store.PutStreamTag(ctx, st, next)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if err != nil {
				return nil, err
			}
			rev = strconv.FormatInt(n, 10)
		}
		return moved(st.Stream, next, rev), nil
	}
}

// moved is what MoveTag returns.
func moved(is *api.ImageStream, t api.NamedTagEventList, rev string) *api.ImageStream {
	out := *is
	out.ResourceVersion = rev
	out.Status.Tags = []api.NamedTagEventList{t}
	return &out
}

// moveCached moves the tag starting from the cached stream, with no read
// of etcd: the compare-and-swap holds the tag and the stream to the
// cache's revision. ok is false when there is nothing cached or the cache
// was behind: the caller reads etcd then.
func (r *Recorder) moveCached(ctx context.Context, project, stream, tag string, ev api.TagEvent, repo string) (*api.ImageStream, bool, error) {
	if r.Cached == nil {
		return nil, false, nil
	}
	o, ok := r.Cached(project, stream)
	if !ok {
		return nil, false, nil
	}
	is := o.(*api.ImageStream)
	if is.Status.DockerImageRepository != repo {
		return nil, false, nil
	}
	st, err := r.Store.StreamTagOf(is, tag)
	if err != nil {
		return nil, false, nil
	}
	ev.Generation = is.Generation
	next, changed, err := r.nextTag(st.Stream, st.Tag, st.Tags, tag, ev)
	if err != nil {
		return nil, true, err
	}
	if !changed {
		return moved(st.Stream, next, is.ResourceVersion), true, nil
	}
	rev, err := r.Store.PutStreamTag(ctx, st, next)
	if errors.Is(err, store.ErrConflict) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	return moved(st.Stream, next, strconv.FormatInt(rev, 10)), true, nil
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
	st, err := r.Store.GetStreamTag(ctx, project, stream, tag)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return r.mayAdd(st.Stream, st.Tag != nil, st.Tags)
}

// CheckTagOn is CheckTag on a stream already read.
func (r *Recorder) CheckTagOn(is *api.ImageStream, tag string) error {
	return r.mayAdd(is, slices.ContainsFunc(is.Status.Tags, func(t api.NamedTagEventList) bool { return t.Tag == tag }), len(is.Status.Tags))
}

// mayAdd refuses a new tag in a stream that has n tags already, at the
// limit; exists says the tag is not new.
func (r *Recorder) mayAdd(is *api.ImageStream, exists bool, n int) error {
	max, _ := r.limits()
	if exists || n < max {
		return nil
	}
	hint := r.Store.Limits().Hint
	if hint == "" {
		hint = "ask a cluster admin to raise the platform's limit"
	}
	return &store.LimitError{Project: is.Namespace, What: fmt.Sprintf("tags in image stream %q", is.Name), Limit: int64(max),
		Hint: "use another image stream, or " + hint}
}

// nextTag is the history of tag (cur, nil when the stream of n tags does
// not have it yet) with ev at its head; changed is false when the tag
// already points at that digest. A new tag beyond the tag limit is
// refused.
func (r *Recorder) nextTag(is *api.ImageStream, cur *api.NamedTagEventList, n int, tag string, ev api.TagEvent) (api.NamedTagEventList, bool, error) {
	if cur == nil {
		if err := r.mayAdd(is, false, n); err != nil {
			return api.NamedTagEventList{}, false, err
		}
		return api.NamedTagEventList{Tag: tag, Items: []api.TagEvent{ev}}, true, nil
	}
	if len(cur.Items) > 0 && cur.Items[0].Image == ev.Image {
		return *cur, false, nil
	}
	_, history := r.limits()
	t := *cur
	t.Items = append([]api.TagEvent{ev}, cur.Items...)
	if len(t.Items) > history {
		t.Items = t.Items[:history]
	}
	trimHistory(&t, MaxHistoryBytes)
	return t, true, nil
}

// pushTag puts ev at the head of tag's history in is, as MoveTag does,
// unless the tag already points at that digest. A new tag beyond the tag
// limit is refused.
func (r *Recorder) pushTag(is *api.ImageStream, tag string, ev api.TagEvent) error {
	i := slices.IndexFunc(is.Status.Tags, func(t api.NamedTagEventList) bool { return t.Tag == tag })
	var cur *api.NamedTagEventList
	if i >= 0 {
		cur = &is.Status.Tags[i]
	}
	next, changed, err := r.nextTag(is, cur, len(is.Status.Tags), tag, ev)
	if err != nil || !changed {
		return err
	}
	if i >= 0 {
		is.Status.Tags[i] = next
		return nil
	}
	is.Status.Tags = append(is.Status.Tags, next)
	slices.SortFunc(is.Status.Tags, func(a, b api.NamedTagEventList) int { return cmp.Compare(a.Tag, b.Tag) })
	return nil
}

// trimHistory drops the oldest history entries of a tag until they encode
// to at most budget bytes, so that the tag's key stays well within
// etcd's value limit whatever HistoryPerTag says. The current entry is
// never dropped.
func trimHistory(t *api.NamedTagEventList, budget int) {
	total := 0
	for i, ev := range t.Items {
		b, _ := json.Marshal(ev)
		total += len(b) + 1
		if total > budget && i > 0 {
			t.Items = t.Items[:i]
			return
		}
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

// Untag removes a tag and its history. The stream returned carries the
// stream's metadata, spec and no tags, with the revision of the removal.
func (r *Recorder) Untag(ctx context.Context, project, stream, tag string) (*api.ImageStream, error) {
	for {
		st, err := r.Store.GetStreamTag(ctx, project, stream, tag)
		if errors.Is(err, store.ErrNotFound) || (err == nil && st.Tag == nil) {
			return nil, fmt.Errorf("%s/%s:%s: %w", project, stream, tag, ErrTagNotFound)
		}
		if err != nil {
			return nil, err
		}
		rev, err := r.Store.DeleteStreamTag(ctx, st)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out := *st.Stream
		out.ResourceVersion = strconv.FormatInt(rev, 10)
		return &out, nil
	}
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
