package apiserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Containers contain (issue 14): pods, and the templates replication
// controllers and deployment configs make pods from, are admitted under
// the restricted policy (api.RestrictPodSpec) with their project's UID
// range, or under the privileged exception when they ask for more and
// their service account holds it cluster-wide (rbac.PrivilegedPods).
// Every pod reaches the store through this check or a controller that
// copies an admitted template; the controllers and the node check again.

// admitPodSecurity admits a pod, or the template of a replication
// controller or deployment config. A pod gets spec.securityContext.runAsUser
// defaulted to its project's first UID; a template is only checked (the
// controllers default its pods), so admission does not change it and
// start a rollout. The PodSecurityAnnotation a writer gives is replaced
// by admission's own decision.
func (s *Server) admitPodSecurity(ctx context.Context, u identity.Info, info *requestInfo, obj api.Object) error {
	var spec *api.PodSpec
	var meta *api.ObjectMeta
	path, isPod := "spec", false
	switch o := obj.(type) {
	case *api.Pod:
		spec, meta, isPod = &o.Spec, &o.ObjectMeta, true
	case *api.ReplicationController:
		if o.Spec.Template != nil {
			spec, meta, path = &o.Spec.Template.Spec, &o.Spec.Template.ObjectMeta, "spec.template.spec"
		}
	case *api.DeploymentConfig:
		if o.Spec.Template != nil {
			spec, meta, path = &o.Spec.Template.Spec, &o.Spec.Template.ObjectMeta, "spec.template.spec"
		}
	}
	if spec == nil {
		return nil
	}
	m := obj.GetObjectMeta()
	delete(meta.Annotations, api.PodSecurityAnnotation)
	r, err := s.projectUIDRange(ctx, m.Namespace)
	if err != nil {
		return err
	}
	var sa *identity.Info
	if name := spec.ServiceAccountName; name != "" {
		if _, err := s.store.Get(ctx, api.ServiceAccounts, m.Namespace, name); errors.Is(err, store.ErrNotFound) {
			var fe api.FieldErrors
			fe.Add(path+".serviceAccountName", api.FieldValueNotFound, "project %s has no service account %q; create it first (slipway create serviceaccount %s)", m.Namespace, name, name)
			return fe.Invalid(info.Resource.Kind, m.Name)
		} else if err != nil {
			return err
		}
		i := s.infoOf(ctx, api.ServiceAccountUser(m.Namespace, name))
		sa = &i
	}
	beyond := api.RestrictPodSpec(path, spec, r, isPod)
	if len(beyond) == 0 {
		return nil
	}
	var never api.FieldErrors
	for _, e := range beyond {
		if e.Type == api.FieldValueNotSupported {
			never = append(never, e)
		}
	}
	if len(never) > 0 {
		return forbiddenFields(info.Resource.Kind, m.Name, never)
	}
	if sa == nil {
		return forbiddenFields(info.Resource.Kind, m.Name, beyond)
	}
	if !s.clusterWide(*sa, rbac.PrivilegedPodsAttributes) {
		for i := range beyond {
			beyond[i].Detail += fmt.Sprintf("; service account %s does not hold it", spec.ServiceAccountName)
		}
		return forbiddenFields(info.Resource.Kind, m.Name, beyond)
	}
	if meta.Annotations == nil {
		meta.Annotations = map[string]string{}
	}
	meta.Annotations[api.PodSecurityAnnotation] = api.PodSecurityPrivileged
	return nil
}

// forbiddenFields is a 403 that names every field refused.
func forbiddenFields(kind, name string, fe api.FieldErrors) error {
	st, _ := api.StatusFor(fe.Invalid(kind, name))
	st.Code, st.Reason = http.StatusForbidden, api.ReasonForbidden
	st.Message = strings.Replace(st.Message, "is invalid", "is forbidden", 1)
	return st
}

// projectUIDRange is the project's UID range, assigned now if the project
// was made before projects had one.
func (s *Server) projectUIDRange(ctx context.Context, project string) (api.UIDRange, error) {
	p, err := s.Project(ctx, project)
	if err != nil {
		return api.UIDRange{}, err
	}
	if _, ok := p.Annotations[api.UIDRangeAnnotation]; ok {
		return api.ProjectUIDRange(p)
	}
	r, err := s.reserveUIDRange(ctx, project)
	if err != nil {
		return api.UIDRange{}, err
	}
	var got string
	_, err = s.store.GuaranteedUpdate(ctx, api.Projects, "", project, store.UpdateOptions{}, func(o api.Object) error {
		m := o.GetObjectMeta()
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		if got = m.Annotations[api.UIDRangeAnnotation]; got == "" {
			got = r.String()
			m.Annotations[api.UIDRangeAnnotation] = got
		}
		return nil
	})
	if err != nil || got != r.String() {
		s.releaseUIDRange(context.WithoutCancel(ctx), r.String())
	}
	if err != nil {
		return api.UIDRange{}, err
	}
	return api.ParseUIDRange(got)
}

// reserveUIDRange takes the lowest free block of UIDs for project: the
// reservation's create is what makes it the project's, so API servers
// allocating at once never hand out one block twice.
func (s *Server) reserveUIDRange(ctx context.Context, project string) (api.UIDRange, error) {
	items, _, err := s.store.List(ctx, api.UIDRangeReservations, "", store.ListOptions{})
	if err != nil {
		return api.UIDRange{}, err
	}
	taken := map[string]bool{}
	for _, o := range items {
		taken[o.GetObjectMeta().Name] = true
	}
	for n := range api.UIDRangeCount {
		r := api.UIDRangeBlock(n)
		name := strconv.FormatInt(r.First, 10)
		if taken[name] {
			continue
		}
		err := s.store.Create(ctx, api.UIDRangeReservations, &api.UIDRangeReservation{ObjectMeta: api.ObjectMeta{Name: name}, Project: project})
		if errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			return api.UIDRange{}, fmt.Errorf("reserving UIDs %s for project %s: %w", r, project, err)
		}
		return r, nil
	}
	return api.UIDRange{}, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "every one of the %d UID ranges is taken; delete projects no longer needed", api.UIDRangeCount)
}

// releaseUIDRange frees the block a deleted project held ("FIRST/SIZE").
func (s *Server) releaseUIDRange(ctx context.Context, rng string) {
	r, err := api.ParseUIDRange(rng)
	if err != nil {
		return
	}
	_, _ = s.store.Delete(ctx, api.UIDRangeReservations, "", strconv.FormatInt(r.First, 10), "")
}

// assignUIDRanges gives every project made before projects had UID ranges
// its range, once at start, so the controllers and nodes (which only read
// the range) can run its pods.
func (s *Server) assignUIDRanges(ctx context.Context) {
	items, _, err := s.store.List(ctx, api.Projects, "", store.ListOptions{})
	if err != nil {
		slog.Warn("apiserver: listing projects to assign UID ranges", "err", err)
		return
	}
	for _, o := range items {
		p := o.(*api.Project)
		if _, ok := p.Annotations[api.UIDRangeAnnotation]; ok || p.DeletionTimestamp != nil {
			continue
		}
		if _, err := s.projectUIDRange(ctx, p.Name); err != nil && ctx.Err() == nil {
			slog.Warn("apiserver: assigning a UID range", "project", p.Name, "err", err)
		}
	}
}

// reservationHeld reports whether project still holds the block rng.
func (s *Server) reservationHeld(ctx context.Context, rng, project string) bool {
	r, err := api.ParseUIDRange(rng)
	if err != nil {
		return false
	}
	o, err := s.store.Get(ctx, api.UIDRangeReservations, "", strconv.FormatInt(r.First, 10))
	return err == nil && o.(*api.UIDRangeReservation).Project == project
}
