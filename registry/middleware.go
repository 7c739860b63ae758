package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	repomw "github.com/distribution/distribution/v3/registry/middleware/repository"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

const middlewareName = "slipway"

var registerOnce sync.Once

func registerMiddleware() {
	registerOnce.Do(func() {
		err := repomw.Register(middlewareName, func(ctx context.Context, repo distribution.Repository, opts map[string]any) (distribution.Repository, error) {
			r, ok := opts["registry"].(*Registry)
			if !ok {
				return nil, errors.New("registry: middleware needs its *Registry")
			}
			if _, ok := r.mirrorFor(repo.Named().Name()); ok {
				// A mirror's tags and manifests are distribution's own:
				// no project, no image stream, nothing recorded.
				return repo, nil
			}
			project, stream, _ := strings.Cut(repo.Named().Name(), "/")
			return &repository{Repository: repo, reg: r, project: project, stream: stream}, nil
		})
		if err != nil {
			panic(err)
		}
	})
}

// repository records every manifest and tag change in the store, and reads
// tags back from the ImageStream.
type repository struct {
	distribution.Repository
	reg             *Registry
	project, stream string
}

var _ distribution.Repository = (*repository)(nil)

func (r *repository) Manifests(ctx context.Context, opts ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return &manifests{ManifestService: ms, repo: r}, nil
}

func (r *repository) Tags(ctx context.Context) distribution.TagService {
	return &tags{TagService: r.Repository.Tags(ctx), repo: r}
}

// maxConfig bounds the config blob we read to describe an image.
const maxConfig = 4 << 20

type manifests struct {
	distribution.ManifestService
	repo *repository
}

// Put stores the manifest, then records its Image (and referrer entry)
// before the client hears 201. If recording fails the push fails.
func (m *manifests) Put(ctx context.Context, man distribution.Manifest, opts ...distribution.ManifestServiceOption) (digest.Digest, error) {
	mediaType, payload, err := man.Payload()
	if err != nil {
		return "", err
	}
	if err := checkForeign(man.References()); err != nil {
		return "", err
	}
	if err := m.checkChildren(ctx, man); err != nil {
		return "", err
	}
	for _, o := range opts {
		if wt, ok := o.(distribution.WithTagOption); ok && wt.Tag != "" {
			if err := m.repo.mayMoveTag(ctx, wt.Tag); err != nil {
				return "", err
			}
			if err := m.repo.mayCreateStream(ctx, wt.Tag); err != nil {
				return "", err
			}
		}
	}
	// The Image record is made, and its size checked (what it keeps of
	// the config and annotations lives in etcd), before anything is
	// stored: a refused push leaves nothing behind.
	var config []byte
	for _, d := range man.References() {
		if imagestreams.IsImageConfig(d.MediaType) && d.Size <= maxConfig {
			config, _ = m.repo.Repository.Blobs(ctx).Get(ctx, d.Digest)
			break
		}
	}
	img, err := imagestreams.ImageFromManifest(digest.FromBytes(payload).String(), mediaType, payload, config)
	if err != nil {
		return "", errcode.ErrorCodeManifestInvalid.WithMessage(err.Error())
	}
	trimmed := imagestreams.BoundImageMetadata(img)
	if err := m.repo.checkImageBytes(ctx, img); err != nil {
		return "", err
	}
	if err := m.repo.reg.cfg.Store.CheckCreate(ctx, api.Images, m.repo.project, img.Name); err != nil {
		return "", limitErr("", err)
	}
	if m.repo.reg.cfg.Faults.hit(ctx, "before-manifest-put") {
		return "", errcode.ErrorCodeUnknown.WithMessage("injected fault before manifest put")
	}
	dgst, err := m.ManifestService.Put(ctx, man, opts...)
	if err != nil {
		return "", err
	}
	if m.repo.reg.cfg.Faults.hit(ctx, "before-image-record") {
		return "", errcode.ErrorCodeUnknown.WithMessage("injected fault before image record")
	}
	if dgst.String() != img.Name {
		// distribution names a manifest by the canonical digest of its
		// bytes, as above; should that ever differ, the record follows it.
		if img, err = imagestreams.ImageFromManifest(dgst.String(), mediaType, payload, config); err != nil {
			return "", errcode.ErrorCodeManifestInvalid.WithMessage(err.Error())
		}
		trimmed = imagestreams.BoundImageMetadata(img)
	}
	if trimmed {
		slog.Info("registry: the image record keeps only part of a large manifest's metadata", "repository", m.repo.project+"/"+m.repo.stream, "digest", dgst.String())
	}
	img.DockerImageReference = m.repo.reg.recorder.Reference(m.repo.project, m.repo.stream, dgst.String())
	if err := m.repo.reg.recorder.RecordImage(ctx, m.repo.project, img); err != nil {
		return "", limitErr("recording the image: ", err)
	}
	if img.Subject != "" {
		desc := v1.Descriptor{MediaType: mediaType, Digest: dgst, Size: int64(len(payload)), ArtifactType: artifactType(payload), Annotations: img.ManifestAnnotations}
		if err := m.repo.reg.refs.add(ctx, m.repo.project+"/"+m.repo.stream, img.Subject, desc); err != nil {
			return "", errcode.ErrorCodeUnknown.WithMessage("recording the referrer: " + err.Error())
		}
		if w, ok := ctx.Value(responseKey).(http.ResponseWriter); ok {
			w.Header().Set("OCI-Subject", img.Subject)
		}
	}
	m.repo.reg.fillOnPush(m.repo.project+"/"+m.repo.stream, dgst.String(), mediaType, payload)
	return dgst, nil
}

// checkChildren requires every manifest an index lists to exist in this
// repository. distribution's own check is off because it cannot see
// children pushed by sha512 digest; this one translates them.
func (m *manifests) checkChildren(ctx context.Context, man distribution.Manifest) error {
	mediaType, _, _ := man.Payload()
	if mediaType != v1.MediaTypeImageIndex && mediaType != "application/vnd.docker.distribution.manifest.list.v2+json" {
		return nil
	}
	for _, d := range man.References() {
		dgst := d.Digest
		if mapped, ok := m.repo.reg.sha512Lookup(ctx, dgst.String()); ok {
			dgst = digest.Digest(mapped)
		}
		ok, err := m.ManifestService.Exists(ctx, dgst)
		if err != nil {
			return err
		}
		if !ok {
			return errcode.ErrorCodeManifestBlobUnknown.WithMessage("the index lists manifest " + d.Digest.String() + ", which is not in this repository; push it first")
		}
	}
	return nil
}

// Delete removes the manifest and its referrer entry in this repository.
func (m *manifests) Delete(ctx context.Context, dgst digest.Digest) error {
	// Dropped first: the fast path re-checks the revision link anyway.
	m.repo.reg.manifests.remove(m.repo.project+"/"+m.repo.stream, dgst.String())
	if err := m.ManifestService.Delete(ctx, dgst); err != nil {
		return err
	}
	return m.repo.reg.refs.remove(ctx, m.repo.project+"/"+m.repo.stream, dgst.String())
}

// waitStreams lets this replica read its own tag move before the push is
// answered.
func (r *Registry) waitStreams(ctx context.Context, is *api.ImageStream) {
	rev, _ := strconv.ParseInt(is.ResourceVersion, 10, 64)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = r.streams.WaitFor(ctx, rev)
}

type tags struct {
	distribution.TagService
	repo *repository
}

// Tag moves the tag in the ImageStream first, then in distribution's own
// tag link. Tags are read from the ImageStream, so the tag becomes visible
// exactly when its record does.
func (t *tags) Tag(ctx context.Context, tag string, desc v1.Descriptor) error {
	if t.repo.reg.cfg.Faults.hit(ctx, "before-tag-move") {
		return errcode.ErrorCodeUnknown.WithMessage("injected fault before tag move")
	}
	r := t.repo
	if err := r.mayMoveTag(ctx, tag); err != nil {
		return err
	}
	who := identity.FromContext(ctx)
	is, err := r.reg.recorder.MoveTag(ctx, r.project, r.stream, tag, desc.Digest.String(), who.Name, func() error {
		if ok, _ := r.reg.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "create", Resource: "imagestreams", Namespace: r.project}); !ok {
			return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("%s may push to %s but not create the image stream %q; ask for the edit role", who.Name, r.project, r.stream))
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.reg.waitStreams(ctx, is)
	if t.repo.reg.cfg.Faults.hit(ctx, "after-tag-move") {
		return errcode.ErrorCodeUnknown.WithMessage("injected fault after tag move")
	}
	return t.TagService.Tag(ctx, tag, desc)
}

// stream reads the ImageStream from the cache, or from etcd when the cache
// has not seen it (another replica may have just created it).
func (t *tags) stream(ctx context.Context) (*api.ImageStream, error) {
	if o, ok := t.repo.reg.streams.Get(t.repo.project, t.repo.stream); ok {
		return o.(*api.ImageStream), nil
	}
	o, err := t.repo.reg.cfg.Store.Get(ctx, api.ImageStreams, t.repo.project, t.repo.stream)
	if err != nil {
		return nil, err
	}
	return o.(*api.ImageStream), nil
}

// Get resolves a tag from the ImageStream.
func (t *tags) Get(ctx context.Context, tag string) (v1.Descriptor, error) {
	is, err := t.stream(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return v1.Descriptor{}, distribution.ErrTagUnknown{Tag: tag}
	}
	if err != nil {
		return v1.Descriptor{}, err
	}
	ev, ok := imagestreams.Latest(is, tag)
	if !ok {
		// The cache may not have this replica's newest tag yet.
		o, err := t.repo.reg.cfg.Store.Get(ctx, api.ImageStreams, t.repo.project, t.repo.stream)
		if err == nil {
			ev, ok = imagestreams.Latest(o.(*api.ImageStream), tag)
		}
	}
	if !ok {
		return v1.Descriptor{}, distribution.ErrTagUnknown{Tag: tag}
	}
	d, err := digest.Parse(ev.Image)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{Digest: d}, nil
}

func (t *tags) All(ctx context.Context) ([]string, error) {
	is, err := t.stream(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, distribution.ErrRepositoryUnknown{Name: t.repo.project + "/" + t.repo.stream}
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, tg := range is.Status.Tags {
		if len(tg.Items) > 0 {
			out = append(out, tg.Tag)
		}
	}
	return out, nil
}

// List pages through All, in lexical order (tags are kept sorted).
func (t *tags) List(ctx context.Context, limit int, last string) ([]string, error) {
	all, err := t.All(ctx)
	if err != nil {
		return nil, err
	}
	// distribution's contract: io.EOF says there are no more tags.
	var out []string
	for i, tg := range all {
		if last != "" && tg <= last {
			continue
		}
		out = append(out, tg)
		if limit > 0 && len(out) == limit {
			if i == len(all)-1 {
				return out, io.EOF
			}
			return out, nil
		}
	}
	return out, io.EOF
}

func (t *tags) Lookup(ctx context.Context, desc v1.Descriptor) ([]string, error) {
	is, err := t.stream(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, tg := range is.Status.Tags {
		if len(tg.Items) > 0 && tg.Items[0].Image == desc.Digest.String() {
			out = append(out, tg.Tag)
		}
	}
	return out, nil
}

func (t *tags) Untag(ctx context.Context, tag string) error {
	if err := t.repo.mayMoveTag(ctx, tag); err != nil {
		return err
	}
	r := t.repo
	is, err := r.reg.recorder.Untag(ctx, r.project, r.stream, tag)
	if err != nil {
		if errors.Is(err, imagestreams.ErrTagNotFound) {
			return distribution.ErrTagUnknown{Tag: tag}
		}
		return err
	}
	// The next read of this tag on this replica must not find it.
	r.reg.waitStreams(ctx, is)
	if err := t.TagService.Untag(ctx, tag); err != nil && !errors.As(err, &distribution.ErrTagUnknown{}) {
		return err
	}
	return nil
}

// mayCreateStream refuses, as the spec's DENIED, a tagged push that would
// create a stream the pusher may not create. distribution wraps every
// error from TagService.Tag as UNKNOWN (500), so Tag's own check cannot
// answer 403; errors from ManifestService.Put pass through as they are.
func (r *repository) mayCreateStream(ctx context.Context, tag string) error {
	if err := r.reg.recorder.CheckTag(ctx, r.project, r.stream, tag); err != nil {
		return limitErr("", err)
	}
	_, err := r.reg.cfg.Store.Get(ctx, api.ImageStreams, r.project, r.stream)
	if !errors.Is(err, store.ErrNotFound) {
		return nil // it exists, or MoveTag will report the store's error
	}
	who := identity.FromContext(ctx)
	if ok, _ := r.reg.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "create", Resource: "imagestreams", Namespace: r.project}); !ok {
		return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("%s may push to %s but not create the image stream %q; ask for the edit role", who.Name, r.project, r.stream))
	}
	if err := r.reg.cfg.Store.CheckCreate(ctx, api.ImageStreams, r.project, r.stream); err != nil {
		return limitErr("", err)
	}
	return nil
}

// limitErr answers a platform limit (store.ErrLimit: objects per project,
// tags per stream) as the spec's DENIED with the limit's message, which
// says what to do; anything else as UNKNOWN.
func limitErr(prefix string, err error) error {
	if errors.Is(err, store.ErrLimit) || errors.Is(err, store.ErrQuota) {
		return errcode.ErrorCodeDenied.WithMessage(err.Error())
	}
	return errcode.ErrorCodeUnknown.WithMessage(prefix + err.Error())
}

// PromoterServiceAccount is the account promotions push as; only it may
// move a tag that a pipeline stage owns.
const PromoterServiceAccount = "promoter"

// PromotedTag is api.PromotedTag.
func PromotedTag(pipelines []api.Object, project, stream, tag string) string {
	return api.PromotedTag(pipelines, project, stream, tag)
}

// mayMoveTag refuses to move a promoted tag for anyone but the promoter,
// and lets the promoter move a stage's tag only for a pipeline whose owner
// holds the promote permission in this project now: a promotion checks its
// owner when it starts, and its promoter token lives on for minutes after
// (promote.Controller), so a right removed since must stop the move here.
// As in the API server (api.PromotedTagFor), a pipeline whose owner lost
// that right no longer locks the tag against the project's own pushes.
// When several pipelines own the tag, one owner with the right suffices:
// the registry does not know which pipeline a promotion is for.
func (r *repository) mayMoveTag(ctx context.Context, tag string) error {
	var owned, stale, staleWhy string
	for _, o := range r.reg.pipelines.List("") {
		pl := o.(*api.Pipeline)
		if api.PromotedTag([]api.Object{pl}, r.project, r.stream, tag) == "" {
			continue
		}
		why, err := r.reg.promoteDenied(ctx, api.PipelineOwner(pl), r.project)
		if err != nil {
			return errcode.ErrorCodeUnavailable.WithMessage(fmt.Sprintf("checking the owner of pipeline %s/%s: %v; try again", pl.Namespace, pl.Name, err))
		}
		if why == "" {
			owned = pl.Namespace + "/" + pl.Name
			break
		}
		stale, staleWhy = pl.Namespace+"/"+pl.Name, why
	}
	promoter := identity.FromContext(ctx).Name == api.ServiceAccountUser(r.project, PromoterServiceAccount)
	switch {
	case owned != "" && !promoter:
		return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("%s/%s:%s is a stage of pipeline %s: only a promotion moves it; use `slipway promote`", r.project, r.stream, tag, owned))
	case owned == "" && stale != "" && promoter:
		return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("%s/%s:%s is a stage of pipeline %s, and a promotion acts only for its owner: the owner %s", r.project, r.stream, tag, stale, staleWhy))
	}
	return nil
}
