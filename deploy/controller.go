// Package deploy rolls out DeploymentConfigs, as OpenShift v3 does: each
// revision is a ReplicationController NAME-N whose template pins the
// images its ImageChange triggers resolved to digests; a deployer moves
// the replicas from the old revisions to the new one with the Rolling or
// Recreate strategy, runs lifecycle hooks as pods, and rolls back to the
// last good revision when a rollout does not finish in time.
package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Annotations the deploy controller and the CLI share.
const (
	// RequestAnnotation on a DeploymentConfig asks for a new revision
	// (`slipway rollout latest`); the revision made for it carries the same
	// value.
	RequestAnnotation = "slipway.dev/rollout-requested"
	// PreviousAnnotation on a revision names the revision it replaced.
	PreviousAnnotation = "slipway.dev/previous-revision"
)

// Authorizer answers RBAC questions from the server's caches.
type Authorizer interface {
	Authorize(u identity.Info, a rbac.Attributes) (bool, string)
}

// DeployerServiceAccount is the platform account of a project that pulls
// its pods' images; the controller resolves ImageChange triggers as it.
const DeployerServiceAccount = "deployer"

// Controller makes revisions and runs their rollouts.
type Controller struct {
	Store *store.Store
	// Registry is host:port of the integrated registry, for the digest
	// references of resolved images.
	Registry string
	// Authz decides whether a project's deployer may pull from the
	// project another one's trigger follows. Without it such triggers are
	// not resolved.
	Authz Authorizer
	// Poll is how often a running rollout looks at its revisions. Default
	// 250ms.
	Poll time.Duration

	dcs, rcs, streams *store.Informer
	queue             *store.WorkQueue
	mu                sync.Mutex
	deployers         map[string]bool // "ns/NAME-N" deployers running
}

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	if c.Poll == 0 {
		c.Poll = 250 * time.Millisecond
	}
	c.deployers = map[string]bool{}
	c.dcs = store.NewInformer(c.Store, api.DeploymentConfigs)
	c.rcs = store.NewInformer(c.Store, api.ReplicationControllers)
	c.streams = store.NewInformer(c.Store, api.ImageStreams)
	c.queue = store.NewWorkQueue()
	c.dcs.AddHandler(func(ev store.Event) {
		o := ev.Object.GetObjectMeta()
		c.queue.Add(o.Namespace + "/" + o.Name)
	})
	c.rcs.AddHandler(func(ev store.Event) {
		o := ev.Object.GetObjectMeta()
		if dc := o.Annotations[api.DeploymentConfigAnnotation]; dc != "" {
			c.queue.Add(o.Namespace + "/" + dc)
		}
	})
	// The configs an image stream's change concerns come from an index,
	// not a scan of every config on every stream event.
	c.dcs.AddIndex(byTriggerStream, func(o api.Object) []string {
		dc := o.(*api.DeploymentConfig)
		var keys []string
		for _, t := range dc.Spec.Triggers {
			if p := t.ImageChangeParams; p != nil && p.Automatic {
				ns, stream, _ := triggerStream(dc, p)
				keys = append(keys, ns+"/"+stream)
			}
		}
		return keys
	})
	c.streams.AddHandler(func(ev store.Event) {
		is := ev.Object.(*api.ImageStream)
		dcs, _ := c.dcs.ByIndex(byTriggerStream, is.Namespace+"/"+is.Name)
		for _, o := range dcs {
			c.queue.Add(o.GetObjectMeta().Namespace + "/" + o.GetObjectMeta().Name)
		}
	})
	go c.rcs.Run(ctx)
	go c.streams.Run(ctx)
	go c.dcs.Run(ctx)
	// A config reconciled before its revisions are cached would get an
	// "initial" revision again.
	if store.WaitSynced(ctx, c.rcs, c.streams, c.dcs) != nil {
		return
	}
	c.queue.Process(ctx, c.dcs, "deploy: deploymentconfig", func(o api.Object) error { return c.reconcile(ctx, o.(*api.DeploymentConfig)) })
}

// byTriggerStream indexes DeploymentConfigs by the "ns/stream" of their
// automatic ImageChange triggers.
const byTriggerStream = "deploy.triggerStream"

func triggerStream(dc *api.DeploymentConfig, p *api.DeploymentTriggerImageChangeParams) (ns, stream, tag string) {
	ns = p.From.Namespace
	if ns == "" {
		ns = dc.Namespace
	}
	stream, tag, ok := strings.Cut(p.From.Name, ":")
	if !ok {
		tag = "latest"
	}
	return ns, stream, tag
}

// RevisionName is NAME-N.
func RevisionName(dc string, n int64) string { return dc + "-" + strconv.FormatInt(n, 10) }

// Revisions returns a config's revisions, oldest first.
func Revisions(rcs []api.Object, dc string) []*api.ReplicationController {
	var out []*api.ReplicationController
	for _, o := range rcs {
		rc := o.(*api.ReplicationController)
		if rc.Annotations[api.DeploymentConfigAnnotation] == dc {
			out = append(out, rc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return Version(out[i]) < Version(out[j]) })
	return out
}

// Version is a revision's number.
func Version(rc *api.ReplicationController) int64 {
	n, _ := strconv.ParseInt(rc.Annotations[api.DeploymentVersionAnnotation], 10, 64)
	return n
}

// resolve returns the template with the images the triggers point at. An
// automatic trigger takes its tag's newest digest; a manual one keeps the
// image the latest revision runs. ok is false, with why, while a tag has
// no image yet, or reason ImagePullDenied while a trigger follows a
// project that the config's own project may not pull from.
func (c *Controller) resolve(ctx context.Context, dc *api.DeploymentConfig, latest *api.ReplicationController) (tpl *api.PodTemplateSpec, reason, why string) {
	tpl = deepCopyTemplate(dc.Spec.Template)
	for _, t := range dc.Spec.Triggers {
		p := t.ImageChangeParams
		if t.Type != "ImageChange" || p == nil {
			continue
		}
		var image string
		if p.Automatic {
			ns, stream, tag := triggerStream(dc, p)
			if ns != dc.Namespace {
				if why := c.mayFollow(ctx, dc.Namespace, ns); why != "" {
					return nil, "ImagePullDenied", fmt.Sprintf("trigger follows %s/%s:%s: %s", ns, stream, tag, why)
				}
			}
			o, ok := c.streams.Get(ns, stream)
			if !ok {
				return nil, "WaitingForImage", fmt.Sprintf("image stream %s/%s does not exist yet; push an image to it", ns, stream)
			}
			ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
			if !ok {
				return nil, "WaitingForImage", fmt.Sprintf("tag %s/%s:%s has no image yet; push one", ns, stream, tag)
			}
			image = c.Registry + "/" + ns + "/" + stream + "@" + ev.Image
		}
		for i := range tpl.Spec.Containers {
			ct := &tpl.Spec.Containers[i]
			if !contains(p.ContainerNames, ct.Name) {
				continue
			}
			switch {
			case image != "":
				ct.Image = image
			case strings.Contains(ct.Image, "@"):
				// Pinned by digest in the config (rollout undo writes the
				// revision's images there): keep it.
			case latest != nil:
				for _, old := range latest.Spec.Template.Spec.Containers {
					if old.Name == ct.Name {
						ct.Image = old.Image
					}
				}
			}
		}
	}
	return tpl, "", ""
}

// mayFollow says why project ns may not take images from project from,
// or "": from is public, or ns's deployer account may pull there, as the
// registry and the node decide for its pods.
func (c *Controller) mayFollow(ctx context.Context, ns, from string) string {
	if o, err := c.Store.Get(ctx, api.Projects, "", from); err == nil && o.(*api.Project).Spec.Public {
		return ""
	}
	who := identity.Info{Name: api.ServiceAccountUser(ns, DeployerServiceAccount), Groups: []string{
		identity.GroupAuthenticated, identity.GroupServiceAccounts, identity.GroupServiceAccounts + ":" + ns,
	}}
	if c.Authz != nil {
		if ok, _ := c.Authz.Authorize(who, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: from}); ok {
			return ""
		}
	}
	return fmt.Sprintf("project %s may not pull from project %s; an admin of %s can grant it with `slipway policy add-role-to-user image-puller %s -n %s`", ns, from, from, who.Name, from)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func deepCopyTemplate(t *api.PodTemplateSpec) *api.PodTemplateSpec {
	data, _ := json.Marshal(t)
	var out api.PodTemplateSpec
	_ = json.Unmarshal(data, &out)
	return &out
}

func images(t *api.PodTemplateSpec) []string {
	var out []string
	for _, c := range t.Spec.Containers {
		out = append(out, c.Name+"="+c.Image)
	}
	return out
}

func (c *Controller) reconcile(ctx context.Context, dc *api.DeploymentConfig) error {
	if dc.DeletionTimestamp != nil {
		return nil
	}
	revs := Revisions(c.rcs.List(dc.Namespace), dc.Name)
	var latest *api.ReplicationController
	if len(revs) > 0 {
		latest = revs[len(revs)-1]
	}
	if !dc.Spec.Paused {
		tpl, reason, why := c.resolve(ctx, dc, latest)
		if tpl == nil {
			return c.setCondition(ctx, dc, "Progressing", api.ConditionFalse, reason, why)
		}
		cause := c.cause(dc, latest, tpl)
		if cause != "" {
			return c.newRevision(ctx, dc, latest, tpl, cause)
		}
	}
	if latest == nil {
		return c.updateStatus(ctx, dc, revs)
	}
	// An older revision still rolling out whose deployer is gone (it ran
	// on a leader that died or lost the role): its rollout ends, as
	// superseded, rather than showing Running for good.
	for _, rc := range revs[:len(revs)-1] {
		switch rc.Annotations[api.DeploymentPhaseAnnotation] {
		case api.DeploymentNew, api.DeploymentPending, api.DeploymentRunning:
			c.startRollout(ctx, dc.Namespace, dc.Name, rc.Name)
		}
	}
	switch latest.Annotations[api.DeploymentPhaseAnnotation] {
	case api.DeploymentNew, api.DeploymentPending, api.DeploymentRunning:
		if !dc.Spec.Paused {
			c.startRollout(ctx, dc.Namespace, dc.Name, latest.Name)
		}
	case api.DeploymentComplete:
		// Scaling a deployed config scales its latest revision.
		if latest.Spec.Replicas != dc.Spec.Replicas {
			if err := c.scale(ctx, latest.Namespace, latest.Name, dc.Spec.Replicas); err != nil {
				return err
			}
		}
	}
	if err := c.surfaceReplicaFailure(ctx, dc, latest); err != nil {
		return err
	}
	c.prune(ctx, dc, revs)
	return c.updateStatus(ctx, dc, revs)
}

// cause says why a new revision is due, or "".
func (c *Controller) cause(dc *api.DeploymentConfig, latest *api.ReplicationController, tpl *api.PodTemplateSpec) string {
	req := dc.Annotations[RequestAnnotation]
	configChange := false
	for _, t := range dc.Spec.Triggers {
		if t.Type == "ConfigChange" {
			configChange = true
		}
	}
	if latest == nil {
		if configChange || req != "" || hasImageTrigger(dc) {
			return "initial rollout"
		}
		return ""
	}
	if req != "" && req != latest.Annotations[RequestAnnotation] {
		return "manual rollout (slipway rollout latest)"
	}
	old := latest.Spec.Template
	if !reflect.DeepEqual(images(old), images(tpl)) {
		for _, t := range dc.Spec.Triggers {
			if p := t.ImageChangeParams; p != nil && p.Automatic {
				for _, ct := range tpl.Spec.Containers {
					for _, oc := range old.Spec.Containers {
						if ct.Name == oc.Name && ct.Image != oc.Image && contains(p.ContainerNames, ct.Name) {
							return "image change: " + ct.Name + " is now " + ct.Image
						}
					}
				}
			}
		}
	}
	if configChange && !sameTemplate(old, tpl, latest) {
		return "config change"
	}
	return ""
}

func hasImageTrigger(dc *api.DeploymentConfig) bool {
	for _, t := range dc.Spec.Triggers {
		if t.Type == "ImageChange" {
			return true
		}
	}
	return false
}

// sameTemplate compares a revision's template, without the labels the
// controller adds, with the resolved one.
func sameTemplate(revision, tpl *api.PodTemplateSpec, rc *api.ReplicationController) bool {
	r := deepCopyTemplate(revision)
	delete(r.Labels, api.DeploymentConfigLabel)
	delete(r.Labels, api.DeploymentLabel)
	t := deepCopyTemplate(tpl)
	delete(t.Labels, api.DeploymentConfigLabel)
	delete(t.Labels, api.DeploymentLabel)
	if len(r.Labels) == 0 {
		r.Labels = nil
	}
	if len(t.Labels) == 0 {
		t.Labels = nil
	}
	return reflect.DeepEqual(r, t)
}

func (c *Controller) newRevision(ctx context.Context, dc *api.DeploymentConfig, latest *api.ReplicationController, tpl *api.PodTemplateSpec, cause string) error {
	n := int64(1)
	if latest != nil {
		n = Version(latest) + 1
	}
	n = max(n, dc.Status.LatestVersion+1)
	name := RevisionName(dc.Name, n)
	if tpl.Labels == nil {
		tpl.Labels = map[string]string{}
	}
	tpl.Labels[api.DeploymentConfigLabel] = dc.Name
	tpl.Labels[api.DeploymentLabel] = name
	sel := map[string]string{api.DeploymentConfigLabel: dc.Name, api.DeploymentLabel: name}
	for k, v := range dc.Spec.Selector {
		sel[k] = v
	}
	rc := &api.ReplicationController{
		ObjectMeta: api.ObjectMeta{
			Name: name, Namespace: dc.Namespace,
			Labels: map[string]string{api.DeploymentConfigLabel: dc.Name},
			Annotations: map[string]string{
				api.DeploymentConfigAnnotation:  dc.Name,
				api.DeploymentVersionAnnotation: strconv.FormatInt(n, 10),
				api.DeploymentPhaseAnnotation:   api.DeploymentNew,
				api.DeploymentCauseAnnotation:   cause,
				RequestAnnotation:               dc.Annotations[RequestAnnotation],
			},
		},
		Spec: api.ReplicationControllerSpec{Replicas: 0, Selector: sel, Template: tpl},
	}
	if latest != nil {
		rc.Annotations[PreviousAnnotation] = latest.Name
	}
	if err := c.Store.Create(ctx, api.ReplicationControllers, rc); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	slog.Info("deploy: new revision", "deploymentconfig", dc.Namespace+"/"+dc.Name, "revision", n, "cause", cause)
	_, err := c.Store.GuaranteedUpdate(ctx, api.DeploymentConfigs, dc.Namespace, dc.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		s := &o.(*api.DeploymentConfig).Status
		s.LatestVersion = max(s.LatestVersion, n)
		s.Details = &api.DeploymentDetails{Cause: cause, Message: fmt.Sprintf("revision %d: %s", n, cause)}
		return nil
	})
	// Wait for the cache, so the next pass sees the revision.
	if rv, perr := store.ParseResourceVersion(rc.ResourceVersion); perr == nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = c.rcs.WaitFor(wctx, rv)
		cancel()
	}
	c.queue.Add(dc.Namespace + "/" + dc.Name)
	return err
}

func (c *Controller) updateStatus(ctx context.Context, dc *api.DeploymentConfig, revs []*api.ReplicationController) error {
	var replicas, ready, updated int32
	for _, rc := range revs {
		replicas += rc.Status.Replicas
		ready += rc.Status.ReadyReplicas
	}
	if len(revs) > 0 {
		updated = revs[len(revs)-1].Status.Replicas
	}
	// latestVersion follows the newest revision even when the process
	// that made it stopped (lost its leadership, died) before recording
	// it on the config.
	latest := dc.Status.LatestVersion
	if len(revs) > 0 {
		latest = max(latest, Version(revs[len(revs)-1]))
	}
	s := dc.Status
	if s.Replicas == replicas && s.ReadyReplicas == ready && s.UpdatedReplicas == updated && s.ObservedGeneration == dc.Generation && s.LatestVersion == latest {
		return nil
	}
	_, err := c.Store.GuaranteedUpdate(ctx, api.DeploymentConfigs, dc.Namespace, dc.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		d := o.(*api.DeploymentConfig)
		d.Status.Replicas, d.Status.ReadyReplicas, d.Status.UpdatedReplicas = replicas, ready, updated
		d.Status.LatestVersion = max(d.Status.LatestVersion, latest)
		d.Status.ObservedGeneration = d.Generation
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

func (c *Controller) setCondition(ctx context.Context, dc *api.DeploymentConfig, typ, status, reason, msg string) error {
	for _, cd := range dc.Status.Conditions {
		if cd.Type == typ && cd.Status == status && cd.Reason == reason && cd.Message == msg {
			return nil
		}
	}
	_, err := c.Store.GuaranteedUpdate(ctx, api.DeploymentConfigs, dc.Namespace, dc.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		d := o.(*api.DeploymentConfig)
		cond := api.DeploymentCondition{Type: typ, Status: status, Reason: reason, Message: msg, LastTransitionTime: time.Now().UTC()}
		for i, cd := range d.Status.Conditions {
			if cd.Type == typ {
				d.Status.Conditions[i] = cond
				return nil
			}
		}
		d.Status.Conditions = append(d.Status.Conditions, cond)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// prune deletes the oldest scaled-down revisions past the history limit.
func (c *Controller) prune(ctx context.Context, dc *api.DeploymentConfig, revs []*api.ReplicationController) {
	limit := 10
	if l := dc.Spec.RevisionHistoryLimit; l != nil {
		limit = int(*l)
	}
	old := revs[:max(0, len(revs)-1)]
	for len(old) > limit {
		rc := old[0]
		old = old[1:]
		if rc.Spec.Replicas != 0 || rc.Status.Replicas != 0 {
			continue
		}
		if _, err := c.Store.Delete(ctx, api.ReplicationControllers, rc.Namespace, rc.Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
			slog.Warn("deploy: pruning a revision", "revision", rc.Name, "err", err)
		}
	}
}

func (c *Controller) scale(ctx context.Context, ns, name string, n int32) error {
	_, err := c.Store.GuaranteedUpdate(ctx, api.ReplicationControllers, ns, name, store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.ReplicationController).Spec.Replicas = n
		return nil
	})
	return err
}

// errFinished: a revision's rollout ended already; it is never restarted.
var errFinished = errors.New("deploy: the revision's rollout has ended")

func (c *Controller) setPhase(ctx context.Context, ns, name, phase, reason string) error {
	_, err := c.Store.GuaranteedUpdate(ctx, api.ReplicationControllers, ns, name, store.UpdateOptions{}, func(o api.Object) error {
		rc := o.(*api.ReplicationController)
		switch rc.Annotations[api.DeploymentPhaseAnnotation] {
		case api.DeploymentComplete, api.DeploymentFailed:
			// A stale cache sent a finished revision back here.
			return errFinished
		}
		rc.Annotations[api.DeploymentPhaseAnnotation] = phase
		if reason != "" {
			rc.Annotations[api.DeploymentReasonAnnotation] = reason
		}
		return nil
	})
	return err
}
