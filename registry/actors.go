package registry

import (
	"context"
	"errors"
	"fmt"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Spec tags and pipelines act with the registry's own rights, for a person
// the API server recorded when they were written: a spec tag's author
// (TaggedByAnnotation) and a pipeline's owner (api.PipelineOwnerAnnotation).
// What that person may do is asked again each time the registry acts for
// them, since bindings are removed and users and service accounts deleted.

// actor is the identity a recorded name has now, with the groups its
// tokens would carry: its User's groups, or a service account's. gone
// says why it has none: the user or service account no longer exists, so
// bindings that still name it count for nothing. An error is a failure
// to find out.
func (r *Registry) actor(ctx context.Context, name string) (who identity.Info, gone string, err error) {
	if p, sa, ok := api.SplitServiceAccountUser(name); ok {
		if _, err := r.cfg.Store.Get(ctx, api.ServiceAccounts, p, sa); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return identity.Info{}, "service account " + name + " no longer exists", nil
			}
			return identity.Info{}, "", err
		}
		return identity.Info{Name: name, Groups: []string{identity.GroupAuthenticated, identity.GroupServiceAccounts, identity.GroupServiceAccounts + ":" + p}}, "", nil
	}
	groups := []string{identity.GroupAuthenticated}
	o, err := r.cfg.Store.Get(ctx, api.Users, "", name)
	switch {
	case err == nil:
		groups = append(groups, o.(*api.User).Groups...)
	case errors.Is(err, store.ErrNotFound) && name == identity.AdminUser:
		// The built-in admin's User is made again at every start.
	case errors.Is(err, store.ErrNotFound):
		return identity.Info{}, "user " + name + " no longer exists", nil
	default:
		return identity.Info{}, "", err
	}
	return identity.Info{Name: name, Groups: groups}, "", nil
}

// pullDenied says why the recorded name may not pull from project now, or
// "" if it may (the project is public, or the name holds get
// imagestreams/layers there). An error is a failure to find out.
func (r *Registry) pullDenied(ctx context.Context, name, project string) (string, error) {
	p, err := r.cfg.Project(ctx, project)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if err == nil && p.Spec.Public {
		return "", nil
	}
	who, gone, err := r.actor(ctx, name)
	if gone != "" || err != nil {
		return gone, err
	}
	if ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: project}); ok {
		return "", nil
	}
	return fmt.Sprintf("%s may no longer pull from project %s (get imagestreams/layers); an admin of %s can grant it with `slipway policy add-role-to-user image-puller %s -n %s`", name, project, project, name, project), nil
}

// promoteDenied says why a pipeline owner may not promote into project
// now, or "" if they hold the promote permission there.
func (r *Registry) promoteDenied(ctx context.Context, owner, project string) (string, error) {
	who, gone, err := r.actor(ctx, owner)
	if gone != "" || err != nil {
		return gone, err
	}
	if ok, _ := r.cfg.Authz.Authorize(who, rbac.Attributes{Verb: "promote", Resource: "promotions", Namespace: project}); ok {
		return "", nil
	}
	return fmt.Sprintf("%s may no longer promote in project %s; an admin of %s must grant the promote permission (admin) there, or someone who holds it there must apply the pipeline again", owner, project, project), nil
}
