package e2e

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// TestBuildBadInput: each bad input fails its build with a reason and a
// log, and nothing reaches the output tag.
func TestBuildBadInput(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t))
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bad"}}); err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if err := remote.Write(mustRef(t, p.registry+"/bad/base:1"), busyboxImage(t), auth); err != nil {
		t.Fatal(err)
	}
	from := &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}
	for _, tc := range []struct {
		name, reason, logHas string
		source               api.BuildSource
		from                 *api.ObjectReference
	}{
		{"syntax", "BuildFailed", "error", api.BuildSource{Dockerfile: "FROM base\nRUN [\"unterminated\n"}, from},
		{"failing-run", "BuildFailed", "error", api.BuildSource{Dockerfile: "FROM base\nRUN [\"/bin/busybox\", \"false\"]\n"}, from},
		{"no-dockerfile-from", "InvalidDockerfile", "", api.BuildSource{Dockerfile: "RUN true\n"}, from},
		{"unreachable-git", "FetchSourceFailed", "Cloning", api.BuildSource{Git: &api.GitBuildSource{URI: "http://127.0.0.1:9/none.git"}}, from},
		{"missing-base", "InvalidBaseImage", "", api.BuildSource{Dockerfile: "FROM base\n"}, &api.ObjectReference{Kind: "ImageStreamTag", Name: "nosuch:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bc := &api.BuildConfig{
				ObjectMeta: api.ObjectMeta{Name: tc.name, Namespace: "bad"},
				Spec: api.BuildConfigSpec{
					Source:   tc.source,
					Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: tc.from}},
					Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: tc.name + ":latest"}},
					Triggers: []api.BuildTrigger{{Type: "ConfigChange"}},
				},
			}
			if tc.name == "missing-base" {
				bc.Spec.Triggers = nil // ConfigChange waits for a base that never comes
			}
			if err := admin.Create(ctx, api.BuildConfigs, bc); err != nil {
				t.Fatal(err)
			}
			if tc.name == "missing-base" {
				b := &api.Build{ObjectMeta: api.ObjectMeta{Name: tc.name + "-1", Namespace: "bad", Labels: map[string]string{"slipway.dev/buildconfig": tc.name}},
					Spec: api.BuildSpec{Source: bc.Spec.Source, Strategy: bc.Spec.Strategy, Output: bc.Spec.Output}}
				if err := admin.Create(ctx, api.Builds, b); err != nil {
					t.Fatal(err)
				}
			}
			b := waitBuild(t, admin, "bad", tc.name+"-1")
			if b.Status.Phase != api.BuildFailed || b.Status.Reason != tc.reason || b.Status.Message == "" {
				t.Errorf("%s: build = %s/%s %q, want Failed/%s with a message", tc.name, b.Status.Phase, b.Status.Reason, b.Status.Message, tc.reason)
			}
			if !strings.Contains(b.Status.LogTail, tc.logHas) || b.Status.LogTail == "" {
				t.Errorf("%s: log %q, want it to hold %q", tc.name, b.Status.LogTail, tc.logHas)
			}
			if _, err := admin.Get(ctx, api.ImageStreams, "bad", tc.name); !api.IsNotFound(err) {
				t.Errorf("%s: the output stream exists after a failed build (%v)", tc.name, err)
			}
		})
	}
}
