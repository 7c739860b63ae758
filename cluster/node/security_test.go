package node

import (
	"strconv"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

// TestUnadmittedPodsRunRestricted: the node does not trust that a pod
// went through the API server's admission. A pod written straight to the
// store without a runAsUser runs as its project's first UID with no
// capabilities; one asking for UID 0 or an added capability without the
// privileged marker is not started, and says why.
func TestUnadmittedPodsRunRestricted(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	img := busybox(t)
	a, _ := startAgent(t, testConfig(s, newRuntime(t)))
	first := api.UIDRangeBlock(1).First

	createPod(t, ctx, s, newPod("plain", sh("app", img, "exec sleep 3600")))
	waitPod(t, ctx, s, "plain", "Running", running)
	out, code := execIn(t, ctx, a, "plain", "app", "sh", "-c", "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
	want := strconv.FormatInt(first, 10) + "\nCapEff:\t0000000000000000\nNoNewPrivs:\t1\n"
	if code != 0 || out != want {
		t.Errorf("in the unadmitted pod: %q (exit %d), want %q: the project's first UID, no capabilities", out, code, want)
	}

	root := newPod("root", sh("app", img, "exec sleep 3600"))
	zero := int64(0)
	root.Spec.SecurityContext = &api.PodSecurityContext{RunAsUser: &zero}
	createPod(t, ctx, s, root)
	caps := newPod("caps", sh("app", img, "exec sleep 3600"))
	caps.Spec.Containers[0].SecurityContext = &api.SecurityContext{Capabilities: &api.Capabilities{Add: []string{"SYS_ADMIN"}}}
	createPod(t, ctx, s, caps)
	for name, field := range map[string]string{"root": "spec.securityContext.runAsUser", "caps": "spec.containers[0].securityContext.capabilities.add"} {
		p := waitPod(t, ctx, s, name, "a refusal", func(p *api.Pod) bool { return p.Status.Reason == ReasonCreateContainerError })
		if !strings.Contains(p.Status.Message, field) || !strings.Contains(p.Status.Message, "not admitted as privileged") {
			t.Errorf("pod %s: message %q, want the field %s and that it was not admitted as privileged", name, p.Status.Message, field)
		}
		if rp := runtimePod(t, ctx, a.rt, p.UID); rp != nil && len(rp.Containers) > 0 {
			t.Errorf("pod %s: containers %+v were created", name, rp.Containers)
		}
	}
}
