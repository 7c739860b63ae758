package registry_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/store"
)

func statusCode(err error) int {
	var st *api.Status
	if errors.As(err, &st) {
		return int(st.Code)
	}
	return 0
}

// Who may prune and collect, through the API: a project's admin prunes
// that project and nothing else; an editor may not; collection and blob
// holders are the cluster admin's. Bad input is refused with a message
// and changes nothing.
func TestPruneAndGCAuthorization(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "mine", false)
	h.project(t, "carol", "theirs", false)
	h.grant(t, "mine", "edit", "bob")
	for range 2 {
		h.pushOK(t, "alice", "mine/app:t", randomImage(t))
	}
	ctx := ctxT(t)
	prune := func(u string, in registry.PruneRequest) (*registry.PruneReport, error) {
		var rep registry.PruneReport
		err := h.user(t, u).RegistryAdmin(ctx, http.MethodPost, "prune/images", nil, in, &rep)
		return &rep, err
	}
	if rep, err := prune("alice", registry.PruneRequest{Project: "mine"}); err != nil || !rep.DryRun {
		t.Errorf("alice (admin of mine) prunes mine: %v, dry run %v; want a dry run report", err, rep.DryRun)
	}
	for _, c := range []struct {
		who  string
		in   registry.PruneRequest
		code int
		want string
	}{
		{"bob", registry.PruneRequest{Project: "mine"}, http.StatusForbidden, "may not prune images in project mine"},
		{"alice", registry.PruneRequest{Project: "theirs"}, http.StatusForbidden, "may not prune images in project theirs"},
		{"alice", registry.PruneRequest{}, http.StatusForbidden, "cluster-wide"},
		{"admin", registry.PruneRequest{Project: "mine", KeepTagRevisions: -1, Confirm: true}, http.StatusBadRequest, "--keep-tag-revisions must be at least 1"},
		{"admin", registry.PruneRequest{Project: "mine", KeepYoungerThan: "soon", Confirm: true}, http.StatusBadRequest, "not a positive duration"},
		{"admin", registry.PruneRequest{Project: "nosuch", Confirm: true}, http.StatusNotFound, "nosuch"},
		{"admin", registry.PruneRequest{Project: "../mine", Confirm: true}, http.StatusBadRequest, `project "../mine" is not a valid project name`},
		{"alice", registry.PruneRequest{Project: "mine/../theirs", Confirm: true}, http.StatusBadRequest, "not a valid project name"},
		{"alice", registry.PruneRequest{Project: strings.Repeat("m", 100<<10)}, http.StatusRequestEntityTooLarge, "the request body is larger than the limit of 64 KiB"},
	} {
		_, err := prune(c.who, c.in)
		if statusCode(err) != c.code || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s prunes %+v: %v, want %d with %q", c.who, c.in, err, c.code, c.want)
		}
	}
	if n := len(h.history(t, "mine", "app", "t")); n != 2 {
		t.Errorf("refused prunes changed the history: %d entries, want 2", n)
	}
	var rep registry.GCReport
	if err := h.user(t, "alice").RegistryAdmin(ctx, http.MethodPost, "gc", nil, registry.GCRequest{DryRun: true}, &rep); statusCode(err) != http.StatusForbidden {
		t.Errorf("alice collects garbage: %v, want 403", err)
	}
	if err := h.user(t, "alice").RegistryAdmin(ctx, http.MethodGet, "blobs/sha256:"+strings.Repeat("0", 64), nil, nil, &registry.BlobWhy{}); statusCode(err) != http.StatusForbidden {
		t.Errorf("alice asks for a blob's holders: %v, want 403", err)
	}
	if err := h.env.Admin.RegistryAdmin(ctx, http.MethodPost, "gc", nil, registry.GCRequest{Grace: "-1s"}, &rep); statusCode(err) != http.StatusBadRequest {
		t.Errorf("gc with a negative grace: %v, want 400", err)
	}
	if err := h.env.Admin.RegistryAdmin(ctx, http.MethodPost, "gc", nil, registry.GCRequest{Grace: strings.Repeat("1", 100<<10) + "s"}, &rep); statusCode(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("gc with a 100 KiB body: %v, want 413", err)
	}
	if err := h.env.Admin.RegistryAdmin(ctx, http.MethodGet, "blobs/nodigest", nil, nil, &registry.BlobWhy{}); statusCode(err) != http.StatusBadRequest {
		t.Errorf("holders of a bad digest: %v, want 400", err)
	}
	if err := h.env.Admin.RegistryAdmin(ctx, http.MethodPost, "gc", nil, registry.GCRequest{DryRun: true}, &rep); err != nil || !rep.DryRun {
		t.Errorf("the cluster admin's dry run: %v (%+v)", err, rep)
	}
}

// A project's retention annotations make the periodic pass prune it with
// the same code; a project without them, or with bad values, is left
// alone.
func TestRetentionPrunesAnnotatedProjectsOnly(t *testing.T) {
	h := start(t)
	ctx := ctxT(t)
	for _, p := range []string{"ret", "plain", "bad"} {
		h.project(t, "alice", p, false)
		for range 3 {
			h.pushOK(t, "alice", p+"/app:t", randomImage(t))
		}
	}
	annotate := func(p string, ann map[string]string) {
		_, err := h.env.Server.Store.GuaranteedUpdate(ctx, api.Projects, "", p, store.UpdateOptions{}, func(o api.Object) error {
			m := o.GetObjectMeta()
			if m.Annotations == nil {
				m.Annotations = map[string]string{}
			}
			for k, v := range ann {
				m.Annotations[k] = v
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	annotate("ret", map[string]string{registry.RetentionKeepTagRevisionsAnnotation: "1", registry.RetentionKeepYoungerThanAnnotation: "1ms"})
	annotate("bad", map[string]string{registry.RetentionKeepTagRevisionsAnnotation: "0", registry.RetentionKeepYoungerThanAnnotation: "1ms"})
	time.Sleep(10 * time.Millisecond)
	if err := h.env.Server.Registry.RetentionOnce(ctx); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]int{"ret": 1, "plain": 3, "bad": 3} {
		if n := len(h.history(t, p, "app", "t")); n != want {
			t.Errorf("project %s: %d history entries after the retention pass, want %d", p, n, want)
		}
	}
}
