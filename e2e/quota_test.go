package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// TestQuotaPerProject is issue 14's quota on the real engine: a
// replication controller asking for 11 replicas in a project with
// pods: 10 gets 10 running pods and says why the 11th is missing; a
// direct create of an 11th pod is refused with the quota named; a
// deployment config's refused pod shows on the config and comes when
// room appears; a soft
// limit warns on the CLI; describe shows used/hard; and a project's own
// admin can read the quota but not raise or delete it.
func TestQuotaPerProject(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"alice": "alicepw"})
	c := startCluster(t, "quota", "--htpasswd", ht)
	ctx := context.Background()
	const refusal = "exceeded quota compute: pods used 10, requested 1, hard 10"

	c.apply(`kind: ResourceQuota
metadata: {name: compute}
spec:
  hard: {pods: "10", services: "2"}
  soft: {services: "1"}
`)
	c.push("app:1", podImage(t, nil, "sh", "-c", "exec sleep 3600"))
	c.apply(`kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 11
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: app, image: ` + c.ref("app:1") + `}
`)
	c.waitRunning("app=web", 10, 2*time.Minute)
	waitFor(t, 30*time.Second, "rc web says why its 11th pod is missing", func() (bool, string) {
		rc := c.rc("web")
		for _, cd := range rc.Status.Conditions {
			if cd.Type == api.ReplicaFailure && cd.Reason == api.FailedCreate && strings.Contains(cd.Message, refusal) {
				return true, ""
			}
		}
		return false, mustJSON(t, rc.Status)
	})
	// The controller records the event after the condition.
	waitFor(t, 30*time.Second, "get events shows the refused pod", func() (bool, string) {
		ev := c.cli.ok("get", "events")
		return strings.Contains(ev, "FailedCreate") && strings.Contains(ev, refusal), ev
	})
	if n := len(c.pods("app=web")); n != 10 {
		t.Errorf("rc web has %d pods, want 10", n)
	}

	// A direct create is refused the same way.
	pod := filepath.Join(t.TempDir(), "pod.yaml")
	os.WriteFile(pod, []byte(`kind: Pod
metadata: {name: extra}
spec:
  containers:
  - {name: app, image: `+c.ref("app:1")+`}
`), 0o600)
	c.cli.fails(refusal, "apply", "-f", pod)
	if _, err := c.pod("extra"); !api.IsNotFound(err) {
		t.Errorf("the refused pod exists: %v", err)
	}

	// Soft: the second service is created with a warning; the third is
	// over the hard limit.
	svc := func(n string) string {
		f := filepath.Join(t.TempDir(), n+".yaml")
		os.WriteFile(f, []byte("kind: Service\nmetadata: {name: "+n+"}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n"), 0o600)
		return f
	}
	if _, errOut, err := c.cli.run("", "apply", "-f", svc("one")); err != nil || strings.Contains(errOut, "Warning") {
		t.Fatalf("first service: err %v, stderr %q; want no warning", err, errOut)
	}
	_, errOut, err := c.cli.run("", "apply", "-f", svc("two"))
	if want := "Warning: over the soft limit of quota compute: services used 1, requested 1, soft 1"; err != nil || !strings.Contains(errOut, want) {
		t.Errorf("second service: err %v, stderr %q; want it created with %q", err, errOut, want)
	}
	c.cli.fails("exceeded quota compute: services used 2, requested 1, hard 2", "apply", "-f", svc("three"))

	// describe shows used/soft/hard per resource, as the controller
	// counted them; get -o json carries the same status.
	waitFor(t, 30*time.Second, "describe quota shows the usage", func() (bool, string) {
		out := c.cli.ok("describe", "quota", "compute")
		return strings.Contains(out, "pods      10    -     10") && strings.Contains(out, "services  2     1     2"), out
	})
	if out := c.cli.ok("get", "quota"); !strings.Contains(out, "pods=10,services=2") {
		t.Errorf("get quota does not show hard and used:\n%s", out)
	}
	var q api.ResourceQuota
	if err := json.Unmarshal([]byte(c.cli.ok("get", "quota", "compute", "-o", "json")), &q); err != nil {
		t.Fatal(err)
	}
	if q.Status.Used["pods"] != "10" || q.Status.Hard["pods"] != "10" {
		t.Errorf("get quota -o json: status %+v, want used and hard pods 10", q.Status)
	}

	// Scaling down frees room: the controller's condition clears.
	c.cli.ok("scale", "rc/web", "--replicas", "9")
	waitFor(t, 30*time.Second, "rc web's failure condition clears", func() (bool, string) {
		rc := c.rc("web")
		return len(rc.Status.Conditions) == 0, mustJSON(t, rc.Status)
	})
	// The surplus pod counts until it is gone (after its grace period).
	waitFor(t, 30*time.Second, "rc web's surplus pod is deleted", func() (bool, string) {
		ps := c.pods("app=web")
		return len(ps) == 9, describePods(ps)
	})
	c.cli.ok("apply", "-f", pod)
	c.cli.fails(refusal, "apply", "-f", writeFile(t, "pod2.yaml", strings.Replace(string(must(os.ReadFile(pod))), "extra", "extra2", 1)))

	// A deployment config over the quota says so on the config, and its
	// pod comes once room appears.
	c.apply(`kind: DeploymentConfig
metadata: {name: api}
spec:
  replicas: 1
  selector: {app: api}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - {name: app, image: ` + c.ref("app:1") + `}
  triggers: [{type: ConfigChange}]
`)
	waitFor(t, 30*time.Second, "dc api says its revision's pod is refused", func() (bool, string) {
		dc := c.dc("api")
		for _, cd := range dc.Status.Conditions {
			if cd.Type == api.ReplicaFailure && cd.Status == api.ConditionTrue && strings.Contains(cd.Message, "revision api-1: ") && strings.Contains(cd.Message, refusal) {
				return true, ""
			}
		}
		return false, mustJSON(t, dc.Status)
	})
	c.cli.ok("delete", "pod", "extra")
	c.waitRunning("app=api", 1, time.Minute)
	waitFor(t, 30*time.Second, "dc api's failure condition clears", func() (bool, string) {
		dc := c.dc("api")
		for _, cd := range dc.Status.Conditions {
			if cd.Type == api.ReplicaFailure && cd.Status == api.ConditionTrue {
				return false, mustJSON(t, dc.Status)
			}
		}
		return true, ""
	})

	// A project's admin reads the quota of their project but cannot
	// raise or delete it.
	al := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	al.ok("login", c.p.url(), "-u", "alice", "-p", "alicepw", "--certificate-authority", c.p.caFile())
	al.ok("new-project", "alice")
	c.cli.ok("apply", "-n", "alice", "-f", writeFile(t, "q.yaml", "kind: ResourceQuota\nmetadata: {name: compute}\nspec:\n  hard: {pods: \"2\"}\n"))
	if out := al.ok("get", "quota", "compute", "-o", "yaml"); !strings.Contains(out, `pods: "2"`) {
		t.Errorf("alice's get quota -o yaml:\n%s", out)
	}
	const denied = "set by cluster admins"
	al.fails(denied, "apply", "-f", writeFile(t, "raise.yaml", "kind: ResourceQuota\nmetadata: {name: compute}\nspec:\n  hard: {pods: \"200\"}\n"))
	al.fails(denied, "delete", "quota", "compute")
	al.fails(denied, "apply", "-f", writeFile(t, "mine.yaml", "kind: ResourceQuota\nmetadata: {name: mine}\nspec:\n  hard: {pods: \"200\"}\n"))
	o, err := c.admin.Get(ctx, api.ResourceQuotas, "alice", "compute")
	if err != nil || o.(*api.ResourceQuota).Spec.Hard["pods"] != "2" {
		t.Errorf("alice's quota after her attempts: %v, %v; want pods 2", o, err)
	}
}

// TestBuildWaitsForQuota: with builds: 1, a second build stays Pending
// with reason WaitingForQuota while the first runs, and starts (and
// completes) when the first ends.
func TestBuildWaitsForQuota(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", buildkitd(t))
	admin := p.admin(t)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bq"}}); err != nil {
		t.Fatal(err)
	}
	baseRef, _ := name.ParseReference(p.registry+"/bq/base:1", name.Insecure)
	if err := remote.Write(baseRef, busyboxImage(t), remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("project", "bq")
	bc := func(n, sleep string) string {
		return `kind: BuildConfig
metadata: {name: ` + n + `}
spec:
  source:
    dockerfile: |
      FROM scratch
      RUN ["/bin/busybox", "sh", "-c", "sleep ` + sleep + `; echo ` + n + ` > /built"]
  strategy:
    type: Docker
    dockerStrategy:
      from: {kind: ImageStreamTag, name: "base:1"}
  output:
    to: {kind: ImageStreamTag, name: "` + n + `:latest"}
`
	}
	c.ok("apply", "-f", writeFile(t, "bc.yaml", "kind: ResourceQuota\nmetadata: {name: builds}\nspec:\n  hard: {builds: \"1\"}\n---\n"+bc("first", "6")+"---\n"+bc("second", "0")))
	c.ok("start-build", "first")
	build := func(n string) *api.Build {
		o, err := admin.Get(ctx, api.Builds, "bq", n)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*api.Build)
	}
	waitFor(t, time.Minute, "first-1 runs", func() (bool, string) {
		b := build("first-1")
		return b.Status.Phase == api.BuildRunning, mustJSON(t, b.Status)
	})
	c.ok("start-build", "second")
	waitFor(t, 30*time.Second, "second-1 waits for quota", func() (bool, string) {
		b := build("second-1")
		if api.IsFinished(build("first-1").Status.Phase) {
			t.Fatalf("first-1 ended before second-1 was seen waiting: %s", mustJSON(t, b.Status))
		}
		return b.Status.Phase == api.BuildPending && b.Status.Reason == api.BuildWaitingForQuota &&
			strings.Contains(b.Status.Message, "exceeded quota builds: builds used 1, requested 1, hard 1"), mustJSON(t, b.Status)
	})
	if out := c.ok("get", "builds"); !strings.Contains(out, api.BuildWaitingForQuota) {
		t.Errorf("get builds does not show the wait:\n%s", out)
	}
	if b := waitBuild(t, admin, "bq", "first-1"); b.Status.Phase != api.BuildComplete {
		t.Fatalf("first-1 ended %s: %s", b.Status.Phase, b.Status.Message)
	}
	if b := waitBuild(t, admin, "bq", "second-1"); b.Status.Phase != api.BuildComplete || b.Status.StartTimestamp == nil {
		t.Fatalf("second-1 ended %s: %s", b.Status.Phase, b.Status.Message)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
