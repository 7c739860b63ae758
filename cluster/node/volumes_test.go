package node

import (
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
)

// M2: persistent volumes are kept per project UID. A project deleted and
// made again under the same name while the agent was down does not get
// the old project's volume: the agent sweeps it at start, and a pod of the
// new project mounts a volume of its own; a project UID written into the
// stored pod counts for nothing.
func TestVolumesOfAProjectMadeAgainWhileDown(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	rt := newRuntime(t)
	makeProject := func() *api.Project {
		p := &api.Project{ObjectMeta: api.ObjectMeta{Name: "test", Annotations: map[string]string{api.UIDRangeAnnotation: api.UIDRangeBlock(1).String()}}}
		if err := s.Create(ctx, api.Projects, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := s.Delete(ctx, api.Projects, "", "test", ""); err != nil { // newStore's; this test makes its own
		t.Fatal(err)
	}
	withClaim := func(p *api.Pod) *api.Pod {
		p.Spec.Volumes = []api.Volume{{Name: "v", Persistent: &api.PersistentVolumeSource{ClaimName: "data"}}}
		p.Spec.Containers[0].VolumeMounts = []api.VolumeMount{{Name: "v", MountPath: "/data"}}
		return p
	}
	old := makeProject()
	a, stop := startAgent(t, testConfig(s, rt))
	createPod(t, ctx, s, withClaim(newPod("w", sh("app", img, "echo hunter2 > /data/creds; exec sleep 3600"))))
	waitPod(t, ctx, s, "w", "Running", running)
	eventually(t, ctx, "pod w to write its secret", func() (bool, string) {
		out, code := execIn(t, ctx, a, "w", "app", "cat", "/data/creds")
		return code == 0 && strings.Contains(out, "hunter2"), out
	})
	stop()

	// While the agent is down: the project goes (its pods first), and
	// another is made under its name.
	if _, err := s.Delete(ctx, api.Pods, "test", "w", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, api.Projects, "", "test", ""); err != nil {
		t.Fatal(err)
	}
	makeProject()
	a, _ = startAgent(t, testConfig(s, rt))
	forged := withClaim(newPod("r", sh("app", img, "exec sleep 3600")))
	forged.Annotations = map[string]string{runtime.ProjectUIDAnnotation: old.UID}
	createPod(t, ctx, s, forged)
	waitPod(t, ctx, s, "r", "Running", running)
	if out, code := execIn(t, ctx, a, "r", "app", "cat", "/data/creds"); code == 0 || strings.Contains(out, "hunter2") {
		t.Errorf("a pod of the project made again reads the old project's volume: exit %d, %q", code, out)
	}
	keys, err := rt.VolumeProjects()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k == old.UID || k == "test" {
			t.Errorf("the node keeps volumes under %s after project test (uid %s) was deleted: %v", k, old.UID, keys)
		}
	}
}
