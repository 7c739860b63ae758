package runtime

import (
	"strconv"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

// procStatus reads the fields of /proc/self/status that say what a
// process may do, from inside a container, as the container's process
// sees them (exec runs with the container's user and restrictions).
func procStatus(t *testing.T, r Runtime, uid, name string) map[string]string {
	t.Helper()
	out, errOut, code, err := execOut(t, r, uid, name, "sh", "-c", "cat /proc/self/status; echo Uid-id: $(id -u) $(id -g)")
	if err != nil || code != 0 {
		t.Fatalf("exec in %s: %d, %v: %s", name, code, err, errOut)
	}
	got := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	return got
}

// TestRestrictedContainers: a pod runs as the UID its spec names, with no
// capabilities, no new privileges and the engine's seccomp profile; its
// emptyDir is writable by that UID; a pod without a UID, with UID 0 or
// asking for privileges, and not admitted privileged, is refused; one
// admitted privileged runs as it asks.
func TestRestrictedContainers(t *testing.T) {
	img, _ := busybox(t)
	r := newRuntime(t, "restricted", t.TempDir())
	ctx := testCtx(t)

	vol := []api.Volume{{Name: "scratch", EmptyDir: &struct{}{}}}
	pod := newPod("restricted", vol, sh("app", img, "echo hi > /scratch/f && exec sleep 3600", api.VolumeMount{Name: "scratch", MountPath: "/scratch"}))
	syncPod(t, r, pod)
	waitState(t, r, pod.UID, "app", StateRunning)
	st := procStatus(t, r, pod.UID, "app")
	want := map[string]string{
		"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2",
		"Uid-id": strconv.FormatInt(testUID, 10) + " " + strconv.FormatInt(testUID, 10),
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("in the container, %s = %q, want %q", k, st[k], v)
		}
	}
	if out, _, code, err := execOut(t, r, pod.UID, "app", "cat", "/scratch/f"); err != nil || code != 0 || out != "hi\n" {
		t.Errorf("the emptyDir as UID %d: %q, %d, %v; want the file the container wrote", testUID, out, code, err)
	}

	bad := map[string]func(p *api.Pod){
		"no runAsUser": func(p *api.Pod) { p.Spec.SecurityContext = nil },
		"UID 0":        func(p *api.Pod) { p.Spec.SecurityContext.RunAsUser = ptr(int64(0)) },
		"privileged":   func(p *api.Pod) { p.Spec.Containers[0].SecurityContext = &api.SecurityContext{Privileged: ptr(true)} },
		"capabilities": func(p *api.Pod) {
			p.Spec.Containers[0].SecurityContext = &api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"NET_ADMIN"}}}
		},
		"hostPID": func(p *api.Pod) { p.Spec.HostPID = true },
	}
	for name, change := range bad {
		p := newPod("refused", nil, sh("app", img, "exec sleep 3600"))
		change(p)
		err := r.SyncPod(ctx, p)
		if err == nil || !strings.Contains(err.Error(), "not admitted as privileged") {
			t.Errorf("%s: SyncPod = %v, want a refusal: not admitted as privileged", name, err)
		}
		if ps := podStatus(t, r, p.UID); ps != nil && ps.Container("app") != nil {
			t.Errorf("%s: the refused container was created", name)
		}
		_ = r.RemovePod(ctx, p.UID)
	}

	priv := newPod("privileged", nil, sh("app", img, "exec sleep 3600"))
	priv.Annotations = map[string]string{api.PodSecurityAnnotation: api.PodSecurityPrivileged}
	priv.Spec.SecurityContext.RunAsUser = ptr(int64(0))
	// Not privileged: true, which this machine's engine cannot run (its
	// own bounding set lacks CAP_SYS_RESOURCE, and runc fails to apply
	// every capability): an added capability and root show the same.
	priv.Spec.Containers[0].SecurityContext = &api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"NET_ADMIN"}}}
	syncPod(t, r, priv)
	waitState(t, r, priv.UID, "app", StateRunning)
	st = procStatus(t, r, priv.UID, "app")
	if capEff, _ := strconv.ParseUint(st["CapEff"], 16, 64); capEff&(1<<12) == 0 || st["Uid-id"] != "0 0" {
		t.Errorf("the admitted privileged pod: CapEff %s, ids %s; want CAP_NET_ADMIN (bit 12), root", st["CapEff"], st["Uid-id"])
	}
}
