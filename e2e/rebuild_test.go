package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// TestRebuildDryRunOrdersWaves: configs that build on a base, and configs
// that build on their outputs, come out of `rebuild --dry-run` in
// dependency order, and the dry run starts nothing.
func TestRebuildDryRunOrdersWaves(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", "none")
	admin := p.admin(t)
	ctx := context.Background()
	for _, pr := range []string{"base", "team"} {
		if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: pr}}); err != nil {
			t.Fatal(err)
		}
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	if err := remote.Write(mustRef(t, p.registry+"/base/debian:12"), busyboxImage(t), auth); err != nil {
		t.Fatal(err)
	}
	mk := func(ns, name string, from *api.ObjectReference) {
		bc := &api.BuildConfig{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns},
			Spec: api.BuildConfigSpec{
				Source:   api.BuildSource{Dockerfile: "FROM x\n"},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: from}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: name + ":latest"}},
			},
		}
		if err := admin.Create(ctx, api.BuildConfigs, bc); err != nil {
			t.Fatal(err)
		}
	}
	debian := &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "debian:12"}
	mk("team", "runtime", debian)
	mk("team", "tools", debian)
	mk("team", "web", &api.ObjectReference{Kind: "ImageStreamTag", Name: "runtime:latest"})
	mk("team", "web-debug", &api.ObjectReference{Kind: "ImageStreamTag", Name: "web:latest"})
	mk("team", "unrelated", &api.ObjectReference{Kind: "ImageStreamTag", Name: "other:1"})

	// A deployment that follows web's output is listed too.
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "site", Namespace: "team"},
		Spec: api.DeploymentConfigSpec{
			Replicas: 1, Selector: map[string]string{"app": "site"},
			Template: &api.PodTemplateSpec{ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "site"}},
				Spec: api.PodSpec{Containers: []api.Container{{Name: "web", Image: "web:latest"}}}},
			Triggers: []api.DeploymentTrigger{{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
				Automatic: true, ContainerNames: []string{"web"}, From: api.ObjectReference{Kind: "ImageStreamTag", Name: "web:latest"}}}},
		},
	}
	if err := admin.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	var plan struct {
		Items []struct {
			Name string
			Wave int
		} `json:"buildConfigs"`
		Deployments []string `json:"deployments"`
	}
	if err := json.Unmarshal([]byte(c.ok("rebuild", "--base", "base/debian:12", "--dry-run", "-o", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		wave int
	}{{"runtime", 1}, {"tools", 1}, {"web", 2}, {"web-debug", 3}}
	if len(plan.Items) != len(want) {
		t.Fatalf("dry run = %+v, want %v", plan.Items, want)
	}
	for i, w := range want {
		if plan.Items[i].Name != w.name || plan.Items[i].Wave != w.wave {
			t.Errorf("dry run item %d = %+v, want %s in wave %d", i, plan.Items[i], w.name, w.wave)
		}
	}
	if len(plan.Deployments) != 1 || plan.Deployments[0] != "team/site (follows team/web:latest)" {
		t.Errorf("dry run deployments = %q, want team/site following team/web:latest", plan.Deployments)
	}
	if builds, _, _ := admin.List(ctx, api.Builds, "team", client.ListOptions{}); len(builds) != 0 {
		t.Errorf("the dry run started %d builds", len(builds))
	}
	c.fails("PROJECT/STREAM:TAG", "rebuild", "--base", "debian", "--dry-run")
}
