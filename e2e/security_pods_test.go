package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// Issue 14 item 5, containers contain: on a real `slipway start` with its
// node agent, alice (admin of her own project, nothing more) gets pods
// that run restricted, cannot ask for more, cannot grant herself the
// exception, and a service account the cluster admin granted can. What a
// container may do is read inside it, from /proc/self/status.
func TestSecurityPods(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"alice": "alicepw"})
	c := startCluster(t, "secpods", "--htpasswd", ht)
	ctx := context.Background()

	alice := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	alice.ok("login", c.p.url(), "-u", "alice", "-p", "alicepw", "--certificate-authority", c.p.caFile())
	alice.ok("new-project", "ali")
	al := securityClient(t, c.p, "alice", "alicepw")
	image := c.p.registry + "/ali/app:1"
	if err := remote.Write(mustRef(t, image), podImage(t, nil, "sleep", "3600"), c.auth); err != nil {
		t.Fatal(err)
	}
	o, err := al.Get(ctx, api.Projects, "", "ali")
	if err != nil {
		t.Fatal(err)
	}
	rng, err := api.ProjectUIDRange(o.(*api.Project))
	if err != nil {
		t.Fatalf("alice's new project: %v; want a UID range", err)
	}
	shop, err := c.admin.Get(ctx, api.Projects, "", c.ns)
	if err != nil {
		t.Fatal(err)
	}
	if other, err := api.ProjectUIDRange(shop.(*api.Project)); err != nil || other == rng {
		t.Fatalf("project %s has range %v (%v), ali has %v; want two different ranges", c.ns, other, err, rng)
	}
	first := strconv.FormatInt(rng.First, 10)

	pod := func(name string, change func(*api.Pod)) *api.Pod {
		p := &api.Pod{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: "ali"},
			Spec:       api.PodSpec{Containers: []api.Container{{Name: "app", Image: image}}},
		}
		if change != nil {
			change(p)
		}
		return p
	}
	int64p := func(v int64) *int64 { return &v }
	yes := func() *bool { v := true; return &v }
	// inside reads, in a running container, who it runs as and what it
	// may do.
	inside := func(t *testing.T, name string) map[string]string {
		t.Helper()
		waitFor(t, 2*time.Minute, name+" runs", func() (bool, string) {
			o, err := al.Get(ctx, api.Pods, "ali", name)
			if err != nil {
				return false, err.Error()
			}
			return running(o.(*api.Pod)), describePods([]*api.Pod{o.(*api.Pod)})
		})
		out := alice.ok("exec", name, "-n", "ali", "--", "sh", "-c", "echo uid: $(id -u); echo gid: $(id -g); cat /proc/self/status")
		got := map[string]string{}
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				got[k] = strings.TrimSpace(v)
			}
		}
		return got
	}
	refused := func(t *testing.T, err error, field string) {
		t.Helper()
		st, ok := api.StatusFor(err)
		if err == nil || !ok || st.Code != http.StatusForbidden || !strings.Contains(st.Message, field) {
			t.Fatalf("create = %v; want 403 Forbidden naming %s", err, field)
		}
		t.Logf("refused: %s", st.Message)
	}
	grantHint := "slipway adm policy add-scc-to-user privileged"

	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"an admitted pod runs as the project's first UID with no capabilities, no new privileges and seccomp", func(t *testing.T) {
			p := pod("plain", nil)
			if err := al.Create(ctx, api.Pods, p); err != nil {
				t.Fatal(err)
			}
			if sc := p.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != rng.First {
				t.Errorf("the created pod's securityContext = %+v; want runAsUser %d defaulted", sc, rng.First)
			}
			got := inside(t, "plain")
			for k, v := range map[string]string{"uid": first, "gid": first, "CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
				if got[k] != v {
					t.Errorf("inside the container %s = %q, want %q", k, got[k], v)
				}
			}
			// The image sets no USER: it was made to run as root, and
			// the project is told it runs as its UID instead.
			out := alice.ok("get", "events", "-n", "ali")
			if !strings.Contains(out, "ImageAssumesRoot") || !strings.Contains(out, "UID "+first) {
				t.Errorf("slipway get events:\n%s\nwant an ImageAssumesRoot warning naming UID %s", out, first)
			}
		}},
		{"a privileged pod is refused, naming the field and how an admin grants it", func(t *testing.T) {
			err := al.Create(ctx, api.Pods, pod("priv", func(p *api.Pod) {
				p.Spec.Containers[0].SecurityContext = &api.SecurityContext{Privileged: yes()}
			}))
			refused(t, err, "spec.containers[0].securityContext.privileged")
			refused(t, err, grantHint)
		}},
		{"a pod running as UID 0 is refused", func(t *testing.T) {
			refused(t, al.Create(ctx, api.Pods, pod("root", func(p *api.Pod) {
				p.Spec.SecurityContext = &api.PodSecurityContext{RunAsUser: int64p(0)}
			})), "spec.securityContext.runAsUser")
		}},
		{"a pod running as a UID of another project's range is refused", func(t *testing.T) {
			refused(t, al.Create(ctx, api.Pods, pod("theirs", func(p *api.Pod) {
				p.Spec.Containers[0].SecurityContext = &api.SecurityContext{RunAsUser: int64p(rng.First + rng.Size)}
			})), "spec.containers[0].securityContext.runAsUser")
		}},
		{"a hostPath volume is refused", func(t *testing.T) {
			refused(t, al.Create(ctx, api.Pods, pod("hostpath", func(p *api.Pod) {
				p.Spec.Volumes = []api.Volume{{Name: "etc", HostPath: &api.HostPathVolumeSource{Path: "/etc"}}}
				p.Spec.Containers[0].VolumeMounts = []api.VolumeMount{{Name: "etc", MountPath: "/host"}}
			})), "spec.volumes[0].hostPath")
		}},
		{"hostNetwork is refused", func(t *testing.T) {
			refused(t, al.Create(ctx, api.Pods, pod("hostnet", func(p *api.Pod) { p.Spec.HostNetwork = true })), "spec.hostNetwork")
		}},
		{"added capabilities are refused", func(t *testing.T) {
			refused(t, al.Create(ctx, api.Pods, pod("caps", func(p *api.Pod) {
				p.Spec.Containers[0].SecurityContext = &api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"NET_ADMIN"}}}
			})), "spec.containers[0].securityContext.capabilities.add")
		}},
		{"a replication controller whose template is privileged is refused", func(t *testing.T) {
			rc := &api.ReplicationController{
				ObjectMeta: api.ObjectMeta{Name: "privrc", Namespace: "ali"},
				Spec: api.ReplicationControllerSpec{Replicas: 1, Selector: map[string]string{"app": "privrc"}, Template: &api.PodTemplateSpec{
					ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "privrc"}},
					Spec:       pod("x", func(p *api.Pod) { p.Spec.HostPID = true }).Spec,
				}},
			}
			refused(t, al.Create(ctx, api.ReplicationControllers, rc), "spec.template.spec.hostPID")
		}},
		{"a forged privileged marker is dropped and a pod made by a controller runs restricted", func(t *testing.T) {
			rc := &api.ReplicationController{
				ObjectMeta: api.ObjectMeta{Name: "web", Namespace: "ali"},
				Spec: api.ReplicationControllerSpec{Replicas: 1, Selector: map[string]string{"app": "web"}, Template: &api.PodTemplateSpec{
					ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "web"}, Annotations: map[string]string{api.PodSecurityAnnotation: api.PodSecurityPrivileged}},
					Spec:       pod("x", nil).Spec,
				}},
			}
			if err := al.Create(ctx, api.ReplicationControllers, rc); err != nil {
				t.Fatal(err)
			}
			o, err := al.Get(ctx, api.ReplicationControllers, "ali", "web")
			if err != nil {
				t.Fatal(err)
			}
			if v, ok := o.(*api.ReplicationController).Spec.Template.Annotations[api.PodSecurityAnnotation]; ok {
				t.Errorf("the stored template keeps the writer's %s=%s; want it dropped", api.PodSecurityAnnotation, v)
			}
			var name string
			waitFor(t, 2*time.Minute, "the controller's pod", func() (bool, string) {
				items, _, err := al.List(ctx, api.Pods, "ali", client.ListOptions{LabelSelector: "app=web"})
				if err != nil || len(items) == 0 {
					return false, "no pod yet"
				}
				name = items[0].GetObjectMeta().Name
				return true, ""
			})
			if got := inside(t, name); got["uid"] != first || got["CapEff"] != "0000000000000000" {
				t.Errorf("in the controller's pod: uid %s, CapEff %s; want %s, no capabilities", got["uid"], got["CapEff"], first)
			}
		}},
		{"alice cannot edit her project's UID range", func(t *testing.T) {
			o, err := al.Get(ctx, api.Projects, "", "ali")
			if err != nil {
				t.Fatal(err)
			}
			p := o.(*api.Project)
			p.Annotations[api.UIDRangeAnnotation] = "0/2000000000"
			if err := al.Update(ctx, api.Projects, p); err != nil {
				t.Logf("update refused (also fine): %v", err)
			}
			o, _ = al.Get(ctx, api.Projects, "", "ali")
			if got := o.GetObjectMeta().Annotations[api.UIDRangeAnnotation]; got != rng.String() {
				t.Errorf("after alice's update the range is %q, want %q kept", got, rng)
			}
		}},
		{"a project admin cannot grant the exception to her own service account", func(t *testing.T) {
			alice.ok("create", "serviceaccount", "ops", "-n", "ali")
			alice.fails("cannot get clusterrolebindings", "adm", "policy", "add-scc-to-user", "privileged", "-z", "ops", "-n", "ali")
			err := al.Create(ctx, api.ClusterRoleBindings, &api.ClusterRoleBinding{
				ObjectMeta: api.ObjectMeta{Name: api.PrivilegedPodsRole},
				RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: api.PrivilegedPodsRole},
				Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "ops", Namespace: "ali"}},
			})
			if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden {
				t.Fatalf("alice creates the ClusterRoleBinding: %v; want 403", err)
			}
			// A RoleBinding of the role in her project is hers to make,
			// and grants nothing: only a cluster-wide binding counts.
			if err := al.Create(ctx, api.RoleBindings, &api.RoleBinding{
				ObjectMeta: api.ObjectMeta{Name: "mine", Namespace: "ali"},
				RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: api.PrivilegedPodsRole},
				Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "ops", Namespace: "ali"}},
			}); err != nil {
				t.Logf("the RoleBinding was refused (also fine): %v", err)
			}
			err = al.Create(ctx, api.Pods, pod("selfgrant", func(p *api.Pod) {
				p.Spec.ServiceAccountName = "ops"
				p.Spec.SecurityContext = &api.PodSecurityContext{RunAsUser: int64p(0)}
			}))
			refused(t, err, "service account ops does not hold it")
		}},
		{"the service account a cluster admin granted runs pods as root with added capabilities", func(t *testing.T) {
			c.cli.ok("adm", "policy", "add-scc-to-user", "privileged", "-z", "ops", "-n", "ali")
			p := pod("granted", func(p *api.Pod) {
				p.Spec.ServiceAccountName = "ops"
				p.Spec.SecurityContext = &api.PodSecurityContext{RunAsUser: int64p(0)}
				// Not privileged: true, which this machine's engine cannot
				// start (its own bounding set lacks CAP_SYS_RESOURCE); it
				// is admitted below.
				p.Spec.Containers[0].SecurityContext = &api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"NET_ADMIN"}}}
			})
			if err := al.Create(ctx, api.Pods, p); err != nil {
				t.Fatal(err)
			}
			if p.Annotations[api.PodSecurityAnnotation] != api.PodSecurityPrivileged {
				t.Errorf("the granted pod's annotations = %v; want %s=%s", p.Annotations, api.PodSecurityAnnotation, api.PodSecurityPrivileged)
			}
			got := inside(t, "granted")
			capEff, _ := strconv.ParseUint(got["CapEff"], 16, 64)
			if got["uid"] != "0" || capEff&(1<<12) == 0 {
				t.Errorf("in the granted pod: uid %s, CapEff %s; want 0 and CAP_NET_ADMIN (bit 12)", got["uid"], got["CapEff"])
			}
			priv := pod("fullpriv", func(p *api.Pod) {
				p.Spec.ServiceAccountName = "ops"
				p.Spec.Containers[0].SecurityContext = &api.SecurityContext{Privileged: yes()}
			})
			if err := al.Create(ctx, api.Pods, priv); err != nil {
				t.Errorf("a privileged: true pod of the granted account: %v; want it admitted", err)
			}
			if _, err := al.Delete(ctx, api.Pods, "ali", "fullpriv"); err != nil {
				t.Error(err)
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
}
