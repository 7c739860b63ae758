package store_test

import (
	"errors"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// A finalizer that runs late must not delete what a project made again
// under the same name holds: DeleteAllOwned and DeleteOwned act only while
// the owner is the very object they name (by UID), and change nothing
// otherwise.
func TestDeleteAllOwnedSparesAReplacedOwner(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	mk := func() *api.Project {
		p := &api.Project{ObjectMeta: api.ObjectMeta{Name: "pd"}}
		if err := s.Create(ctx, api.Projects, p); err != nil {
			t.Fatal(err)
		}
		sa := &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Namespace: "pd", Name: "robot"}}
		if err := s.Create(ctx, api.ServiceAccounts, sa); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := mk()
	oldOwner := store.Owner{Resource: api.Projects, Name: "pd", UID: old.UID}

	// The owner as it is: its contents and then itself go.
	if n, err := s.DeleteAllOwned(ctx, api.ServiceAccounts, "pd", oldOwner); err != nil || n != 1 {
		t.Fatalf("DeleteAllOwned(the owner itself) = %d, %v; want 1, nil", n, err)
	}
	if err := s.DeleteOwned(ctx, oldOwner); err != nil {
		t.Fatalf("DeleteOwned(the owner itself) = %v", err)
	}
	if err := s.DeleteOwned(ctx, oldOwner); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeleteOwned(gone) = %v, want ErrNotFound", err)
	}

	// Made again: the old owner's guard refuses, and nothing changes.
	fresh := mk()
	if n, err := s.DeleteAllOwned(ctx, api.ServiceAccounts, "pd", oldOwner); !errors.Is(err, store.ErrConflict) || n != 0 {
		t.Errorf("DeleteAllOwned(replaced owner) = %d, %v; want 0, ErrConflict", n, err)
	}
	if err := s.DeleteOwned(ctx, oldOwner); !errors.Is(err, store.ErrConflict) {
		t.Errorf("DeleteOwned(replaced owner) = %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, api.ServiceAccounts, "pd", "robot"); err != nil {
		t.Errorf("the new project's service account: %v, want it kept", err)
	}
	if o, err := s.Get(ctx, api.Projects, "", "pd"); err != nil || o.GetObjectMeta().UID != fresh.UID {
		t.Errorf("the new project: %v, %v; want it kept", o, err)
	}
	if _, err := s.DeleteAllOwned(ctx, api.Projects, "", oldOwner); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("DeleteAllOwned(cluster-scoped resource) = %v, want ErrInvalid", err)
	}
}
