package apiserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Project returns a project from the cache, or from etcd when the cache
// has not seen it yet. Projects being deleted are reported as not found.
func (s *Server) Project(ctx context.Context, name string) (*api.Project, error) {
	o, ok := s.informers[api.Projects].Get("", name)
	if !ok {
		var err error
		if o, err = s.store.Get(ctx, api.Projects, "", name); err != nil {
			return nil, err
		}
	}
	p := o.(*api.Project)
	if p.DeletionTimestamp != nil {
		return nil, fmt.Errorf("project %q is being deleted: %w", name, store.ErrNotFound)
	}
	return p, nil
}

// createProject creates a project and makes its creator the project's admin,
// as OpenShift's self-provisioner flow does.
func (s *Server) createProject(ctx context.Context, u identity.Info, p *api.Project) error {
	// Reserved names (vulndb, slipway-*, …) are the platform's: only a
	// cluster admin, who may delete any project, creates them.
	clusterAdmin, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "delete", Resource: "projects"})
	if err := api.CheckProjectName(p.Name, clusterAdmin); err != nil {
		return err
	}
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[api.ProjectRequesterAnnotation] = u.Name
	p.Status = api.ProjectStatus{Phase: api.ProjectActive}
	p.DeletionTimestamp = nil
	if max := s.cfg.MaxProjectsPerUser; !clusterAdmin && max > 0 {
		// Counted from the cache, under a lock that also waits for the
		// cache to hold the new project, so one user's creates on this
		// server never overshoot; creates spread over N API servers at
		// the same instant can overshoot by at most N-1.
		s.projectMu.Lock()
		defer s.projectMu.Unlock()
		owner := s.projectOwner(u.Name)
		if n := s.projectsRequestedBy(owner); n >= max {
			return api.NewStatus(http.StatusForbidden, api.ReasonForbidden,
				"%s already has %d projects (counting those its service accounts made), the most the platform allows a user; delete one no longer needed (slipway delete project NAME), or ask a cluster admin to raise it (slipway start --max-projects-per-user)", owner, n)
		}
	}
	// The project's UIDs (api.UIDRangeAnnotation) are the server's to
	// choose: what the request says is replaced.
	r, err := s.reserveUIDRange(ctx, p.Name)
	if err != nil {
		return err
	}
	p.Annotations[api.UIDRangeAnnotation] = r.String()
	if err := s.store.Create(ctx, api.Projects, p); err != nil {
		s.releaseUIDRange(context.WithoutCancel(ctx), r.String())
		return err
	}
	s.waitCache(ctx, api.Projects, revisionOf(p))
	b := rbac.AdminBinding(p.Name, u.Name)
	err = s.store.Create(ctx, api.RoleBindings, b)
	if errors.Is(err, store.ErrExists) {
		// Left over from a project of the same name whose deletion was
		// interrupted; the finalizer removes it, so replace it now.
		err = s.store.Update(ctx, api.RoleBindings, b, store.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("project %q was created but its admin binding failed; delete and create it again: %w", p.Name, err)
	}
	s.waitCache(ctx, api.RoleBindings, revisionOf(b))
	return nil
}

// projectsRequestedBy counts the projects that are not being deleted and
// that user, or a service account of a project user owns, created.
func (s *Server) projectsRequestedBy(user string) int {
	n := 0
	for _, o := range s.informers[api.Projects].List("") {
		m := o.GetObjectMeta()
		if m.DeletionTimestamp == nil && s.projectOwner(m.Annotations[api.ProjectRequesterAnnotation]) == user {
			n++
		}
	}
	return n
}

// projectOwner is the user a project requester counts against: a service
// account counts against whoever created its project (and so on, a few
// levels up), so that service accounts cannot multiply a user's projects.
func (s *Server) projectOwner(requester string) string {
	for range 4 {
		ns, _, ok := api.SplitServiceAccountUser(requester)
		if !ok {
			break
		}
		o, ok := s.informers[api.Projects].Get("", ns)
		if !ok {
			break
		}
		up := o.GetObjectMeta().Annotations[api.ProjectRequesterAnnotation]
		if up == "" {
			break
		}
		requester = up
	}
	return requester
}

// keepRequester puts the stored requester and UID range back on a
// project being updated: they are the server's record of who created it
// and of the UIDs its pods run as.
func (s *Server) keepRequester(p *api.Project) {
	o, ok := s.informers[api.Projects].Get("", p.Name)
	if !ok {
		// Made on another API server and not in this cache yet: read
		// etcd, or the update would erase the requester.
		if got, err := s.store.Get(context.Background(), api.Projects, "", p.Name); err == nil {
			o, ok = got, true
		}
	}
	for _, key := range []string{api.ProjectRequesterAnnotation, api.UIDRangeAnnotation} {
		var was string
		if ok {
			was = o.GetObjectMeta().Annotations[key]
		}
		if was == "" {
			delete(p.Annotations, key)
			continue
		}
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[key] = was
	}
}

// deleteProject marks a project Terminating and then removes everything in
// it. If the server dies part way, the finalizer finishes the job at the
// next start.
func (s *Server) deleteProject(ctx context.Context, name string) (api.Object, error) {
	now := time.Now().UTC().Truncate(time.Second)
	obj, err := s.store.GuaranteedUpdate(ctx, api.Projects, "", name, store.UpdateOptions{MarkDeleted: true}, func(o api.Object) error {
		if o.GetObjectMeta().DeletionTimestamp == nil {
			o.GetObjectMeta().DeletionTimestamp = &now
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	marked := obj
	obj, err = s.store.GuaranteedUpdate(ctx, api.Projects, "", name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Project).Status.Phase = api.ProjectTerminating
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		// The finalizer saw the deletion timestamp and finished first.
		marked.(*api.Project).Status.Phase = api.ProjectTerminating
		obj, err = marked, nil
	}
	if err != nil {
		return nil, err
	}
	if err := s.finalizeProject(ctx, name); err != nil {
		return nil, err
	}
	return obj, nil
}

// finalizeProject deletes every namespaced object of a terminating project,
// the tokens of its service accounts, and then the project. It is
// idempotent, and leaves alone a project of the same name made after the
// deletion finished (the finalizer's queue holds names, not objects).
func (s *Server) finalizeProject(ctx context.Context, name string) error {
	o, err := s.store.Get(ctx, api.Projects, "", name)
	var uidRange string
	if err == nil && o.GetObjectMeta().DeletionTimestamp != nil {
		uidRange = o.GetObjectMeta().Annotations[api.UIDRangeAnnotation]
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Finished already, by the other path; wait for the caches below.
	case err != nil:
		return err
	case o.GetObjectMeta().DeletionTimestamp == nil:
		return nil
	default:
		owner := store.Owner{Resource: api.Projects, Name: name, UID: o.GetObjectMeta().UID}
		if err := s.deleteContents(ctx, owner); errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			// Finished by another server, and perhaps made again since:
			// what the new project holds is not ours to delete.
		} else if err != nil {
			return err
		}
	}
	// Whoever finished the deletion (this call or the finalizer), answer
	// only once this server's caches no longer hold anything of the
	// project (and its UID block is free), so the next request sees it gone.
	s.waitUntil(ctx, func() bool {
		_, has := s.informers[api.Projects].Get("", name)
		return !has && len(s.informers[api.RoleBindings].List(name)) == 0 &&
			len(s.informers[api.ServiceAccounts].List(name)) == 0 &&
			(uidRange == "" || !s.reservationHeld(ctx, uidRange, name))
	})
	return nil
}

// ProjectCleaner removes what a deleted project keeps outside the API's
// objects, such as its registry repositories. CleanProject must be
// idempotent: the finalizer calls it again after a crash or a failure.
type ProjectCleaner interface {
	CleanProject(ctx context.Context, project string) error
}

// deleteContents deletes a terminating project's objects, its service
// accounts' tokens, what it keeps outside etcd's objects (registry
// repositories and referrers, build logs), the subjects of other projects'
// bindings that name its service accounts, and then the project. Every
// etcd delete of the project's own objects is guarded by the project's
// incarnation (owner): another API server may have finished the deletion
// and a user made the project again since, and that new project's objects
// must survive this server's late finalizer. The steps outside the
// project's prefix first check that owner still exists (Terminating, so
// the registry and the API refuse new content in it).
func (s *Server) deleteContents(ctx context.Context, owner store.Owner) error {
	name := owner.Name
	var uidRange string
	if o, err := s.store.Get(ctx, api.Projects, "", name); err == nil && o.GetObjectMeta().UID == owner.UID {
		uidRange = o.GetObjectMeta().Annotations[api.UIDRangeAnnotation]
	}
	for _, r := range api.Resources() {
		if !r.Namespaced {
			continue
		}
		if _, err := s.store.DeleteAllOwned(ctx, r, name, owner); err != nil {
			return fmt.Errorf("deleting %s of project %q: %w", r.Name, name, err)
		}
	}
	sel := labels.SelectorFromSet(labels.Set{identity.ProjectLabel: name})
	toks, _, err := s.store.List(ctx, api.Tokens, "", store.ListOptions{Selector: sel})
	if err != nil {
		return err
	}
	for _, t := range toks {
		if _, err := s.store.Delete(ctx, api.Tokens, "", t.GetObjectMeta().Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	if err := s.unbindServiceAccounts(ctx, owner); err != nil {
		return err
	}
	if err := s.stillOwner(ctx, owner); err != nil {
		return err
	}
	if s.cfg.ProjectCleaner != nil {
		if err := s.cfg.ProjectCleaner.CleanProject(ctx, name); err != nil {
			return fmt.Errorf("removing the registry content of project %q: %w", name, err)
		}
	}
	if s.cfg.BuildLogs != "" {
		if err := os.RemoveAll(filepath.Join(s.cfg.BuildLogs, name)); err != nil {
			return fmt.Errorf("removing the build logs of project %q: %w", name, err)
		}
	}
	if err := s.store.DeleteOwned(ctx, owner); err != nil {
		return err
	}
	// Its UIDs are free again: the block was this project's alone, and a
	// project made since under the name has its own.
	s.releaseUIDRange(ctx, uidRange)
	return nil
}

// stillOwner fails with ErrNotFound or ErrConflict once owner is gone or
// was replaced by a project of the same name.
func (s *Server) stillOwner(ctx context.Context, owner store.Owner) error {
	o, err := s.store.Get(ctx, owner.Resource, "", owner.Name)
	if err != nil {
		return err
	}
	if o.GetObjectMeta().UID != owner.UID {
		return fmt.Errorf("project %q was made again: %w", owner.Name, store.ErrConflict)
	}
	return nil
}

// unbindServiceAccounts removes, from the bindings of every other project
// and from cluster bindings, the subjects that name a service account of
// the deleted project (system-promoter-PROJECT, say), and deletes the
// bindings left without subjects: a service account of the same name in a
// project made again later must not inherit them.
func (s *Server) unbindServiceAccounts(ctx context.Context, owner store.Owner) error {
	project := owner.Name
	names := func(subj api.Subject, bindingNS string) bool {
		switch subj.Kind {
		case api.SubjectServiceAccount:
			return cmp.Or(subj.Namespace, bindingNS) == project
		case api.SubjectUser:
			p, _, ok := api.SplitServiceAccountUser(subj.Name)
			return ok && p == project
		}
		return false
	}
	for _, r := range []*api.Resource{api.RoleBindings, api.ClusterRoleBindings} {
		list, _, err := s.store.List(ctx, r, "", store.ListOptions{})
		if err != nil {
			return err
		}
		for _, o := range list {
			meta := o.GetObjectMeta()
			if r.Namespaced && meta.Namespace == project || !slices.ContainsFunc(subjectsOf(o), func(subj api.Subject) bool { return names(subj, meta.Namespace) }) {
				continue
			}
			if err := s.stillOwner(ctx, owner); err != nil {
				return err
			}
			if err := s.dropSubjects(ctx, r, meta.Namespace, meta.Name, names); err != nil {
				return fmt.Errorf("removing project %q's service accounts from %s %s/%s: %w", project, r.Name, meta.Namespace, meta.Name, err)
			}
		}
	}
	return nil
}

// dropSubjects removes the subjects drop matches from one binding, and
// deletes the binding when none are left: it would grant nothing.
func (s *Server) dropSubjects(ctx context.Context, r *api.Resource, ns, name string, drop func(api.Subject, string) bool) error {
	for ctx.Err() == nil {
		cur, err := s.store.Get(ctx, r, ns, name)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		keep := slices.DeleteFunc(slices.Clone(subjectsOf(cur)), func(subj api.Subject) bool { return drop(subj, ns) })
		if len(keep) == len(subjectsOf(cur)) {
			return nil
		}
		if len(keep) == 0 {
			_, err = s.store.Delete(ctx, r, ns, name, cur.GetObjectMeta().ResourceVersion)
		} else {
			setSubjects(cur, keep)
			err = s.store.Update(ctx, r, cur, store.UpdateOptions{})
		}
		switch {
		case errors.Is(err, store.ErrConflict):
			continue
		case errors.Is(err, store.ErrNotFound):
			return nil
		default:
			return err
		}
	}
	return ctx.Err()
}

func subjectsOf(o api.Object) []api.Subject {
	switch b := o.(type) {
	case *api.RoleBinding:
		return b.Subjects
	case *api.ClusterRoleBinding:
		return b.Subjects
	}
	return nil
}

func setSubjects(o api.Object, subjects []api.Subject) {
	switch b := o.(type) {
	case *api.RoleBinding:
		b.Subjects = subjects
	case *api.ClusterRoleBinding:
		b.Subjects = subjects
	}
}

// waitUntil polls this server's caches for up to five seconds.
func (s *Server) waitUntil(ctx context.Context, done func() bool) {
	deadline := time.Now().Add(5 * time.Second)
	for !done() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// runProjectFinalizer finishes deletions that a crash or restart
// interrupted. It is level-based: every project seen with a deletion
// timestamp is finalized, however often it is seen.
func (s *Server) runProjectFinalizer(ctx context.Context) {
	queue := make(chan string, 1024)
	s.informers[api.Projects].AddHandler(func(ev store.Event) {
		if ev.Type != api.Deleted && ev.Object.GetObjectMeta().DeletionTimestamp != nil {
			select {
			case queue <- ev.Object.GetObjectMeta().Name:
			default:
			}
		}
	})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case name := <-queue:
				if err := s.finalizeProject(ctx, name); err != nil && ctx.Err() == nil {
					slog.Error("apiserver: finishing project deletion", "project", name, "err", err)
					time.AfterFunc(time.Second, func() {
						select {
						case queue <- name:
						default:
						}
					})
				}
			}
		}
	}()
}
