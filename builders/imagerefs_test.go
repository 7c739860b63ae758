package builders

import (
	"errors"
	"os"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// pullAuthz lets only user pull, and only from project.
type pullAuthz struct{ user, project string }

func (a pullAuthz) Authorize(u identity.Info, at rbac.Attributes) (bool, string) {
	ok := u.Name == a.user && u.InGroup(identity.GroupServiceAccounts+":mal") &&
		at == rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: a.project}
	return ok, ""
}

// TestResolveFromOtherProject: a build of mal resolves a base image of
// project vic only while mal's builder account may pull there (H2, L4);
// otherwise it names no digest and says what to grant.
func TestResolveFromOtherProject(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	if err := s.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "vic"}}); err != nil {
		t.Fatal(err)
	}
	is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "base", Namespace: "vic"}}
	is.Status.Tags = []api.NamedTagEventList{{Tag: "1", Items: []api.TagEvent{{Image: "sha256:" + strings.Repeat("a", 64)}}}}
	if err := s.Create(ctx, api.ImageStreams, is); err != nil {
		t.Fatal(err)
	}
	builder := api.ServiceAccountUser("mal", BuilderServiceAccount)
	refs := []*api.ObjectReference{
		{Kind: "ImageStreamTag", Namespace: "vic", Name: "base:1"},
		{Kind: "ImageStreamImage", Namespace: "vic", Name: "base@sha256:" + strings.Repeat("a", 64)},
		{Kind: "DockerImage", Name: "reg:5000/vic/base@sha256:" + strings.Repeat("a", 64)},
	}
	for _, row := range []struct {
		name  string
		authz Authorizer
		allow bool
	}{
		{"L4 no authorizer", nil, false},
		{"L4 builder without a grant", pullAuthz{builder, "other"}, false},
		{"L4 deployer granted, not the builder", pullAuthz{api.ServiceAccountUser("mal", "deployer"), "vic"}, false},
		{"L4 builder granted image-puller", pullAuthz{builder, "vic"}, true},
	} {
		t.Run(row.name, func(t *testing.T) {
			c := &Controller{Store: s, Authz: row.authz, Registry: "reg:5000"}
			for _, from := range refs {
				ref, err := c.resolveFrom(ctx, "mal", from)
				var pd *pullDeniedError
				switch {
				case row.allow && err != nil:
					t.Errorf("%s %s: %v", from.Kind, from.Name, err)
				case !row.allow && !errors.As(err, &pd):
					t.Errorf("%s %s: resolved to %q (err %v), want refused", from.Kind, from.Name, ref, err)
				case !row.allow && !strings.Contains(err.Error(), "image-puller "+builder+" -n vic"):
					t.Errorf("message %q does not say what to grant", err)
				case !row.allow && ref != "":
					t.Errorf("refused but named %q", ref)
				}
			}
		})
	}
	// Images of the build's own project and outside the registry need no grant.
	c := &Controller{Store: s, Registry: "reg:5000"}
	for _, from := range []*api.ObjectReference{{Kind: "DockerImage", Name: "docker.io/library/alpine:3"}, {Kind: "DockerImage", Name: "reg:5000/mal/base:1"}} {
		if _, err := c.resolveFrom(ctx, "mal", from); err != nil {
			t.Errorf("%s: %v", from.Name, err)
		}
	}
}
