package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// Cross-project image references (security review H2, first half, and
// L4): a DeploymentConfig, BuildConfig or Build of mal naming an image
// stream tag of vic. Without a pull right in vic, mallory's write is
// refused, and the controllers, which act for mal's own deployer and
// builder accounts, never write vic's digests into mal's objects.

// refsDC is a DeploymentConfig of mal following vic/app:latest.
func refsDC(name string) *api.DeploymentConfig {
	return &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: name, Namespace: "mal"},
		Spec: api.DeploymentConfigSpec{
			Replicas: 1,
			Selector: map[string]string{"app": name},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "app:latest"}}},
			},
			Triggers: []api.DeploymentTrigger{{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
				Automatic: true, ContainerNames: []string{"web"},
				From: api.ObjectReference{Kind: "ImageStreamTag", Namespace: "vic", Name: "app:latest"},
			}}},
		},
	}
}

// refsBC is a BuildConfig of mal building FROM vic/base:1, with an
// ImageChange trigger on it.
func refsBC(name string) *api.BuildConfig {
	return &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: name, Namespace: "mal"},
		Spec: api.BuildConfigSpec{
			Source: api.BuildSource{Dockerfile: "FROM scratch\n"},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{
				From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "vic", Name: "base:1"},
			}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: name + ":latest"}},
			Triggers: []api.BuildTrigger{{Type: "ImageChange"}},
		},
	}
}

// leaks lists where mal's objects hold digest d.
func refsLeaks(t *testing.T, admin *client.Client, d string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, r := range []*api.Resource{api.ReplicationControllers, api.Builds, api.BuildConfigs, api.DeploymentConfigs} {
		list, _, err := admin.List(ctx, r, "mal", client.ListOptions{})
		if err != nil {
			t.Fatalf("list %s: %v", r.Name, err)
		}
		for _, o := range list {
			if b, _ := json.Marshal(o); strings.Contains(string(b), d) {
				out = append(out, r.Name+"/"+o.GetObjectMeta().Name)
			}
		}
	}
	return out
}

func TestSecurityRefs(t *testing.T) {
	x := startTenancy(t)
	ctx := context.Background()
	s := x.s
	base1, _ := random.Image(256, 1)
	baseD := s.push("vic/base:1", base1)
	appD := s.tagDigest("vic/app:latest")
	grant := &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "mal-pulls", Namespace: "vic"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
		Subjects: []api.Subject{
			{Kind: api.SubjectUser, Name: "mallory"},
			{Kind: api.SubjectServiceAccount, Namespace: "mal", Name: "deployer"},
			{Kind: api.SubjectServiceAccount, Namespace: "mal", Name: "builder"},
		},
	}
	rows := []struct {
		name   string
		attack func(t *testing.T)
	}{
		{"H2 DeploymentConfig follows another project's tag without a pull right there", func(t *testing.T) {
			forbidden(t, "mallory creates dc following vic/app:latest", x.mallory.Create(ctx, api.DeploymentConfigs, refsDC("follow")))
			own := refsDC("own")
			own.Spec.Triggers[0].ImageChangeParams.From.Namespace = ""
			if err := x.mallory.Create(ctx, api.DeploymentConfigs, own); err != nil {
				t.Fatalf("mallory creates a dc following her own tag: %v", err)
			}
			_, err := x.mallory.Patch(ctx, api.DeploymentConfigs, "mal", "own", []byte(`{"spec":{"triggers":[{"type":"ImageChange","imageChangeParams":{"automatic":true,"containerNames":["web"],"from":{"kind":"ImageStreamTag","namespace":"vic","name":"app:latest"}}}]}}`))
			forbidden(t, "mallory patches her dc to follow vic/app:latest", err)
		}},
		{"L4 BuildConfig and Build FROM another project's tag without a pull right there", func(t *testing.T) {
			forbidden(t, "mallory creates bc FROM vic/base:1", x.mallory.Create(ctx, api.BuildConfigs, refsBC("steal")))
			src := refsBC("s2i")
			src.Spec.Source = api.BuildSource{Binary: &api.BinaryBuildSource{}}
			src.Spec.Strategy = api.BuildStrategy{Type: "Source", SourceStrategy: &api.SourceBuildStrategy{From: src.Spec.Strategy.DockerStrategy.From}}
			forbidden(t, "mallory creates a Source bc with builder image vic/base:1", x.mallory.Create(ctx, api.BuildConfigs, src))
			b := &api.Build{ObjectMeta: api.ObjectMeta{Name: "steal-1", Namespace: "mal"}, Spec: refsBC("steal").Spec.BuildSpec()}
			forbidden(t, "mallory creates a build FROM vic/base:1", x.mallory.Create(ctx, api.Builds, b))
			b = &api.Build{ObjectMeta: api.ObjectMeta{Name: "steal-2", Namespace: "mal"}, Spec: refsBC("steal").Spec.BuildSpec()}
			b.Spec.Strategy.DockerStrategy.From = &api.ObjectReference{Kind: "ImageStreamImage", Namespace: "vic", Name: "base@" + baseD}
			forbidden(t, "mallory creates a build FROM vic/base@digest", x.mallory.Create(ctx, api.Builds, b))
		}},
		{"H2 with image-puller granted in vic, mal follows vic's tags", func(t *testing.T) {
			if err := x.victim.Create(ctx, api.RoleBindings, grant); err != nil {
				t.Fatalf("victim grants image-puller to mallory and mal's deployer and builder: %v", err)
			}
			if err := x.mallory.Create(ctx, api.DeploymentConfigs, refsDC("follow")); err != nil {
				t.Fatalf("mallory creates dc following vic/app:latest after the grant: %v", err)
			}
			if err := x.mallory.Create(ctx, api.BuildConfigs, refsBC("steal")); err != nil {
				t.Fatalf("mallory creates bc FROM vic/base:1 after the grant: %v", err)
			}
			trustWait(t, 2*time.Minute, "follow-1 runs vic/app@"+appD, func() (bool, string) {
				o, err := s.admin.Get(ctx, api.ReplicationControllers, "mal", "follow-1")
				if err != nil {
					dc, _ := s.admin.Get(ctx, api.DeploymentConfigs, "mal", "follow")
					return false, fmt.Sprintf("%v; dc: %+v", err, dc)
				}
				img := o.(*api.ReplicationController).Spec.Template.Spec.Containers[0].Image
				return img == s.ref("vic/app@"+appD), img
			})
			trustWait(t, 2*time.Minute, "build steal-1 resolves vic/base:1", func() (bool, string) {
				o, err := s.admin.Get(ctx, api.Builds, "mal", "steal-1")
				if err != nil {
					bc, _ := s.admin.Get(ctx, api.BuildConfigs, "mal", "steal")
					return false, fmt.Sprintf("%v; bc: %+v", err, bc)
				}
				b := o.(*api.Build)
				return b.Status.BaseImage == s.ref("vic/base@"+baseD), fmt.Sprintf("%+v", b.Status)
			})
		}},
		{"H2 L4 the grant is removed: the controllers stop following vic's tags", func(t *testing.T) {
			if _, err := x.victim.Delete(ctx, api.RoleBindings, "vic", grant.Name); err != nil {
				t.Fatal(err)
			}
			app2, _ := random.Image(256, 1)
			app2D := s.push("vic/app:latest", app2)
			base2, _ := random.Image(256, 1)
			base2D := s.push("vic/base:1", base2)
			trustWait(t, 2*time.Minute, "dc follow says mal may not pull from vic", func() (bool, string) {
				if leaks := refsLeaks(t, s.admin, app2D); len(leaks) > 0 {
					t.Fatalf("vic's new app digest written into %v after the grant was removed", leaks)
				}
				o, err := s.admin.Get(ctx, api.DeploymentConfigs, "mal", "follow")
				if err != nil {
					return false, err.Error()
				}
				for _, c := range o.(*api.DeploymentConfig).Status.Conditions {
					if c.Reason == "ImagePullDenied" {
						t.Logf("condition: %s", c.Message)
						return strings.Contains(c.Message, "image-puller"), c.Message
					}
				}
				return false, fmt.Sprintf("%+v", o.(*api.DeploymentConfig).Status)
			})
			trustWait(t, 2*time.Minute, "bc steal's trigger says mal may not pull from vic", func() (bool, string) {
				if leaks := refsLeaks(t, s.admin, base2D); len(leaks) > 0 {
					t.Fatalf("vic's new base digest written into %v after the grant was removed", leaks)
				}
				o, err := s.admin.Get(ctx, api.Events, "mal", "steal-pull-denied")
				if err != nil {
					bc, _ := s.admin.Get(ctx, api.BuildConfigs, "mal", "steal")
					return false, fmt.Sprintf("%v; bc: %+v", err, bc)
				}
				t.Logf("event: %s", o.(*api.Event).Message)
				return true, ""
			})
			// A build started by hand does not resolve the tag either.
			b := &api.Build{ObjectMeta: api.ObjectMeta{Name: "steal-9", Namespace: "mal"}, Spec: refsBC("steal").Spec.BuildSpec()}
			if err := s.admin.Create(ctx, api.Builds, b); err != nil {
				t.Fatal(err)
			}
			trustWait(t, 2*time.Minute, "build steal-9 fails without resolving vic/base:1", func() (bool, string) {
				o, err := s.admin.Get(ctx, api.Builds, "mal", "steal-9")
				if err != nil {
					return false, err.Error()
				}
				st := o.(*api.Build).Status
				if st.BaseImage != "" || strings.Contains(st.LogTail, base2D) {
					t.Fatalf("build steal-9 resolved vic/base:1 after the grant was removed: %+v", st)
				}
				return api.IsFinished(st.Phase), fmt.Sprintf("%+v", st)
			})
			o, _ := s.admin.Get(ctx, api.Builds, "mal", "steal-9")
			if st := o.(*api.Build).Status; st.Reason != "ImagePullDenied" {
				t.Errorf("build steal-9: %s %s: %s, want reason ImagePullDenied", st.Phase, st.Reason, st.Message)
			} else {
				t.Logf("build steal-9: %s", st.Message)
			}
			for _, d := range []string{app2D, base2D} {
				if leaks := refsLeaks(t, s.admin, d); len(leaks) > 0 {
					t.Errorf("vic's new digest %s in %v", d, leaks)
				}
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.attack)
	}
}
