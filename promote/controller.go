// Package promote moves images through a Pipeline's stages by digest.
// A Promotion passes gates (the target project's policy, an approval by a
// user with the promote permission there, a minimum soak in the previous
// stage), then the image is copied with blob mounts, its referrers
// (signatures, attestations, SBOMs) travel with it, it is verified again
// in the target, and the stage's tag moves. Who asked, who approved, when,
// why and the evidence are recorded on the Promotion.
//
// The controller reads and pushes with the platform's rights, so it acts
// only for the pipeline's owner (api.PipelineOwner, recorded by the API
// server), and only while the owner holds the promote permission in both
// stages' projects; an approval counts for the project it was given for.
package promote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/policies"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/store"
)

// TokenIssuer makes short-lived tokens for a project's service accounts.
type TokenIssuer interface {
	IssueServiceAccountToken(ctx context.Context, project, sa string, ttl time.Duration) (string, *api.Token, error)
	Revoke(ctx context.Context, secret string) (int64, error)
}

// Authorizer answers RBAC questions.
type Authorizer interface {
	Authorize(u identity.Info, a rbac.Attributes) (bool, string)
}

// Copier is the registry's server-side copy and tag move (registry.CopyImage,
// registry.PromoteTag); owner is the pipeline's owner, whose rights each
// call checks.
type Copier interface {
	CopyImage(ctx context.Context, owner, from, to, stream, digest string) error
	PromoteTag(ctx context.Context, owner, project, stream, tag, digest string) error
}

// Controller runs Promotions.
type Controller struct {
	Store    *store.Store
	Registry string // host:port of the integrated registry
	Tokens   TokenIssuer
	Authz    Authorizer
	Policies *policies.Checker
	// Copier, when set, copies images and moves tags inside the registry
	// (same storage: blobs linked, no HTTP, no promoter token), checking
	// the pipeline owner's rights itself. Without it the controller copies
	// over HTTP as the target project's promoter account.
	Copier Copier
	// Now is the clock; default time.Now.
	Now func() time.Time

	promotions *store.Informer
	queue      *store.WorkQueue
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.promotions = store.NewInformer(c.Store, api.Promotions)
	c.queue = store.NewWorkQueue()
	c.promotions.AddHandler(func(ev store.Event) {
		m := ev.Object.GetObjectMeta()
		c.queue.Add(m.Namespace + "/" + m.Name)
	})
	go c.promotions.Run(ctx)
	// Pending promotions wait on time (soak) as well as on events.
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, o := range c.promotions.List("") {
					if p := o.(*api.Promotion); p.Status.Phase == "" || p.Status.Phase == api.PromotionPending {
						c.queue.Add(p.Namespace + "/" + p.Name)
					}
				}
			}
		}
	}()
	c.queue.Process(ctx, c.promotions, "promote: promotion", func(o api.Object) error { return c.reconcile(ctx, o.(*api.Promotion)) })
}

// Stage finds a stage and the one before it.
func Stage(p *api.Pipeline, name string) (from, to *api.PipelineStage, err error) {
	for i := range p.Spec.Stages {
		if p.Spec.Stages[i].Name == name {
			if i == 0 {
				return nil, nil, fmt.Errorf("%s is the first stage of pipeline %s: images arrive there by push or build, not by promotion", name, p.Name)
			}
			return &p.Spec.Stages[i-1], &p.Spec.Stages[i], nil
		}
	}
	var names []string
	for _, s := range p.Spec.Stages {
		names = append(names, s.Name)
	}
	return nil, nil, fmt.Errorf("pipeline %s has no stage %q; its stages are %s", p.Name, name, strings.Join(names, ", "))
}

func (c *Controller) setStatus(ctx context.Context, p *api.Promotion, fn func(*api.PromotionStatus)) error {
	_, err := c.Store.GuaranteedUpdate(ctx, api.Promotions, p.Namespace, p.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		fn(&o.(*api.Promotion).Status)
		return nil
	})
	return err
}

func (c *Controller) finish(ctx context.Context, p *api.Promotion, phase, msg string, checks []api.PolicyCheck) error {
	return c.setStatus(ctx, p, func(s *api.PromotionStatus) {
		s.Phase, s.Message = phase, msg
		if checks != nil {
			s.Checks = checks
		}
	})
}

func (c *Controller) reconcile(ctx context.Context, p *api.Promotion) error {
	// Read it fresh: a promotion acts once, and the cache may not show
	// what the last pass wrote yet.
	fresh, err := c.Store.Get(ctx, api.Promotions, p.Namespace, p.Name)
	if err != nil {
		return nil
	}
	p = fresh.(*api.Promotion)
	switch p.Status.Phase {
	case api.PromotionComplete, api.PromotionRefused, api.PromotionFailed:
		return nil
	}
	o, err := c.Store.Get(ctx, api.Pipelines, p.Namespace, p.Spec.Pipeline)
	if err != nil {
		return c.finish(ctx, p, api.PromotionFailed, fmt.Sprintf("pipeline %s: %v", p.Spec.Pipeline, err), nil)
	}
	pl := o.(*api.Pipeline)
	from, to, err := Stage(pl, p.Spec.To)
	if err != nil {
		return c.finish(ctx, p, api.PromotionFailed, err.Error(), nil)
	}
	// The controller reads and writes both projects with the platform's
	// rights, so it acts only for a pipeline owner who may promote in
	// both, checked again at every pass: rights go away.
	if msg := c.ownerMayPromote(ctx, pl, from.Project, to.Project); msg != "" {
		return c.finish(ctx, p, api.PromotionRefused, msg, nil)
	}
	stream := pl.Spec.Stream
	// The image: by digest, fixed when the promotion is first seen.
	digest := p.Spec.Image
	if digest == "" && p.Status.Source != "" {
		digest = p.Status.Source[strings.LastIndex(p.Status.Source, "@")+1:]
	}
	arrived, inFrom, err := c.arrival(ctx, from.Project, stream, from.Tag, digest)
	if err != nil {
		return c.finish(ctx, p, api.PromotionFailed, err.Error(), nil)
	}
	if digest == "" {
		if inFrom == "" {
			return c.finish(ctx, p, api.PromotionFailed, fmt.Sprintf("%s/%s:%s has no image to promote", from.Project, stream, from.Tag), nil)
		}
		digest = inFrom
	}
	source := c.Registry + "/" + from.Project + "/" + stream + "@" + digest
	if p.Status.Source == "" {
		if err := c.setStatus(ctx, p, func(s *api.PromotionStatus) {
			s.Phase, s.From, s.Source = api.PromotionPending, from.Name, source
		}); err != nil {
			return err
		}
	}
	if arrived.IsZero() {
		return c.finish(ctx, p, api.PromotionRefused, fmt.Sprintf("%s was never in stage %s (%s/%s:%s); promote only what the previous stage ran", digest, from.Name, from.Project, stream, from.Tag), nil)
	}
	// Gate: the target project's policy.
	pols, scan := c.policyInputs(ctx, to.Project, from.Project, digest)
	d := c.Policies.Check(ctx, pols, source, scan)
	if !d.Allowed {
		return c.finish(ctx, p, api.PromotionRefused, "the policy of "+to.Project+" refuses "+digest+": "+d.Reason(), d.Checks)
	}
	// Gate: soak.
	if soak := to.MinSoak.Duration; soak > 0 {
		if left := arrived.Add(soak).Sub(c.now()); left > 0 {
			msg := fmt.Sprintf("soaking in %s: %s to go (minimum %s)", from.Name, left.Round(time.Second), soak)
			if p.Status.Message != msg {
				return c.setStatus(ctx, p, func(s *api.PromotionStatus) { s.Message, s.Checks = msg, d.Checks })
			}
			return nil
		}
	}
	// Gate: approval, by someone who may still promote into this
	// stage's project (the pipeline may have been pointed elsewhere
	// since).
	if to.RequireApproval && !c.approved(ctx, p, to.Project) {
		msg := fmt.Sprintf("waiting for approval by a user with the promote permission in %s: slipway approve %s", to.Project, p.Name)
		if p.Status.Message != msg {
			return c.setStatus(ctx, p, func(s *api.PromotionStatus) { s.Message, s.Checks = msg, d.Checks })
		}
		return nil
	}
	target := c.Registry + "/" + to.Project + "/" + stream
	var moveTag func() error
	if c.Copier != nil {
		owner := api.PipelineOwner(pl)
		err = c.Copier.CopyImage(ctx, owner, from.Project, to.Project, stream, digest)
		moveTag = func() error { return c.Copier.PromoteTag(ctx, owner, to.Project, stream, to.Tag, digest) }
	} else {
		moveTag, err = c.copy(ctx, from.Project, to.Project, source, target, digest, to.Tag)
	}
	if err != nil {
		slog.Warn("promote: copy failed", "promotion", p.Namespace+"/"+p.Name, "err", err)
		return c.finish(ctx, p, api.PromotionFailed, "copying "+source+" to "+target+": "+err.Error(), d.Checks)
	}
	// Verified again where it now lives, before the tag moves.
	pols, scan = c.policyInputs(ctx, to.Project, from.Project, digest)
	d2 := c.Policies.Check(ctx, pols, target+"@"+digest, scan)
	if !d2.Allowed {
		return c.finish(ctx, p, api.PromotionFailed, "copied, but the copy in "+to.Project+" fails its policy, so "+to.Tag+" did not move: "+d2.Reason(), d2.Checks)
	}
	if err := moveTag(); err != nil {
		return c.finish(ctx, p, api.PromotionFailed, "moving "+target+":"+to.Tag+": "+err.Error(), d2.Checks)
	}
	rev := c.revision(p.Namespace, p.Spec.Pipeline, p.Spec.To) + 1
	now := c.now().UTC()
	return c.setStatus(ctx, p, func(s *api.PromotionStatus) {
		s.Phase, s.Message = api.PromotionComplete, fmt.Sprintf("%s:%s is now %s", target, to.Tag, digest)
		s.Checks, s.Completed, s.Revision = d2.Checks, &now, rev
		s.Evidence = map[string]string{"source": source, "target": target + "@" + digest, "tag": target + ":" + to.Tag}
		if scan != nil {
			s.Evidence["scan"] = fmt.Sprintf("%s with database %s: %v", scan.Name, scan.Status.DBVersion, scan.Status.Counts)
		}
	})
}

// ownerMayPromote returns why the pipeline's owner may not promote from
// one project into another, or "" if they may.
func (c *Controller) ownerMayPromote(ctx context.Context, pl *api.Pipeline, projects ...string) string {
	owner := api.PipelineOwner(pl)
	if owner == "" {
		return fmt.Sprintf("pipeline %s has no recorded owner (it was written before owners were recorded); apply it again so the API server checks and records you as its owner", pl.Name)
	}
	who := c.identityOf(ctx, owner)
	for _, project := range projects {
		if ok, _ := MayApprove(c.Authz, who, project); !ok {
			return fmt.Sprintf("the owner of pipeline %s, %s, may no longer promote in project %s; an admin of %s must grant the promote permission (admin) there, or someone who holds it there must apply the pipeline again", pl.Name, owner, project, project)
		}
	}
	return ""
}

// identityOf is the identity a user or service account name
// authenticates as: its groups as its tokens would carry them.
func (c *Controller) identityOf(ctx context.Context, name string) identity.Info {
	groups := []string{identity.GroupAuthenticated}
	if p, _, ok := api.SplitServiceAccountUser(name); ok {
		groups = append(groups, identity.GroupServiceAccounts, identity.GroupServiceAccounts+":"+p)
	} else if o, err := c.Store.Get(ctx, api.Users, "", name); err == nil {
		groups = append(groups, o.(*api.User).Groups...)
	}
	return identity.Info{Name: name, Groups: groups}
}

// approved reports whether someone approved the promotion into project and
// still holds the promote permission there.
func (c *Controller) approved(ctx context.Context, p *api.Promotion, project string) bool {
	for _, a := range p.Status.Approvals {
		if a.Project != project {
			continue
		}
		if ok, _ := MayApprove(c.Authz, c.identityOf(ctx, a.User), project); ok {
			return true
		}
	}
	return false
}

// revision counts the completed promotions into a stage.
func (c *Controller) revision(ns, pipeline, stage string) int64 {
	var n int64
	for _, o := range c.promotions.List(ns) {
		if p := o.(*api.Promotion); p.Spec.Pipeline == pipeline && p.Spec.To == stage && p.Status.Phase == api.PromotionComplete {
			n = max(n, p.Status.Revision)
		}
	}
	return n
}

// arrival is when digest first arrived at project/stream:tag (zero if
// never), and what the tag holds now.
func (c *Controller) arrival(ctx context.Context, project, stream, tag, digest string) (time.Time, string, error) {
	o, err := c.Store.Get(ctx, api.ImageStreams, project, stream)
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, "", nil
	}
	if err != nil {
		return time.Time{}, "", err
	}
	var first time.Time
	var current string
	for _, t := range o.(*api.ImageStream).Status.Tags {
		if t.Tag != tag {
			continue
		}
		if len(t.Items) > 0 {
			current = t.Items[0].Image
		}
		want := digest
		if want == "" {
			want = current
		}
		for _, ev := range t.Items {
			if ev.Image == want && (first.IsZero() || ev.Created.Before(first)) {
				first = ev.Created
			}
		}
	}
	return first, current, nil
}

// policyInputs reads the target project's policies and the scan of the
// digest: the scanner's own record (scan.Lookup), not an ImageScan of a
// project, which that project's users could write.
func (c *Controller) policyInputs(ctx context.Context, target, _, digest string) ([]*api.ImagePolicy, *api.ImageScan) {
	var pols []*api.ImagePolicy
	if items, _, err := c.Store.List(ctx, api.ImagePolicies, target, store.ListOptions{}); err == nil {
		for _, o := range items {
			pols = append(pols, o.(*api.ImagePolicy))
		}
	}
	sc, _ := scan.Lookup(ctx, c.Store, digest) // an error reads as "no scan", which refuses
	return pols, sc
}

// ensurePromoter makes the target project's promoter account, lets it
// push there and pull from the source project.
func (c *Controller) ensurePromoter(ctx context.Context, from, to string) error {
	sa := &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: registry.PromoterServiceAccount, Namespace: to}}
	if err := c.Store.Create(ctx, api.ServiceAccounts, sa); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	subject := []api.Subject{{Kind: api.SubjectServiceAccount, Name: registry.PromoterServiceAccount, Namespace: to}}
	for _, rb := range []*api.RoleBinding{
		{ObjectMeta: api.ObjectMeta{Name: "system-promoter", Namespace: to}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: rbac.ImageBuilder}, Subjects: subject},
		{ObjectMeta: api.ObjectMeta{Name: "system-promoter-" + to, Namespace: from}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: rbac.ImagePuller}, Subjects: subject},
	} {
		if err := c.Store.Create(ctx, api.RoleBindings, rb); err != nil && !errors.Is(err, store.ErrExists) {
			return err
		}
	}
	who := identity.Info{Name: api.ServiceAccountUser(to, registry.PromoterServiceAccount), Groups: []string{identity.GroupAuthenticated}}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		push, _ := c.Authz.Authorize(who, rbac.Attributes{Verb: "update", Resource: "imagestreams", Subresource: "layers", Namespace: to})
		pull, _ := c.Authz.Authorize(who, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: from})
		if push && pull {
			return nil
		}
	}
	return fmt.Errorf("the promoter account of %s has no rights yet; check its role bindings", to)
}

// copy puts the image and its referrers into the target repository by
// digest (the registry mounts every blob). It returns the step that moves
// the stage's tag, for after the copy is verified; its token lives ten
// minutes.
func (c *Controller) copy(ctx context.Context, fromProject, toProject, source, target, digest, tag string) (func() error, error) {
	if err := c.ensurePromoter(ctx, fromProject, toProject); err != nil {
		return nil, err
	}
	secret, _, err := c.Tokens.IssueServiceAccountToken(ctx, toProject, registry.PromoterServiceAccount, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: registry.PromoterServiceAccount, Password: secret})}
	src, err := name.NewDigest(source, name.Insecure)
	if err != nil {
		return nil, err
	}
	dstRepo, err := name.NewRepository(target, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := copyManifest(src, dstRepo.Digest(digest), opts); err != nil {
		return nil, err
	}
	// Referrers travel with the image: the OCI referrers of its digest,
	// and cosign's tag layout (sha256-HEX.sig, .att, .sbom).
	if idx, err := remote.Referrers(src, opts...); err == nil {
		if m, err := idx.IndexManifest(); err == nil {
			for _, d := range m.Manifests {
				if err := copyManifest(src.Context().Digest(d.Digest.String()), dstRepo.Digest(d.Digest.String()), opts); err != nil {
					return nil, fmt.Errorf("referrer %s: %w", d.Digest, err)
				}
			}
		}
	}
	h, _ := v1.NewHash(digest)
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		t := h.Algorithm + "-" + h.Hex + suffix
		desc, err := remote.Get(src.Context().Tag(t), opts...)
		if err != nil {
			continue
		}
		if err := copyManifest(src.Context().Digest(desc.Digest.String()), dstRepo.Digest(desc.Digest.String()), opts); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		if err := remote.Tag(dstRepo.Tag(t), desc, opts...); err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
	}
	return func() error {
		defer func() { _, _ = c.Tokens.Revoke(context.WithoutCancel(ctx), secret) }()
		desc, err := remote.Get(dstRepo.Digest(digest), opts...)
		if err != nil {
			return err
		}
		return remote.Tag(dstRepo.Tag(tag), desc, opts...)
	}, nil
}

// copyManifest writes one manifest (image or index) and its blobs.
func copyManifest(src name.Digest, dst name.Digest, opts []remote.Option) error {
	desc, err := remote.Get(src, opts...)
	if err != nil {
		return err
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		return remote.WriteIndex(dst, idx, opts...)
	}
	img, err := desc.Image()
	if err != nil {
		return err
	}
	return remote.Write(dst, img, opts...)
}

// Approvers may approve: the promote verb in the target project.
func MayApprove(authz Authorizer, u identity.Info, targetProject string) (bool, string) {
	return authz.Authorize(u, rbac.Attributes{Verb: "promote", Resource: "promotions", Namespace: targetProject})
}
