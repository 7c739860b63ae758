package registry

import (
	"context"
	"fmt"
	"strings"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
)

// Promotion copies in the registry: an image, its referrers (signatures,
// attestations, SBOMs) and cosign's tags for it are linked from one
// repository into another in the same storage — one link per blob, no
// bytes copied, no HTTP, no token — and the stage's tag moves. Each step
// checks the rights of the pipeline's owner now: a pull from the source
// project and the promote permission in the target, as the promotion
// controller checks them before it calls.

// PromotionDeniedError is a copy or tag move the pipeline's owner may not
// make.
type PromotionDeniedError struct{ Reason string }

func (e *PromotionDeniedError) Error() string { return e.Reason }

// CopyImage makes image dgst of repository FROM/STREAM, with its referrers
// and cosign's sha256-HEX.{sig,att,sbom} tags, available in TO/STREAM,
// with the rights of owner, the pipeline's owner.
func (r *Registry) CopyImage(ctx context.Context, owner, from, to, stream, dgst string) error {
	if err := r.ownerMayCopy(ctx, owner, from, to); err != nil {
		return err
	}
	src, dst := from+"/"+stream, to+"/"+stream
	refs, err := r.refs.list(ctx, src, dgst)
	if err != nil {
		return fmt.Errorf("listing the referrers of %s: %w", dgst, err)
	}
	o, err := r.cfg.Store.Get(ctx, api.ImageStreams, from, stream)
	if err != nil {
		return err
	}
	alg, hex, _ := strings.Cut(dgst, ":")
	var tags []api.TagEvent
	var tagNames []string
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		tag := alg + "-" + hex + suffix
		if ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag); ok {
			tags, tagNames = append(tags, ev), append(tagNames, tag)
		}
	}
	// Everything the copy brings counts against the target's
	// registry.bytes quota, as the pushes of it would: checked before
	// anything is linked.
	if err := r.checkCopyBytes(ctx, from, to, stream, append([]string{dgst}, referrerDigests(refs, tags)...)...); err != nil {
		if why, ok := quotaDenied(err); ok {
			return &PromotionDeniedError{why}
		}
		return err
	}
	copyOne := func(d string) error {
		if err := r.link(ctx, src, dst, d); err != nil {
			return err
		}
		return r.copyImage(ctx, from, to, d)
	}
	if err := copyOne(dgst); err != nil {
		return err
	}
	for _, d := range refs {
		if err := copyOne(d.Digest.String()); err != nil {
			return fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		if err := r.refs.add(ctx, dst, dgst, d); err != nil {
			return fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
	}
	for i, ev := range tags {
		if err := copyOne(ev.Image); err != nil {
			return fmt.Errorf("%s: %w", tagNames[i], err)
		}
		if err := r.moveTag(ctx, to, stream, tagNames[i], ev.Image); err != nil {
			return fmt.Errorf("%s: %w", tagNames[i], err)
		}
	}
	return nil
}

func referrerDigests(refs []v1.Descriptor, tags []api.TagEvent) []string {
	var out []string
	for _, d := range refs {
		out = append(out, d.Digest.String())
	}
	for _, ev := range tags {
		out = append(out, ev.Image)
	}
	return out
}

// PromoteTag moves PROJECT/STREAM:TAG to dgst, an image the project holds,
// for a promotion whose pipeline owner may promote there. The move is
// recorded as the project's promoter account's, as a push by it was.
func (r *Registry) PromoteTag(ctx context.Context, owner, project, stream, tag, dgst string) error {
	why, err := r.promoteDenied(ctx, owner, project)
	if err != nil {
		return err
	}
	if why != "" {
		return &PromotionDeniedError{why}
	}
	if _, err := r.cfg.Store.Get(ctx, api.Images, project, dgst); err != nil {
		return fmt.Errorf("image %s is not in project %s: %w", dgst, project, err)
	}
	return r.moveTag(ctx, project, stream, tag, dgst)
}

func (r *Registry) moveTag(ctx context.Context, project, stream, tag, dgst string) error {
	by := api.ServiceAccountUser(project, PromoterServiceAccount)
	is, err := r.recorder.MoveTag(ctx, project, stream, tag, dgst, by, func() error { return nil })
	if err != nil {
		return err
	}
	r.waitStreams(ctx, is)
	return nil
}

func (r *Registry) ownerMayCopy(ctx context.Context, owner, from, to string) error {
	if owner == "" {
		return &PromotionDeniedError{"the pipeline has no recorded owner"}
	}
	why, err := r.pullDenied(ctx, owner, from)
	if err == nil && why == "" {
		why, err = r.promoteDenied(ctx, owner, to)
	}
	if err != nil {
		return err
	}
	if why != "" {
		return &PromotionDeniedError{why}
	}
	return nil
}
