package apiserver

import (
	"context"
	"reflect"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
)

// TestForeignImageRefs: the references admission checks are exactly the
// images of other projects a DeploymentConfig trigger or a build base
// names, on streams or on the integrated registry (H2, L4).
func TestForeignImageRefs(t *testing.T) {
	s := &Server{}
	s.SetRegistryHost("reg:5000")
	dc := &api.DeploymentConfig{Spec: api.DeploymentConfigSpec{Triggers: []api.DeploymentTrigger{
		{Type: "ConfigChange"},
		{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{From: api.ObjectReference{Kind: "ImageStreamTag", Name: "own:latest"}}},
		{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{From: api.ObjectReference{Kind: "ImageStreamTag", Namespace: "mal", Name: "own:1"}}},
		{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{From: api.ObjectReference{Kind: "ImageStreamTag", Namespace: "vic", Name: "app:latest"}}},
	}}}
	bc := func(from api.ObjectReference, source bool) *api.BuildConfig {
		st := api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &from}}
		if source {
			st = api.BuildStrategy{Type: "Source", SourceStrategy: &api.SourceBuildStrategy{From: &from}}
		}
		return &api.BuildConfig{Spec: api.BuildConfigSpec{Strategy: st}}
	}
	for _, row := range []struct {
		name    string
		obj     api.Object
		want    []imageRef
		account string
	}{
		{"H2 dc trigger follows vic", dc, []imageRef{{"spec.triggers[3].imageChangeParams.from", "vic", "app:latest"}}, "deployer"},
		{"L4 docker from vic tag", bc(api.ObjectReference{Kind: "ImageStreamTag", Namespace: "vic", Name: "base:1"}, false), []imageRef{{"spec.strategy.dockerStrategy.from", "vic", "base:1"}}, "builder"},
		{"L4 source from vic image", bc(api.ObjectReference{Kind: "ImageStreamImage", Namespace: "vic", Name: "base@sha256:1"}, true), []imageRef{{"spec.strategy.sourceStrategy.from", "vic", "base@sha256:1"}}, "builder"},
		{"L4 docker from vic on the registry", bc(api.ObjectReference{Kind: "DockerImage", Name: "reg:5000/vic/base:1"}, false), []imageRef{{"spec.strategy.dockerStrategy.from", "vic", "reg:5000/vic/base:1"}}, "builder"},
		{"L4 own project and outside images", bc(api.ObjectReference{Kind: "DockerImage", Name: "docker.io/vic/base:1"}, false), nil, "builder"},
		{"L4 build from vic", &api.Build{Spec: bc(api.ObjectReference{Kind: "ImageStreamTag", Namespace: "vic", Name: "base:1"}, false).Spec.BuildSpec()}, []imageRef{{"spec.strategy.dockerStrategy.from", "vic", "base:1"}}, "builder"},
	} {
		got, account := s.foreignImageRefs(row.obj, "mal")
		if !reflect.DeepEqual(got, row.want) || account != row.account {
			t.Errorf("%s: %v as %s, want %v as %s", row.name, got, account, row.want, row.account)
		}
	}
}

// TestMayPullFromMirror: a base image or trigger on a pull-through
// mirror (REGISTRY/docker.io/...) is readable by every signed-in writer,
// not by the anonymous user.
func TestMayPullFromMirror(t *testing.T) {
	s := &Server{}
	s.SetMirrors([]string{"docker.io"})
	for _, row := range []struct {
		who  identity.Info
		want bool
	}{
		{identity.Info{Name: "alice", Groups: []string{identity.GroupAuthenticated}}, true},
		{identity.Anonymous, false},
	} {
		if got := s.mayPullFrom(context.Background(), row.who, "docker.io"); got != row.want {
			t.Errorf("mayPullFrom(%s, docker.io) = %v, want %v", row.who.Name, got, row.want)
		}
	}
}
