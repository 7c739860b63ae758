package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Tenant isolation admission (issue 11): what a project's users write may
// not reach into another project, nor forge what the platform records.

// mayPromote reports whether u holds the promote permission in project,
// the permission approving a promotion into it needs.
func (s *Server) mayPromote(u identity.Info, project string) bool {
	ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "promote", Resource: "promotions", Namespace: project})
	return ok
}

// clusterWide reports whether u holds at cluster scope what at asks, such
// as a cluster admin does; a project's bindings do not count.
func (s *Server) clusterWide(u identity.Info, at rbac.Attributes) bool {
	at.Namespace = ""
	ok, _ := s.authz.Authorize(u, at)
	return ok
}

// infoOf is the identity of a user or service account by name, with the
// groups its tokens would carry, for acting as a pipeline's owner.
func (s *Server) infoOf(ctx context.Context, name string) identity.Info {
	groups := []string{identity.GroupAuthenticated}
	if p, _, ok := api.SplitServiceAccountUser(name); ok {
		groups = append(groups, identity.GroupServiceAccounts, identity.GroupServiceAccounts+":"+p)
	} else if o, ok := s.informers[api.Users].Get("", name); ok {
		groups = append(groups, o.(*api.User).Groups...)
	} else if o, err := s.store.Get(ctx, api.Users, "", name); err == nil {
		groups = append(groups, o.(*api.User).Groups...)
	}
	return identity.Info{Name: name, Groups: groups}
}

// admitPipeline lets a pipeline name only projects where its writer holds
// the promote permission: its promotions read the source stage's images
// and move the target stage's tag with the platform's promoter account.
// The writer becomes the pipeline's owner (api.PipelineOwnerAnnotation),
// whom promotions act as. A write that leaves the spec as it was keeps the
// owner and needs no such right.
func (s *Server) admitPipeline(ctx context.Context, u identity.Info, p *api.Pipeline) error {
	owner := u.Name
	if o, err := s.store.Get(ctx, api.Pipelines, p.Namespace, p.Name); err == nil {
		old := o.(*api.Pipeline)
		if reflect.DeepEqual(old.Spec, p.Spec) && api.PipelineOwner(old) != "" {
			owner = api.PipelineOwner(old)
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if owner == u.Name {
		var missing []string
		for _, st := range p.Spec.Stages {
			if !slices.Contains(missing, st.Project) && !s.mayPromote(u, st.Project) {
				missing = append(missing, st.Project)
			}
		}
		if len(missing) > 0 {
			return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "pipeline %s names project %s, where %s may not promote: a pipeline may name only projects where its author holds the promote permission (admin), since its promotions read from and push into them; ask an admin of %s to grant you admin there or to write the pipeline", p.Name, missing[0], u.Name, missing[0])
		}
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[api.PipelineOwnerAnnotation] = owner
	return nil
}

// mayOwnStage reports whether a pipeline owner may still own a stage in
// project (api.PromotedTagFor).
func (s *Server) mayOwnStage(ctx context.Context) func(owner, project string) bool {
	return func(owner, project string) bool { return s.mayPromote(s.infoOf(ctx, owner), project) }
}

// admitStatus limits status writes by project users. Status is what
// controllers and nodes observed; they write it through the store, and
// cluster admins may write it all. RBAC gives project users only the
// rbac.UserStatus subresources, and of those this admits only what the
// CLI changes: a build config's lastVersion (start-build), a build's
// cancelled (cancel-build), and an image stream tag's deletion or
// rollback to an image the tag already held, stamped with the server's
// time and the writer's name (so history cannot be backdated past a
// stage's minSoak).
func (s *Server) admitStatus(ctx context.Context, u identity.Info, info *requestInfo, obj api.Object) error {
	res := info.Resource
	if s.clusterWide(u, rbac.Attributes{Verb: info.Verb, Resource: res.Name, Subresource: rbac.StatusSubresource}) {
		return nil
	}
	m := obj.GetObjectMeta()
	o, err := s.store.Get(ctx, res, m.Namespace, m.Name)
	if err != nil {
		return err
	}
	if rv := o.GetObjectMeta().ResourceVersion; m.ResourceVersion != "" && m.ResourceVersion != rv {
		// Judged against what the writer saw, not what came since.
		return fmt.Errorf("%s %q: the write is for resourceVersion %s but the object is at %s; read it again: %w", res.Kind, m.Name, m.ResourceVersion, rv, store.ErrConflict)
	}
	refuse := func(format string, args ...any) error {
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s %s: %s; the rest of its status is the platform's to write", res.Kind, m.Name, fmt.Sprintf(format, args...))
	}
	switch cur := o.(type) {
	case *api.BuildConfig:
		next := obj.(*api.BuildConfig).Status
		if next.LastTriggeredImage != cur.Status.LastTriggeredImage || next.LastVersion < cur.Status.LastVersion {
			return refuse("you may only raise status.lastVersion (slipway start-build)")
		}
	case *api.Build:
		next := obj.(*api.Build).Status
		want := cur.Status
		want.Cancelled = want.Cancelled || next.Cancelled
		if !sameJSON(next, want) {
			return refuse("you may only set status.cancelled (slipway cancel-build)")
		}
	case *api.ImageStream:
		return s.admitTagHistory(u, obj.(*api.ImageStream), cur, refuse)
	default:
		return refuse("only controllers and nodes write it")
	}
	return nil
}

// admitTagHistory lets a user delete a tag's history or put an image the
// tag already held back at its head; every other change is refused.
func (s *Server) admitTagHistory(u identity.Info, next, cur *api.ImageStream, refuse func(string, ...any) error) error {
	if next.Status.DockerImageRepository != cur.Status.DockerImageRepository {
		return refuse("status.dockerImageRepository is set by the registry")
	}
	old := map[string]api.NamedTagEventList{}
	for _, t := range cur.Status.Tags {
		old[t.Tag] = t
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i := range next.Status.Tags {
		t := &next.Status.Tags[i]
		prev, ok := old[t.Tag]
		if !ok {
			return refuse("tag %s has no history to change; push, tag or import an image to make it", t.Tag)
		}
		if !sameJSON(t.Conditions, prev.Conditions) {
			return refuse("the conditions of tag %s are the importer's", t.Tag)
		}
		added := len(t.Items) - len(prev.Items)
		if added < 0 || !sameJSON(t.Items[added:], prev.Items) {
			return refuse("the history of tag %s may only be deleted, or gain at its head an image it held before (slipway rollback)", t.Tag)
		}
		for j := range t.Items[:added] {
			ev := &t.Items[j]
			held := slices.ContainsFunc(prev.Items, func(e api.TagEvent) bool {
				return e.Image == ev.Image && e.DockerImageReference == ev.DockerImageReference
			})
			if !held {
				return refuse("tag %s never held %s; push or tag it instead", t.Tag, ev.Image)
			}
			ev.Created, ev.By = now, u.Name
		}
	}
	return nil
}

// sameJSON compares what two values say on the wire, so that times decoded
// from different requests compare as written and a nil list equals an
// empty one.
func sameJSON(a, b any) bool {
	wire := func(v any) string {
		j, err := json.Marshal(v)
		if err != nil {
			return "error: " + err.Error()
		}
		if string(j) == "null" {
			return "[]"
		}
		return string(j)
	}
	return wire(a) == wire(b)
}

// ExternalEndpoints is the permission, held cluster-wide (a ClusterRole
// bound with a ClusterRoleBinding; cluster-admin holds it), to point a
// service's manual Endpoints at addresses that are not pods of its
// project, such as a database outside the cluster:
//
//	rules: [{verbs: [create], resources: [endpoints/external]}]
//
// A RoleBinding in a project does not grant it.
var ExternalEndpoints = rbac.Attributes{Verb: "create", Resource: "endpoints", Subresource: "external"}

// admitEndpoints keeps Endpoints from becoming a relay into places their
// project may not reach: the service proxy dials them from the node, as
// root, in the host's network. The Endpoints of a service with a selector
// are the endpoints controller's alone. Manual ones (for a service without
// a selector) may name pods of the same project, or, for someone holding
// ExternalEndpoints, other addresses; never loopback, link-local,
// unspecified, multicast or service addresses.
func (s *Server) admitEndpoints(ctx context.Context, u identity.Info, ep *api.Endpoints) error {
	o, err := s.store.Get(ctx, api.Services, ep.Namespace, ep.Name)
	switch {
	case err == nil && len(o.(*api.Service).Spec.Selector) > 0:
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "the endpoints of service %s are kept by the endpoints controller from its selector; to list addresses by hand, remove the service's selector first", ep.Name)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	_, serviceNet, err := net.ParseCIDR(s.cfg.ServiceCIDR)
	if err != nil {
		return err
	}
	var podIPs map[string]bool
	external := s.clusterWide(u, ExternalEndpoints)
	var fe api.FieldErrors
	for i, sub := range ep.Subsets {
		for j, a := range sub.Addresses {
			field := fmt.Sprintf("subsets[%d].addresses[%d].ip", i, j)
			ip := net.ParseIP(a.IP)
			switch {
			case ip == nil:
				fe.Add(field, api.FieldValueInvalid, "%q is not an IP address", a.IP)
			case ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(), ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
				fe.Add(field, api.FieldValueInvalid, "%s is a loopback, link-local, unspecified or multicast address; endpoints name pods or outside services", a.IP)
			case serviceNet.Contains(ip):
				fe.Add(field, api.FieldValueInvalid, "%s is in the service range %s; point at the pods behind that service instead", a.IP, s.cfg.ServiceCIDR)
			case external:
			default:
				if podIPs == nil {
					if podIPs, err = s.podIPs(ctx, ep.Namespace); err != nil {
						return err
					}
				}
				if !podIPs[ip.String()] {
					return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "endpoints %s: %s (%s) is not a pod of project %s; manual endpoints may name only this project's pods, and an outside address needs a cluster admin (create endpoints/external, cluster-wide)", ep.Name, a.IP, field, ep.Namespace)
				}
			}
		}
	}
	if len(fe) > 0 {
		return fe.Invalid(api.EndpointsResource.Kind, ep.Name)
	}
	return nil
}

// podIPs are the addresses of project ns's pods.
func (s *Server) podIPs(ctx context.Context, ns string) (map[string]bool, error) {
	items, _, err := s.store.List(ctx, api.Pods, ns, store.ListOptions{})
	if err != nil {
		return nil, err
	}
	ips := map[string]bool{}
	for _, o := range items {
		if ip := net.ParseIP(o.(*api.Pod).Status.PodIP); ip != nil {
			ips[ip.String()] = true
		}
	}
	return ips, nil
}

// admitService keeps spec.clusterIP the allocator's (L9): every node's
// proxy listens on it, so a chosen address could duplicate another
// project's and take its traffic after a proxy restart. A write that
// leaves clusterIP out keeps the assigned one; changing an assigned one
// is refused. Only a cluster admin may choose one, and not one in use.
func (s *Server) admitService(ctx context.Context, u identity.Info, svc *api.Service) error {
	cur := ""
	if o, err := s.store.Get(ctx, api.Services, svc.Namespace, svc.Name); err == nil {
		cur = o.(*api.Service).Spec.ClusterIP
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	want := svc.Spec.ClusterIP
	switch {
	case cur != "" && want == "":
		svc.Spec.ClusterIP = cur
		return nil
	case want == cur, want == "", want == "None" && cur == "":
		return nil
	case cur != "":
		return badField("spec.clusterIP", "service %s has cluster IP %s, assigned by the server; it cannot change: leave spec.clusterIP out, or delete and re-create the service for a new address", svc.Name, cur)
	case !s.clusterWide(u, rbac.Attributes{Verb: "create", Resource: "services"}):
		return badField("spec.clusterIP", "the server assigns cluster IPs from the service range; leave spec.clusterIP out (or set \"None\" for no address)")
	}
	if net.ParseIP(want) == nil {
		return badField("spec.clusterIP", "%q is not an IP address", want)
	}
	items, _, err := s.store.List(ctx, api.Services, "", store.ListOptions{})
	if err != nil {
		return err
	}
	for _, o := range items {
		if other := o.(*api.Service); other.Spec.ClusterIP == want && (other.Namespace != svc.Namespace || other.Name != svc.Name) {
			return badField("spec.clusterIP", "cluster IP %s is taken by service %s/%s; leave spec.clusterIP out to get a free one", want, other.Namespace, other.Name)
		}
	}
	return nil
}

// HostPorts is the permission, held cluster-wide (a ClusterRole bound
// with a ClusterRoleBinding; cluster-admin holds it), to publish a pod's
// port on its node with hostPort (L14):
//
//	rules: [{verbs: [create], resources: [pods/hostport]}]
//
// A host port is a DNAT rule in the node's network namespace: it can
// capture traffic for a port the node itself serves (a plain-HTTP agent,
// say) and it is shared by every project on that node, so it is the
// cluster's to hand out, not a project's. A RoleBinding does not grant
// it. The host namespace fields (network, PID, IPC) and host paths are
// admitted with the rest of the pod's security (podsecurity.go).
var HostPorts = rbac.Attributes{Verb: "create", Resource: "pods", Subresource: "hostport"}

// admitHostPorts refuses a pod, or a replication controller or deployment
// config whose template makes pods, that publishes a host port the
// object did not already publish, unless the writer holds HostPorts.
// Pods made from templates by the controllers go through the store, so
// checking every API write of the three kinds covers every path that
// creates a pod. A write that keeps the host ports as they were (scaling
// an admin's deployment config, a new image) needs no such right.
func (s *Server) admitHostPorts(ctx context.Context, u identity.Info, info *requestInfo, obj api.Object) error {
	want := hostPorts(obj)
	if len(want) == 0 {
		return nil
	}
	m := obj.GetObjectMeta()
	had := map[string]bool{}
	if info.Verb != "create" {
		if o, err := s.store.Get(ctx, info.Resource, m.Namespace, m.Name); err == nil {
			for _, p := range hostPorts(o) {
				had[p.key] = true
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	for _, p := range want {
		if had[p.key] {
			continue
		}
		if s.clusterWide(u, HostPorts) {
			return nil
		}
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s %s: %s asks for host port %s, which publishes the port on the node for every project there; only a cluster admin (create pods/hostport, cluster-wide) may. Leave hostPort out and reach the pod through a Service instead", info.Resource.Kind, m.Name, p.field, p.key)
	}
	return nil
}

type hostPort struct{ key, field string }

// hostPorts lists the host ports a pod, or the pod template of a
// replication controller or deployment config, publishes.
func hostPorts(obj api.Object) []hostPort {
	var spec *api.PodSpec
	field := "spec"
	switch o := obj.(type) {
	case *api.Pod:
		spec = &o.Spec
	case *api.ReplicationController:
		if o.Spec.Template != nil {
			spec, field = &o.Spec.Template.Spec, "spec.template.spec"
		}
	case *api.DeploymentConfig:
		if o.Spec.Template != nil {
			spec, field = &o.Spec.Template.Spec, "spec.template.spec"
		}
	}
	if spec == nil {
		return nil
	}
	var out []hostPort
	for i, c := range spec.Containers {
		for j, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			proto := p.Protocol
			if proto == "" {
				proto = "TCP"
			}
			out = append(out, hostPort{key: fmt.Sprintf("%d/%s", p.HostPort, proto), field: fmt.Sprintf("%s.containers[%d].ports[%d].hostPort", field, i, j)})
		}
	}
	return out
}

// redact hides the inline webhook secrets of a build config from whoever
// may not update it (L5): the view role reads build configs, and with the
// secret could start builds through the webhook. Those who may update
// the config could set the secret anyway, so they see it. Secrets named
// by secretReference live in a Secret, which view cannot read. obj is
// changed in place; it must be the caller's own copy.
func (s *Server) redact(u identity.Info, obj api.Object) {
	if rt, ok := obj.(*api.Route); ok {
		s.redactRoute(u, rt)
		return
	}
	bc, ok := obj.(*api.BuildConfig)
	if !ok || !slices.ContainsFunc(bc.Spec.Triggers, func(t api.BuildTrigger) bool { return t.Secret != "" }) {
		return
	}
	if ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "update", Resource: "buildconfigs", Namespace: bc.Namespace, Name: bc.Name}); ok {
		return
	}
	for i := range bc.Spec.Triggers {
		if bc.Spec.Triggers[i].Secret != "" {
			bc.Spec.Triggers[i].Secret = api.RedactedSecret
		}
	}
}

// admitSecret folds a Secret's write-only stringData into its data, as
// Kubernetes does, so stringData is never stored.
func admitSecret(sec *api.Secret) {
	if len(sec.StringData) == 0 {
		sec.StringData = nil
		return
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	for k, v := range sec.StringData {
		sec.Data[k] = []byte(v)
	}
	sec.StringData = nil
}
