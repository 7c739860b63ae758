package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/rbac"
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
		{"L11 with image-puller in vic, mallory mirrors vic/app:latest into mal with a spec tag", func(t *testing.T) {
			if err := x.victim.Create(ctx, api.RoleBindings, mirrorGrant); err != nil {
				t.Fatalf("victim grants image-puller in vic to mallory: %v", err)
			}
			mirror := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "mirror", Namespace: "mal"}, Spec: api.ImageStreamSpec{Tags: []api.TagReference{{
				Name: "latest", From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "vic", Name: "app:latest"},
			}}}}
			if err := x.mallory.Create(ctx, api.ImageStreams, mirror); err != nil {
				t.Fatalf("mallory creates mal/mirror following vic/app:latest: %v", err)
			}
			x.waitMirror(t, s.tagDigest("vic/app:latest"))
			// While the grant lasts, the tag follows vic's pushes.
			next, _ := random.Image(256, 1)
			x.waitMirror(t, s.push("vic/app:latest", next))
		}},
		{"L11 the grant is removed: mal's spec tag no longer moves with vic's tag", func(t *testing.T) {
			before := x.mirrorHead(t)
			if _, err := x.victim.Delete(ctx, api.RoleBindings, "vic", mirrorGrant.Name); err != nil {
				t.Fatal(err)
			}
			after, _ := random.Image(256, 1)
			afterD := s.push("vic/app:latest", after)
			cond := x.waitMirrorRefused(t, afterD)
			t.Logf("mal/mirror:latest: %s: %s", cond.Reason, cond.Message)
			if !strings.Contains(cond.Message, "mallory") || !strings.Contains(cond.Message, "image-puller") {
				t.Errorf("condition %q does not say that mallory lacks image-puller in vic", cond.Message)
			}
			if got := x.mirrorHead(t); got != before {
				t.Errorf("mal/mirror:latest = %s, want %s (where it was when the grant was removed)", got, before)
			}
			if _, err := s.admin.Get(ctx, api.Images, "mal", afterD); err == nil {
				t.Errorf("mal has an Image record of vic's new digest %s", afterD)
			}
		}},
		{"C1 a promotion's promoter moves a stage tag after the pipeline owner lost promote there", func(t *testing.T) {
			x.bind(x.victim, "vic2", "mallory-admin", "admin", "mallory")
			first, _ := random.Image(256, 1)
			s.push("mal/app:latest", first)
			if err := x.mallory.Create(ctx, api.Pipelines, pipeline("mal", "into-vic2", "mal:latest", "vic2:frommal")); err != nil {
				t.Fatalf("mallory, admin in vic2, creates pipeline mal → vic2: %v", err)
			}
			if p := x.promoteAndWait(t, x.mallory, "mal", "into-vic2", "s1"); p.Status.Phase != api.PromotionComplete {
				t.Fatalf("promotion while mallory is admin in vic2: %s %s, want Complete", p.Status.Phase, p.Status.Message)
			}
			// Promotions now copy and move tags inside the registry, with
			// no promoter token; the promoter account and its tokens are
			// still the platform's (a cluster admin may mint one), and the
			// registry must still refuse its stage-tag moves once the
			// pipeline owner lost promote. The account is made here, as
			// the platform made it before.
			if err := s.admin.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "promoter", Namespace: "vic2"}}); err != nil && !api.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			if err := s.admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
				ObjectMeta: api.ObjectMeta{Name: "system-promoter", Namespace: "vic2"},
				RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: rbac.ImageBuilder},
				Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "promoter", Namespace: "vic2"}},
			}); err != nil && !api.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			tok, err := s.admin.CreateToken(ctx, "vic2", "promoter", 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := x.victim.Delete(ctx, api.RoleBindings, "vic2", "mallory-admin"); err != nil {
				t.Fatal(err)
			}
			stale, _ := random.Image(256, 1)
			promoter := remote.WithAuth(&authn.Basic{Username: "promoter", Password: tok.Status.Token})
			err = remote.Write(mustRef(t, s.ref("vic2/app:frommal")), stale, promoter)
			if err == nil || !strings.Contains(err.Error(), "DENIED") {
				t.Errorf("the promoter moves vic2/app:frommal after mallory lost promote in vic2: err = %v, want DENIED", err)
			} else {
				t.Logf("promoter refused: %v", err)
			}
			// The victim's own push is no longer locked by mallory's stage.
			own, _ := random.Image(256, 1)
			victim := remote.WithAuth(&authn.Basic{Username: "victim", Password: x.victim.Token()})
			if err := remote.Write(mustRef(t, s.ref("vic2/app:frommal")), own, victim); err != nil {
				t.Errorf("victim pushes vic2/app:frommal after mallory lost promote in vic2: %v", err)
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.attack)
	}
}

// mirrorGrant lets mallory pull from vic, for the spec tag rows (L11).
var mirrorGrant = &api.RoleBinding{
	ObjectMeta: api.ObjectMeta{Name: "mal-mirrors", Namespace: "vic"},
	RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
	Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: "mallory"}},
}

// mirrorTag is the status of mal/mirror:latest.
func (x *tenancy) mirrorTag(t *testing.T) api.NamedTagEventList {
	t.Helper()
	o, err := x.s.admin.Get(context.Background(), api.ImageStreams, "mal", "mirror")
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range o.(*api.ImageStream).Status.Tags {
		if tg.Tag == "latest" {
			return tg
		}
	}
	return api.NamedTagEventList{}
}

// mirrorHead is the digest mal/mirror:latest points at, or "".
func (x *tenancy) mirrorHead(t *testing.T) string {
	t.Helper()
	if tg := x.mirrorTag(t); len(tg.Items) > 0 {
		return tg.Items[0].Image
	}
	return ""
}

// waitMirror waits until mal/mirror:latest points at d.
func (x *tenancy) waitMirror(t *testing.T, d string) {
	t.Helper()
	trustWait(t, 2*time.Minute, "mal/mirror:latest follows vic/app:latest to "+d, func() (bool, string) {
		tg := x.mirrorTag(t)
		return len(tg.Items) > 0 && tg.Items[0].Image == d, fmt.Sprintf("%+v", tg)
	})
}

// waitMirrorRefused waits until the tagger says it no longer follows vic
// for mal/mirror:latest, and fails at once if the tag moves to d.
func (x *tenancy) waitMirrorRefused(t *testing.T, d string) api.TagEventCondition {
	t.Helper()
	var cond api.TagEventCondition
	trustWait(t, 2*time.Minute, "mal/mirror:latest says it no longer follows vic", func() (bool, string) {
		tg := x.mirrorTag(t)
		if len(tg.Items) > 0 && tg.Items[0].Image == d {
			t.Fatalf("mal/mirror:latest moved to vic's new digest %s after mallory's grant was removed", d)
		}
		for _, c := range tg.Conditions {
			if c.Status == "False" && c.Reason == "ImagePullDenied" {
				cond = c
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", tg)
	})
	return cond
}
