package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// The tenant isolation attacks of issue 11 (security review C1, H1, C3's
// admission part and M7), each played over HTTP against `slipway start`
// by a user who should not get through: mallory (admin of her own project
// only) and bob (edit in prod).

// tenancy is the shared setup: victim owns vic and vic2, mallory owns
// mal, admin made prod with bob as its editor.
type tenancy struct {
	s                    *trustServer
	victim, mallory, bob *client.Client
}

func startTenancy(t *testing.T) *tenancy {
	ht := htpasswdFile(t, map[string]string{"victim": "victimpw", "mallory": "mallorypw", "bob": "bobpw"})
	s := startTrustServer(t, "--htpasswd", ht)
	x := &tenancy{s: s, victim: s.client("victim", "victimpw"), mallory: s.client("mallory", "mallorypw"), bob: s.client("bob", "bobpw")}
	ctx := context.Background()
	for _, p := range []struct {
		c    *client.Client
		name string
	}{{x.victim, "vic"}, {x.victim, "vic2"}, {x.mallory, "mal"}, {s.admin, "prod"}} {
		if err := p.c.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p.name}}); err != nil {
			t.Fatalf("create project %s: %v", p.name, err)
		}
	}
	x.bind(s.admin, "prod", "bob-edit", "edit", "bob")
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"vic/app:latest", "vic2/app:latest", "prod/web:latest"} {
		if err := remote.Write(mustRef(t, s.ref(ref)), img, s.auth); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
	}
	return x
}

func (x *tenancy) bind(c *client.Client, ns, name, role, user string) {
	x.s.t.Helper()
	if err := c.Create(context.Background(), api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: role},
		Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: user}},
	}); err != nil {
		x.s.t.Fatalf("bind %s to %s in %s: %v", user, role, ns, err)
	}
}

// pipeline is a Pipeline of stream app in ns with stages "project:tag".
func pipeline(ns, name string, stages ...string) *api.Pipeline {
	p := &api.Pipeline{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Spec: api.PipelineSpec{Stream: "app"}}
	for i, st := range stages {
		project, tag, _ := strings.Cut(st, ":")
		p.Spec.Stages = append(p.Spec.Stages, api.PipelineStage{Name: fmt.Sprintf("s%d", i), Project: project, Tag: tag})
	}
	return p
}

// forbidden fails unless err is a 403 (or, with also, one of those codes).
func forbidden(t *testing.T, what string, err error, also ...int) {
	t.Helper()
	st, ok := api.StatusFor(err)
	if err == nil || !ok {
		t.Errorf("%s: err = %v, want 403 Forbidden", what, err)
		return
	}
	if st.Code == http.StatusForbidden {
		t.Logf("%s: refused: %s", what, st.Message)
		return
	}
	for _, c := range also {
		if st.Code == c {
			t.Logf("%s: refused (%d): %s", what, c, st.Message)
			return
		}
	}
	t.Errorf("%s: %d %s, want 403 Forbidden", what, st.Code, st.Message)
}

// promoteAndWait creates a promotion as c and waits until it is decided.
func (x *tenancy) promoteAndWait(t *testing.T, c *client.Client, ns, pl, to string) *api.Promotion {
	t.Helper()
	name := fmt.Sprintf("p-%d", time.Now().UnixNano())
	if err := c.Create(context.Background(), api.Promotions, &api.Promotion{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Spec: api.PromotionSpec{Pipeline: pl, To: to}}); err != nil {
		t.Fatalf("create promotion: %v", err)
	}
	return x.s.waitPromotion(ns, name, "is decided", func(p *api.Promotion) bool {
		return p.Status.Phase != "" && p.Status.Phase != api.PromotionPending
	})
}

// noPromoterBinding fails if the promotion controller granted mal's
// promoter anything in victim's project.
func (x *tenancy) noPromoterBinding(t *testing.T, ns string) {
	t.Helper()
	if _, err := x.s.admin.Get(context.Background(), api.RoleBindings, ns, "system-promoter-mal"); err == nil {
		t.Errorf("project %s has rolebinding system-promoter-mal: mal's promoter may pull there", ns)
	}
}

func TestSecurityTenancy(t *testing.T) {
	x := startTenancy(t)
	ctx := context.Background()
	s := x.s
	rows := []struct {
		name   string
		attack func(t *testing.T)
	}{
		{"C1 pipeline names a project its creator cannot promote in (read)", func(t *testing.T) {
			err := x.mallory.Create(ctx, api.Pipelines, pipeline("mal", "steal", "vic:latest", "mal:stolen"))
			forbidden(t, "mallory creates pipeline vic → mal", err)
			if err == nil {
				p := x.promoteAndWait(t, x.mallory, "mal", "steal", "s1")
				t.Errorf("mallory's promotion out of vic: %s %s", p.Status.Phase, p.Status.Message)
			}
			x.noPromoterBinding(t, "vic")
		}},
		{"C1 pipeline names a project its creator cannot promote in (write and tag lock)", func(t *testing.T) {
			err := x.mallory.Create(ctx, api.Pipelines, pipeline("mal", "plant", "mal:latest", "vic:latest"))
			forbidden(t, "mallory creates pipeline mal → vic", err)
			// The victim still pushes its own tag.
			img, _ := random.Image(256, 1)
			auth := remote.WithAuth(&authn.Basic{Username: "victim", Password: x.victim.Token()})
			if err := remote.Write(mustRef(t, s.ref("vic/app:latest")), img, auth); err != nil {
				t.Errorf("victim pushes vic/app:latest: %v", err)
			}
		}},
		{"C1 pipeline update or patch adds a project its creator cannot promote in", func(t *testing.T) {
			p := pipeline("mal", "grow", "mal:latest", "mal:qa")
			if err := x.mallory.Create(ctx, api.Pipelines, p); err != nil {
				t.Fatalf("mallory creates a pipeline within her project: %v", err)
			}
			p.Spec.Stages = append(p.Spec.Stages, api.PipelineStage{Name: "s2", Project: "vic", Tag: "prod"})
			forbidden(t, "mallory updates her pipeline to add vic", x.mallory.Update(ctx, api.Pipelines, p))
			_, err := x.mallory.Patch(ctx, api.Pipelines, "mal", "grow", []byte(`{"spec":{"stages":[{"name":"a","project":"mal","tag":"latest"},{"name":"b","project":"vic","tag":"latest"}]}}`))
			forbidden(t, "mallory patches her pipeline to add vic", err)
		}},
		{"C1 the pipeline's owner is recorded by the server, not the writer", func(t *testing.T) {
			p := pipeline("mal", "forged", "mal:latest", "mal:qa")
			p.Annotations = map[string]string{pipelineOwnerAnnotation: "victim"}
			if err := x.mallory.Create(ctx, api.Pipelines, p); err != nil {
				t.Fatalf("create: %v", err)
			}
			o, err := s.admin.Get(ctx, api.Pipelines, "mal", "forged")
			if err != nil {
				t.Fatal(err)
			}
			if got := o.GetObjectMeta().Annotations[pipelineOwnerAnnotation]; got != "mallory" {
				t.Errorf("owner annotation = %q, want mallory", got)
			}
		}},
		{"C1 a promotion re-checks the pipeline owner, who lost promote in the source", func(t *testing.T) {
			x.bind(x.victim, "vic2", "mallory-admin", "admin", "mallory")
			if err := x.mallory.Create(ctx, api.Pipelines, pipeline("mal", "was-ok", "vic2:latest", "mal:copy")); err != nil {
				t.Fatalf("mallory, admin in vic2, creates pipeline vic2 → mal: %v", err)
			}
			if _, err := x.victim.Delete(ctx, api.RoleBindings, "vic2", "mallory-admin"); err != nil {
				t.Fatal(err)
			}
			p := x.promoteAndWait(t, x.mallory, "mal", "was-ok", "s1")
			if p.Status.Phase == api.PromotionComplete {
				t.Errorf("promotion after mallory lost vic2: %s %s, want refused", p.Status.Phase, p.Status.Message)
			} else {
				t.Logf("promotion: %s %s", p.Status.Phase, p.Status.Message)
			}
			x.noPromoterBinding(t, "vic2")
		}},
		{"L10 project admin forges an approval in promotion status", func(t *testing.T) {
			p := pipeline("mal", "gated", "mal:latest", "mal:qa")
			p.Spec.Stages[1].RequireApproval = true
			if err := x.mallory.Create(ctx, api.Pipelines, p); err != nil {
				t.Fatal(err)
			}
			pr := &api.Promotion{ObjectMeta: api.ObjectMeta{Name: "gated-1", Namespace: "mal"}, Spec: api.PromotionSpec{Pipeline: "gated", To: "s1"}}
			if err := x.mallory.Create(ctx, api.Promotions, pr); err != nil {
				t.Fatal(err)
			}
			o, err := x.mallory.Get(ctx, api.Promotions, "mal", "gated-1")
			if err != nil {
				t.Fatal(err)
			}
			pr = o.(*api.Promotion)
			if pr.Status.Requester != "mallory" {
				t.Errorf("promotion requester = %q, want mallory (recorded by the server)", pr.Status.Requester)
			}
			pr.Status.Approvals = append(pr.Status.Approvals, api.Approval{User: "admin", At: time.Now()})
			pr.Status.Phase = api.PromotionComplete
			forbidden(t, "mallory writes promotions/gated-1/status", x.mallory.UpdateStatus(ctx, api.Promotions, pr))
		}},
		{"L10 an approval does not follow a pipeline retargeted to another project", func(t *testing.T) {
			if err := x.mallory.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "mal2"}}); err != nil {
				t.Fatal(err)
			}
			img, _ := random.Image(256, 1)
			if err := remote.Write(mustRef(t, s.ref("mal/app:latest")), img, s.auth); err != nil {
				t.Fatal(err)
			}
			p := pipeline("mal", "retarget", "mal:latest", "mal:qa")
			p.Spec.Stages[1].RequireApproval = true
			p.Spec.Stages[1].MinSoak = api.Duration{Duration: time.Hour}
			if err := x.mallory.Create(ctx, api.Pipelines, p); err != nil {
				t.Fatal(err)
			}
			if err := x.mallory.Create(ctx, api.Promotions, &api.Promotion{ObjectMeta: api.ObjectMeta{Name: "retarget-1", Namespace: "mal"}, Spec: api.PromotionSpec{Pipeline: "retarget", To: "s1"}}); err != nil {
				t.Fatal(err)
			}
			s.waitPromotion("mal", "retarget-1", "soaks", func(p *api.Promotion) bool { return strings.HasPrefix(p.Status.Message, "soaking") })
			resp, err := x.mallory.Do(ctx, http.MethodPost, client.Path(api.Promotions, "mal", "retarget-1", "approve"), nil, []byte("{}"), "application/json")
			if err != nil {
				t.Fatalf("mallory approves into mal: %v", err)
			}
			resp.Body.Close()
			// The stage now goes to mal2, without a soak: the approval
			// given for mal must not count there.
			o, err := x.mallory.Get(ctx, api.Pipelines, "mal", "retarget")
			if err != nil {
				t.Fatal(err)
			}
			p = o.(*api.Pipeline)
			p.Spec.Stages[1].Project, p.Spec.Stages[1].MinSoak = "mal2", api.Duration{}
			if err := x.mallory.Update(ctx, api.Pipelines, p); err != nil {
				t.Fatal(err)
			}
			pr := s.waitPromotion("mal", "retarget-1", "moves past the soak", func(p *api.Promotion) bool {
				return !strings.HasPrefix(p.Status.Message, "soaking")
			})
			if pr.Status.Phase != api.PromotionPending || !strings.Contains(pr.Status.Message, "waiting for approval") || !strings.Contains(pr.Status.Message, "mal2") {
				t.Errorf("after retargeting to mal2: %s %q, want Pending, waiting for approval in mal2", pr.Status.Phase, pr.Status.Message)
			}
		}},
		{"H1 editor mints a token for the promoter account", func(t *testing.T) {
			for _, sa := range []string{"promoter", "builder", "deployer", "scanner"} {
				_ = x.bob.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: sa, Namespace: "prod"}})
				_, err := x.bob.CreateToken(ctx, "prod", sa, 0)
				forbidden(t, "bob (edit in prod) mints a token for "+sa, err)
			}
		}},
		{"H1 project admin mints a token for a platform account", func(t *testing.T) {
			_ = x.mallory.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "promoter", Namespace: "mal"}})
			_, err := x.mallory.CreateToken(ctx, "mal", "promoter", 0)
			forbidden(t, "mallory (admin of mal) mints a token for mal's promoter", err)
			// Her own accounts still get tokens, and cluster-admin may
			// mint for platform accounts.
			if err := x.mallory.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "ci", Namespace: "mal"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := x.mallory.CreateToken(ctx, "mal", "ci", time.Hour); err != nil {
				t.Errorf("mallory mints a token for her own account ci: %v", err)
			}
			if _, err := s.admin.CreateToken(ctx, "mal", "promoter", time.Hour); err != nil {
				t.Errorf("cluster-admin mints a token for mal's promoter: %v", err)
			}
		}},
		{"H1 editor mints a token for a service account granted more than the editor holds", func(t *testing.T) {
			for _, sa := range []string{"robot", "deploybot", "ci2"} {
				if err := s.admin.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: sa, Namespace: "prod"}}); err != nil {
					t.Fatal(err)
				}
			}
			saSubject := func(name string) []api.Subject {
				return []api.Subject{{Kind: api.SubjectServiceAccount, Name: name, Namespace: "prod"}}
			}
			// An admin made robot admin of prod, and victim let deploybot
			// edit vic.
			if err := s.admin.Create(ctx, api.RoleBindings, &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: "robot-admin", Namespace: "prod"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "admin"}, Subjects: saSubject("robot")}); err != nil {
				t.Fatal(err)
			}
			if err := x.victim.Create(ctx, api.RoleBindings, &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: "prod-deploybot", Namespace: "vic"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "edit"}, Subjects: saSubject("deploybot")}); err != nil {
				t.Fatal(err)
			}
			_, err := x.bob.CreateToken(ctx, "prod", "robot", time.Hour)
			forbidden(t, "bob (edit in prod) mints a token for robot (admin in prod)", err)
			_, err = x.bob.CreateToken(ctx, "prod", "deploybot", time.Hour)
			forbidden(t, "bob (edit in prod) mints a token for deploybot (edit in vic)", err)
			if _, err := x.bob.CreateToken(ctx, "prod", "ci2", time.Hour); err != nil {
				t.Errorf("bob mints a token for ci2, which holds nothing he lacks: %v", err)
			}
		}},
		{"M7 editor backdates image stream tag history (skips minSoak)", func(t *testing.T) {
			o, err := x.bob.Get(ctx, api.ImageStreams, "prod", "web")
			if err != nil {
				t.Fatal(err)
			}
			is := o.(*api.ImageStream)
			for i := range is.Status.Tags {
				for j := range is.Status.Tags[i].Items {
					is.Status.Tags[i].Items[j].Created = time.Now().Add(-30 * 24 * time.Hour)
				}
			}
			forbidden(t, "bob writes prod/web's tag history", x.bob.UpdateStatus(ctx, api.ImageStreams, is), http.StatusUnprocessableEntity)
		}},
		{"M7 editor forges pod status", func(t *testing.T) {
			pod := &api.Pod{ObjectMeta: api.ObjectMeta{Name: "forge", Namespace: "prod"}, Spec: api.PodSpec{NodeName: "nowhere", Containers: []api.Container{{Name: "c", Image: "busybox"}}}}
			if err := x.bob.Create(ctx, api.Pods, pod); err != nil {
				t.Fatal(err)
			}
			o, err := x.bob.Get(ctx, api.Pods, "prod", "forge")
			if err != nil {
				t.Fatal(err)
			}
			pod = o.(*api.Pod)
			pod.Status.Phase, pod.Status.PodIP = "Running", "127.0.0.1"
			forbidden(t, "bob writes pods/forge/status", x.bob.UpdateStatus(ctx, api.Pods, pod))
		}},
		{"M7 editor forges replication controller and build config status", func(t *testing.T) {
			bc := &api.BuildConfig{ObjectMeta: api.ObjectMeta{Name: "web", Namespace: "prod"}, Spec: api.BuildConfigSpec{
				Source:   api.BuildSource{Dockerfile: "FROM scratch\n"},
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "web:built"}},
			}}
			if err := x.bob.Create(ctx, api.BuildConfigs, bc); err != nil {
				t.Fatalf("create build config: %v", err)
			}
			writeBC := func(change func(*api.BuildConfig)) error {
				return retryConflict(func() error {
					o, err := x.bob.Get(ctx, api.BuildConfigs, "prod", "web")
					if err != nil {
						return err
					}
					bc := o.(*api.BuildConfig)
					change(bc)
					return x.bob.UpdateStatus(ctx, api.BuildConfigs, bc)
				})
			}
			forbidden(t, "bob writes buildconfigs/web/status lastTriggeredImage", writeBC(func(bc *api.BuildConfig) {
				bc.Status.LastTriggeredImage = "sha256:" + strings.Repeat("1", 64)
			}))
			// start-build's compare-and-swap of lastVersion still works.
			if err := writeBC(func(bc *api.BuildConfig) { bc.Status.LastVersion++ }); err != nil {
				t.Errorf("bob bumps lastVersion (start-build): %v", err)
			}
			rc := &api.ReplicationController{ObjectMeta: api.ObjectMeta{Name: "rc", Namespace: "prod"}, Spec: api.ReplicationControllerSpec{
				Selector: map[string]string{"app": "rc"},
				Template: &api.PodTemplateSpec{ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "rc"}}, Spec: api.PodSpec{Containers: []api.Container{{Name: "c", Image: "busybox"}}}},
			}}
			if err := x.bob.Create(ctx, api.ReplicationControllers, rc); err != nil {
				t.Fatal(err)
			}
			o, _ := x.bob.Get(ctx, api.ReplicationControllers, "prod", "rc")
			rc = o.(*api.ReplicationController)
			rc.Status.ReadyReplicas = 5
			forbidden(t, "bob writes replicationcontrollers/rc/status", x.bob.UpdateStatus(ctx, api.ReplicationControllers, rc))
		}},
		{"M7 an editor's rollback and tag deletion still work, stamped by the server", func(t *testing.T) {
			var digests []string
			for i := 0; i < 2; i++ {
				img, _ := random.Image(256, 1)
				d, _ := img.Digest()
				if err := remote.Write(mustRef(t, s.ref("prod/web:rb")), img, s.auth); err != nil {
					t.Fatal(err)
				}
				digests = append(digests, d.String())
			}
			bob := s.login("bob", "bobpw")
			start := time.Now().Add(-time.Minute)
			bob.ok("rollback", "is/prod/web:rb", "--to", "1")
			o, err := s.admin.Get(ctx, api.ImageStreams, "prod", "web")
			if err != nil {
				t.Fatal(err)
			}
			for _, tag := range o.(*api.ImageStream).Status.Tags {
				if tag.Tag != "rb" {
					continue
				}
				head := tag.Items[0]
				if head.Image != digests[0] || head.By != "bob" || head.Created.Before(start) {
					t.Errorf("after bob's rollback, prod/web:rb's head is %+v; want %s by bob, created now", head, digests[0])
				}
			}
			bob.ok("tag", "-d", "prod/web:rb")
			o, _ = s.admin.Get(ctx, api.ImageStreams, "prod", "web")
			for _, tag := range o.(*api.ImageStream).Status.Tags {
				if tag.Tag == "rb" {
					t.Errorf("after bob's tag -d, prod/web:rb still has history %+v", tag.Items)
				}
			}
		}},
		{"L9 editor takes another project's service cluster IP", func(t *testing.T) {
			if err := x.victim.Create(ctx, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Name: "db", Namespace: "vic"}, Spec: api.ServiceSpec{Selector: map[string]string{"app": "db"}, Ports: []api.ServicePort{{Port: 5432}}}}); err != nil {
				t.Fatal(err)
			}
			var vip string
			trustWait(t, time.Minute, "vic/db gets a cluster IP", func() (bool, string) {
				o, err := s.admin.Get(ctx, api.Services, "vic", "db")
				if err != nil {
					return false, err.Error()
				}
				vip = o.(*api.Service).Spec.ClusterIP
				return vip != "", fmt.Sprintf("%+v", o.(*api.Service).Spec)
			})
			err := x.bob.Create(ctx, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Name: "db", Namespace: "prod"}, Spec: api.ServiceSpec{ClusterIP: vip, Ports: []api.ServicePort{{Port: 5432}}}})
			forbidden(t, "bob creates a service on vic/db's cluster IP "+vip, err, http.StatusBadRequest)
			if err := x.bob.Create(ctx, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Name: "db2", Namespace: "prod"}, Spec: api.ServiceSpec{Ports: []api.ServicePort{{Port: 5432}}}}); err != nil {
				t.Fatal(err)
			}
			var mine *api.Service
			trustWait(t, time.Minute, "prod/db2 gets a cluster IP", func() (bool, string) {
				o, err := x.bob.Get(ctx, api.Services, "prod", "db2")
				if err != nil {
					return false, err.Error()
				}
				mine = o.(*api.Service)
				return mine.Spec.ClusterIP != "", fmt.Sprintf("%+v", mine.Spec)
			})
			own := mine.Spec.ClusterIP
			mine.Spec.ClusterIP = vip
			forbidden(t, "bob moves prod/db2 onto vic/db's cluster IP", x.bob.Update(ctx, api.Services, mine), http.StatusBadRequest)
			// Leaving clusterIP out (as a manifest does) keeps the assigned one.
			o, _ := x.bob.Get(ctx, api.Services, "prod", "db2")
			mine = o.(*api.Service)
			mine.Spec.ClusterIP = ""
			mine.Spec.Ports[0].Port = 5433
			if err := x.bob.Update(ctx, api.Services, mine); err != nil {
				t.Fatalf("bob updates prod/db2 without a clusterIP: %v", err)
			}
			if o, _ := s.admin.Get(ctx, api.Services, "prod", "db2"); o.(*api.Service).Spec.ClusterIP != own {
				t.Errorf("prod/db2's cluster IP after an update without one: %q, want %s", o.(*api.Service).Spec.ClusterIP, own)
			}
		}},
		{"C3 editor writes endpoints of a service with a selector", func(t *testing.T) {
			if err := x.bob.Create(ctx, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Name: "sel", Namespace: "prod"}, Spec: api.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []api.ServicePort{{Port: 80}}}}); err != nil {
				t.Fatal(err)
			}
			forbidden(t, "bob writes endpoints of service sel", putEndpoints(x.bob, "prod", "sel", "10.1.2.3"))
		}},
		{"C3 editor points manual endpoints at a forbidden or foreign address", func(t *testing.T) {
			if err := x.bob.Create(ctx, api.Services, &api.Service{ObjectMeta: api.ObjectMeta{Name: "ext", Namespace: "prod"}, Spec: api.ServiceSpec{Ports: []api.ServicePort{{Port: 80}}}}); err != nil {
				t.Fatal(err)
			}
			for _, ip := range []string{"127.0.0.1", "::1", "169.254.169.254", "fe80::1", "0.0.0.0", "10.43.0.10", "10.9.9.9"} {
				forbidden(t, "bob points endpoints ext at "+ip, putEndpoints(x.bob, "prod", "ext", ip), http.StatusBadRequest)
			}
			if o, err := s.admin.Get(ctx, api.EndpointsResource, "prod", "ext"); err == nil && len(o.(*api.Endpoints).Subsets) > 0 {
				t.Errorf("endpoints ext after refused writes: %+v", o.(*api.Endpoints).Subsets)
			}
			// Cluster-admin allows an outside address, never loopback.
			if err := putEndpoints(s.admin, "prod", "ext", "10.9.9.9"); err != nil {
				t.Errorf("cluster-admin points endpoints ext at 10.9.9.9: %v", err)
			}
			forbidden(t, "cluster-admin points endpoints ext at 127.0.0.1", putEndpoints(s.admin, "prod", "ext", "127.0.0.1"), http.StatusBadRequest)
		}},
	}
	rows = append(rows, tenancyLimitRows(x)...)
	for _, r := range rows {
		t.Run(r.name, r.attack)
	}
}

// pipelineOwnerAnnotation is api.PipelineOwnerAnnotation.
const pipelineOwnerAnnotation = "slipway.dev/pipeline-owner"

// retryConflict runs write again while it answers 409: a controller
// wrote the object between the read and the write.
func retryConflict(write func() error) error {
	for attempt := 0; ; attempt++ {
		if err := write(); !api.IsConflict(err) || attempt == 10 {
			return err
		}
	}
}

// putEndpoints points the Endpoints of service ns/name at ip as c,
// creating them if the endpoints controller has not yet.
func putEndpoints(c *client.Client, ns, name, ip string) error {
	ctx := context.Background()
	subsets := []api.EndpointSubset{{Addresses: []api.EndpointAddress{{IP: ip}}, Ports: []api.ServicePort{{Port: 80}}}}
	for attempt := 0; attempt < 10; attempt++ {
		o, err := c.Get(ctx, api.EndpointsResource, ns, name)
		if api.IsNotFound(err) {
			err = c.Create(ctx, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Subsets: subsets})
		} else if err == nil {
			ep := o.(*api.Endpoints)
			ep.Subsets = subsets
			err = c.Update(ctx, api.EndpointsResource, ep)
		}
		if api.IsConflict(err) || api.IsAlreadyExists(err) {
			continue // the endpoints controller wrote them meanwhile
		}
		return err
	}
	return fmt.Errorf("endpoints %s/%s kept changing", ns, name)
}
