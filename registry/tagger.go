package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	regmw "github.com/distribution/distribution/v3/registry/middleware/registry"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/store"
)

// The tagger makes spec tags true: a tag whose From names an image in
// another stream (or project) gets that image's manifest and blobs linked
// into its own repository — server-side, one link per blob, no copies — and
// then the tag moves. An alias follows its source tag as it moves. It is a
// level-based controller over an ImageStream informer.

const captureName = "slipway-capture"

var registerCapture sync.Once

// captureNamespace records the distribution.Namespace the App serves from,
// so server-side operations see exactly the same storage.
func captureNamespace() {
	registerCapture.Do(func() {
		err := regmw.Register(captureName, func(ctx context.Context, ns distribution.Namespace, d storagedriver.StorageDriver, opts map[string]any) (distribution.Namespace, error) {
			if r, ok := opts["registry"].(*Registry); ok {
				// Every repository takes garbage-collection holds (gchold.go).
				ns = &gcNamespace{Namespace: ns, reg: r}
				r.ns, r.driver = ns, d
			}
			return ns, nil
		})
		if err != nil {
			panic(err)
		}
	})
}

// TaggedByAnnotation on a spec tag records who asked for it.
const TaggedByAnnotation = "slipway.dev/tagged-by"

// Run keeps the registry's image-stream cache and reconciles spec tags
// until ctx ends.
func (r *Registry) Run(ctx context.Context) {
	inf := r.streams
	inf.AddIndex(byAliasSource, func(o api.Object) []string {
		var keys []string
		for _, t := range o.(*api.ImageStream).Spec.Tags {
			if t.From != nil && t.From.Kind == "ImageStreamTag" {
				src := t.From.Namespace
				if src == "" {
					src = o.GetObjectMeta().Namespace
				}
				stream, _, _ := strings.Cut(t.From.Name, ":")
				keys = append(keys, src+"/"+stream)
			}
		}
		return keys
	})
	q := store.NewWorkQueue()
	enqueue := q.Add
	inf.AddHandler(func(ev store.Event) {
		if ev.Type == api.Deleted {
			return
		}
		m := ev.Object.GetObjectMeta()
		enqueue(m.Namespace + "/" + m.Name)
		// Streams whose aliases follow this one: from an index, not a
		// scan of every stream on every event.
		followers, _ := inf.ByIndex(byAliasSource, m.Namespace+"/"+m.Name)
		for _, o := range followers {
			enqueue(o.GetObjectMeta().Namespace + "/" + o.GetObjectMeta().Name)
		}
	})
	go inf.Run(ctx)
	go r.pipelines.Run(ctx)
	go func() {
		// Scheduled imports: look again every interval.
		t := time.NewTicker(r.cfg.Import.Interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			for _, o := range inf.List("") {
				for _, tag := range o.(*api.ImageStream).Spec.Tags {
					if tag.From != nil && tag.From.Kind == "DockerImage" && tag.ImportPolicy.Scheduled {
						m := o.GetObjectMeta()
						r.scheduleDue(m.Namespace + "/" + m.Name + ":" + tag.Name)
						enqueue(m.Namespace + "/" + m.Name)
					}
				}
			}
		}
	}()
	q.Process(ctx, inf, "registry: tagging", func(o api.Object) error { return r.reconcileTags(ctx, o.(*api.ImageStream)) })
}

// ImportRequestedAnnotation on a spec tag asks for a fresh import; its
// value is an RFC 3339 time.
const ImportRequestedAnnotation = "slipway.dev/import-requested"

// importDue reports whether a DockerImage tag should be (re)imported: it
// has never been, a user asked again after the last import, or its
// schedule came round.
func (r *Registry) importDue(is *api.ImageStream, t api.TagReference) bool {
	key := is.Namespace + "/" + is.Name + ":" + t.Name
	r.mu.Lock()
	due := r.due[key]
	delete(r.due, key)
	r.mu.Unlock()
	if due {
		return true
	}
	for _, st := range is.Status.Tags {
		if st.Tag != t.Name {
			continue
		}
		if len(st.Conditions) > 0 && st.Conditions[0].Status == "False" {
			return true // retry failures
		}
		if len(st.Items) == 0 {
			return true
		}
		if len(st.Conditions) == 0 || st.Conditions[0].Generation < is.Generation {
			return true // the spec changed since the last import
		}
		req, err := time.Parse(time.RFC3339Nano, t.Annotations[ImportRequestedAnnotation])
		last := st.Items[0].Created
		if len(st.Conditions) > 0 && st.Conditions[0].LastTransitionTime.After(last) {
			last = st.Conditions[0].LastTransitionTime
		}
		return err == nil && req.After(last)
	}
	return true
}

func (r *Registry) scheduleDue(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.due == nil {
		r.due = map[string]bool{}
	}
	r.due[key] = true
}

// byAliasSource indexes image streams by the "ns/stream" each of their
// ImageStreamTag aliases follows ("stream:tag" in the alias's own project
// unless it names another).
const byAliasSource = "registry.aliasSource"

// ImportAllAnnotation on an ImageStream names an external repository whose
// every tag should be imported (import-image --all).
const ImportAllAnnotation = "slipway.dev/import-all"

// reconcileTags makes each spec tag's status head match its source.
func (r *Registry) reconcileTags(ctx context.Context, is *api.ImageStream) error {
	var errs []error
	if src := is.Annotations[ImportAllAnnotation]; src != "" {
		if err := r.expandImportAll(ctx, is, src); err != nil {
			errs = append(errs, err)
		}
	}
	for _, t := range is.Spec.Tags {
		if t.From == nil {
			continue
		}
		srcNS := t.From.Namespace
		if srcNS == "" {
			srcNS = is.Namespace
		}
		if (t.From.Kind == "ImageStreamTag" || t.From.Kind == "ImageStreamImage") && srcNS != is.Namespace {
			why, err := r.authorDenied(ctx, t, srcNS)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if why != "" {
				errs = append(errs, r.tagCondition(ctx, is, t.Name, "ImagePullDenied", fmt.Sprintf("the tag no longer follows %s/%s: %s", srcNS, t.From.Name, why)))
				continue
			}
		}
		var srcStream, dgst string
		switch t.From.Kind {
		case "ImageStreamImage":
			var ok bool
			srcStream, dgst, ok = strings.Cut(t.From.Name, "@")
			if !ok {
				errs = append(errs, r.tagCondition(ctx, is, t.Name, "InvalidFrom", fmt.Sprintf("from %q is not STREAM@DIGEST", t.From.Name)))
				continue
			}
		case "ImageStreamTag":
			stream, tag, ok := strings.Cut(t.From.Name, ":")
			if !ok {
				errs = append(errs, r.tagCondition(ctx, is, t.Name, "InvalidFrom", fmt.Sprintf("from %q is not STREAM:TAG", t.From.Name)))
				continue
			}
			src, err := r.cfg.Store.Get(ctx, api.ImageStreams, srcNS, stream)
			if err != nil {
				errs = append(errs, r.tagCondition(ctx, is, t.Name, "SourceNotFound", fmt.Sprintf("source %s/%s does not exist", srcNS, t.From.Name)))
				continue
			}
			ev, ok := imagestreams.Latest(src.(*api.ImageStream), tag)
			if !ok {
				errs = append(errs, r.tagCondition(ctx, is, t.Name, "SourceNotFound", fmt.Sprintf("source tag %s/%s has no image yet", srcNS, t.From.Name)))
				continue
			}
			srcStream, dgst = stream, ev.Image
		case "DockerImage":
			if r.importDue(is, t) {
				if err := r.importTag(ctx, is, t); err != nil {
					errs = append(errs, err)
				}
			}
			continue
		default:
			continue
		}
		if cur, ok := imagestreams.Latest(is, t.Name); ok && cur.Image == dgst {
			r.clearFailure(ctx, is, t.Name)
			continue
		}
		if srcNS != is.Namespace || srcStream != is.Name {
			if err := r.checkCopyBytes(ctx, srcNS, is.Namespace, is.Name, dgst); err != nil {
				reason, msg := "LinkFailed", err.Error()
				if why, ok := quotaDenied(err); ok {
					reason, msg = "QuotaExceeded", "the tag does not follow "+srcNS+"/"+t.From.Name+": "+why
				}
				errs = append(errs, r.tagCondition(ctx, is, t.Name, reason, msg))
				continue
			}
			if err := r.link(ctx, srcNS+"/"+srcStream, is.Namespace+"/"+is.Name, dgst); err != nil {
				errs = append(errs, r.tagCondition(ctx, is, t.Name, "LinkFailed", err.Error()))
				continue
			}
		} else if _, err := r.cfg.Store.Get(ctx, api.Images, srcNS, dgst); err != nil {
			errs = append(errs, r.tagCondition(ctx, is, t.Name, "SourceNotFound", fmt.Sprintf("image %s is not in %s/%s", dgst, srcNS, srcStream)))
			continue
		}
		if err := r.copyImage(ctx, srcNS, is.Namespace, dgst); err != nil {
			errs = append(errs, err)
			continue
		}
		by := t.Annotations[TaggedByAnnotation]
		if _, err := r.recorder.MoveTag(ctx, is.Namespace, is.Name, t.Name, dgst, by, func() error { return nil }); err != nil {
			errs = append(errs, err)
			continue
		}
		r.clearFailure(ctx, is, t.Name)
	}
	return errors.Join(errs...)
}

// authorDenied says why the author of spec tag t may not take images from
// project src now, or "". The tagger links with the registry's rights, so
// it acts only while the author the API server recorded when it admitted
// the tag (TaggedByAnnotation) still exists and may pull from there: the
// API server checked that once, and a binding removed since, or the
// author deleted, ends the mirroring at the next move.
func (r *Registry) authorDenied(ctx context.Context, t api.TagReference, src string) (string, error) {
	by := t.Annotations[TaggedByAnnotation]
	if by == "" {
		return fmt.Sprintf("the tag has no recorded author (it was written before authors were recorded); tag it again (`slipway tag`) so the API server checks your pull right in %s", src), nil
	}
	why, err := r.pullDenied(ctx, by, src)
	if why != "" {
		why = "its author " + why + "; or someone who may pull from " + src + " can tag it again"
	}
	return why, err
}

// copyImage makes sure the Image record exists in the target project, so a
// tag never points at a digest its project has no record of.
func (r *Registry) copyImage(ctx context.Context, from, to, dgst string) error {
	if from == to {
		return nil
	}
	o, err := r.cfg.Store.Get(ctx, api.Images, from, dgst)
	if err != nil {
		return fmt.Errorf("image %s has no record in project %s: %w", dgst, from, err)
	}
	img := o.(*api.Image)
	img.ObjectMeta = api.ObjectMeta{Name: dgst, Labels: img.Labels, Annotations: img.Annotations}
	return r.recorder.RecordImage(ctx, to, img)
}

// clearFailure replaces a failure condition once the tag is right.
func (r *Registry) clearFailure(ctx context.Context, is *api.ImageStream, tag string) {
	for _, st := range is.Status.Tags {
		if st.Tag == tag && len(st.Conditions) > 0 && st.Conditions[0].Status == "False" {
			r.setCondition(ctx, is, tag, "True", "Tagged", "the tag points at its source")
		}
	}
}

// tagCondition records a per-tag failure in status, with a message the
// user can act on, and returns it as an error for the retry.
func (r *Registry) tagCondition(ctx context.Context, is *api.ImageStream, tag, reason, msg string) error {
	r.setCondition(ctx, is, tag, "False", reason, msg)
	return fmt.Errorf("%s/%s:%s: %s", is.Namespace, is.Name, tag, msg)
}

// setCondition records the outcome of the last import or link of a tag.
func (r *Registry) setCondition(ctx context.Context, is *api.ImageStream, tag, status, reason, msg string) {
	cond := api.TagEventCondition{Type: "ImportSuccess", Status: status, Reason: reason, Message: msg, LastTransitionTime: time.Now().UTC().Truncate(time.Millisecond), Generation: is.Generation}
	// The same failure again changes nothing (and so wakes nobody); only a
	// change of outcome is a transition.
	same := func(c []api.TagEventCondition) bool {
		return len(c) == 1 && c[0].Status == status && c[0].Reason == reason && c[0].Message == msg && c[0].Generation == is.Generation
	}
	_, _ = r.cfg.Store.GuaranteedUpdate(ctx, api.ImageStreams, is.Namespace, is.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		s := o.(*api.ImageStream)
		for i := range s.Status.Tags {
			if s.Status.Tags[i].Tag == tag {
				if !same(s.Status.Tags[i].Conditions) {
					s.Status.Tags[i].Conditions = []api.TagEventCondition{cond}
				}
				return nil
			}
		}
		s.Status.Tags = append(s.Status.Tags, api.NamedTagEventList{Tag: tag, Items: []api.TagEvent{}, Conditions: []api.TagEventCondition{cond}})
		return nil
	})
}

// Link makes the manifest dgst of repository src (and everything it
// references, recursively for indexes) available in repository dst by
// linking, not copying. It is what tag, promote and rebase build on.
func (r *Registry) Link(ctx context.Context, src, dst, dgst string) error {
	return r.link(ctx, src, dst, dgst)
}

func (r *Registry) link(ctx context.Context, src, dst, dgst string) error {
	if r.ns == nil {
		return errors.New("registry: storage is not ready")
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return err
	}
	srcName, err := reference.WithName(src)
	if err != nil {
		return err
	}
	dstName, err := reference.WithName(dst)
	if err != nil {
		return err
	}
	srcRepo, err := r.ns.Repository(ctx, srcName)
	if err != nil {
		return err
	}
	dstRepo, err := r.ns.Repository(ctx, dstName)
	if err != nil {
		return err
	}
	return r.linkManifest(ctx, srcName, srcRepo, dstRepo, d, 0)
}

func (r *Registry) linkManifest(ctx context.Context, srcName reference.Named, srcRepo, dstRepo distribution.Repository, d digest.Digest, depth int) error {
	if depth > 4 {
		return errors.New("registry: index nesting is too deep")
	}
	srcMS, err := srcRepo.Manifests(ctx)
	if err != nil {
		return err
	}
	man, err := srcMS.Get(ctx, d)
	if err != nil {
		return fmt.Errorf("manifest %s is not in %s: %w", d, srcName.Name(), err)
	}
	dstMS, err := dstRepo.Manifests(ctx)
	if err != nil {
		return err
	}
	mediaType, _, _ := man.Payload()
	isIndex := mediaType == "application/vnd.oci.image.index.v1+json" || mediaType == "application/vnd.docker.distribution.manifest.list.v2+json"
	for _, ref := range man.References() {
		if isIndex {
			if err := r.linkManifest(ctx, srcName, srcRepo, dstRepo, ref.Digest, depth+1); err != nil {
				return err
			}
			continue
		}
		if len(ref.URLs) > 0 {
			continue // non-distributable: the blob lives elsewhere
		}
		canon, err := reference.WithDigest(srcName, ref.Digest)
		if err != nil {
			return err
		}
		_, err = dstRepo.Blobs(ctx).Create(ctx, storage.WithMountFrom(canon))
		var mounted distribution.ErrBlobMounted
		if !errors.As(err, &mounted) {
			if err == nil {
				err = fmt.Errorf("blob %s could not be mounted from %s", ref.Digest, srcName.Name())
			}
			return err
		}
	}
	got, err := dstMS.Put(ctx, man)
	if err != nil {
		return err
	}
	if got != d {
		return fmt.Errorf("registry: linked manifest has digest %s, want %s", got, d)
	}
	return nil
}
