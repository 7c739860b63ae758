package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"slipway.dev/slipway/api"
)

// newRuntime returns a Docker runtime on the test dockerd whose pods are
// removed when the test ends.
func newRuntime(t *testing.T, prefix, dataDir string) *Docker {
	t.Helper()
	d := dockerDaemon(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewDocker(Config{
		Host: d.Host(), Prefix: prefix, DataDir: dataDir,
		PauseBinary: exe, PauseArgs: []string{"pause"}, StopTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		pods, err := r.ListPods(ctx)
		if err != nil {
			t.Errorf("cleanup: %v", err)
		}
		for _, p := range pods {
			if err := r.RemovePod(ctx, p.UID); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
		r.Close()
	})
	return r
}

// testCtx bounds a call so that a hang fails instead of blocking the
// binary; generous, for a loaded 2-core machine.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newPod(name string, vols []api.Volume, cs ...api.Container) *api.Pod {
	return &api.Pod{
		ObjectMeta: api.ObjectMeta{Namespace: "test", Name: name, UID: uuid.NewString()},
		Spec:       api.PodSpec{Containers: cs, Volumes: vols, SecurityContext: &api.PodSecurityContext{RunAsUser: ptr(testUID)}},
	}
}

// testUID is what the tests' pods run as: the first UID of a project's
// range, as the node agent defaults it.
const testUID int64 = 1000010000

func ptr[T any](v T) *T { return &v }

func sh(name, image, script string, mounts ...api.VolumeMount) api.Container {
	return api.Container{Name: name, Image: image, Command: []string{"sh", "-c", script}, VolumeMounts: mounts}
}

// eventually polls f until it reports done, for at most waitLimit: the
// bounded wait for something asynchronous (a server starting, a
// container exiting), not a timing assertion. The limit is generous: the
// suite runs its packages and their dockerds at once on two cores.
func eventually(t *testing.T, what string, f func() (bool, error)) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		done, err := f()
		if done {
			return
		}
		last = err
	}
	t.Fatalf("waited %s for %s; last error: %v", waitLimit, what, last)
}

const waitLimit = 4 * time.Minute

func podStatus(t *testing.T, r Runtime, uid string) *PodStatus {
	t.Helper()
	pods, err := r.ListPods(testCtx(t))
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

// waitState waits until the pod's container is in state.
func waitState(t *testing.T, r Runtime, uid, name, state string) ContainerStatus {
	t.Helper()
	var got ContainerStatus
	eventually(t, fmt.Sprintf("container %s to be %s", name, state), func() (bool, error) {
		p := podStatus(t, r, uid)
		if p == nil || p.Container(name) == nil {
			return false, fmt.Errorf("no container %s", name)
		}
		got = *p.Container(name)
		return got.State == state, fmt.Errorf("state %s", got.State)
	})
	return got
}

func execOut(t *testing.T, r Runtime, uid, name string, cmd ...string) (string, string, int, error) {
	t.Helper()
	var out, errb bytes.Buffer
	code, err := r.Exec(testCtx(t), uid, name, cmd, &out, &errb)
	return out.String(), errb.String(), code, err
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

func freePort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func syncPod(t *testing.T, r Runtime, pod *api.Pod) {
	t.Helper()
	ctx := testCtx(t)
	for _, c := range pod.Spec.Containers {
		if err := r.EnsureImage(ctx, c.Image, pullAuth(regUser, regPass)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.SyncPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
}

// Two containers of a pod share localhost and an emptyDir; the pod's IP
// is reachable from the host, and its host port is published.
func TestPodNetworkAndVolumes(t *testing.T) {
	img, _ := busybox(t)
	data := t.TempDir()
	r := newRuntime(t, "net", data)
	ctx := testCtx(t)
	hostPort := freePort(t)

	web := sh("web", img, "exec httpd -f -p 8080 -h /www", api.VolumeMount{Name: "www", MountPath: "/www"})
	web.Ports = []api.ContainerPort{{ContainerPort: 8080, HostPort: hostPort}}
	writer := sh("writer", img, `echo "$GREETING from writer" > /shared/index.html; echo writer started; exec sleep 3600`,
		api.VolumeMount{Name: "www", MountPath: "/shared"})
	writer.Env = []api.EnvVar{{Name: "GREETING", Value: "hello"}}
	pod := newPod("web", []api.Volume{{Name: "www", EmptyDir: &struct{}{}}}, web, writer)
	syncPod(t, r, pod)
	waitState(t, r, pod.UID, "web", StateRunning)
	waitState(t, r, pod.UID, "writer", StateRunning)

	const want = "hello from writer\n"
	// writer fetches what it wrote from web, over localhost.
	eventually(t, "writer to fetch index.html from web over localhost", func() (bool, error) {
		out, stderr, code, err := execOut(t, r, pod.UID, "writer", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html")
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d: %s", code, stderr)
		}
		return err == nil && out == want, fmt.Errorf("got %q, %v", out, err)
	})

	p := podStatus(t, r, pod.UID)
	if p == nil || !p.SandboxRunning || !strings.HasPrefix(p.IP, testSubnet) {
		t.Fatalf("ListPods() = %+v, want a running sandbox with an address in %s0/24", p, testSubnet)
	}
	if p.Namespace != "test" || p.Name != "web" {
		t.Errorf("pod = %s/%s, want test/web", p.Namespace, p.Name)
	}
	for _, url := range []string{
		"http://" + p.IP + ":8080/index.html",                   // the pod IP, from the host
		fmt.Sprintf("http://127.0.0.1:%d/index.html", hostPort), // the host port
	} {
		if got, err := httpGet(url); err != nil || got != want {
			t.Errorf("GET %s = %q, %v; want %q", url, got, err, want)
		}
	}

	var logs bytes.Buffer
	if err := r.Logs(ctx, pod.UID, "writer", false, &logs); err != nil || logs.String() != "writer started\n" {
		t.Errorf("Logs(writer) = %q, %v; want %q", logs.String(), err, "writer started\n")
	}

	out, stderr, code, err := execOut(t, r, pod.UID, "writer", "sh", "-c", "echo out; echo err >&2; exit 3")
	if err != nil || code != 3 || out != "out\n" || stderr != "err\n" {
		t.Errorf("Exec(exit 3) = %q, %q, %d, %v; want out, err, 3", out, stderr, code, err)
	}
	if _, _, _, err := execOut(t, r, pod.UID, "nosuch", "true"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Exec(nosuch) = %v, want ErrNotFound", err)
	}

	emptyDir := filepath.Join(data, "pods", pod.UID, "volumes", "www")
	if b, err := os.ReadFile(filepath.Join(emptyDir, "index.html")); err != nil || string(b) != want {
		t.Errorf("emptyDir index.html = %q, %v", b, err)
	}

	if err := r.StopPod(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
	p = podStatus(t, r, pod.UID)
	if p == nil || p.SandboxRunning || p.IP != "" {
		t.Fatalf("after StopPod, ListPods() = %+v, want a stopped sandbox and no IP", p)
	}
	// The sandbox ran PauseMain (this test binary), which exits 0 on
	// SIGTERM; a SIGKILL after the grace period would be 137.
	if sb := view(mustList(t, r, pod.UID)).sandbox; sb.State.ExitCode != 0 {
		t.Errorf("the sandbox exited %d on StopPod, want 0", sb.State.ExitCode)
	}
	for _, c := range p.Containers {
		if c.State != StateTerminated || c.FinishedAt.IsZero() {
			t.Errorf("after StopPod, %s = %+v, want Terminated with a finish time", c.Name, c)
		}
	}
	if err := r.RemovePod(ctx, pod.UID); err != nil {
		t.Fatal(err)
	}
	if p := podStatus(t, r, pod.UID); p != nil {
		t.Errorf("after RemovePod, ListPods() still has %+v", p)
	}
	if _, err := os.Stat(emptyDir); !os.IsNotExist(err) {
		t.Errorf("after RemovePod, the emptyDir: %v, want it gone", err)
	}
}

// Limits reach the engine and the kernel enforces them: a container that
// goes over its memory limit is OOM-killed.
func TestResourceLimits(t *testing.T) {
	img, _ := busybox(t)
	r := newRuntime(t, "limits", t.TempDir())
	const mem = 32 << 20
	limits := api.ResourceRequirements{
		Limits:   api.ResourceList{MilliCPU: 500, Memory: mem},
		Requests: api.ResourceList{MilliCPU: 250},
	}
	idle := sh("idle", img, "exec sleep 3600")
	idle.Resources = limits
	hog := sh("hog", img, "exec dd if=/dev/zero of=/dev/null bs=128M count=1")
	hog.Resources = limits
	pod := newPod("limits", nil, idle, hog)
	syncPod(t, r, pod)

	st := waitState(t, r, pod.UID, "idle", StateRunning)
	c, err := r.cli.ContainerInspect(testCtx(t), st.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Container.HostConfig; h.Memory != mem || h.MemorySwap != mem || h.NanoCPUs != 5e8 || h.CPUShares != 256 {
		t.Errorf("inspect: Memory %d, MemorySwap %d, NanoCpus %d, CpuShares %d; want %d, %d, 5e8, 256",
			h.Memory, h.MemorySwap, h.NanoCPUs, h.CPUShares, mem, mem)
	}
	// Under the limit is fine.
	if _, stderr, code, err := execOut(t, r, pod.UID, "idle", "dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=1"); err != nil || code != 0 {
		t.Errorf("dd of 4 MiB under a 32 MiB limit: exit %d, %v: %s", code, err, stderr)
	}

	got := waitState(t, r, pod.UID, "hog", StateTerminated)
	if got.ExitCode != 137 || got.Reason != "OOMKilled" {
		t.Errorf("hog = exit %d, reason %q; want 137, OOMKilled", got.ExitCode, got.Reason)
	}
}

// A persistent volume outlives its pod and is seen by the next one of the
// same project; the pod's emptyDir does not. Volumes are kept per project
// UID: a project made again under the same name (a new UID) gets an empty
// one, and a pod that names no project UID is not started.
func TestPersistentVolume(t *testing.T) {
	img, _ := busybox(t)
	data := t.TempDir()
	r := newRuntime(t, "pv", data)
	ctx := testCtx(t)
	vols := []api.Volume{
		{Name: "data", Persistent: &api.PersistentVolumeSource{ClaimName: "claim"}},
		{Name: "scratch", EmptyDir: &struct{}{}},
	}
	project := uuid.NewString()
	inProject := func(p *api.Pod, uid string) *api.Pod {
		p.Annotations = map[string]string{ProjectUIDAnnotation: uid}
		return p
	}
	unnamed := newPod("unnamed", vols, sh("app", img, "exec sleep 3600", api.VolumeMount{Name: "data", MountPath: "/data"}))
	if err := r.SyncPod(ctx, unnamed); err == nil || !strings.Contains(err.Error(), ProjectUIDAnnotation) {
		t.Errorf("SyncPod of a pod with a persistent volume and no project UID = %v, want an error naming %s", err, ProjectUIDAnnotation)
	}
	first := inProject(newPod("first", vols, sh("app", img, "echo kept > /data/file; touch /scratch/gone; exec sleep 3600",
		api.VolumeMount{Name: "data", MountPath: "/data"}, api.VolumeMount{Name: "scratch", MountPath: "/scratch"})), project)
	syncPod(t, r, first)
	eventually(t, "the first pod to write its files", func() (bool, error) {
		_, _, code, err := execOut(t, r, first.UID, "app", "test", "-f", "/scratch/gone")
		return err == nil && code == 0, err
	})
	if err := r.RemovePod(ctx, first.UID); err != nil {
		t.Fatal(err)
	}

	reader := func(name, uid string) string {
		p := inProject(newPod(name, vols, sh("app", img, "cat /data/file; ls /scratch; echo end; exec sleep 3600",
			api.VolumeMount{Name: "data", MountPath: "/data"}, api.VolumeMount{Name: "scratch", MountPath: "/scratch"})), uid)
		syncPod(t, r, p)
		waitState(t, r, p.UID, "app", StateRunning)
		var logs bytes.Buffer
		eventually(t, "the output of pod "+name, func() (bool, error) {
			logs.Reset()
			err := r.Logs(ctx, p.UID, "app", false, &logs)
			return err == nil && strings.Contains(logs.String(), "end\n"), err
		})
		return logs.String()
	}
	if got := reader("second", project); got != "kept\nend\n" {
		t.Errorf("second pod printed %q, want the first pod's file (kept) and an empty emptyDir", got)
	}
	if b, err := os.ReadFile(filepath.Join(data, "volumes", project, "claim", "file")); err != nil || string(b) != "kept\n" {
		t.Errorf("DATA/volumes/%s/claim/file = %q, %v", project, b, err)
	}
	// The same namespace and claim, in a project made again (a new UID).
	if got := reader("again", uuid.NewString()); strings.Contains(got, "kept") {
		t.Errorf("a pod of project test made again printed %q: it read the earlier project's volume", got)
	}
}

// A new Runtime value with the same prefix adopts the running pods; one
// with another prefix sees and removes none of them.
func TestAdoptionAndPrefixes(t *testing.T) {
	img, _ := busybox(t)
	data := t.TempDir()
	r := newRuntime(t, "adopt", data)
	ctx := testCtx(t)
	pod := newPod("adopted", nil, sh("app", img, "exec sleep 3600"))
	syncPod(t, r, pod)
	before := waitState(t, r, pod.UID, "app", StateRunning)
	ip := podStatus(t, r, pod.UID).IP

	again := newRuntime(t, "adopt", data) // the agent restarted
	p := podStatus(t, again, pod.UID)
	if p == nil || !p.SandboxRunning || p.IP != ip || p.Name != "adopted" || len(p.Containers) != 1 || p.Containers[0].ID != before.ID {
		t.Fatalf("the restarted runtime lists %+v, want pod adopted at %s with container %s", p, ip, before.ID)
	}
	// Syncing the adopted pod changes nothing.
	if err := again.SyncPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if got := podStatus(t, again, pod.UID).Containers[0]; got.ID != before.ID || got.RestartCount != 0 {
		t.Errorf("after SyncPod of an adopted pod, app = %+v, want the same container %s", got, before.ID)
	}

	other := newRuntime(t, "other", t.TempDir())
	if pods, err := other.ListPods(ctx); err != nil || len(pods) != 0 {
		t.Errorf("a runtime with another prefix lists %+v, %v; want none", pods, err)
	}
	if err := other.RemovePod(ctx, pod.UID); err != nil {
		t.Errorf("RemovePod of a pod another prefix owns = %v, want nil (nothing to do)", err)
	}
	if _, _, _, err := execOut(t, other, pod.UID, "app", "true"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Exec through another prefix = %v, want ErrNotFound", err)
	}
	if p := podStatus(t, r, pod.UID); p == nil || !p.SandboxRunning {
		t.Errorf("after another prefix's RemovePod, the pod is %+v, want it running", p)
	}
}

// Pull failures and missing images are errors the agent can show.
func TestImages(t *testing.T) {
	img, auth := busybox(t)
	r := newRuntime(t, "images", t.TempDir())
	ctx := testCtx(t)

	missing := regHost + "/test/nosuch:1"
	err := r.EnsureImage(ctx, missing, auth)
	t.Logf("EnsureImage(missing) = %v", err)
	if !errors.Is(err, ErrImagePull) || !strings.Contains(err.Error(), missing) {
		t.Errorf("EnsureImage(%s) = %v, want ErrImagePull naming the image", missing, err)
	}
	// The credentials reach the registry: wrong ones fail, right ones pull.
	authOnly := regHost + "/test/busybox:" + uuid.NewString() // not pulled yet
	if err := push(authOnly); err != nil {
		t.Fatal(err)
	}
	err = r.EnsureImage(ctx, authOnly, pullAuth(regUser, "wrong"))
	t.Logf("EnsureImage(wrong credentials) = %v", err)
	if !errors.Is(err, ErrImagePull) {
		t.Errorf("EnsureImage with wrong credentials = %v, want ErrImagePull", err)
	}
	if err := r.EnsureImage(ctx, authOnly, ""); !errors.Is(err, ErrImagePull) {
		t.Errorf("EnsureImage with no credentials = %v, want ErrImagePull", err)
	}
	if err := r.EnsureImage(ctx, authOnly, auth); err != nil {
		t.Errorf("EnsureImage(%s) with the right credentials = %v", authOnly, err)
	}
	// Present on the engine, but wrong credentials: the pull is tried
	// again (rights are rechecked, as with AlwaysPullImages) and fails.
	if err := r.EnsureImage(ctx, authOnly, pullAuth(regUser, "wrong")); !errors.Is(err, ErrImagePull) {
		t.Errorf("EnsureImage(%s) of a present image with wrong credentials = %v, want ErrImagePull (rights rechecked)", authOnly, err)
	}

	if err := r.EnsureImage(ctx, img, auth); err != nil {
		t.Fatal(err)
	}
	pod := newPod("mixed", nil, sh("good", img, "exec sleep 3600"), sh("bad", missing, "true"))
	err = r.SyncPod(ctx, pod)
	t.Logf("SyncPod(missing image) = %v", err)
	if !errors.Is(err, ErrImageNotPresent) || !strings.Contains(err.Error(), missing) {
		t.Errorf("SyncPod with a missing image = %v, want ErrImageNotPresent naming it", err)
	}
	waitState(t, r, pod.UID, "good", StateRunning)
}

// The agent restarts containers by attempt; a dead sandbox takes its
// containers with it and SyncPod replaces them all.
func TestRestarts(t *testing.T) {
	img, _ := busybox(t)
	r := newRuntime(t, "restarts", t.TempDir())
	ctx := testCtx(t)
	pod := newPod("restarts", nil, sh("crash", img, "echo attempt; exit 2"), sh("side", img, "exec sleep 3600"))
	syncPod(t, r, pod)

	got := waitState(t, r, pod.UID, "crash", StateTerminated)
	if got.ExitCode != 2 || got.Reason != "Error" || got.RestartCount != 0 || got.FinishedAt.IsZero() {
		t.Errorf("crash = %+v, want exit 2, Error, attempt 0, a finish time", got)
	}
	// SyncPod leaves an exited container alone.
	if err := r.SyncPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if c := podStatus(t, r, pod.UID).Container("crash"); c.ID != got.ID {
		t.Errorf("SyncPod replaced the exited container %s with %s", got.ID, c.ID)
	}
	if err := r.RestartContainer(ctx, pod, "crash"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "attempt 1 to exit", func() (bool, error) {
		c := podStatus(t, r, pod.UID).Container("crash")
		return c.RestartCount == 1 && c.State == StateTerminated, fmt.Errorf("%+v", c)
	})
	var logs bytes.Buffer
	if err := r.Logs(ctx, pod.UID, "crash", false, &logs); err != nil || logs.String() != "attempt\n" {
		t.Errorf("Logs(crash) = %q, %v; want the new attempt's one line", logs.String(), err)
	}
	cs, err := r.list(ctx, labelUID+"="+pod.UID, labelContainer+"=crash")
	if err != nil || len(cs) != 1 {
		t.Errorf("containers of crash: %d, %v; want only the latest attempt", len(cs), err)
	}

	// The sandbox dies (the engine restarted, say).
	sandbox := view(mustList(t, r, pod.UID)).sandbox
	if _, err := r.cli.ContainerKill(ctx, sandbox.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the sandbox to stop", func() (bool, error) {
		return !podStatus(t, r, pod.UID).SandboxRunning, nil
	})
	if err := r.SyncPod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	p := podStatus(t, r, pod.UID)
	if !p.SandboxRunning || !strings.HasPrefix(p.IP, testSubnet) {
		t.Errorf("after SyncPod, sandbox running %v at %q; want running with an address", p.SandboxRunning, p.IP)
	}
	if c := waitState(t, r, pod.UID, "side", StateRunning); c.RestartCount != 1 {
		t.Errorf("side after the sandbox died = attempt %d, want 1", c.RestartCount)
	}
	if c := p.Container("crash"); c == nil || c.RestartCount != 2 {
		t.Errorf("crash after the sandbox died = %+v, want attempt 2", c)
	}
	if n := len(mustList(t, r, pod.UID)); n != 3 {
		t.Errorf("the pod has %d containers, want 3 (sandbox, crash, side)", n)
	}
}

func mustList(t *testing.T, r *Docker, uid string) []container.InspectResponse {
	t.Helper()
	cs, err := r.list(testCtx(t), labelUID+"="+uid)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
