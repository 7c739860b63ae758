package deploy

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/replication"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// fakeKubelet stands in for node agents, which the e2e tests run for real:
// it marks every pod running and ready, with an IP, unless its image
// names a digest in never.
func fakeKubelet(ctx context.Context, s *store.Store, never string) {
	for ctx.Err() == nil {
		items, _, _ := s.List(ctx, api.Pods, "ns", store.ListOptions{})
		for _, o := range items {
			p := o.(*api.Pod)
			if p.Status.Phase != "" {
				continue
			}
			phase, ready := api.PodRunning, api.ConditionTrue
			if never != "" && strings.Contains(p.Spec.Containers[0].Image, never) {
				ready = api.ConditionFalse
			}
			if p.Spec.RestartPolicy == "Never" {
				phase = api.PodSucceeded
				if strings.Contains(strings.Join(p.Spec.Containers[0].Command, " "), "exit 1") {
					phase = api.PodFailed
				}
			}
			s.GuaranteedUpdate(ctx, api.Pods, "ns", p.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
				o.(*api.Pod).Status = api.PodStatus{Phase: phase, PodIP: "10.0.0.9", Conditions: []api.PodCondition{{Type: "Ready", Status: ready}}}
				return nil
			})
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func moveTag(t *testing.T, ctx context.Context, s *store.Store, digest string) {
	t.Helper()
	is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "ns"}}
	s.Create(ctx, api.ImageStreams, is)
	if _, err := s.GuaranteedUpdate(ctx, api.ImageStreams, "ns", "app", store.UpdateOptions{Status: true}, func(o api.Object) error {
		is := o.(*api.ImageStream)
		var items []api.TagEvent
		if len(is.Status.Tags) > 0 {
			items = is.Status.Tags[0].Items
		}
		is.Status.Tags = []api.NamedTagEventList{{Tag: "latest", Items: append([]api.TagEvent{{Image: digest, Created: time.Now()}}, items...)}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func revision(t *testing.T, ctx context.Context, s *store.Store, name string) *api.ReplicationController {
	t.Helper()
	o, err := s.Get(ctx, api.ReplicationControllers, "ns", name)
	if err != nil {
		return nil
	}
	return o.(*api.ReplicationController)
}

func phase(t *testing.T, ctx context.Context, s *store.Store, name string) string {
	if rc := revision(t, ctx, s, name); rc != nil {
		return rc.Annotations[api.DeploymentPhaseAnnotation]
	}
	return ""
}

// TestImageTriggeredRollouts: the first image rolls out revision 1; a tag
// move rolls out revision 2 by digest and scales revision 1 away; a
// revision whose pods never become ready times out and is rolled back.
func TestImageTriggeredRollouts(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&replication.Manager{Store: s, Grace: 10 * time.Millisecond}).Run(runCtx)
	go (&Controller{Store: s, Registry: "reg:5000", Poll: 50 * time.Millisecond}).Run(runCtx)
	go fakeKubelet(runCtx, s, "sha256:bad")

	timeout := int64(3)
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "ns"},
		Spec: api.DeploymentConfigSpec{
			Replicas: 3, Selector: map[string]string{"app": "web"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "app:latest"}}},
			},
			Strategy: api.DeploymentStrategy{Type: "Rolling", RollingParams: &api.RollingDeploymentParams{TimeoutSeconds: &timeout}},
			Triggers: []api.DeploymentTrigger{{Type: "ConfigChange"}, {Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
				Automatic: true, ContainerNames: []string{"web"}, From: api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}}}},
		},
	}
	if err := s.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		t.Fatal(err)
	}
	// No image yet: it waits, and says why.
	storetest.Eventually(t, ctx, "the config says it waits for an image", func() bool {
		o, _ := s.Get(ctx, api.DeploymentConfigs, "ns", "app")
		c := o.(*api.DeploymentConfig).Status.Conditions
		return len(c) > 0 && c[0].Reason == "WaitingForImage"
	})
	moveTag(t, ctx, s, "sha256:aaa")
	storetest.Eventually(t, ctx, "revision 1 completes", func() bool { return phase(t, ctx, s, "app-1") == api.DeploymentComplete })
	if img := revision(t, ctx, s, "app-1").Spec.Template.Spec.Containers[0].Image; img != "reg:5000/ns/app@sha256:aaa" {
		t.Fatalf("revision 1 runs %q, want the tag's digest", img)
	}

	moveTag(t, ctx, s, "sha256:bbb")
	storetest.Eventually(t, ctx, "revision 2 completes", func() bool { return phase(t, ctx, s, "app-2") == api.DeploymentComplete })
	if rc := revision(t, ctx, s, "app-1"); rc.Spec.Replicas != 0 {
		t.Errorf("revision 1 still wants %d replicas", rc.Spec.Replicas)
	}
	if rc := revision(t, ctx, s, "app-2"); rc.Spec.Replicas != 3 || !strings.HasPrefix(rc.Annotations[api.DeploymentCauseAnnotation], "image change") {
		t.Errorf("revision 2 = %d replicas, cause %q", rc.Spec.Replicas, rc.Annotations[api.DeploymentCauseAnnotation])
	}

	// Pods of sha256:bad never become ready: rolled back to revision 2.
	moveTag(t, ctx, s, "sha256:bad")
	storetest.Eventually(t, ctx, "revision 3 fails", func() bool { return phase(t, ctx, s, "app-3") == api.DeploymentFailed })
	if r := revision(t, ctx, s, "app-3").Annotations[api.DeploymentReasonAnnotation]; !strings.Contains(r, "timed out") || !strings.Contains(r, "rolled back to app-2") {
		t.Errorf("revision 3's reason = %q", r)
	}
	storetest.Eventually(t, ctx, "revision 2 is back at 3 ready, revision 3 at 0", func() bool {
		r2, r3 := revision(t, ctx, s, "app-2"), revision(t, ctx, s, "app-3")
		return r2.Spec.Replicas == 3 && r2.Status.ReadyReplicas == 3 && r3.Spec.Replicas == 0
	})
	// A failed revision is not retried in a loop.
	time.Sleep(500 * time.Millisecond)
	if rc := revision(t, ctx, s, "app-4"); rc != nil {
		t.Errorf("a fourth revision appeared: %s", rc.Annotations[api.DeploymentCauseAnnotation])
	}
}

// TestRecreateWithHooks: Recreate scales the old revision to zero before
// the new one comes up, runs pre, mid and post hooks as pods, and a failed
// Abort hook fails the rollout and rolls back.
func TestRecreateWithHooks(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&replication.Manager{Store: s, Grace: 10 * time.Millisecond}).Run(runCtx)
	go (&Controller{Store: s, Registry: "reg:5000", Poll: 50 * time.Millisecond}).Run(runCtx)
	go fakeKubelet(runCtx, s, "")

	hook := func(cmd string) *api.LifecycleHook {
		return &api.LifecycleHook{ExecNewPod: &api.ExecNewPod{ContainerName: "web", Command: []string{"/bin/sh", "-c", cmd}}}
	}
	timeout := int64(5)
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "db", Namespace: "ns"},
		Spec: api.DeploymentConfigSpec{
			Replicas: 2, Selector: map[string]string{"app": "db"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "reg:5000/ns/db@sha256:111"}}},
			},
			Strategy: api.DeploymentStrategy{Type: "Recreate", RecreateParams: &api.RecreateDeploymentParams{
				TimeoutSeconds: &timeout, Pre: hook("migrate"), Mid: hook("mid"), Post: hook("post")}},
			Triggers: []api.DeploymentTrigger{{Type: "ConfigChange"}},
		},
	}
	if err := s.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "revision 1 completes", func() bool { return phase(t, ctx, s, "db-1") == api.DeploymentComplete })
	for _, h := range []string{"pre", "mid", "post"} {
		o, err := s.Get(ctx, api.Pods, "ns", "db-1-hook-"+h)
		if err != nil {
			t.Fatalf("hook pod %s: %v", h, err)
		}
		if p := o.(*api.Pod); p.Spec.RestartPolicy != "Never" || p.Spec.Containers[0].Image != "reg:5000/ns/db@sha256:111" {
			t.Errorf("hook pod %s = %+v, want the revision's image, never restarted", h, p.Spec)
		}
	}

	// A new template: old pods must be gone before new ones exist.
	sawOverlap := false
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		for watchCtx.Err() == nil {
			items, _, _ := s.List(watchCtx, api.Pods, "ns", store.ListOptions{})
			old, cur := 0, 0
			for _, o := range items {
				switch o.(*api.Pod).Labels[api.DeploymentLabel] {
				case "db-1":
					old++
				case "db-2":
					cur++
				}
			}
			if old > 0 && cur > 0 {
				sawOverlap = true
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if _, err := s.GuaranteedUpdate(ctx, api.DeploymentConfigs, "ns", "db", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.DeploymentConfig).Spec.Template.Spec.Containers[0].Image = "reg:5000/ns/db@sha256:222"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "revision 2 completes", func() bool { return phase(t, ctx, s, "db-2") == api.DeploymentComplete })
	stopWatch()
	if sawOverlap {
		t.Error("Recreate ran old and new pods at the same time")
	}
	if rc := revision(t, ctx, s, "db-2"); !strings.HasPrefix(rc.Annotations[api.DeploymentCauseAnnotation], "config change") {
		t.Errorf("revision 2's cause = %q, want a config change", rc.Annotations[api.DeploymentCauseAnnotation])
	}

	// A pre hook that fails (policy Abort) fails revision 3; revision 2
	// keeps serving.
	if _, err := s.GuaranteedUpdate(ctx, api.DeploymentConfigs, "ns", "db", store.UpdateOptions{}, func(o api.Object) error {
		d := o.(*api.DeploymentConfig)
		d.Spec.Template.Spec.Containers[0].Image = "reg:5000/ns/db@sha256:333"
		d.Spec.Strategy.RecreateParams.Pre = hook("exit 1")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "revision 3 fails", func() bool { return phase(t, ctx, s, "db-3") == api.DeploymentFailed })
	if r := revision(t, ctx, s, "db-3").Annotations[api.DeploymentReasonAnnotation]; !strings.Contains(r, "pre hook") || !strings.Contains(r, "rolled back to db-2") {
		t.Errorf("revision 3's reason = %q, want the pre hook's failure and the rollback", r)
	}
	if rc := revision(t, ctx, s, "db-2"); rc.Spec.Replicas != 2 {
		t.Errorf("revision 2 wants %d replicas after the failed rollout, want 2", rc.Spec.Replicas)
	}
}

// TestNewRevisionSupersedesRollout: a tag move while a rollout is still
// running (its pods not ready yet) makes a new revision, and the older
// rollout stops there: it no longer scales its revision up and the newer
// one down (the two fought until the older one timed out), and it ends
// as Failed, superseded, with no rollback. The newest revision completes
// and is the only one with pods.
func TestNewRevisionSupersedesRollout(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	storetest.Project(t, ctx, s, "ns", 1)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&replication.Manager{Store: s, Grace: 10 * time.Millisecond}).Run(runCtx)
	go (&Controller{Store: s, Registry: "reg:5000", Poll: 50 * time.Millisecond}).Run(runCtx)
	go fakeKubelet(runCtx, s, "sha256:slow")

	timeout := int64(600) // the default: a stuck rollout would outlive the test
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "ns"},
		Spec: api.DeploymentConfigSpec{
			Replicas: 3, Selector: map[string]string{"app": "web"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "app:latest"}}},
			},
			Strategy: api.DeploymentStrategy{Type: "Rolling", RollingParams: &api.RollingDeploymentParams{TimeoutSeconds: &timeout}},
			Triggers: []api.DeploymentTrigger{{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
				Automatic: true, ContainerNames: []string{"web"}, From: api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}}}},
		},
	}
	if err := s.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		t.Fatal(err)
	}
	moveTag(t, ctx, s, "sha256:aaa")
	storetest.Eventually(t, ctx, "revision 1 completes", func() bool { return phase(t, ctx, s, "app-1") == api.DeploymentComplete })
	moveTag(t, ctx, s, "sha256:slow")
	storetest.Eventually(t, ctx, "revision 2 rolls out", func() bool {
		rc := revision(t, ctx, s, "app-2")
		return rc != nil && rc.Annotations[api.DeploymentPhaseAnnotation] == api.DeploymentRunning && rc.Spec.Replicas > 0
	})
	moveTag(t, ctx, s, "sha256:ccc")
	storetest.Eventually(t, ctx, "revision 3 completes", func() bool { return phase(t, ctx, s, "app-3") == api.DeploymentComplete })
	storetest.Eventually(t, ctx, "revision 2's rollout ends", func() bool { return phase(t, ctx, s, "app-2") != api.DeploymentRunning })
	rc2 := revision(t, ctx, s, "app-2")
	if p, r := rc2.Annotations[api.DeploymentPhaseAnnotation], rc2.Annotations[api.DeploymentReasonAnnotation]; p != api.DeploymentFailed || !strings.Contains(r, "superseded by app-3") || strings.Contains(r, "rolled back") {
		t.Errorf("revision 2 = %s: %q; want Failed, superseded by app-3, no rollback", p, r)
	}
	for _, name := range []string{"app-1", "app-2"} {
		if rc := revision(t, ctx, s, name); rc.Spec.Replicas != 0 {
			t.Errorf("%s still wants %d replicas", name, rc.Spec.Replicas)
		}
	}
	if rc := revision(t, ctx, s, "app-3"); rc.Spec.Replicas != 3 {
		t.Errorf("app-3 wants %d replicas, want 3", rc.Spec.Replicas)
	}
}
