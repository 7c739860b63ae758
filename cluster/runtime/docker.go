package runtime

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
)

// Config configures a Docker runtime.
type Config struct {
	// Host is the engine's address, such as unix:///var/run/docker.sock.
	// Default: DOCKER_HOST, else the engine's default socket.
	Host string
	// Prefix tells this runtime's containers from every other's on the
	// same engine: it is in their names and in a label, and the runtime
	// lists, adopts and removes only containers that carry it. A DNS label;
	// required.
	Prefix string
	// DataDir holds volumes: DataDir/pods/UID/volumes/NAME for emptyDir
	// (removed with the pod) and DataDir/volumes/PROJECT-UID/CLAIM for
	// persistent volumes (kept; see ProjectUIDAnnotation). The engine
	// must see the same paths.
	// Required.
	DataDir string
	// Network is the Docker network sandboxes attach to. Default "bridge".
	Network string
	// PauseBinary is the executable the pause image runs as each pod's
	// sandbox (slipway itself, run as PauseBinary PauseArgs..., whose
	// command calls PauseMain). Required.
	PauseBinary string
	// PauseArgs are its arguments, such as ["pause"].
	PauseArgs []string
	// StopTimeout is how long a stopped container has between SIGTERM and
	// SIGKILL. Default 10s.
	StopTimeout time.Duration
}

// Validate checks that the required fields are set and well formed.
func (c *Config) Validate() error {
	if msgs := validation.IsDNS1123Label(c.Prefix); len(msgs) > 0 {
		return fmt.Errorf("runtime: prefix %q: %s", c.Prefix, msgs[0])
	}
	if c.DataDir == "" {
		return errors.New("runtime: a data directory is required")
	}
	if c.PauseBinary == "" {
		return errors.New("runtime: a pause binary is required")
	}
	return nil
}

// Docker runs pods on a Docker Engine. It is safe for concurrent use, but
// calls for one pod must not overlap: the agent works a pod at a time.
type Docker struct {
	cfg Config
	cli *client.Client

	pauseMu  sync.Mutex
	pauseRef string // the pause image's tag, once the binary is hashed
}

var _ Runtime = (*Docker)(nil)

// NewDocker returns a runtime on the engine cfg names. It does not contact
// the engine.
func NewDocker(cfg Config) (*Docker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Network = cmp.Or(cfg.Network, "bridge")
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, 10*time.Second)
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("runtime: data dir: %w", err)
	}
	cfg.DataDir = dir
	opt := client.FromEnv
	if cfg.Host != "" {
		opt = client.WithHost(cfg.Host)
	}
	cli, err := client.New(opt)
	if err != nil {
		return nil, fmt.Errorf("runtime: docker client: %w", err)
	}
	return &Docker{cfg: cfg, cli: cli}, nil
}

// Close releases the client's connections.
func (d *Docker) Close() error { return d.cli.Close() }

// Labels on every container the runtime makes. The sandbox is the
// container named "POD", which no spec container can be (names are DNS
// labels, lower case).
const (
	labelRuntime   = "io.slipway.runtime" // Config.Prefix
	labelUID       = "io.slipway.pod.uid"
	labelNamespace = "io.slipway.pod.namespace"
	labelPod       = "io.slipway.pod.name"
	labelContainer = "io.slipway.container"
	labelAttempt   = "io.slipway.attempt"
	sandboxName    = "POD"
)

// EnsureImage implements Runtime.
//
// With credentials it always pulls, as Kubernetes' AlwaysPullImages
// does: the engine keeps one image cache for every project on the node,
// and a pull is where the registry checks that these credentials (the
// pod's own project's) may read the image. Without the pull, a pod could
// name another project's private image by digest and run it from the
// cache once that project's pods had brought it here. Layers already
// present are not fetched again; a registry that cannot be reached fails
// the pull, so a pod whose image is only cached does not start then.
//
// Without credentials a present image is used, but only under the very
// name it was pulled or tagged as: the engine also resolves an image ID,
// an ID prefix, or (on some stores) another name with the same digest to
// a cached image, which would reach a private image with no pull at all.
func (d *Docker) EnsureImage(ctx context.Context, ref, auth string) error {
	if auth == "" {
		ok, err := d.hasImage(ctx, ref)
		if err != nil || ok {
			return err
		}
	}
	resp, err := d.cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err == nil {
		err = resp.Wait(ctx)
		resp.Close()
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrImagePull, ref, err)
	}
	return nil
}

// hasImage reports whether the engine holds ref under that name: one of
// the image's tags, or for a digest reference one of its repo digests.
func (d *Docker) hasImage(ctx context.Context, ref string) (bool, error) {
	img, err := d.cli.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("runtime: image %s: %w", ref, err)
	}
	want, ok := refKey(ref)
	if !ok {
		return false, nil // an image ID, not a name: pull it by name or not at all
	}
	for _, have := range slices.Concat(img.RepoTags, img.RepoDigests) {
		if k, ok := refKey(have); ok && k == want {
			return true, nil
		}
	}
	return false, nil
}

// refKey is a reference's normalized name: NAME@DIGEST for a digest
// reference (a tag beside the digest is ignored, as the engine does),
// NAME:TAG otherwise, with the implicit :latest.
func refKey(ref string) (string, bool) {
	if r, err := reference.ParseAnyReference(ref); err == nil {
		if _, ok := r.(reference.Named); !ok {
			return "", false // an image ID: "sha256:…" or 64 hex digits
		}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", false
	}
	if c, ok := named.(reference.Canonical); ok {
		return c.Name() + "@" + c.Digest().String(), true
	}
	return reference.TagNameOnly(named).String(), true
}

// SyncPod implements Runtime.
func (d *Docker) SyncPod(ctx context.Context, pod *api.Pod) error {
	if err := checkPod(pod); err != nil {
		return err
	}
	cs, err := d.list(ctx, labelUID+"="+pod.UID)
	if err != nil {
		return err
	}
	v := view(cs)
	next := map[string]int{} // attempt for each container made here
	var sandboxID string
	if sb := v.sandbox; sb != nil && sb.State.Running {
		sandboxID = sb.ID
	} else {
		sbAttempt := 0
		if sb != nil {
			sbAttempt = attempt(sb) + 1
		}
		for name, c := range v.latest {
			next[name] = attempt(c) + 1
		}
		if err := d.remove(ctx, cs); err != nil {
			return err
		}
		if sandboxID, err = d.startSandbox(ctx, pod, sbAttempt); err != nil {
			return err
		}
		v.latest = nil
	}
	var errs []error
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if v.latest[c.Name] != nil {
			continue
		}
		if err := d.startContainer(ctx, pod, c, sandboxID, next[c.Name]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RestartContainer implements Runtime.
func (d *Docker) RestartContainer(ctx context.Context, pod *api.Pod, name string) error {
	if err := checkPod(pod); err != nil {
		return err
	}
	i := slices.IndexFunc(pod.Spec.Containers, func(c api.Container) bool { return c.Name == name })
	if i < 0 {
		return fmt.Errorf("runtime: pod %s/%s has no container %q: %w", pod.Namespace, pod.Name, name, ErrNotFound)
	}
	cs, err := d.list(ctx, labelUID+"="+pod.UID)
	if err != nil {
		return err
	}
	v := view(cs)
	if v.sandbox == nil || !v.sandbox.State.Running {
		return fmt.Errorf("runtime: pod %s/%s: the sandbox is not running; sync the pod", pod.Namespace, pod.Name)
	}
	n := 0
	if old := v.latest[name]; old != nil {
		n = attempt(old) + 1
		if old.State.Running {
			if err := d.stop(ctx, old.ID); err != nil {
				return err
			}
		}
	}
	var olds []container.InspectResponse
	for _, c := range cs {
		if c.Config.Labels[labelContainer] == name {
			olds = append(olds, c)
		}
	}
	if err := d.startContainer(ctx, pod, &pod.Spec.Containers[i], v.sandbox.ID, n); err != nil {
		return err
	}
	return d.remove(ctx, olds)
}

// ListPods implements Runtime.
func (d *Docker) ListPods(ctx context.Context) ([]PodStatus, error) {
	cs, err := d.list(ctx)
	if err != nil {
		return nil, err
	}
	byUID := map[string][]container.InspectResponse{}
	for _, c := range cs {
		uid := c.Config.Labels[labelUID]
		byUID[uid] = append(byUID[uid], c)
	}
	pods := make([]PodStatus, 0, len(byUID))
	for uid, cs := range byUID {
		l := cs[0].Config.Labels
		p := PodStatus{UID: uid, Namespace: l[labelNamespace], Name: l[labelPod]}
		v := view(cs)
		if sb := v.sandbox; sb != nil {
			p.SandboxRunning = sb.State.Running
			p.Created, _ = time.Parse(time.RFC3339Nano, sb.Created)
			if n := sb.NetworkSettings; p.SandboxRunning && n != nil && n.Networks[d.cfg.Network] != nil {
				if ip := n.Networks[d.cfg.Network].IPAddress; ip.IsValid() {
					p.IP = ip.String()
				}
			}
		}
		for _, c := range v.latest {
			p.Containers = append(p.Containers, containerStatus(c))
		}
		slices.SortFunc(p.Containers, func(a, b ContainerStatus) int { return strings.Compare(a.Name, b.Name) })
		pods = append(pods, p)
	}
	slices.SortFunc(pods, func(a, b PodStatus) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name), strings.Compare(a.UID, b.UID))
	})
	return pods, nil
}

// StopPod implements Runtime.
func (d *Docker) StopPod(ctx context.Context, uid string) error {
	if err := checkUID(uid); err != nil {
		return err
	}
	cs, err := d.list(ctx, labelUID+"="+uid)
	if err != nil {
		return err
	}
	apps, sandboxes := split(cs)
	// The containers get their grace period together, then the sandbox
	// goes: they keep their network until they have stopped.
	errs := make([]error, len(apps))
	var wg sync.WaitGroup
	for i, c := range apps {
		if c.State.Running {
			wg.Go(func() { errs[i] = d.stop(ctx, c.ID) })
		}
	}
	wg.Wait()
	for _, c := range sandboxes {
		if c.State.Running {
			errs = append(errs, d.stop(ctx, c.ID))
		}
	}
	return errors.Join(errs...)
}

// RemovePod implements Runtime.
func (d *Docker) RemovePod(ctx context.Context, uid string) error {
	if err := checkUID(uid); err != nil {
		return err
	}
	cs, err := d.list(ctx, labelUID+"="+uid)
	if err != nil {
		return err
	}
	// The sandbox goes last: while it is there, ListPods shows the pod,
	// so an interrupted removal is seen and finished by the next one.
	apps, sandboxes := split(cs)
	if err := d.remove(ctx, apps); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, "pods", uid)); err != nil {
		return fmt.Errorf("runtime: removing the volumes of pod %s: %w", uid, err)
	}
	return d.remove(ctx, sandboxes)
}

// Logs implements Runtime.
func (d *Docker) Logs(ctx context.Context, uid, name string, follow bool, w io.Writer) error {
	c, err := d.find(ctx, uid, name)
	if err != nil {
		return err
	}
	rc, err := d.cli.ContainerLogs(ctx, c.ID, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow})
	if err != nil {
		return fmt.Errorf("runtime: logs of %s: %w", name, err)
	}
	defer rc.Close()
	if _, err := stdcopy.StdCopy(w, w, rc); err != nil && ctx.Err() == nil {
		return fmt.Errorf("runtime: logs of %s: %w", name, err)
	}
	return nil
}

// Exec implements Runtime.
func (d *Docker) Exec(ctx context.Context, uid, name string, cmd []string, stdout, stderr io.Writer) (int, error) {
	c, err := d.find(ctx, uid, name)
	if err != nil {
		return 0, err
	}
	ex, err := d.cli.ExecCreate(ctx, c.ID, client.ExecCreateOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	att, err := d.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("runtime: exec in %s: %w", name, err)
	}
	defer att.Close()
	stop := context.AfterFunc(ctx, att.Close)
	defer stop()
	if _, err := stdcopy.StdCopy(cmp.Or(stdout, io.Discard), cmp.Or(stderr, io.Discard), att.Reader); err != nil {
		// Ended by ctx or by a writer that wants no more (an output
		// limit): the process would live on, blocked on a full pipe.
		d.stopExec(ex.ID, c.ID)
		return 0, fmt.Errorf("runtime: exec in %s: %w", name, cmp.Or(ctx.Err(), err))
	}
	// The stream ends when the process does; the exit code is recorded
	// just before, but poll briefly in case an engine records it after.
	for {
		res, err := d.cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
		if err != nil {
			return 0, fmt.Errorf("runtime: exec in %s: %w", name, err)
		}
		if !res.Running {
			return res.ExitCode, nil
		}
		select {
		case <-ctx.Done():
			d.stopExec(ex.ID, c.ID)
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stopExec kills what an exec still runs: its process and every
// descendant. The engine has no call to stop an exec, and closing the
// attach leaves the process running (blocked once its output pipe is
// full), so it is killed by the host PID the engine reports, after
// checking in /proc that the PID is in the container's cgroup (a PID
// from an engine in another PID namespace is not ours to kill). Where
// that check fails it logs, and the process lives on.
func (d *Docker) stopExec(execID, containerID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := d.cli.ExecInspect(ctx, execID, client.ExecInspectOptions{})
	if err != nil || !res.Running || res.PID <= 0 {
		return
	}
	cg, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(res.PID), "cgroup"))
	if err != nil || !strings.Contains(string(cg), containerID) {
		slog.Warn("runtime: a stopped exec's process could not be killed; it may run on in the container", "container", containerID, "pid", res.PID, "err", err)
		return
	}
	for _, pid := range descendants(res.PID) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// descendants is pid and every process below it, from one pass over
// /proc, so that killing a parent first cannot hide its children.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// startSandbox creates and starts the pod's pause container, which holds
// the network (with the host ports) and IPC namespaces.
func (d *Docker) startSandbox(ctx context.Context, pod *api.Pod, n int) (string, error) {
	image, err := d.pauseImage(ctx)
	if err != nil {
		return "", err
	}
	cfg := &container.Config{
		Image:        image,
		Hostname:     pod.Name[:min(63, len(pod.Name))],
		Labels:       d.labels(pod, sandboxName, n),
		ExposedPorts: network.PortSet{},
	}
	host := &container.HostConfig{
		NetworkMode:  container.NetworkMode(d.cfg.Network),
		IpcMode:      container.IPCModeShareable,
		PortBindings: network.PortMap{},
	}
	if err := hardenSandbox(pod, cfg, host); err != nil {
		return "", err
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			port, ok := network.PortFrom(uint16(p.ContainerPort), network.IPProtocol(strings.ToLower(cmp.Or(p.Protocol, "TCP"))))
			if !ok {
				return "", fmt.Errorf("runtime: container %s: bad port %d/%s", c.Name, p.ContainerPort, p.Protocol)
			}
			cfg.ExposedPorts[port] = struct{}{}
			host.PortBindings[port] = append(host.PortBindings[port], network.PortBinding{HostPort: strconv.Itoa(int(p.HostPort))})
		}
	}
	return d.create(ctx, pod, sandboxName, n, cfg, host)
}

// startContainer creates and starts one spec container in the sandbox.
func (d *Docker) startContainer(ctx context.Context, pod *api.Pod, c *api.Container, sandboxID string, n int) error {
	mounts, err := d.mounts(pod, c)
	if err != nil {
		return err
	}
	env := make([]string, 0, len(c.Env))
	for _, e := range c.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	// Command replaces the image's entrypoint and then its cmd too, as in
	// Kubernetes: the engine keeps the image's cmd only when no entrypoint
	// is given.
	cfg := &container.Config{
		Image:      c.Image,
		Entrypoint: c.Command,
		Cmd:        c.Args,
		Env:        env,
		Labels:     d.labels(pod, c.Name, n),
	}
	lim, req := c.Resources.Limits, c.Resources.Requests
	host := &container.HostConfig{
		NetworkMode: container.NetworkMode("container:" + sandboxID),
		IpcMode:     container.IpcMode("container:" + sandboxID),
		Mounts:      mounts,
		Resources: container.Resources{
			NanoCPUs: lim.MilliCPU * 1e6,
			Memory:   lim.Memory,
		},
	}
	if lim.Memory > 0 {
		host.MemorySwap = lim.Memory // no swap: over the limit is an OOM kill
	}
	if req.MilliCPU > 0 {
		host.CPUShares = max(2, req.MilliCPU*1024/1000)
	}
	if err := harden(pod, c, cfg, host); err != nil {
		return err
	}
	_, err = d.create(ctx, pod, c.Name, n, cfg, host)
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: container %s: %s", ErrImageNotPresent, c.Name, c.Image)
	}
	return err
}

func (d *Docker) create(ctx context.Context, pod *api.Pod, name string, n int, cfg *container.Config, host *container.HostConfig) (string, error) {
	res, err := d.cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: d.containerName(pod, name, n), Config: cfg, HostConfig: host,
	})
	if err != nil {
		return "", fmt.Errorf("runtime: creating container %s of pod %s/%s: %w", name, pod.Namespace, pod.Name, err)
	}
	if _, err := d.cli.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		return res.ID, fmt.Errorf("runtime: starting container %s of pod %s/%s: %w", name, pod.Namespace, pod.Name, err)
	}
	return res.ID, nil
}

// mounts makes the container's volumes' directories and binds them.
func (d *Docker) mounts(pod *api.Pod, c *api.Container) ([]mount.Mount, error) {
	var ms []mount.Mount
	for _, vm := range c.VolumeMounts {
		i := slices.IndexFunc(pod.Spec.Volumes, func(v api.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			return nil, fmt.Errorf("runtime: container %s mounts %q, which the pod does not have", c.Name, vm.Name)
		}
		var dir string
		switch v := pod.Spec.Volumes[i]; {
		case v.Persistent != nil:
			project := pod.Annotations[ProjectUIDAnnotation]
			if checkUID(project) != nil {
				return nil, fmt.Errorf("runtime: persistent volume %q of pod %s/%s: the pod does not name its project's UID (%s, set by the node agent)", vm.Name, pod.Namespace, pod.Name, ProjectUIDAnnotation)
			}
			dir = d.volumeDir("volumes", project, v.Persistent.ClaimName)
		case v.EmptyDir != nil:
			dir = d.volumeDir("pods", pod.UID, "volumes", v.Name)
		}
		if dir == "" {
			return nil, fmt.Errorf("runtime: volume %q of pod %s/%s is not emptyDir or persistent, or has a name that is not a path element", vm.Name, pod.Namespace, pod.Name)
		}
		// World-writable, as Kubernetes makes emptyDir, so that images
		// that run as another user can write.
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return nil, fmt.Errorf("runtime: volume %q: %w", vm.Name, err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			return nil, fmt.Errorf("runtime: volume %q: %w", vm.Name, err)
		}
		ms = append(ms, mount.Mount{Type: mount.TypeBind, Source: dir, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	return ms, nil
}

// volumeDir joins path elements under DataDir, or returns "" if one is
// not a single element (empty, ".", "..", or with a separator).
func (d *Docker) volumeDir(elems ...string) string {
	for _, e := range elems {
		if e == "" || e == "." || e == ".." || strings.ContainsRune(e, '/') {
			return ""
		}
	}
	return filepath.Join(append([]string{d.cfg.DataDir}, elems...)...)
}

func (d *Docker) labels(pod *api.Pod, name string, n int) map[string]string {
	return map[string]string{
		labelRuntime:   d.cfg.Prefix,
		labelUID:       pod.UID,
		labelNamespace: pod.Namespace,
		labelPod:       pod.Name,
		labelContainer: name,
		labelAttempt:   strconv.Itoa(n),
	}
}

// containerName is slipway_PREFIX_NAMESPACE_POD_UID8_CONTAINER_ATTEMPT:
// readable in `docker ps`, unique per attempt. Labels, not names, are
// what the runtime reads back.
func (d *Docker) containerName(pod *api.Pod, name string, n int) string {
	uid := pod.UID[:min(8, len(pod.UID))]
	return fmt.Sprintf("slipway_%s_%s_%s_%s_%s_%d", d.cfg.Prefix, pod.Namespace, pod.Name, uid, name, n)
}

// list inspects this runtime's containers that carry every label given
// (as key=value).
func (d *Docker) list(ctx context.Context, labels ...string) ([]container.InspectResponse, error) {
	f := client.Filters{}.Add("label", append(labels, labelRuntime+"="+d.cfg.Prefix)...)
	res, err := d.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("runtime: listing containers: %w", err)
	}
	var cs []container.InspectResponse
	for _, s := range res.Items {
		c, err := d.cli.ContainerInspect(ctx, s.ID, client.ContainerInspectOptions{})
		if cerrdefs.IsNotFound(err) {
			continue // removed since the list
		}
		if err != nil {
			return nil, fmt.Errorf("runtime: inspecting container %s: %w", s.ID, err)
		}
		cs = append(cs, c.Container)
	}
	return cs, nil
}

// find returns the latest attempt of a pod's container.
func (d *Docker) find(ctx context.Context, uid, name string) (*container.InspectResponse, error) {
	if err := checkUID(uid); err != nil {
		return nil, err
	}
	cs, err := d.list(ctx, labelUID+"="+uid, labelContainer+"="+name)
	if err != nil {
		return nil, err
	}
	c := view(cs).latest[name]
	if c == nil {
		return nil, fmt.Errorf("runtime: pod %s has no container %q: %w", uid, name, ErrNotFound)
	}
	return c, nil
}

func (d *Docker) stop(ctx context.Context, id string) error {
	secs := int(d.cfg.StopTimeout / time.Second)
	_, err := d.cli.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("runtime: stopping container %s: %w", id, err)
	}
	return nil
}

func (d *Docker) remove(ctx context.Context, cs []container.InspectResponse) error {
	for _, c := range cs {
		_, err := d.cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			return fmt.Errorf("runtime: removing container %s: %w", c.Name, err)
		}
	}
	return nil
}

// podView is one pod's containers: the latest sandbox and the latest
// attempt of each spec container.
type podView struct {
	sandbox *container.InspectResponse
	latest  map[string]*container.InspectResponse
}

func view(cs []container.InspectResponse) podView {
	v := podView{latest: map[string]*container.InspectResponse{}}
	for i := range cs {
		c := &cs[i]
		name := c.Config.Labels[labelContainer]
		if name == sandboxName {
			if v.sandbox == nil || attempt(c) > attempt(v.sandbox) {
				v.sandbox = c
			}
		} else if old := v.latest[name]; old == nil || attempt(c) > attempt(old) {
			v.latest[name] = c
		}
	}
	return v
}

func split(cs []container.InspectResponse) (apps, sandboxes []container.InspectResponse) {
	for _, c := range cs {
		if c.Config.Labels[labelContainer] == sandboxName {
			sandboxes = append(sandboxes, c)
		} else {
			apps = append(apps, c)
		}
	}
	return apps, sandboxes
}

func attempt(c *container.InspectResponse) int {
	n, _ := strconv.Atoi(c.Config.Labels[labelAttempt])
	return n
}

func containerStatus(c *container.InspectResponse) ContainerStatus {
	s := ContainerStatus{
		Name:         c.Config.Labels[labelContainer],
		ID:           c.ID,
		Image:        c.Config.Image,
		ImageID:      c.Image,
		RestartCount: attempt(c),
	}
	st := c.State
	s.Message = st.Error
	s.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	switch st.Status {
	case container.StateCreated:
		s.State = StateWaiting
	case container.StateRunning, container.StatePaused, container.StateRestarting:
		s.State = StateRunning
	default:
		s.State, s.ExitCode = StateTerminated, st.ExitCode
		s.FinishedAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
		switch {
		case st.OOMKilled:
			s.Reason = "OOMKilled"
		case st.ExitCode == 0:
			s.Reason = "Completed"
		default:
			s.Reason = "Error"
		}
	}
	return s
}

func checkPod(pod *api.Pod) error {
	if pod.Namespace == "" || pod.Name == "" {
		return fmt.Errorf("runtime: pod %q has no namespace or name", pod.Name)
	}
	return checkUID(pod.UID)
}

// checkUID refuses UIDs that are not one path element: a UID names the
// pod's directory.
func checkUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || strings.ContainsRune(uid, '/') {
		return fmt.Errorf("runtime: bad pod UID %q", uid)
	}
	return nil
}

// ProjectUIDAnnotation, on the pod handed to SyncPod and RestartContainer,
// is the UID of the pod's project. Persistent volumes are kept per project
// UID, not per name (DataDir/volumes/PROJECT-UID/CLAIM), so a project made
// again under a deleted one's name never finds the old one's data, even
// on a node that missed the deletion. The node agent sets it on its own
// copy of the pod, from the project as the store has it; a value in the
// stored pod is never used. A pod with a persistent volume and no project
// UID is not started.
const ProjectUIDAnnotation = "slipway.dev/project-uid"

// VolumeProjects lists the keys of the projects that have persistent
// volumes on this node (DataDir/volumes/KEY): project UIDs, and the names
// of projects whose volumes were made before volumes were keyed by UID.
func (d *Docker) VolumeProjects() ([]string, error) {
	es, err := os.ReadDir(filepath.Join(d.cfg.DataDir, "volumes"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("runtime: listing persistent volumes: %w", err)
	}
	var out []string
	for _, e := range es {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// RemoveProjectVolumes removes every persistent volume kept under key (a
// project's UID, or an old name key; see VolumeProjects), for a project
// that was deleted (M2). Removing what is already gone succeeds.
func (d *Docker) RemoveProjectVolumes(key string) error {
	dir := d.volumeDir("volumes", key)
	if dir == "" {
		return fmt.Errorf("runtime: %q is not a project UID or name", key)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("runtime: removing the persistent volumes under %s: %w", key, err)
	}
	return nil
}
