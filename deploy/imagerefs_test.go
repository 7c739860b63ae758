package deploy

import (
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store/storetest"
)

// pullAuthz lets only user pull, and only from project.
type pullAuthz struct{ user, project string }

func (a pullAuthz) Authorize(u identity.Info, at rbac.Attributes) (bool, string) {
	ok := u.Name == a.user && u.InGroup(identity.GroupServiceAccounts+":mal") &&
		at == rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: a.project}
	return ok, ""
}

// TestMayFollow: a trigger of project mal follows project vic only while
// mal's deployer account may pull there, or vic is public (H2).
func TestMayFollow(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 1)
	for _, p := range []*api.Project{{ObjectMeta: api.ObjectMeta{Name: "vic"}}, {ObjectMeta: api.ObjectMeta{Name: "pub"}, Spec: api.ProjectSpec{Public: true}}} {
		if err := s.Create(ctx, api.Projects, p); err != nil {
			t.Fatal(err)
		}
	}
	deployer := api.ServiceAccountUser("mal", DeployerServiceAccount)
	for _, row := range []struct {
		name  string
		authz Authorizer
		from  string
		allow bool
	}{
		{"H2 no authorizer", nil, "vic", false},
		{"H2 deployer without a grant", pullAuthz{deployer, "other"}, "vic", false},
		{"H2 another account of mal granted", pullAuthz{api.ServiceAccountUser("mal", "builder"), "vic"}, "vic", false},
		{"H2 deployer granted image-puller", pullAuthz{deployer, "vic"}, "vic", true},
		{"H2 public project", nil, "pub", true},
	} {
		t.Run(row.name, func(t *testing.T) {
			why := (&Controller{Store: s, Authz: row.authz}).mayFollow(ctx, "mal", row.from)
			switch {
			case row.allow && why != "":
				t.Errorf("refused: %s", why)
			case !row.allow && why == "":
				t.Errorf("allowed, want refused")
			case !row.allow && !strings.Contains(why, "image-puller "+deployer+" -n "+row.from):
				t.Errorf("message %q does not say what to grant", why)
			}
		})
	}
}
