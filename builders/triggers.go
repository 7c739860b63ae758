package builders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Triggers starts builds when a config is created (ConfigChange) and when
// its base image tag moves (ImageChange). It is level-based: for each
// config it compares the base tag's digest with the digest it last built
// from, so a burst of pushes yields one build per digest it sees, the
// newest wins, and a compare-and-swap on the config means no duplicates
// even with several controllers.
//
// A base tag in another project is followed only while the config's
// project may pull from there (mayPullFrom); otherwise the trigger does
// not read the tag and records a Warning event NAME-pull-denied.
type Triggers struct {
	Store *store.Store
	// Authz decides the pull right of a project's builder account.
	// Without it, base tags of other projects are not followed.
	Authz Authorizer
}

// Run reconciles build triggers until ctx ends.
func (tr *Triggers) Run(ctx context.Context) {
	configs := store.NewInformer(tr.Store, api.BuildConfigs)
	streams := store.NewInformer(tr.Store, api.ImageStreams)
	q := store.NewWorkQueue()
	configs.AddHandler(func(ev store.Event) {
		if ev.Type != api.Deleted {
			m := ev.Object.GetObjectMeta()
			q.Add(m.Namespace + "/" + m.Name)
		}
	})
	// The configs a stream's change concerns come from an index, not a
	// scan of every config on every stream event.
	configs.AddIndex(byBaseStream, func(o api.Object) []string {
		if from := baseTag(o.(*api.BuildConfig)); from != nil {
			return []string{from.ns + "/" + from.stream}
		}
		return nil
	})
	streams.AddHandler(func(ev store.Event) {
		if ev.Type == api.Deleted {
			return
		}
		m := ev.Object.GetObjectMeta()
		bcs, _ := configs.ByIndex(byBaseStream, m.Namespace+"/"+m.Name)
		for _, o := range bcs {
			q.Add(o.GetObjectMeta().Namespace + "/" + o.GetObjectMeta().Name)
		}
	})
	go configs.Run(ctx)
	go streams.Run(ctx)
	if store.WaitSynced(ctx, configs, streams) != nil {
		return
	}
	q.Process(ctx, configs, "builders: trigger", func(o api.Object) error { return tr.reconcile(ctx, o.(*api.BuildConfig)) })
}

// byBaseStream indexes BuildConfigs by the "ns/stream" their ImageChange
// trigger follows.
const byBaseStream = "builders.baseStream"

type tagRef struct{ ns, stream, tag string }

// baseTag is the ImageStreamTag an ImageChange trigger follows.
func baseTag(bc *api.BuildConfig) *tagRef {
	has := false
	for _, t := range bc.Spec.Triggers {
		has = has || t.Type == "ImageChange"
	}
	from := bc.Spec.Strategy.BaseImage()
	if !has || from == nil || from.Kind != "ImageStreamTag" {
		return nil
	}
	ns := from.Namespace
	if ns == "" {
		ns = bc.Namespace
	}
	stream, tag, ok := strings.Cut(from.Name, ":")
	if !ok {
		tag = "latest"
	}
	return &tagRef{ns, stream, tag}
}

func (tr *Triggers) reconcile(ctx context.Context, bc *api.BuildConfig) error {
	configChange := false
	for _, t := range bc.Spec.Triggers {
		configChange = configChange || t.Type == "ConfigChange"
	}
	from := baseTag(bc)
	var digest string
	if from != nil && from.ns != bc.Namespace {
		if why := mayPullFrom(ctx, tr.Store, tr.Authz, bc.Namespace, from.ns); why != "" {
			return tr.denied(ctx, bc, fmt.Sprintf("the ImageChange trigger does not follow %s/%s:%s: %s", from.ns, from.stream, from.tag, why))
		}
	}
	if from != nil {
		o, err := tr.Store.Get(ctx, api.ImageStreams, from.ns, from.stream)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err == nil {
			if ev, ok := imagestreams.Latest(o.(*api.ImageStream), from.tag); ok {
				digest = ev.Image
			}
		}
	}
	switch {
	case digest != "" && digest != bc.Status.LastTriggeredImage:
		_, err := Instantiate(ctx, tr.Store, bc.Namespace, bc.Name, digest, "ImageChange")
		return err
	case configChange && bc.Status.LastVersion == 0 && (from == nil || digest != ""):
		_, err := Instantiate(ctx, tr.Store, bc.Namespace, bc.Name, digest, "ConfigChange")
		return err
	}
	return nil
}

// denied records, once per config, why its trigger does not follow its
// base tag.
func (tr *Triggers) denied(ctx context.Context, bc *api.BuildConfig, msg string) error {
	ev := &api.Event{
		ObjectMeta:     api.ObjectMeta{Name: bc.Name + "-pull-denied", Namespace: bc.Namespace},
		InvolvedObject: api.ObjectReference{Kind: "BuildConfig", Name: bc.Name, Namespace: bc.Namespace},
		Reason:         "ImagePullDenied", Type: "Warning", Message: msg, Time: time.Now().UTC(),
	}
	if err := tr.Store.Create(ctx, api.Events, ev); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	slog.Warn("builders: trigger not followed", "project", bc.Namespace, "buildconfig", bc.Name, "message", msg)
	return nil
}

// mayPullFrom says why project ns may not build on images of project
// from, or "": from is public, or ns's builder account holds get
// imagestreams/layers there, as the registry decides for its pulls.
func mayPullFrom(ctx context.Context, s *store.Store, authz Authorizer, ns, from string) string {
	if o, err := s.Get(ctx, api.Projects, "", from); err == nil && o.(*api.Project).Spec.Public {
		return ""
	}
	who := identity.Info{Name: api.ServiceAccountUser(ns, BuilderServiceAccount), Groups: []string{
		identity.GroupAuthenticated, identity.GroupServiceAccounts, identity.GroupServiceAccounts + ":" + ns,
	}}
	if authz != nil {
		if ok, _ := authz.Authorize(who, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: from}); ok {
			return ""
		}
	}
	return fmt.Sprintf("project %s may not pull from project %s; an admin of %s can grant it with `slipway policy add-role-to-user image-puller %s -n %s`", ns, from, from, who.Name, from)
}

// CauseAnnotation says why a build started.
const CauseAnnotation = "slipway.dev/build-cause"

// Instantiate makes the next Build of a config. With base set it pins the
// build's base to that digest and records it as the last triggered image,
// in the same compare-and-swap that takes the build number; a config whose
// LastTriggeredImage already is base makes no build.
func Instantiate(ctx context.Context, s *store.Store, ns, name, base, cause string) (*api.Build, error) {
	return instantiateAt(ctx, s, ns, name, base, cause, "")
}

// instantiateAt is Instantiate that also pins a git source to commit.
func instantiateAt(ctx context.Context, s *store.Store, ns, name, base, cause, commit string) (*api.Build, error) {
	var bc *api.BuildConfig
	skip := false
	_, err := s.GuaranteedUpdate(ctx, api.BuildConfigs, ns, name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		bc = o.(*api.BuildConfig)
		skip = cause == "ImageChange" && bc.Status.LastTriggeredImage == base
		if skip {
			return nil
		}
		bc.Status.LastVersion++
		if base != "" {
			bc.Status.LastTriggeredImage = base
		}
		return nil
	})
	if err != nil || skip {
		return nil, err
	}
	spec := bc.Spec.BuildSpec()
	if base != "" && spec.Strategy.BaseImage() != nil {
		from := *spec.Strategy.BaseImage()
		stream, _, _ := strings.Cut(from.Name, ":")
		from.Kind, from.Name = "ImageStreamImage", stream+"@"+base
		if ds := spec.Strategy.DockerStrategy; ds != nil {
			d := *ds
			d.From = &from
			spec.Strategy.DockerStrategy = &d
		} else {
			s := *spec.Strategy.SourceStrategy
			s.From = &from
			spec.Strategy.SourceStrategy = &s
		}
	}
	if commit != "" && spec.Source.Git != nil {
		g := *spec.Source.Git
		g.Ref = commit
		spec.Source.Git = &g
	}
	b := &api.Build{
		ObjectMeta: api.ObjectMeta{
			Name: fmt.Sprintf("%s-%d", name, bc.Status.LastVersion), Namespace: ns,
			Labels:      map[string]string{BuildConfigLabel: name},
			Annotations: map[string]string{CauseAnnotation: cause},
		},
		Spec: spec,
	}
	if err := s.Create(ctx, api.Builds, b); err != nil && !errors.Is(err, store.ErrExists) {
		return nil, err
	}
	return b, nil
}

// buildNumber is N of NAME-N.
func buildNumber(b *api.Build) int {
	n, _ := strconv.Atoi(b.Name[strings.LastIndex(b.Name, "-")+1:])
	return n
}

// prune deletes the oldest finished builds of a config beyond its history
// limits (default 5 successful and 5 failed).
func (c *Controller) prune(ctx context.Context, ns, bcName string, builds []*api.Build) {
	o, err := c.Store.Get(ctx, api.BuildConfigs, ns, bcName)
	if err != nil {
		return
	}
	bc := o.(*api.BuildConfig)
	limit := func(p *int32) int {
		if p == nil {
			return 5
		}
		return int(*p)
	}
	var ok, failed []*api.Build
	for _, b := range builds {
		switch {
		case b.Status.Phase == api.BuildComplete:
			ok = append(ok, b)
		case api.IsFinished(b.Status.Phase):
			failed = append(failed, b)
		}
	}
	for _, set := range []struct {
		builds []*api.Build
		keep   int
	}{{ok, limit(bc.Spec.SuccessfulBuildsHistoryLimit)}, {failed, limit(bc.Spec.FailedBuildsHistoryLimit)}} {
		sort.Slice(set.builds, func(i, j int) bool { return buildNumber(set.builds[i]) < buildNumber(set.builds[j]) })
		for i := 0; i < len(set.builds)-set.keep; i++ {
			if _, err := c.Store.Delete(ctx, api.Builds, ns, set.builds[i].Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
				slog.Warn("builders: pruning a build", "build", set.builds[i].Name, "err", err)
			}
		}
	}
}
