package registry

import (
	"context"
	"fmt"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
)

// RebaseBuild is the in-process rebase of one running Build (a rebase the
// build controller runs, as an ImageChange trigger starts it): the output
// PROJECT/STREAM:TAG gets the base PROJECT/STREAM@DIGEST (baseRef, as the
// controller resolved it) swapped in under its current image, computed as
// RebaseBuildConfig computes it, with who's rights (the project's builder
// account); the Image and the tag move are recorded as a push records
// them, and the controller records the Build. It returns the new digest
// and the one it replaced. A *NotRebasableError says the controller should
// build in full.
func (r *Registry) RebaseBuild(ctx context.Context, who identity.Info, project, stream, tag, baseRef, build string) (dgst, from string, err error) {
	rest, ok := strings.CutPrefix(baseRef, r.cfg.Host+"/")
	repo, newBase, ok2 := strings.Cut(rest, "@")
	if !ok || !ok2 || strings.Count(repo, "/") != 1 {
		return "", "", notRebasable("the base %s is not an image of the integrated registry", baseRef)
	}
	it := &rebaseItem{req: &rebaseReq{ctx: ctx, who: who, project: project}, stream: stream, tag: tag, buildName: build, newBase: newBase, newRef: baseRef}
	it.baseNS, it.baseStream, _ = strings.Cut(repo, "/")
	o, err := r.cfg.Store.Get(ctx, api.ImageStreams, project, stream)
	if err != nil {
		return "", "", notRebasable("the output stream %s has no image yet", stream)
	}
	cur, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return "", "", notRebasable("the output tag %s:%s has no image yet", stream, tag)
	}
	it.cur = cur.Image
	io, err := r.cfg.Store.Get(ctx, api.Images, project, it.cur)
	if err != nil {
		return "", "", notRebasable("no record of the output image %s", it.cur)
	}
	rec := io.(*api.Image)
	oldName, oldDigest := rec.ManifestAnnotations[builders.BaseNameAnnotation], rec.ManifestAnnotations[builders.BaseDigestAnnotation]
	if oldName == "" || oldDigest == "" {
		return "", "", notRebasable("the output image %s has no %s and %s annotations", it.cur, builders.BaseNameAnnotation, builders.BaseDigestAnnotation)
	}
	oldRepo, ok := strings.CutPrefix(oldName, r.cfg.Host+"/")
	if !ok || strings.Count(oldRepo, "/") != 1 {
		return "", "", notRebasable("the old base %s is not in the integrated registry", oldName)
	}
	it.oldBase, it.oldRepo = oldDigest, oldRepo
	if err := r.rebaseAllowed(ctx, it); err != nil {
		return "", "", err
	}
	if oldDigest == newBase {
		return it.cur, it.cur, nil
	}
	if err := r.rebaseCompute(ctx, it, &baseCache{r: r, ctx: ctx, m: map[string]*rawImage{}}); err != nil {
		return "", "", err
	}
	if err := r.rebaseBytes(ctx, it, nil); err != nil {
		return "", "", err
	}
	r.rebaseWriteStorage(ctx, []*rebaseItem{it})
	if it.err != nil {
		return "", "", it.err
	}
	img := *it.image
	img.ObjectMeta = api.ObjectMeta{Name: it.digest}
	if err := r.recorder.RecordImage(ctx, project, &img); err != nil {
		return "", "", fmt.Errorf("recording the image: %w", err)
	}
	is, err := r.recorder.MoveTag(ctx, project, stream, tag, it.digest, who.Name, func() error { return nil })
	if err != nil {
		return "", "", fmt.Errorf("moving %s:%s: %w", stream, tag, err)
	}
	r.waitStreams(ctx, is)
	return it.digest, it.cur, nil
}
