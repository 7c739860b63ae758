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
