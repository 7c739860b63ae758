package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/metadata"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// serveResource is the one generic REST handler behind every resource.
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request) {
	info, err := parseRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	setInfo(r, info)
	res := info.Resource
	switch {
	case info.Subresource == "":
	case info.Subresource == "status" && res.HasStatus && info.Verb != "create" && info.Verb != "delete":
	case info.Subresource == "token" && res == api.ServiceAccounts && info.Verb == "create":
	case res == api.Pods && (info.Subresource == "log" && info.Verb == "get" || info.Subresource == "exec" && info.Verb == "create"):
	case res == api.Pods && (info.Subresource == "pullcredentials" || info.Subresource == "admission") && info.Verb == "create":
	case res == api.Nodes && info.Subresource == "bootstrap-token" && info.Verb == "create":
	case res == api.Promotions && info.Subresource == "approve" && info.Verb == "create":
		s.approve(w, r, info)
		return
	case res == api.SigningKeys && info.Subresource == "sign" && info.Verb == "create":
	case res == api.Builds && info.Subresource == "log" && info.Verb == "get":
	case res == api.BuildConfigs && info.Subresource == "rebase" && info.Verb == "create":
	case res == api.Users && info.Subresource == "revoke-tokens" && info.Verb == "create":
	default:
		writeStatus(w, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "%s has no subresource %q for %s", res.Name, info.Subresource, r.Method))
		return
	}
	u := identity.FromContext(r.Context())
	filter, filtered := func(api.Object) bool { return true }, false
	// keepDeleted: a filtered watch still sends the DELETED event of an
	// object it has shown when the filter refuses it by then.
	keepDeleted := true
	if node, ok := nodeName(u); ok {
		// Nodes are authorized by what their pods need, not RBAC.
		opts, _, err := listOptions(r, info)
		if err == nil {
			var keep func(api.Object) bool
			if keep, err = s.authorizeNode(r.Context(), node, info, opts); keep != nil {
				filter, filtered = keep, true
			}
		}
		if err != nil {
			writeError(w, err)
			return
		}
	} else if res == api.Projects && info.Name == "" && (info.Verb == "list" || info.Verb == "watch") {
		// Everyone may list projects, and sees the ones they can read,
		// as with OpenShift's project list.
		if ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: info.Verb, Resource: res.Name}); !ok {
			filtered = true
			filter = func(o api.Object) bool {
				ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "get", Resource: "projects", Namespace: o.GetObjectMeta().Name})
				return ok
			}
		}
	} else if res.Namespaced && info.Namespace == "" && (info.Verb == "list" || info.Verb == "watch") && !s.clusterWide(u, rbac.Attributes{Verb: info.Verb, Resource: res.Name}) {
		// Across projects, for a user without the verb in every project:
		// the objects of the projects where they have it, each object
		// (and each event of a watch, as it is sent) authorized in its own
		// project, so rights taken away end the events at once. An event
		// of a project the user may no longer read is never sent, not even
		// the DELETED of an object they saw: it would carry the object as
		// it became after their access ended.
		filtered, keepDeleted = true, false
		filter = func(o api.Object) bool {
			ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: info.Verb, Resource: res.Name, Namespace: o.GetObjectMeta().Namespace})
			return ok
		}
	} else {
		at := rbac.Attributes{Verb: info.Verb, Resource: res.Name, Subresource: info.Subresource, Namespace: info.authzNamespace(), Name: info.Name}
		if ok, why := s.authz.Authorize(u, at); !ok {
			writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", why))
			return
		}
		if err := s.authorizeQuotaPolicy(u, info); err != nil {
			writeError(w, err)
			return
		}
	}
	if res.Namespaced && info.Namespace != "" {
		if err := s.checkProject(r.Context(), info.Namespace, info.Verb == "create"); err != nil {
			writeError(w, err)
			return
		}
	}
	ctx := r.Context()
	if res == api.Pods && (info.Subresource == "log" || info.Subresource == "exec") {
		s.servePod(w, r, info)
		return
	}
	if res == api.Builds && info.Subresource == "log" {
		s.buildLog(w, r, info)
		return
	}
	if res == api.SigningKeys && info.Subresource == "sign" {
		s.sign(w, r, info)
		return
	}
	switch {
	case res == api.Pods && info.Subresource == "pullcredentials":
		s.pullCredentials(w, r, info)
		return
	case res == api.Pods && info.Subresource == "admission":
		s.admission(w, r, info)
		return
	case res == api.Nodes && info.Subresource == "bootstrap-token":
		s.createBootstrapToken(w, r, info)
		return
	case res == api.BuildConfigs && info.Subresource == "rebase":
		s.rebase(w, r, info)
		return
	}
	switch info.Verb {
	case "get":
		obj, err := s.store.Get(ctx, res, info.Namespace, info.Name)
		if err != nil {
			writeError(w, err)
			return
		}
		s.redact(u, obj)
		writeJSON(w, http.StatusOK, obj)
	case "list":
		s.list(w, r, info, filter, filtered)
	case "watch":
		s.watch(w, r, info, filter, filtered, keepDeleted)
	case "create":
		if info.Subresource == "token" {
			s.createToken(w, r, info)
			return
		}
		if info.Subresource == "revoke-tokens" {
			s.revokeUserTokens(w, r, info)
			return
		}
		s.create(w, r, info)
	case "update":
		s.update(w, r, info)
	case "patch":
		s.patch(w, r, info)
	case "delete":
		s.delete(w, r, info)
	}
}

// checkProject answers 404 for a project that does not exist, and, for
// creates, 403 for one that is being deleted.
func (s *Server) checkProject(ctx context.Context, name string, creating bool) error {
	o, ok := s.informers[api.Projects].Get("", name)
	if !ok {
		var err error
		if o, err = s.store.Get(ctx, api.Projects, "", name); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "project %q not found; create it with `slipway new-project %s`", name, name)
			}
			return err
		}
	}
	if creating && o.GetObjectMeta().DeletionTimestamp != nil {
		return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "project %q is being deleted; nothing new can be created in it", name)
	}
	return nil
}

// listOptions reads a list's or watch's query. A field selector other
// than metadata.name (spec.nodeName of pods) comes back as a filter of
// the answer, nil when there is none.
func listOptions(r *http.Request, info *requestInfo) (store.ListOptions, func(api.Object) bool, error) {
	opts, nodeName, err := listQuery(r, info)
	if err != nil || nodeName == "" {
		return opts, nil, err
	}
	return opts, func(o api.Object) bool { return o.(*api.Pod).Spec.NodeName == nodeName }, nil
}

func listQuery(r *http.Request, info *requestInfo) (opts store.ListOptions, nodeName string, err error) {
	q := r.URL.Query()
	opts = store.ListOptions{Continue: q.Get("continue")}
	if sel := q.Get("labelSelector"); sel != "" {
		parsed, err := labels.Parse(sel)
		if err != nil {
			return opts, "", api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "labelSelector %q: %v", sel, err)
		}
		opts.Selector = parsed
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.ParseInt(l, 10, 64)
		if err != nil || n < 0 {
			return opts, "", api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "limit %q must be a non-negative number", l)
		}
		opts.Limit = n
	}
	opts.Name = info.Name
	if fs := q.Get("fieldSelector"); fs != "" {
		for _, term := range strings.Split(fs, ",") {
			field, value, ok := strings.Cut(term, "=")
			switch {
			case !ok || value == "" || strings.ContainsAny(value, "=!"):
			case field == "metadata.name":
				opts.Name = value
				continue
			case field == "spec.nodeName" && info.Resource == api.Pods:
				nodeName = value
				continue
			}
			return opts, "", api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "fieldSelector %q: only metadata.name=NAME, and spec.nodeName=NODE for pods, are supported", fs)
		}
	}
	return opts, nodeName, nil
}

// both keeps what both filters keep; b may be nil.
func both(a, b func(api.Object) bool) func(api.Object) bool {
	if b == nil {
		return a
	}
	return func(o api.Object) bool { return a(o) && b(o) }
}

type list struct {
	api.TypeMeta `json:",inline"`
	Metadata     api.ListMeta `json:"metadata"`
	Items        []api.Object `json:"items"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, info *requestInfo, keep func(api.Object) bool, filtered bool) {
	opts, fieldKeep, err := listOptions(r, info)
	if err != nil {
		writeError(w, err)
		return
	}
	filtered = filtered || fieldKeep != nil
	keep = both(keep, fieldKeep)
	// Lists come in pages of at most MaxListLimit (L15), asked for or not:
	// the rest follows with the continue token, read at the same
	// revision, as with Kubernetes' paged lists.
	if opts.Limit == 0 || opts.Limit > s.cfg.MaxListLimit {
		opts.Limit = s.cfg.MaxListLimit
	}
	// The store fills each page with kept objects only, so a continue
	// token names an object this caller was given: a token naming the
	// last key read would show a cross-project list the names of objects
	// in projects the caller may not read.
	if filtered {
		opts.Keep = keep
	}
	items, meta, err := s.store.List(r.Context(), info.Resource, info.Namespace, opts)
	if err != nil {
		writeError(w, err)
		return
	}
	out := list{TypeMeta: api.TypeMeta{APIVersion: api.APIVersion, Kind: info.Resource.Kind + "List"}, Metadata: meta, Items: []api.Object{}}
	u := identity.FromContext(r.Context())
	for _, o := range items {
		if keep(o) {
			s.redact(u, o)
			out.Items = append(out.Items, o)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// WatchEvent is one line of a watch stream.
type WatchEvent struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request, info *requestInfo, keep func(api.Object) bool, filtered, keepDeleted bool) {
	u := identity.FromContext(r.Context())
	release, err := s.holdWatch(u.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	opts, fieldKeep, err := listOptions(r, info)
	if err != nil {
		writeError(w, err)
		return
	}
	if fieldKeep != nil {
		keep, filtered = both(keep, fieldKeep), true
	}
	q := r.URL.Query()
	rv, err := store.ParseResourceVersion(q.Get("resourceVersion"))
	if err != nil {
		writeError(w, err)
		return
	}
	// Watches end when the request does, or when the server shuts down,
	// which would otherwise wait for them forever.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.runCtx, cancel)()
	// Each API watch gets an etcd watch stream of its own: etcd's client
	// keys streams by the context's gRPC metadata. Ending the only watch
	// on a stream closes the stream without a cancel request, and the
	// informers' shared stream never sees users' watches come and go.
	// With the embedded etcd's in-process client, a burst of cancel
	// requests on a shared stream deadlocks it for good (etcd-io/etcd
	// #18879, #20716; seen here when a user closed 64 watches at once),
	// which would stop every cache and watch of this server.
	ctx = metadata.AppendToOutgoingContext(ctx, "slipway-api-watch", strconv.FormatUint(s.watchSeq.Add(1), 10))
	if t := q.Get("timeoutSeconds"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n <= 0 {
			writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "timeoutSeconds %q must be a positive number", t))
			return
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(n)*time.Second)
		defer cancel()
	}
	// Without a resourceVersion the stream starts with the objects that
	// exist, read here in pages of MaxListLimit at one revision (L15), so
	// a large collection is never held in memory whole.
	listing := rv == 0
	page := store.ListOptions{Selector: opts.Selector, Name: opts.Name, Limit: s.cfg.MaxListLimit}
	var first []api.Object
	if listing {
		items, meta, err := s.store.List(ctx, info.Resource, info.Namespace, page)
		if err != nil {
			writeError(w, err)
			return
		}
		first, page.Continue = items, meta.Continue
		if rv, err = store.ParseResourceVersion(meta.ResourceVersion); err != nil {
			writeError(w, err)
			return
		}
	}
	ch, err := s.store.Watch(ctx, info.Resource, info.Namespace, rv, opts)
	if err != nil {
		writeError(w, err)
		return
	}
	s.metrics.watches.Inc()
	defer s.metrics.watches.Dec()
	w.Header().Set("Content-Type", "application/json;stream=watch")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	// A filtered stream remembers what it has shown, so the DELETED event
	// of an object the user could see still arrives after their access
	// went away with it (a project's bindings go before the project).
	sent := map[string]bool{}
	if filtered && keepDeleted && !listing {
		if items, _, err := s.store.List(ctx, info.Resource, info.Namespace, opts); err == nil {
			for _, o := range items {
				if keep(o) {
					sent[cacheKeyOf(o)] = true
				}
			}
		}
	}
	enc := json.NewEncoder(w)
	send := func(ev store.Event) bool {
		var line WatchEvent
		if ev.Type == api.Error {
			line = WatchEvent{Type: api.Error, Object: toStatus(ev.Err)}
		} else {
			name := cacheKeyOf(ev.Object)
			switch {
			case ev.Type == api.Deleted && sent[name] && keepDeleted:
				delete(sent, name)
			case !keep(ev.Object):
				return true
			case ev.Type == api.Deleted:
			default:
				if filtered && keepDeleted {
					sent[name] = true
				}
			}
			s.redact(u, ev.Object)
			line = WatchEvent{Type: ev.Type, Object: ev.Object}
		}
		return enc.Encode(line) == nil
	}
	for listing {
		for _, o := range first {
			if !send(store.Event{Type: api.Added, Object: o}) {
				return
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		if page.Continue == "" {
			break
		}
		var err error
		if first, page.Continue, err = s.listPage(ctx, info, page); err != nil {
			send(store.Event{Type: api.Error, Err: err})
			return
		}
	}
	for ev := range ch {
		if !send(ev) {
			return
		}
		// Flush when the stream is idle, so bursts go out in few writes.
		if len(ch) == 0 && flusher != nil {
			flusher.Flush()
		}
	}
}

// cacheKeyOf is an object's project/name.
func cacheKeyOf(o api.Object) string {
	m := o.GetObjectMeta()
	return m.Namespace + "/" + m.Name
}

// listPage reads the page of a paged list that opts.Continue names.
func (s *Server) listPage(ctx context.Context, info *requestInfo, opts store.ListOptions) ([]api.Object, string, error) {
	items, meta, err := s.store.List(ctx, info.Resource, info.Namespace, opts)
	return items, meta.Continue, err
}

// holdWatch counts a watch of user's, or refuses it with 429 when the
// user already holds MaxWatchesPerUser on this server (L15). Release it
// when the watch ends.
func (s *Server) holdWatch(user string) (release func(), err error) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if n := s.watching[user]; n >= s.cfg.MaxWatchesPerUser {
		st := api.NewStatus(http.StatusTooManyRequests, api.ReasonTooManyRequests, "%s has %d watches open on this API server, the most one user may hold (%d); close some (each `slipway get -w`, `logs -f` or a client's informer holds one) and try again", user, n, s.cfg.MaxWatchesPerUser)
		st.Details = &api.StatusDetails{RetryAfterSeconds: watchRetryAfter}
		return nil, st
	}
	s.watching[user]++
	return sync.OnceFunc(func() {
		s.watchMu.Lock()
		defer s.watchMu.Unlock()
		if s.watching[user]--; s.watching[user] <= 0 {
			delete(s.watching, user)
		}
	}), nil
}

// watchRetryAfter is how long a user at the watch cap is told to wait.
const watchRetryAfter = 5

// decodeObject reads a body into a new object of the request's resource
// and reconciles its name and project with the path.
func (s *Server) decodeObject(w http.ResponseWriter, r *http.Request, info *requestInfo) (api.Object, error) {
	data, _, err := readBody(w, r, s.cfg.MaxBodyBytes, false)
	if err != nil {
		return nil, err
	}
	obj := info.Resource.NewObject()
	if err := decodeStrict(info.Resource, data, obj); err != nil {
		return nil, err
	}
	m := obj.GetObjectMeta()
	if info.Resource.Namespaced {
		if m.Namespace == "" {
			m.Namespace = info.Namespace
		} else if m.Namespace != info.Namespace {
			return nil, badField("metadata.namespace", "the object names project %q but was sent to project %q", m.Namespace, info.Namespace)
		}
	}
	if info.Name != "" {
		if m.Name == "" {
			m.Name = info.Name
		} else if m.Name != info.Name {
			return nil, badField("metadata.name", "the object is named %q but was sent to %q", m.Name, info.Name)
		}
	}
	if err := info.Resource.ValidateObject(obj); err != nil {
		return nil, err
	}
	return obj, nil
}

func badField(field, format string, args ...any) error {
	var fe api.FieldErrors
	fe.Add(field, api.FieldValueInvalid, format, args...)
	st, _ := api.StatusFor(fe.Invalid("", ""))
	st.Message = fmt.Sprintf(format, args...)
	return st
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	if info.Name != "" {
		writeStatus(w, api.NewStatus(http.StatusMethodNotAllowed, api.ReasonMethodNotAllow, "POST to the collection %s, not to a name", info.Resource.Name))
		return
	}
	obj, err := s.decodeObject(w, r, info)
	if err != nil {
		writeError(w, err)
		return
	}
	recordOf(r).name = obj.GetObjectMeta().Name
	if obj.GetObjectMeta().ResourceVersion != "" {
		writeError(w, badField("metadata.resourceVersion", "resourceVersion must not be set when creating an object"))
		return
	}
	if info.Resource.HasStatus {
		// Status is the server's to write; a create cannot forge it.
		if f := reflect.ValueOf(obj).Elem().FieldByName("Status"); f.IsValid() {
			f.SetZero()
		}
	}
	ctx := quotaWarnings(r.Context(), w)
	u := identity.FromContext(ctx)
	if err := s.admit(ctx, u, info, obj); err != nil {
		writeError(w, err)
		return
	}
	if info.Resource == api.Projects {
		err = s.createProject(ctx, u, obj.(*api.Project))
	} else {
		err = s.store.Create(ctx, info.Resource, obj)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.waitCache(ctx, info.Resource, revisionOf(obj))
	s.redact(u, obj)
	writeJSON(w, http.StatusCreated, obj)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	obj, err := s.decodeObject(w, r, info)
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	if err := s.admit(ctx, identity.FromContext(ctx), info, obj); err != nil {
		writeError(w, err)
		return
	}
	if err := s.store.Update(ctx, info.Resource, obj, store.UpdateOptions{Status: info.Subresource == "status"}); err != nil {
		writeError(w, err)
		return
	}
	s.waitCache(ctx, info.Resource, revisionOf(obj))
	s.redact(identity.FromContext(ctx), obj)
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	data, isPatch, err := readBody(w, r, s.cfg.MaxBodyBytes, true)
	if err != nil {
		writeError(w, err)
		return
	}
	if !isPatch {
		writeStatus(w, api.NewStatus(http.StatusUnsupportedMediaType, api.ReasonUnsupportedType, "PATCH needs Content-Type: application/merge-patch+json"))
		return
	}
	var probe struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the patch %s", jsonError(err)))
		return
	}
	ctx := r.Context()
	u := identity.FromContext(ctx)
	res := info.Resource
	obj, err := s.store.GuaranteedUpdate(ctx, res, info.Namespace, info.Name, store.UpdateOptions{Status: info.Subresource == "status"}, func(cur api.Object) error {
		rv := cur.GetObjectMeta().ResourceVersion
		if want := probe.Metadata.ResourceVersion; want != "" && want != rv {
			return fmt.Errorf("%s %q: the patch is for resourceVersion %s but the object is at %s; read it again: %w", res.Kind, info.Name, want, rv, store.ErrConflict)
		}
		orig, err := json.Marshal(cur)
		if err != nil {
			return err
		}
		merged, err := mergePatch(orig, data)
		if err != nil {
			return err
		}
		next := res.NewObject()
		if err := decodeStrict(res, merged, next); err != nil {
			return err
		}
		m := next.GetObjectMeta()
		if m.Name != info.Name || m.Namespace != info.Namespace {
			return badField("metadata.name", "a patch cannot rename an object or move it to another project")
		}
		if err := res.ValidateObject(next); err != nil {
			return err
		}
		if err := s.admit(ctx, u, info, next); err != nil {
			return err
		}
		m.ResourceVersion = rv
		reflect.ValueOf(cur).Elem().Set(reflect.ValueOf(next).Elem())
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	s.waitCache(ctx, res, revisionOf(obj))
	s.redact(u, obj)
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	ctx := r.Context()
	if info.Resource == api.Projects {
		obj, err := s.deleteProject(ctx, info.Name)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, obj)
		return
	}
	obj, err := s.store.Delete(ctx, info.Resource, info.Namespace, info.Name, r.URL.Query().Get("resourceVersion"))
	if err != nil {
		writeError(w, err)
		return
	}
	s.waitCache(ctx, info.Resource, revisionOf(obj))
	s.redact(identity.FromContext(ctx), obj)
	writeJSON(w, http.StatusOK, obj)
}

// admit runs the checks that depend on more than one object: RBAC writes
// must not escalate, and nothing a project's user writes may reach into
// another project or forge what the platform records (tenancy.go).
func (s *Server) admit(ctx context.Context, u identity.Info, info *requestInfo, obj api.Object) error {
	if err := s.admitPodResources(ctx, info, obj); err != nil {
		return err
	}
	if is, ok := obj.(*api.ImageStream); ok {
		if err := s.admitPromotedTags(ctx, u, info.Namespace, is); err != nil {
			return err
		}
	}
	if _, isNode := nodeName(u); isNode && info.Subresource == "status" {
		return nil // its own Node's or its pods' (authorizeNode)
	}
	if node, isNode := nodeName(u); isNode {
		if ev, ok := obj.(*api.Event); ok {
			return s.admitNodeEvent(ctx, node, info.Namespace, ev)
		}
	}
	if info.Subresource == "status" {
		return s.admitStatus(ctx, u, info, obj)
	}
	var grant []api.PolicyRule
	ns := info.Namespace
	switch o := obj.(type) {
	case *api.Pipeline:
		return s.admitPipeline(ctx, u, o)
	case *api.Promotion:
		if info.Verb == "create" {
			// Who asked is the server's to record.
			o.Status.Requester = u.Name
		}
		return nil
	case *api.Endpoints:
		return s.admitEndpoints(ctx, u, o)
	case *api.Node:
		return s.admitNode(ctx, u, o)
	case *api.Secret:
		admitSecret(o)
		return nil
	case *api.Project:
		if info.Verb != "create" {
			s.keepRequester(o)
		}
		return nil
	case *api.Service:
		return s.admitService(ctx, u, o)
	case *api.Role:
		grant = o.Rules
	case *api.ClusterRole:
		grant = o.Rules
	case *api.RoleBinding:
		rules, err := s.authz.ResolveRole(ctx, s.store, o.RoleRef, ns)
		if err != nil {
			var fe api.FieldErrors
			fe.Add("roleRef", api.FieldValueNotFound, "%v", err)
			return fe.Invalid(info.Resource.Kind, o.Name)
		}
		grant = rules
	case *api.ImageStream:
		return s.admitSpecTags(ctx, u, ns, o)
	case *api.DeploymentConfig:
		if err := s.admitHostPorts(ctx, u, info, o); err != nil {
			return err
		}
		if err := s.admitPodSecurity(ctx, u, info, o); err != nil {
			return err
		}
		return s.admitImageRefs(ctx, u, ns, o)
	case *api.Pod, *api.ReplicationController:
		if err := s.admitHostPorts(ctx, u, info, o); err != nil {
			return err
		}
		return s.admitPodSecurity(ctx, u, info, o)
	case *api.BuildConfig, *api.Build:
		return s.admitImageRefs(ctx, u, ns, o)
	case *api.ClusterRoleBinding:
		rules, err := s.authz.ResolveRole(ctx, s.store, o.RoleRef, "")
		if err != nil {
			var fe api.FieldErrors
			fe.Add("roleRef", api.FieldValueNotFound, "%v", err)
			return fe.Invalid(info.Resource.Kind, o.Name)
		}
		grant = rules
	default:
		return nil
	}
	return s.authz.CheckEscalation(u, ns, grant)
}

// waitCache makes a write visible to this server's caches before the
// answer goes out, so a client can use a binding or token it just made, and
// a deleted service account's tokens stop working at once. Creates and
// updates of resources that only grant nothing need no wait: a cache miss
// falls back to etcd.
func (s *Server) waitCache(ctx context.Context, r *api.Resource, rev int64) {
	inf, ok := s.informers[r]
	if !ok {
		return
	}
	if (r == api.ServiceAccounts || r == api.Users) && recordOfCtx(ctx).verb != "delete" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := inf.WaitFor(ctx, rev); err != nil {
		slog.Warn("apiserver: cache is behind a write", "resource", r.Name, "revision", rev, "err", err)
	}
}

// taggedByAnnotation matches registry.TaggedByAnnotation; the registry
// imports the apiserver's callers, not the other way round.
const taggedByAnnotation = "slipway.dev/tagged-by"

// admitSpecTags lets a spec tag name an image in another project only when
// the writer may pull from that project: the tagger links what a spec tag
// names with the server's rights, not the writer's.
func (s *Server) admitSpecTags(ctx context.Context, u identity.Info, ns string, is *api.ImageStream) error {
	// Who asked for a spec tag is the server's to say: a new or changed
	// spec tag is attributed to the writer, an unchanged one keeps its
	// author.
	prev := map[string]api.TagReference{}
	var prevAnn map[string]string
	if o, err := s.store.Get(ctx, api.ImageStreams, ns, is.Name); err == nil {
		for _, t := range o.(*api.ImageStream).Spec.Tags {
			prev[t.Name] = t
		}
		prevAnn = o.GetObjectMeta().Annotations
	}
	// The same for import --all, whose tags the server adds itself.
	const importAll = "slipway.dev/import-all"
	if is.Annotations[importAll] != "" && (is.Annotations[importAll] != prevAnn[importAll] || is.Annotations[importAll+"-insecure"] != prevAnn[importAll+"-insecure"]) {
		is.Annotations[taggedByAnnotation] = u.Name
	} else if by, ok := prevAnn[taggedByAnnotation]; ok {
		if is.Annotations == nil {
			is.Annotations = map[string]string{}
		}
		is.Annotations[taggedByAnnotation] = by
	} else {
		delete(is.Annotations, taggedByAnnotation)
	}
	for i := range is.Spec.Tags {
		t := &is.Spec.Tags[i]
		if t.From == nil {
			continue
		}
		if old, ok := prev[t.Name]; ok && reflect.DeepEqual(old, *t) {
			continue
		}
		if t.Annotations == nil {
			t.Annotations = map[string]string{}
		}
		t.Annotations[taggedByAnnotation] = u.Name
	}
	for _, t := range is.Spec.Tags {
		if t.From == nil || t.From.Namespace == "" || t.From.Namespace == ns {
			continue
		}
		if t.From.Kind != "ImageStreamTag" && t.From.Kind != "ImageStreamImage" {
			continue
		}
		if !s.mayPullFrom(ctx, u, t.From.Namespace) {
			return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "spec tag %q takes its image from project %s, where %s may not pull; ask for image-puller there", t.Name, t.From.Namespace, u.Name)
		}
	}
	return nil
}

// PodGateway reaches the node agent that runs a pod, for its log and for
// exec.
type PodGateway interface {
	ServePod(w http.ResponseWriter, r *http.Request, pod *api.Pod, subresource string)
}

// servePod hands pods/log and pods/exec to the pod's node agent.
func (s *Server) servePod(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	obj, err := s.store.Get(r.Context(), api.Pods, info.Namespace, info.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	pod := obj.(*api.Pod)
	switch {
	case s.cfg.Pods == nil:
		writeStatus(w, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "this API server cannot reach node agents"))
	case pod.Spec.NodeName == "":
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "pod %s is not on a node yet (%s); see `slipway describe pod %s`", pod.Name, podReason(pod), pod.Name))
	default:
		s.cfg.Pods.ServePod(w, r, pod, info.Subresource)
	}
}

func podReason(p *api.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == "PodScheduled" && c.Message != "" {
			return c.Message
		}
	}
	return "waiting for the scheduler"
}

// approve records an approval of a promotion. The permission is the
// promote verb in the stage's project, not anything in the pipeline's.
func (s *Server) approve(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	ctx := r.Context()
	u := identity.FromContext(ctx)
	obj, err := s.store.Get(ctx, api.Promotions, info.Namespace, info.Name)
	if err != nil {
		if ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "get", Resource: "promotions", Namespace: info.Namespace}); !ok {
			writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s may not read promotions in %s", u.Name, info.Namespace))
			return
		}
		writeError(w, err)
		return
	}
	p := obj.(*api.Promotion)
	po, err := s.store.Get(ctx, api.Pipelines, p.Namespace, p.Spec.Pipeline)
	if err != nil {
		writeError(w, err)
		return
	}
	target := ""
	for _, st := range po.(*api.Pipeline).Spec.Stages {
		if st.Name == p.Spec.To {
			target = st.Project
		}
	}
	if ok, why := s.authz.Authorize(u, rbac.Attributes{Verb: "promote", Resource: "promotions", Namespace: target}); !ok || target == "" {
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s may not approve promotions into %s (%s); ask someone with the promote permission there, such as its admin", u.Name, target, why))
		return
	}
	if p.Status.Phase == api.PromotionComplete || p.Status.Phase == api.PromotionRefused || p.Status.Phase == api.PromotionFailed {
		writeStatus(w, api.NewStatus(http.StatusConflict, api.ReasonConflict, "promotion %s is already %s", p.Name, p.Status.Phase))
		return
	}
	out, err := s.store.GuaranteedUpdate(ctx, api.Promotions, p.Namespace, p.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		st := &o.(*api.Promotion).Status
		for _, a := range st.Approvals {
			if a.User == u.Name && a.Project == target {
				return nil
			}
		}
		st.Approvals = append(st.Approvals, api.Approval{User: u.Name, Project: target, At: time.Now().UTC().Truncate(time.Second)})
		return nil
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// ImageSigner signs an image of a project with one of its keys.
type ImageSigner interface {
	Sign(ctx context.Context, project, key, image string) error
}

// sign is POST signingkeys/NAME/sign {"image": "REGISTRY/PROJECT/STREAM@sha256:…"}.
func (s *Server) sign(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	if s.cfg.Signer == nil {
		writeStatus(w, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "this API server cannot sign"))
		return
	}
	var req struct {
		Image string `json:"image"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Image == "" {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the body must be {\"image\": \"REGISTRY/PROJECT/STREAM@sha256:…\"}"))
		return
	}
	if err := s.cfg.Signer.Sign(r.Context(), info.Namespace, info.Name, req.Image); err != nil {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"signed": req.Image, "key": info.Namespace + "/" + info.Name})
}

// buildLog serves a build's whole log, kept after the build.
func (s *Server) buildLog(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	if _, err := s.store.Get(r.Context(), api.Builds, info.Namespace, info.Name); err != nil {
		writeError(w, err)
		return
	}
	if s.cfg.BuildLogs == "" {
		writeStatus(w, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "this API server keeps no build logs; read status.logTail"))
		return
	}
	f, err := os.Open(filepath.Join(s.cfg.BuildLogs, info.Namespace, info.Name+".log"))
	if err != nil {
		writeStatus(w, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "build %s has no log yet", info.Name))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.Copy(w, f)
}

// admitPromotedTags refuses to change, through the API, a tag that a
// pipeline stage owns (its history or its spec tag): only the project's
// promoter account moves those, through a promotion.
func (s *Server) admitPromotedTags(ctx context.Context, u identity.Info, ns string, is *api.ImageStream) error {
	if u.Name == api.ServiceAccountUser(ns, "promoter") {
		return nil
	}
	pipelines, _, err := s.store.List(ctx, api.Pipelines, "", store.ListOptions{})
	if err != nil || len(pipelines) == 0 {
		return err
	}
	var old *api.ImageStream
	if o, err := s.store.Get(ctx, api.ImageStreams, ns, is.Name); err == nil {
		old = o.(*api.ImageStream)
	} else {
		old = &api.ImageStream{}
	}
	tagState := func(x *api.ImageStream, tag string) string {
		st := ""
		for _, t := range x.Status.Tags {
			if t.Tag == tag {
				st += fmt.Sprintf("%d:", len(t.Items))
				if len(t.Items) > 0 {
					st += t.Items[0].Image
				}
			}
		}
		for _, t := range x.Spec.Tags {
			if t.Name == tag {
				b, _ := json.Marshal(t)
				st += "|" + string(b)
			}
		}
		return st
	}
	tags := map[string]bool{}
	for _, x := range []*api.ImageStream{old, is} {
		for _, t := range x.Status.Tags {
			tags[t.Tag] = true
		}
		for _, t := range x.Spec.Tags {
			tags[t.Name] = true
		}
	}
	for tag := range tags {
		if pl := api.PromotedTagFor(pipelines, ns, is.Name, tag, s.mayOwnStage(ctx)); pl != "" && tagState(old, tag) != tagState(is, tag) {
			return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s/%s:%s is a stage of pipeline %s: only a promotion moves it; use `slipway promote`", ns, is.Name, tag, pl)
		}
	}
	return nil
}
