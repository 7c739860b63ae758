package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Cross-project image references (security review H2 and L4). A
// DeploymentConfig's ImageChange trigger and a BuildConfig's or Build's
// base image may name an image stream of another project. The controllers
// resolve those to digests, so the writer must be allowed to pull there,
// as for spec tags (admitSpecTags). The controllers check again, as the
// project's deployer and builder accounts, each time they resolve.

// mayPullFrom reports whether u may pull images of project: it is public,
// or u holds get imagestreams/layers there (image-puller); a mirror's
// repositories any signed-in user may pull.
func (s *Server) mayPullFrom(ctx context.Context, u identity.Info, project string) bool {
	if s.isMirror(project) {
		return !u.IsAnonymous()
	}
	if p, err := s.Project(ctx, project); err == nil && p.Spec.Public {
		return true
	}
	ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: project})
	return ok
}

// imageRef is one image a DeploymentConfig, BuildConfig or Build names in
// another project: field is where, project and name what.
type imageRef struct{ field, project, name string }

// foreignImageRefs lists the images obj names in projects other than ns.
// account is the platform account of ns that the controller resolves them
// as (deployer or builder).
func (s *Server) foreignImageRefs(obj api.Object, ns string) (refs []imageRef, account string) {
	reg, _ := s.registry.Load().(string)
	base := func(field string, st api.BuildStrategy) {
		from := st.BaseImage()
		if from == nil {
			return
		}
		if st.DockerStrategy != nil {
			field += ".dockerStrategy.from"
		} else {
			field += ".sourceStrategy.from"
		}
		if p := refProject(from, reg); p != "" && p != ns {
			refs = append(refs, imageRef{field, p, from.Name})
		}
	}
	switch o := obj.(type) {
	case *api.DeploymentConfig:
		account = "deployer"
		for i, t := range o.Spec.Triggers {
			if p := t.ImageChangeParams; t.Type == "ImageChange" && p != nil && p.From.Namespace != "" && p.From.Namespace != ns {
				refs = append(refs, imageRef{fmt.Sprintf("spec.triggers[%d].imageChangeParams.from", i), p.From.Namespace, p.From.Name})
			}
		}
	case *api.BuildConfig:
		account = "builder"
		base("spec.strategy", o.Spec.Strategy)
	case *api.Build:
		account = "builder"
		base("spec.strategy", o.Spec.Strategy)
	}
	return refs, account
}

// refProject is the project an image stream reference, or a DockerImage
// on the integrated registry (reg), names; "" when none.
func refProject(from *api.ObjectReference, reg string) string {
	switch from.Kind {
	case "ImageStreamTag", "ImageStreamImage":
		return from.Namespace
	case "DockerImage":
		if rest, ok := strings.CutPrefix(from.Name, reg+"/"); ok && reg != "" {
			p, _, _ := strings.Cut(rest, "/")
			return p
		}
	}
	return ""
}

// admitImageRefs refuses a DeploymentConfig, BuildConfig or Build that
// names an image of another project where the writer may not pull. A
// reference the stored object already had is left alone: the controllers
// check it again for the project's own account.
func (s *Server) admitImageRefs(ctx context.Context, u identity.Info, ns string, obj api.Object) error {
	refs, account := s.foreignImageRefs(obj, ns)
	if len(refs) == 0 {
		return nil
	}
	m := obj.GetObjectMeta()
	r := resourceOf(obj)
	had := map[imageRef]bool{}
	if o, err := s.store.Get(ctx, r, ns, m.Name); err == nil {
		old, _ := s.foreignImageRefs(o, ns)
		for _, ref := range old {
			had[ref] = true
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	for _, ref := range refs {
		if had[ref] || s.mayPullFrom(ctx, u, ref.project) {
			continue
		}
		sa := api.ServiceAccountUser(ns, account)
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden,
			"%s %s: %s names image %s of project %s, where %s may not pull; ask an admin of %s to grant image-puller to you and to this project's %s account: `slipway policy add-role-to-user image-puller %s -n %s` and `slipway policy add-role-to-user image-puller %s -n %s`",
			r.Kind, m.Name, ref.field, ref.name, ref.project, u.Name, ref.project, account, u.Name, ref.project, sa, ref.project)
	}
	return nil
}

// resourceOf is the resource of the objects admitImageRefs looks at.
func resourceOf(obj api.Object) *api.Resource {
	switch obj.(type) {
	case *api.DeploymentConfig:
		return api.DeploymentConfigs
	case *api.BuildConfig:
		return api.BuildConfigs
	case *api.Build:
		return api.Builds
	}
	return nil
}
