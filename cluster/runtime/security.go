package runtime

import (
	"context"
	"fmt"
	"strconv"

	"github.com/moby/moby/api/types/container"

	"slipway.dev/slipway/api"
)

// The runtime is the last line of the restricted policy (issue 14): a
// pod without the privileged marker (api.PodSecurityAnnotation, set by
// the API server's admission and copied by the controllers) runs as the
// non-root UID its spec names, which the node agent defaulted from its
// project's range, with every capability dropped, no new privileges,
// the engine's default seccomp profile and masked and read-only /proc
// paths (neither is ever turned off here), and never privileged. A pod
// that reaches the runtime without a UID, with UID or GID 0, or asking
// for more is refused, not run as the image's user.

// sandboxUser is the pause container's user: it only sleeps.
const sandboxUser = "65534:65534"

// privileged reports whether pod was admitted under the privileged
// exception.
func privileged(pod *api.Pod) bool {
	return pod.Annotations[api.PodSecurityAnnotation] == api.PodSecurityPrivileged
}

// harden sets how container c of pod runs on cfg and host, or refuses it.
func harden(pod *api.Pod, c *api.Container, cfg *container.Config, host *container.HostConfig) error {
	if pod.Spec.HostNetwork || pod.Spec.HostIPC {
		return fmt.Errorf("runtime: pod %s/%s: the node's network and IPC namespaces are not for pods", pod.Namespace, pod.Name)
	}
	for _, v := range pod.Spec.Volumes {
		if v.HostPath != nil {
			return fmt.Errorf("runtime: pod %s/%s: volume %q: host paths are never mounted", pod.Namespace, pod.Name, v.Name)
		}
	}
	uid, gid, hasUser := api.EffectiveUser(&pod.Spec, c)
	sc := c.SecurityContext
	if sc == nil {
		sc = &api.SecurityContext{}
	}
	if !privileged(pod) {
		switch {
		case !hasUser:
			return fmt.Errorf("runtime: container %s of pod %s/%s has no runAsUser and was not admitted as privileged: refusing to run it as the image's user", c.Name, pod.Namespace, pod.Name)
		case uid == 0 || gid == 0:
			return fmt.Errorf("runtime: container %s of pod %s/%s asks for UID/GID 0 and was not admitted as privileged", c.Name, pod.Namespace, pod.Name)
		case pod.Spec.HostPID:
			return fmt.Errorf("runtime: pod %s/%s asks for the node's PID namespace and was not admitted as privileged", pod.Namespace, pod.Name)
		case sc.Privileged != nil && *sc.Privileged,
			sc.AllowPrivilegeEscalation != nil && *sc.AllowPrivilegeEscalation,
			sc.Capabilities != nil && len(sc.Capabilities.Add) > 0:
			return fmt.Errorf("runtime: container %s of pod %s/%s asks for privileges (privileged, allowPrivilegeEscalation or capabilities.add) and was not admitted as privileged", c.Name, pod.Namespace, pod.Name)
		}
		cfg.User = strconv.FormatInt(uid, 10) + ":" + strconv.FormatInt(gid, 10)
		host.CapDrop = []string{"ALL"}
		host.SecurityOpt = append(host.SecurityOpt, "no-new-privileges")
		host.Privileged = false
		return nil
	}
	// Admitted privileged: what the spec asks, and the engine's defaults
	// for what it does not.
	if hasUser {
		cfg.User = strconv.FormatInt(uid, 10) + ":" + strconv.FormatInt(gid, 10)
	}
	host.Privileged = sc.Privileged != nil && *sc.Privileged
	if caps := sc.Capabilities; caps != nil {
		host.CapAdd, host.CapDrop = caps.Add, caps.Drop
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		host.SecurityOpt = append(host.SecurityOpt, "no-new-privileges")
	}
	if pod.Spec.HostPID {
		host.PidMode = "host"
	}
	return nil
}

// hardenSandbox runs the pause container unprivileged, and refuses what
// no pod gets: the node's network or IPC namespace.
func hardenSandbox(pod *api.Pod, cfg *container.Config, host *container.HostConfig) error {
	if pod.Spec.HostNetwork || pod.Spec.HostIPC {
		return fmt.Errorf("runtime: pod %s/%s: the node's network and IPC namespaces are not for pods", pod.Namespace, pod.Name)
	}
	cfg.User = sandboxUser
	host.CapDrop = []string{"ALL"}
	host.SecurityOpt = append(host.SecurityOpt, "no-new-privileges")
	return nil
}

// ImageUser is the user an image's config names ("" for none, which the
// engine runs as root). The node agent warns about images that assume
// root, since restricted pods run them as their project's UID.
func (d *Docker) ImageUser(ctx context.Context, ref string) (string, error) {
	img, err := d.cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("runtime: image %s: %w", ref, err)
	}
	if img.Config == nil {
		return "", nil
	}
	return img.Config.User, nil
}
