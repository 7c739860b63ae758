package registry_test

import (
	"net/http"
	"testing"
	"time"

	"slipway.dev/slipway/api"
)

// M2: deleting a project removes its repositories, nested ones included,
// and nothing of a project whose name merely starts with the same letters;
// a project of the same name made again starts empty.
func TestDeletedProjectRepositoriesAreGone(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "gone", false)
	h.project(t, "alice", "gone2", false)
	d1 := h.pushOK(t, "alice", "gone/app:1", randomImage(t))
	d2 := h.pushOK(t, "alice", "gone/team/deep:1", randomImage(t))
	kept := h.pushOK(t, "alice", "gone2/app:1", randomImage(t))
	// The pushes filled the manifest cache; these GETs are answered
	// from it, and must not be after the deletion.
	h.quiet(t)
	before := h.hits()
	for _, c := range []struct{ repo, dgst string }{{"gone/app", d1}, {"gone/team/deep", d2}} {
		if r := h.getManifest(t, "alice", c.repo, c.dgst); r.code != http.StatusOK {
			t.Fatalf("alice GET %s@%s = %s, want 200", c.repo, c.dgst, r)
		}
	}
	if h.hits() != before+2 {
		t.Errorf("GETs after the push were not answered from the manifest cache (hits %d → %d)", before, h.hits())
	}

	if _, err := h.user(t, "alice").Delete(ctxT(t), api.Projects, "", "gone"); err != nil {
		t.Fatalf("alice deletes project gone: %v", err)
	}
	deadline := time.Now().Add(hangGuard)
	for {
		err := h.user(t, "bob").Create(ctxT(t), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "gone"}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob makes project gone again: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range []struct{ repo, dgst string }{{"gone/app", d1}, {"gone/team/deep", d2}} {
		if r := h.getManifest(t, "bob", c.repo, c.dgst); r.code != http.StatusNotFound {
			t.Errorf("bob GET %s@%s in the project made again = %s, want 404", c.repo, c.dgst, r)
		}
	}
	if r := h.getManifest(t, "alice", "gone2/app", kept); r.code != http.StatusOK {
		t.Errorf("GET gone2/app@%s after deleting project gone = %s, want 200: another project's repositories must stay", kept, r)
	}
	// Deleting the new, empty project works too (nothing to remove).
	if _, err := h.user(t, "bob").Delete(ctxT(t), api.Projects, "", "gone"); err != nil {
		t.Errorf("bob deletes the empty project gone: %v", err)
	}
}
