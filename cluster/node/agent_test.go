package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/client"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/store"
)

const (
	testNode  = "node-1"
	testToken = "node-token-for-tests"
)

// testContext bounds a test so that a hang fails instead of blocking the
// binary; it is not a timing assertion.
func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute) // generous: a loaded 2-core machine
	t.Cleanup(cancel)
	return ctx
}

// newRuntime returns a runtime on the test dockerd, with a prefix of its
// own, whose pods are removed when the test ends.
func newRuntime(t *testing.T) *runtime.Docker {
	t.Helper()
	d := dockerDaemon(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.NewDocker(runtime.Config{
		Host: d.Host(), Prefix: fmt.Sprintf("node%d", runs.Add(1)), DataDir: t.TempDir(),
		PauseBinary: exe, PauseArgs: []string{"pause"}, StopTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		pods, err := rt.ListPods(ctx)
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, p := range pods {
			if err := rt.RemovePod(ctx, p.UID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		rt.Close()
	})
	return rt
}

// testConfig is a config for the test node with short intervals.
func testConfig(s *store.Store, rt runtime.Runtime) Config {
	return Config{
		Store: s, Runtime: rt, NodeName: testNode, Address: testAddress,
		HeartbeatInterval: 200 * time.Millisecond, SyncInterval: 200 * time.Millisecond,
		BackOff: time.Second, MaxBackOff: 4 * time.Second,
		RegistryAuth: registryAuth, ServerToken: testToken,
	}
}

// startAgent runs an agent until the returned stop is called or the test
// ends.
func startAgent(t *testing.T, cfg Config) (*Agent, func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	}()
	var stopped atomic.Bool
	stop := func() {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return a, stop
}

func newPod(name string, cs ...api.Container) *api.Pod {
	return &api.Pod{
		ObjectMeta: api.ObjectMeta{Namespace: "test", Name: name},
		Spec:       api.PodSpec{Containers: cs, NodeName: testNode},
	}
}

func sh(name, image, script string) api.Container {
	return api.Container{Name: name, Image: image, Command: []string{"sh", "-c", script}}
}

func createPod(t *testing.T, ctx context.Context, s *store.Store, p *api.Pod) *api.Pod {
	t.Helper()
	if err := s.Create(ctx, api.Pods, p); err != nil {
		t.Fatalf("Create(pod %s) = %v", p.Name, err)
	}
	return p
}

func getPod(t *testing.T, ctx context.Context, s *store.Store, name string) *api.Pod {
	t.Helper()
	o, err := s.Get(ctx, api.Pods, "test", name)
	if err != nil {
		t.Fatalf("Get(pod %s) = %v", name, err)
	}
	return o.(*api.Pod)
}

// waitPod polls the stored pod until cond holds, and returns it; when ctx
// ends first it fails with the pod's last status. The deadline guards
// hangs only.
func waitPod(t *testing.T, ctx context.Context, s *store.Store, name, what string, cond func(*api.Pod) bool) *api.Pod {
	t.Helper()
	for {
		p := getPod(t, ctx, s, name)
		if cond(p) {
			return p
		}
		select {
		case <-ctx.Done():
			b, _ := json.MarshalIndent(p.Status, "", "  ")
			t.Fatalf("pod %s: waited for %s; status:\n%s", name, what, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// eventually polls f until it reports done; see waitPod.
func eventually(t *testing.T, ctx context.Context, what string, f func() (bool, string)) {
	t.Helper()
	for {
		ok, last := f()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waited for %s; last: %s", what, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func container(p *api.Pod, name string) api.ContainerStatus {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == name {
			return c
		}
	}
	return api.ContainerStatus{}
}

func condition(p *api.Pod, typ string) api.PodCondition {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return api.PodCondition{}
}

func running(p *api.Pod) bool { return p.Status.Phase == api.PodRunning }

// runtimePod is the runtime's view of the pod with uid, or nil.
func runtimePod(t *testing.T, ctx context.Context, rt runtime.Runtime, uid string) *runtime.PodStatus {
	t.Helper()
	pods, err := rt.ListPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		if pods[i].UID == uid {
			return &pods[i]
		}
	}
	return nil
}

func execIn(t *testing.T, ctx context.Context, a *Agent, pod, ctr string, cmd ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := a.Exec(ctx, "test", pod, ctr, cmd, &out, &errb)
	if err != nil {
		t.Fatalf("Exec(%s/%s, %q) = %v", pod, ctr, cmd, err)
	}
	return out.String() + errb.String(), code
}

// The node is registered with its labels, capacity and address, keeps
// others' labels and conditions, is Ready by heartbeat, comes back if an
// admin deletes it, and stays when the agent stops.
func TestNodeRegistersAndHeartbeats(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	stale := time.Now().Add(-time.Hour).UTC()
	old := &api.Node{ObjectMeta: api.ObjectMeta{Name: testNode, Labels: map[string]string{"keep": "yes", "zone": "old"}}}
	old.Status.Conditions = []api.NodeCondition{
		{Type: NodeReady, Status: api.ConditionFalse, Reason: "NodeStatusUnknown", LastHeartbeatTime: stale},
		{Type: "DiskPressure", Status: api.ConditionFalse, LastHeartbeatTime: stale},
	}
	if err := s.Create(ctx, api.Nodes, old); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(s, newRuntime(t))
	cfg.Labels = map[string]string{"zone": "a"}
	_, stop := startAgent(t, cfg)

	getNode := func() *api.Node {
		o, err := s.Get(ctx, api.Nodes, "", testNode)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*api.Node)
	}
	ready := func(n *api.Node) *api.NodeCondition {
		for i, c := range n.Status.Conditions {
			if c.Type == NodeReady && c.Status == api.ConditionTrue {
				return &n.Status.Conditions[i]
			}
		}
		return nil
	}
	var n *api.Node
	eventually(t, ctx, "the node to be Ready", func() (bool, string) {
		n = getNode()
		return ready(n) != nil, fmt.Sprintf("%+v", n.Status.Conditions)
	})
	mem, err := memTotal()
	if err != nil {
		t.Fatal(err)
	}
	want := api.ResourceList{MilliCPU: int64(goruntime.NumCPU()) * 1000, Memory: mem, Pods: 110}
	if n.Status.Capacity != want || n.Status.Allocatable != want || mem < 64<<20 {
		t.Errorf("capacity %+v, allocatable %+v; want both %+v", n.Status.Capacity, n.Status.Allocatable, want)
	}
	if n.Status.Address != testAddress {
		t.Errorf("address = %q, want %q", n.Status.Address, testAddress)
	}
	if n.Labels["zone"] != "a" || n.Labels["keep"] != "yes" {
		t.Errorf("labels = %v, want zone=a (the agent's) and keep=yes (kept)", n.Labels)
	}
	if len(n.Status.Conditions) != 2 || n.Status.Conditions[1].Type != "DiskPressure" {
		t.Errorf("conditions = %+v, want Ready and the kept DiskPressure", n.Status.Conditions)
	}

	first := ready(n).LastHeartbeatTime
	eventually(t, ctx, "a later heartbeat", func() (bool, string) {
		c := ready(getNode())
		return c != nil && c.LastHeartbeatTime.After(first), fmt.Sprintf("%+v", c)
	})

	if _, err := s.Delete(ctx, api.Nodes, "", testNode, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "the deleted node to be registered again", func() (bool, string) {
		o, err := s.Get(ctx, api.Nodes, "", testNode)
		return err == nil && ready(o.(*api.Node)) != nil && o.(*api.Node).Labels["zone"] == "a", fmt.Sprint(err)
	})

	stop()
	if _, err := s.Get(ctx, api.Nodes, "", testNode); err != nil {
		t.Errorf("after the agent stopped, Get(node) = %v, want the node kept", err)
	}
}

// A bound pod runs with the project's service environment, reports its
// IPs and start time, and is Ready when its readiness probes pass (HTTP
// for one container, TCP for the other) and not Ready when one fails
// again. Once settled, the stored status stays as it is: nothing in it
// (a timestamp, an order) moves from one sync to the next.
func TestPodRunsAndBecomesReady(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	svc := &api.Service{ObjectMeta: api.ObjectMeta{Namespace: "test", Name: "db"},
		Spec: api.ServiceSpec{ClusterIP: "10.43.0.5", Ports: []api.ServicePort{{Port: 5432}}}}
	if err := s.Create(ctx, api.Services, svc); err != nil {
		t.Fatal(err)
	}
	a, _ := startAgent(t, testConfig(s, newRuntime(t)))

	// The pod runs as its project's UID, which cannot write to the
	// image's /: the page goes in an emptyDir.
	web := sh("web", img, "echo hello > /www/index.html && exec httpd -f -p 8080 -h /www")
	web.VolumeMounts = []api.VolumeMount{{Name: "www", MountPath: "/www"}}
	web.ReadinessProbe = &api.Probe{HTTPGet: &api.HTTPGetAction{Path: "/ready", Port: 8080}, PeriodSeconds: 1}
	side := sh("side", img, "exec sleep 3600")
	side.Env = []api.EnvVar{{Name: "DB_HOST", Value: "mine"}}
	side.ReadinessProbe = &api.Probe{TCPSocket: &api.TCPSocketAction{Port: 8080}, PeriodSeconds: 1}
	wp := newPod("web", web, side)
	wp.Spec.Volumes = []api.Volume{{Name: "www", EmptyDir: &struct{}{}}}
	createPod(t, ctx, s, wp)

	p := waitPod(t, ctx, s, "web", "Running with side ready", func(p *api.Pod) bool {
		return running(p) && container(p, "side").Ready
	})
	if !strings.HasPrefix(p.Status.PodIP, testSubnet) || p.Status.HostIP != testAddress || p.Status.StartTime == nil {
		t.Errorf("podIP %q, hostIP %q, startTime %v; want an address in %s0/24, %s, a time", p.Status.PodIP, p.Status.HostIP, p.Status.StartTime, testSubnet, testAddress)
	}
	if c := container(p, "web"); c.Ready || c.State != runtime.StateRunning || c.ContainerID == "" || c.ImageID == "" {
		t.Errorf("web = %+v, want Running, not ready (/ready is 404), with container and image IDs", c)
	}
	if c := condition(p, PodReady); c.Status != api.ConditionFalse {
		t.Errorf("Ready condition = %+v, want False", c)
	}
	if out, _ := execIn(t, ctx, a, "web", "side", "sh", "-c", "echo $DB_SERVICE_HOST $DB_SERVICE_PORT $DB_HOST"); out != "10.43.0.5 5432 mine\n" {
		t.Errorf("side's environment: %q, want the service's variables and its own DB_HOST", out)
	}

	execIn(t, ctx, a, "web", "web", "touch", "/www/ready")
	p = waitPod(t, ctx, s, "web", "Ready=True", func(p *api.Pod) bool {
		return condition(p, PodReady).Status == api.ConditionTrue
	})
	if !container(p, "web").Ready {
		t.Errorf("web not ready in %+v", p.Status.ContainerStatuses)
	}

	// Nothing changes: three relists and their syncs leave it as it is.
	rv := p.ResourceVersion
	gen := a.snapshot().gen
	eventually(t, ctx, "three relists", func() (bool, string) { return a.snapshot().gen >= gen+3, "" })
	if p := getPod(t, ctx, s, "web"); p.ResourceVersion != rv {
		t.Errorf("the pod was written (resourceVersion %s → %s) though nothing changed", rv, p.ResourceVersion)
	}

	execIn(t, ctx, a, "web", "web", "rm", "/www/ready")
	waitPod(t, ctx, s, "web", "Ready=False after /ready fails", func(p *api.Pod) bool {
		return condition(p, PodReady).Status == api.ConditionFalse && !container(p, "web").Ready && container(p, "side").Ready
	})
}

// Restart policies: a killed container is restarted; one that keeps
// failing backs off (CrashLoopBackOff); OnFailure restarts failures
// only, Never none; finished pods are Succeeded or Failed and their
// sandbox stops.
func TestRestartPolicies(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	rt := newRuntime(t)
	startAgent(t, testConfig(s, rt))

	createPod(t, ctx, s, newPod("sleeper", sh("app", img, "exec sleep 3600")))
	crasher := createPod(t, ctx, s, newPod("crasher", sh("app", img, "echo boom; exit 3")))
	once := newPod("once", sh("app", img, "if [ -f /data/ran ]; then exit 0; fi; touch /data/ran; exit 1"))
	once.Spec.RestartPolicy = "OnFailure"
	once.Spec.Volumes = []api.Volume{{Name: "data", EmptyDir: &struct{}{}}}
	once.Spec.Containers[0].VolumeMounts = []api.VolumeMount{{Name: "data", MountPath: "/data"}}
	createPod(t, ctx, s, once)
	never := newPod("never", sh("app", img, "exit 2"))
	never.Spec.RestartPolicy = "Never"
	createPod(t, ctx, s, never)

	cannot := newPod("cannot", api.Container{Name: "app", Image: img, Command: []string{"/no/such/binary"}})
	cannot.Spec.RestartPolicy = "Never"
	createPod(t, ctx, s, cannot)

	p := waitPod(t, ctx, s, "sleeper", "Running", running)
	before := container(p, "app")
	if _, err := dockerClient(t).ContainerKill(ctx, before.ContainerID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	p = waitPod(t, ctx, s, "sleeper", "a restart after the kill", func(p *api.Pod) bool {
		c := container(p, "app")
		return c.State == runtime.StateRunning && c.RestartCount == 1
	})
	if c := container(p, "app"); c.ContainerID == before.ContainerID {
		t.Errorf("after the kill the container is still %s", c.ContainerID)
	}

	p = waitPod(t, ctx, s, "crasher", "CrashLoopBackOff", func(p *api.Pod) bool {
		return container(p, "app").Reason == ReasonCrashLoopBackOff
	})
	if p.Status.Reason != ReasonCrashLoopBackOff || !strings.Contains(p.Status.Message, "exited with code 3") || p.Status.Phase != api.PodRunning {
		t.Errorf("crasher: phase %s, reason %q, message %q; want Running, CrashLoopBackOff and the exit code", p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
	n := container(p, "app").RestartCount
	waitPod(t, ctx, s, "crasher", "another restart after the back-off", func(p *api.Pod) bool {
		return container(p, "app").RestartCount > n
	})

	p = waitPod(t, ctx, s, "once", "Succeeded", func(p *api.Pod) bool { return p.Status.Phase == api.PodSucceeded })
	if c := container(p, "app"); c.RestartCount != 1 || c.State != runtime.StateTerminated || c.Reason != "Completed" || c.ExitCode != 0 {
		t.Errorf("once = %+v, want one restart (OnFailure after exit 1), then Terminated Completed", c)
	}
	p = waitPod(t, ctx, s, "never", "Failed", func(p *api.Pod) bool { return p.Status.Phase == api.PodFailed })
	if c := container(p, "app"); c.RestartCount != 0 || c.State != runtime.StateTerminated || c.Reason != "Error" || c.ExitCode != 2 {
		t.Errorf("never = %+v, want no restart, Terminated Error with exit code 2", c)
	}
	if c := condition(p, PodReady); c.Status != api.ConditionFalse {
		t.Errorf("never's Ready condition = %+v, want False", c)
	}
	p2 := waitPod(t, ctx, s, "cannot", "Failed", func(p *api.Pod) bool { return p.Status.Phase == api.PodFailed })
	t.Logf("cannot: %+v", p2.Status.ContainerStatuses)
	if c := container(p2, "app"); c.State != runtime.StateTerminated || c.ExitCode == 0 || !strings.Contains(c.Message, "/no/such/binary") {
		t.Errorf("cannot = %+v, want Terminated with an exit code and a message naming the command", c)
	}
	eventually(t, ctx, "the finished pod's sandbox to stop", func() (bool, string) {
		rp := runtimePod(t, ctx, rt, p.UID)
		return rp != nil && !rp.SandboxRunning, fmt.Sprintf("%+v", rp)
	})
	if rp := runtimePod(t, ctx, rt, crasher.UID); rp == nil || !rp.SandboxRunning {
		t.Errorf("the crash-looping pod's sandbox: %+v, want it running", rp)
	}
}

// A container whose liveness probe fails is restarted.
func TestLivenessProbeRestarts(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	a, _ := startAgent(t, testConfig(s, newRuntime(t)))
	app := sh("app", img, "touch /tmp/healthy; exec sleep 3600")
	app.LivenessProbe = &api.Probe{Exec: &api.ExecAction{Command: []string{"test", "-f", "/tmp/healthy"}}, PeriodSeconds: 1, FailureThreshold: 2}
	createPod(t, ctx, s, newPod("live", app))
	p := waitPod(t, ctx, s, "live", "Running", running)
	before := container(p, "app").ContainerID

	// Healthy for a few probes: no restart.
	gen := a.snapshot().gen
	eventually(t, ctx, "several relists", func() (bool, string) { return a.snapshot().gen >= gen+15, "" })
	if c := container(getPod(t, ctx, s, "live"), "app"); c.RestartCount != 0 {
		t.Fatalf("a healthy container was restarted: %+v", c)
	}

	execIn(t, ctx, a, "live", "", "rm", "/tmp/healthy")
	p = waitPod(t, ctx, s, "live", "a restart after the liveness probe failed", func(p *api.Pod) bool {
		c := container(p, "app")
		return c.RestartCount == 1 && c.State == runtime.StateRunning
	})
	if container(p, "app").ContainerID == before {
		t.Errorf("the container was not replaced")
	}
}

// An unknown image leaves its pod Pending with ErrImagePull naming the
// image, other pods run, and the pull is retried until it works.
func TestImagePullError(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	startAgent(t, testConfig(s, newRuntime(t)))
	missing := regHost + "/test/late:" + uuid.NewString()[:8]
	createPod(t, ctx, s, newPod("bad", sh("app", missing, "exec sleep 3600")))
	createPod(t, ctx, s, newPod("good", sh("app", img, "exec sleep 3600")))

	p := waitPod(t, ctx, s, "bad", "ErrImagePull", func(p *api.Pod) bool {
		return container(p, "app").Reason == ReasonErrImagePull
	})
	t.Logf("status: %s: %s", p.Status.Reason, p.Status.Message)
	if c := container(p, "app"); c.State != runtime.StateWaiting || !strings.Contains(c.Message, missing) {
		t.Errorf("container = %+v, want Waiting with a message naming %s", c, missing)
	}
	if p.Status.Phase != api.PodPending || p.Status.Reason != ReasonErrImagePull || !strings.Contains(p.Status.Message, missing) {
		t.Errorf("pod: phase %s, reason %q, message %q; want Pending, ErrImagePull, naming the image", p.Status.Phase, p.Status.Reason, p.Status.Message)
	}
	waitPod(t, ctx, s, "good", "Running", running)

	if err := push(missing); err != nil {
		t.Fatal(err)
	}
	p = waitPod(t, ctx, s, "bad", "Running once the image exists", running)
	if p.Status.Reason != "" || p.Status.Message != "" {
		t.Errorf("after the pull worked, reason %q, message %q; want both cleared", p.Status.Reason, p.Status.Message)
	}
}

// A pod that Admit refuses stays Pending with reason PolicyDenied and no
// containers, others run, and it starts once Admit agrees.
func TestAdmitDenied(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	rt := newRuntime(t)
	var allow atomic.Bool
	cfg := testConfig(s, rt)
	cfg.Admit = func(_ context.Context, p *api.Pod) error {
		if p.Labels["signed"] != "yes" && !allow.Load() {
			return fmt.Errorf("image %s is not signed by a trusted key", p.Spec.Containers[0].Image)
		}
		return nil
	}
	startAgent(t, cfg)
	denied := createPod(t, ctx, s, newPod("denied", sh("app", img, "exec sleep 3600")))
	ok := newPod("ok", sh("app", img, "exec sleep 3600"))
	ok.Labels = map[string]string{"signed": "yes"}
	createPod(t, ctx, s, ok)

	p := waitPod(t, ctx, s, "denied", "PolicyDenied", func(p *api.Pod) bool { return p.Status.Reason == ReasonPolicyDenied })
	if want := "image " + img + " is not signed by a trusted key"; p.Status.Message != want || p.Status.Phase != api.PodPending {
		t.Errorf("denied: phase %s, message %q; want Pending, %q", p.Status.Phase, p.Status.Message, want)
	}
	waitPod(t, ctx, s, "ok", "Running", running)
	if rp := runtimePod(t, ctx, rt, denied.UID); rp != nil {
		t.Errorf("the denied pod has containers: %+v", rp)
	}

	allow.Store(true)
	p = waitPod(t, ctx, s, "denied", "Running once admitted", running)
	if p.Status.Reason != "" {
		t.Errorf("admitted pod's reason = %q, want none", p.Status.Reason)
	}
}

// A pod deleted from the API, or bound to another node, loses its
// containers.
func TestDeletedPodRemoved(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	rt := newRuntime(t)
	startAgent(t, testConfig(s, rt))
	gone := createPod(t, ctx, s, newPod("gone", sh("app", img, "exec sleep 3600")))
	moved := createPod(t, ctx, s, newPod("moved", sh("app", img, "exec sleep 3600")))
	waitPod(t, ctx, s, "gone", "Running", running)
	waitPod(t, ctx, s, "moved", "Running", running)

	if _, err := s.Delete(ctx, api.Pods, "test", "gone", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GuaranteedUpdate(ctx, api.Pods, "test", "moved", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.Pod).Spec.NodeName = "node-2"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, uid := range []string{gone.UID, moved.UID} {
		eventually(t, ctx, "the containers of pod "+uid+" to be removed", func() (bool, string) {
			rp := runtimePod(t, ctx, rt, uid)
			return rp == nil, fmt.Sprintf("%+v", rp)
		})
	}
}

// A new agent adopts the containers of the pods bound to it (the same
// containers, not restarted) and removes those of pods that are gone.
func TestRestartAdoptsAndRemovesOrphans(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	rt := newRuntime(t)
	cfg := testConfig(s, rt)
	_, stop := startAgent(t, cfg)
	createPod(t, ctx, s, newPod("kept", sh("app", img, "exec sleep 3600")))
	before := container(waitPod(t, ctx, s, "kept", "Running", running), "app")
	stop()

	// While no agent runs: a runtime pod no API pod wants.
	orphan := newPod("orphan", sh("app", img, "exec sleep 3600"))
	orphan.UID = uuid.NewString()
	uid := api.UIDRangeBlock(1).First
	orphan.Spec.SecurityContext = &api.PodSecurityContext{RunAsUser: &uid}
	if err := rt.SyncPod(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if rp := runtimePod(t, ctx, rt, orphan.UID); rp == nil || !rp.SandboxRunning {
		t.Fatalf("the orphan is %+v, want it running", rp)
	}

	a, _ := startAgent(t, cfg)
	eventually(t, ctx, "the orphan to be removed", func() (bool, string) {
		rp := runtimePod(t, ctx, rt, orphan.UID)
		return rp == nil, fmt.Sprintf("%+v", rp)
	})
	// The kept pod has been synced by now (its key was queued with the
	// orphan's); make sure with one more relist.
	gen := a.snapshot().gen
	eventually(t, ctx, "a relist", func() (bool, string) { return a.snapshot().gen > gen+1, "" })
	p := getPod(t, ctx, s, "kept")
	if c := container(p, "app"); c.ContainerID != before.ContainerID || c.RestartCount != 0 || !running(p) {
		t.Errorf("after the agent restarted: phase %s, app %+v; want Running, container %s not restarted", p.Status.Phase, c, before.ContainerID)
	}
	rp := runtimePod(t, ctx, rt, p.UID)
	if rp == nil || rp.Container("app") == nil || rp.Container("app").ID != before.ContainerID {
		t.Errorf("runtime pod = %+v, want container %s", rp, before.ContainerID)
	}
}

func TestConfigValidate(t *testing.T) {
	s, rt := newStore(t), runtime.Runtime((*runtime.Docker)(nil))
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no store", func(c *Config) { c.Store = nil }},
		{"no runtime", func(c *Config) { c.Runtime = nil }},
		{"no address", func(c *Config) { c.Address = "" }},
		{"bad node name", func(c *Config) { c.NodeName = "Node_1" }},
		{"negative interval", func(c *Config) { c.SyncInterval = -1 }},
	} {
		cfg := testConfig(s, rt)
		tc.mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", tc.name)
		}
	}
	cfg := Config{Store: s, Runtime: rt, NodeName: "n1", Address: "10.0.0.1"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxPods != 110 || cfg.HeartbeatInterval != 10*time.Second || cfg.BackOff != 10*time.Second || cfg.MaxBackOff != 5*time.Minute {
		t.Errorf("defaults = %+v", cfg)
	}
}

func TestBackOff(t *testing.T) {
	const base, limit = time.Second, 4 * time.Second
	var b backOff
	now := time.Unix(1000, 0)
	var got []time.Duration
	for range 5 {
		if b.blocked(now) {
			t.Fatalf("blocked at %v after a delay of %v", now, b.delay)
		}
		b.try(now, base, limit)
		got = append(got, b.delay)
		if !b.blocked(now.Add(b.delay - time.Millisecond)) {
			t.Errorf("not blocked just before the delay %v", b.delay)
		}
		now = now.Add(b.delay)
	}
	if want := []time.Duration{base, 2 * base, 4 * base, limit, limit}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delays = %v, want %v", got, want)
	}
	b.try(now.Add(2*limit+time.Second), base, limit)
	if b.delay != base {
		t.Errorf("after a quiet spell, delay = %v, want %v", b.delay, base)
	}
}
