package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
)

// dockerPush loads img into the private dockerd as repoTag in the test's
// project and pushes it with `docker push`.
func (c *cluster) dockerPush(dk dockerCLI, repoTag string, img v1.Image) {
	c.t.Helper()
	ref, err := name.NewTag(c.ref(repoTag), name.Insecure)
	if err != nil {
		c.t.Fatal(err)
	}
	f := filepath.Join(c.t.TempDir(), "image.tar")
	if err := tarball.WriteToFile(f, ref, img); err != nil {
		c.t.Fatal(err)
	}
	dk.ok("load", "-q", "-i", f)
	dk.ok("push", "-q", ref.String())
}

// webConfig is a DeploymentConfig NAME of replicas pods that follow
// NAME:latest, with a readiness probe on 8080, and a Service NAME on port
// 80; strategy is extra YAML under spec (indented two spaces).
func webConfig(name string, replicas int, strategy string) string {
	return fmt.Sprintf(`kind: DeploymentConfig
metadata: {name: %[1]s}
spec:
  replicas: %[2]d
  selector: {app: %[1]s}
%[3]s  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      containers:
      - name: web
        image: %[1]s:latest
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {port: 8080}, periodSeconds: 1}
  triggers:
  - type: ConfigChange
  - type: ImageChange
    imageChangeParams: {automatic: true, containerNames: [web], from: {kind: ImageStreamTag, name: "%[1]s:latest"}}
---
kind: Service
metadata: {name: %[1]s}
spec:
  selector: {app: %[1]s}
  ports: [{port: 80, targetPort: 8080}]
`, name, replicas, strategy)
}

func phase(rc *api.ReplicationController) string {
	if rc == nil {
		return "(none)"
	}
	return rc.Annotations[api.DeploymentPhaseAnnotation]
}

// waitRevision waits until revision NAME-N is in phase want and returns it.
func (c *cluster) waitRevision(dc string, n int, want string, timeout time.Duration) *api.ReplicationController {
	c.t.Helper()
	name := fmt.Sprintf("%s-%d", dc, n)
	var rc *api.ReplicationController
	waitFor(c.t, timeout, name+" is "+want, func() (bool, string) {
		rc = c.rc(name)
		if rc == nil {
			return false, name + " does not exist"
		}
		return phase(rc) == want, fmt.Sprintf("%s: spec %d, status %+v, annotations %v", name, rc.Spec.Replicas, rc.Status, rc.Annotations)
	})
	return rc
}

// sample is one request of the client loop.
type sample struct {
	at   time.Time
	body string
	err  error
}

// requestLoop GETs url on a new connection every 20ms, each with a 1s
// timeout, until stop is called; stop returns every request's outcome.
func requestLoop(url string) (stop func() []sample) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []sample, 1)
	go func() {
		var s []sample
		for ctx.Err() == nil {
			body, err := get(url, time.Second)
			s = append(s, sample{at: time.Now(), body: body, err: err})
			time.Sleep(20 * time.Millisecond)
		}
		done <- s
	}()
	return func() []sample { cancel(); return <-done }
}

// TestAutoDeploy: `docker push` to the tag a DeploymentConfig follows
// rolls out a new revision, while a client sending requests through the
// service (a new connection each) sees no failure; afterwards only the
// new revision's pods exist and the old revision is at zero.
func TestAutoDeploy(t *testing.T) {
	c := startCluster(t, "autodeploy")
	dk := newDockerCLI(t)
	dk.login(c.p.registry, "admin", c.admin.Token())
	c.dockerPush(dk, "web:latest", httpdImage(t, "v1", 8080))
	c.apply(webConfig("web", 2, ""))
	c.cli.ok("rollout", "status", "dc/web", "--timeout", "2m")
	url, _ := c.serviceURL("web")
	waitServing(t, url, "v1", 30*time.Second)

	stop := requestLoop(url)
	c.dockerPush(dk, "web:latest", httpdImage(t, "v2", 8080))
	pushed := time.Now()
	rev := c.waitRevision("web", 2, api.DeploymentComplete, 2*time.Minute)
	if cause := rev.Annotations[api.DeploymentCauseAnnotation]; !strings.Contains(cause, "image change") {
		t.Errorf("web-2's cause = %q, want an image change", cause)
	}
	waitFor(t, time.Minute, "only web-2's pods remain and web-1 is at zero", func() (bool, string) {
		pods := c.pods("deploymentconfig=web")
		old := c.rc("web-1")
		state := fmt.Sprintf("web-1 spec %d status %+v\n%s", old.Spec.Replicas, old.Status, describePods(pods))
		if len(pods) != 2 || old.Spec.Replicas != 0 || old.Status.Replicas != 0 {
			return false, state
		}
		for _, p := range pods {
			if p.Labels[api.DeploymentLabel] != "web-2" || !running(p) {
				return false, state
			}
		}
		return true, ""
	})
	waitServing(t, url, "v2", 10*time.Second)
	time.Sleep(time.Second) // a few more requests on the new revision alone
	samples := stop()

	var failed []string
	var firstV2 time.Time
	v1s, v2s := 0, 0
	for _, s := range samples {
		switch {
		case s.err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", s.at.Format("15:04:05.000"), s.err))
		case s.body == "v1":
			v1s++
		case s.body == "v2":
			v2s++
			if firstV2.IsZero() {
				firstV2 = s.at
			}
		default:
			failed = append(failed, fmt.Sprintf("%s: answered %q", s.at.Format("15:04:05.000"), s.body))
		}
	}
	t.Logf("%d requests during the rollout: %d v1, %d v2, %d failed", len(samples), v1s, v2s, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d of %d requests through the service failed during the rollout, want none:\n%s", len(failed), len(samples), strings.Join(failed[:min(10, len(failed))], "\n"))
	}
	if v1s == 0 || v2s == 0 {
		t.Errorf("the client saw %d v1 and %d v2 answers, want both", v1s, v2s)
	}
	if last := samples[len(samples)-1]; last.body != "v2" {
		t.Errorf("last answer = %q, %v; want v2", last.body, last.err)
	}
	if !firstV2.IsZero() {
		t.Logf("push to serving: first v2 answer through the service %s after docker push returned", firstV2.Sub(pushed).Round(time.Millisecond))
	}
}

// TestRolloutRollback: a pushed image that never gets ready fails its
// rollout at the rolling timeout, and the previous revision is back at
// full strength; then, after a good v2, `rollout undo` goes back to v1's
// digest and turns the image trigger off, so a new push or `rollout
// latest` keeps v1.
func TestRolloutRollback(t *testing.T) {
	c := startCluster(t, "rollback")
	d1 := c.push("app:latest", httpdImage(t, "v1", 8080))
	c.apply(webConfig("app", 2, "  strategy:\n    type: Rolling\n"))
	c.cli.ok("rollout", "status", "dc/app", "--timeout", "2m")
	url, _ := c.serviceURL("app")
	waitServing(t, url, "v1", 30*time.Second)

	// The rollout deadline is short only for the revision that must miss
	// it: on a loaded machine two good pods can take longer than 15 s to
	// be ready (the initial rollout timed out so).
	rolloutTimeout := func(spec string) {
		t.Helper()
		patch := `{"spec":{"strategy":{"rollingParams":{"timeoutSeconds":` + spec + `}}}}`
		if _, err := c.admin.Patch(context.Background(), api.DeploymentConfigs, c.ns, "app", []byte(patch)); err != nil {
			t.Fatalf("patch dc/app %s: %v", patch, err)
		}
	}
	rolloutTimeout("15")
	// httpd on 9090 while the probe asks 8080: never ready.
	c.push("app:latest", httpdImage(t, "bad", 9090))
	failed := c.waitRevision("app", 2, api.DeploymentFailed, 90*time.Second)
	reason := failed.Annotations[api.DeploymentReasonAnnotation]
	t.Logf("app-2 failed: %s", reason)
	if !strings.Contains(reason, "timed out") || !strings.Contains(reason, "rolled back to app-1") {
		t.Errorf("app-2's reason = %q, want it to say it timed out and was rolled back to app-1", reason)
	}
	cond := ""
	for _, cd := range c.dc("app").Status.Conditions {
		if cd.Type == "Progressing" {
			cond = fmt.Sprintf("%s %s %s", cd.Status, cd.Reason, cd.Message)
		}
	}
	if !strings.HasPrefix(cond, "False RolloutFailed") || !strings.Contains(cond, "timed out") || !strings.Contains(cond, "rolled back to app-1") {
		t.Errorf("dc/app Progressing = %q, want False RolloutFailed saying it timed out and rolled back to app-1", cond)
	}
	waitFor(t, time.Minute, "app-1 is back at 2 ready and app-2 at 0", func() (bool, string) {
		good, bad := c.rc("app-1"), c.rc("app-2")
		state := fmt.Sprintf("app-1 %s spec %d %+v; app-2 %s spec %d %+v", phase(good), good.Spec.Replicas, good.Status, phase(bad), bad.Spec.Replicas, bad.Status)
		return phase(good) == api.DeploymentComplete && good.Spec.Replicas == 2 && good.Status.ReadyReplicas == 2 &&
			bad.Spec.Replicas == 0 && bad.Status.Replicas == 0, state
	})
	c.waitRunning("deployment=app-1", 2, 30*time.Second)
	waitServing(t, url, "v1", 10*time.Second)
	c.cli.fails("timed out", "rollout", "status", "dc/app", "--timeout", "30s")

	// A good v2 rolls out; undo goes back to v1's digest.
	rolloutTimeout("null") // the default
	d2 := c.push("app:latest", httpdImage(t, "v2", 8080))
	c.waitRevision("app", 3, api.DeploymentComplete, 90*time.Second)
	waitServing(t, url, "v2", 10*time.Second)
	if out := c.cli.ok("rollout", "undo", "dc/app"); !strings.Contains(out, "revision 1") {
		t.Errorf("rollout undo = %q, want it to name revision 1", out)
	}
	c.waitRevision("app", 4, api.DeploymentComplete, 90*time.Second)
	waitServing(t, url, "v1", 10*time.Second)
	checkImage := func(rev, digest string) {
		t.Helper()
		for _, p := range c.waitRunning("deployment="+rev, 2, 30*time.Second) {
			if img := p.Spec.Containers[0].Image; !strings.HasSuffix(img, "@"+digest) {
				t.Errorf("pod %s of %s runs %s, want v1's digest %s", p.Name, rev, img, digest)
			}
		}
	}
	checkImage("app-4", d1)
	dc := c.dc("app")
	for _, tr := range dc.Spec.Triggers {
		if p := tr.ImageChangeParams; p != nil && p.Automatic {
			t.Errorf("after undo the image trigger is still automatic: %+v", p)
		}
	}
	var hist []struct {
		Revision int64
		Status   string
		Images   []string
	}
	if err := json.Unmarshal([]byte(c.cli.ok("rollout", "history", "dc/app", "-o", "json")), &hist); err != nil {
		t.Fatal(err)
	}
	wantHist := []string{"1 Complete " + d1, "2 Failed", "3 Complete " + d2, "4 Complete " + d1}
	if len(hist) != len(wantHist) {
		t.Fatalf("rollout history = %+v, want %d revisions", hist, len(wantHist))
	}
	for i, h := range hist {
		w := strings.Fields(wantHist[i])
		if fmt.Sprint(h.Revision) != w[0] || h.Status != w[1] || (len(w) > 2 && (len(h.Images) != 1 || !strings.HasSuffix(h.Images[0], "@"+w[2]))) {
			t.Errorf("rollout history[%d] = %+v, want %s", i, h, wantHist[i])
		}
	}

	// With the trigger off, a new push is not followed: a manual rollout
	// keeps the pinned v1.
	c.push("app:latest", httpdImage(t, "v3", 8080))
	c.cli.ok("rollout", "latest", "dc/app")
	c.waitRevision("app", 5, api.DeploymentComplete, 90*time.Second)
	checkImage("app-5", d1)
	waitServing(t, url, "v1", 10*time.Second)
}
