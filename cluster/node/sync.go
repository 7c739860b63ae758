package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/store"
)

// Reasons the agent writes into pod and container statuses.
const (
	ReasonErrImagePull      = "ErrImagePull"
	ReasonCrashLoopBackOff  = "CrashLoopBackOff"
	ReasonPolicyDenied      = "PolicyDenied"
	ReasonContainerCreating = "ContainerCreating"
	// ReasonContainerCannotRun is a container the engine created but
	// could not start, such as one whose command does not exist.
	ReasonContainerCannotRun = "ContainerCannotRun"
	// ReasonCreateContainerError is a pod whose containers the runtime
	// failed to create or start; the message has the runtime's error.
	ReasonCreateContainerError = "CreateContainerError"
)

// PodReady is the pod condition the agent writes.
const PodReady = "Ready"

// podState is what the agent remembers of one pod between syncs. Only
// the sync of its key touches it, except the fields probes set, which are
// guarded by Agent.mu.
type podState struct {
	uid string
	// needGen is the first relist that shows the pod's last change; syncs
	// wait for it. Guarded by Agent.mu.
	needGen    uint64
	admit      backOff
	denied     string // Admit's last error
	syncErr    string // the runtime's last error creating or restarting
	retry      backOff
	finished   bool // a terminal phase was written
	stopProbes context.CancelFunc
	containers map[string]*containerState
}

type containerState struct {
	restart backOff
	pull    backOff
	pullErr string
	// Set by probes, guarded by Agent.mu: the container (by ID) whose
	// readiness probe passed last, and the one whose liveness probe
	// failed.
	readyID     string
	unhealthyID string
}

func (ps *podState) container(name string) *containerState {
	cs := ps.containers[name]
	if cs == nil {
		cs = &containerState{}
		ps.containers[name] = cs
	}
	return cs
}

// backOff spaces tries of one thing: the first is at once, and each one
// after waits twice as long as the one before, from Config.BackOff up to
// MaxBackOff. A try after twice MaxBackOff of quiet starts over.
type backOff struct {
	last  time.Time
	delay time.Duration
}

func (b *backOff) blocked(now time.Time) bool { return now.Before(b.last.Add(b.delay)) }

func (b *backOff) try(now time.Time, base, limit time.Duration) {
	if b.last.IsZero() || now.Sub(b.last) > 2*limit {
		b.delay = base
	} else {
		b.delay = min(2*b.delay, limit)
	}
	b.last = now
}

// podState returns the state of the pod at key, new if the pod (by UID) is
// new.
func (a *Agent) podState(key, uid string) *podState {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.state[key]
	if ps == nil || ps.uid != uid {
		if ps != nil && ps.stopProbes != nil {
			ps.stopProbes()
		}
		ps = &podState{uid: uid, containers: map[string]*containerState{}}
		a.state[key] = ps
	}
	return ps
}

func (a *Agent) forget(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ps := a.state[key]; ps != nil && ps.stopProbes != nil {
		ps.stopProbes()
	}
	delete(a.state, key)
}

// sync brings the pod named by key to what its object asks: containers of
// a pod that is gone, bound elsewhere or replaced (a new UID) are
// removed; a bound pod is run.
func (a *Agent) sync(ctx context.Context, key string) error {
	snap := a.snapshot()
	pod := a.boundPod(key)
	var errs []error
	for _, rp := range snap.pods[key] {
		if pod == nil || rp.UID != pod.UID {
			errs = append(errs, a.remove(ctx, rp.UID))
		}
	}
	if pod == nil {
		a.forget(key)
		return errors.Join(errs...)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	ps := a.podState(key, pod.UID)
	a.mu.Lock()
	stale := snap.gen < ps.needGen
	a.mu.Unlock()
	if stale {
		return nil // the relist that shows the last change queues the pod
	}
	rp := snap.find(key, pod.UID)
	if ps.finished || pod.Status.Phase == api.PodSucceeded || pod.Status.Phase == api.PodFailed {
		// Finished pods are never synced (their sandbox would come back);
		// their stopped containers stay, with their logs, until the pod
		// is deleted.
		a.mu.Lock()
		if ps.stopProbes != nil {
			ps.stopProbes()
			ps.stopProbes = nil
		}
		a.mu.Unlock()
		if rp == nil || !rp.SandboxRunning {
			return nil
		}
		defer a.changed(ps)
		return a.rt.StopPod(ctx, pod.UID)
	}
	return a.syncPod(ctx, pod, rp, ps)
}

// remove stops and removes a runtime pod that no bound pod wants.
func (a *Agent) remove(ctx context.Context, uid string) error {
	defer a.relistSoon()
	if err := a.rt.StopPod(ctx, uid); err != nil {
		return err
	}
	return a.rt.RemovePod(ctx, uid)
}

// syncPod runs a bound pod: admits it, pulls images, creates missing
// containers, restarts exited and unhealthy ones by policy with back-off,
// and writes its status when it differs from the stored one. After it
// changes containers it returns, and the sync after the next relist
// writes the status.
func (a *Agent) syncPod(ctx context.Context, pod *api.Pod, rp *runtime.PodStatus, ps *podState) error {
	now := time.Now()
	if rp == nil && !a.admit(ctx, pod, ps, now) {
		return a.writeStatus(ctx, pod, a.status(pod, rp, ps))
	}
	// A dead sandbox took the pod's containers with it: SyncPod replaces
	// them all, except under Never, where the pod is over.
	replace := rp != nil && !rp.SandboxRunning && pod.Spec.RestartPolicy != "Never"
	create, stop := false, false
	var restarts []string
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := ps.container(c.Name)
		var rc *runtime.ContainerStatus
		if rp != nil && !replace {
			rc = rp.Container(c.Name)
		}
		switch {
		case rc == nil:
			// SyncPod creates every missing container; those whose image
			// is not here fail alone, and are shown as ErrImagePull.
			create = a.pull(ctx, pod, a.image(c.Image), cs, now) || create
		case a.mustRestart(pod, rc, cs) && !cs.restart.blocked(now):
			if pod.Spec.RestartPolicy == "Never" {
				stop = true // an unhealthy container under Never
			} else {
				restarts = append(restarts, c.Name)
			}
		}
	}
	switch act := create || stop || len(restarts) > 0; {
	case !act:
		ps.syncErr, ps.retry = "", backOff{} // the containers are as wanted
	case ps.syncErr == "" || !ps.retry.blocked(now):
		run, err := a.runPod(ctx, pod)
		if err == nil && create {
			a.warnRootImages(ctx, run)
			err = ignoreNotPresent(a.rt.SyncPod(ctx, run))
		}
		for _, name := range restarts {
			if run == nil {
				break
			}
			ps.container(name).restart.try(now, a.cfg.BackOff, a.cfg.MaxBackOff)
			err = errors.Join(err, a.rt.RestartContainer(ctx, run, name))
		}
		if stop {
			err = errors.Join(err, a.rt.StopPod(ctx, pod.UID))
		}
		a.changed(ps)
		if err == nil {
			ps.syncErr, ps.retry = "", backOff{}
			return nil
		}
		ps.retry.try(now, a.cfg.BackOff, a.cfg.MaxBackOff)
		ps.syncErr = err.Error()
		return errors.Join(err, a.writeStatus(ctx, pod, a.status(pod, rp, ps)))
	}
	if rp != nil {
		a.startProbes(pod, ps)
	}
	st := a.status(pod, rp, ps)
	if err := a.writeStatus(ctx, pod, st); err != nil {
		return err
	}
	if st.Phase == api.PodSucceeded || st.Phase == api.PodFailed {
		ps.finished = true
		a.queue.Add(pod.Namespace + "/" + pod.Name) // to stop the sandbox
	}
	return nil
}

// admit asks Config.Admit, with back-off after a denial, and reports
// whether the pod may start.
func (a *Agent) admit(ctx context.Context, pod *api.Pod, ps *podState, now time.Time) bool {
	if a.cfg.Admit == nil {
		return true
	}
	if ps.denied != "" && ps.admit.blocked(now) {
		return false
	}
	ps.admit.try(now, a.cfg.BackOff, a.cfg.MaxBackOff)
	if err := a.cfg.Admit(ctx, pod); err != nil {
		ps.denied = err.Error()
		return false
	}
	ps.denied = ""
	return true
}

// pull makes the image present, with back-off after a failure, and
// reports whether it is.
func (a *Agent) pull(ctx context.Context, pod *api.Pod, image string, cs *containerState, now time.Time) bool {
	if cs.pullErr != "" && cs.pull.blocked(now) {
		return false
	}
	err := a.ensureImage(ctx, pod, image)
	if err != nil {
		cs.pull.try(now, a.cfg.BackOff, a.cfg.MaxBackOff)
		cs.pullErr = err.Error()
		return false
	}
	cs.pull, cs.pullErr = backOff{}, ""
	return true
}

func (a *Agent) ensureImage(ctx context.Context, pod *api.Pod, image string) error {
	auth := ""
	if a.cfg.RegistryAuth != nil {
		var err error
		if auth, err = a.cfg.RegistryAuth(ctx, pod, image); err != nil {
			return fmt.Errorf("credentials to pull image %q: %w", image, err)
		}
	}
	if err := a.rt.EnsureImage(ctx, image, auth); err != nil {
		return fmt.Errorf("pulling image %q: %w", image, err)
	}
	return nil
}

// exitCode is the exit code of a container that has stopped, and
// whether it has: a container the engine could not start counts as
// exited with 128.
func exitCode(rc *runtime.ContainerStatus) (int, bool) {
	switch {
	case rc.State == runtime.StateTerminated:
		return rc.ExitCode, true
	case rc.State == runtime.StateWaiting && rc.Message != "":
		return cmp.Or(rc.ExitCode, 128), true
	}
	return 0, false
}

// restartable reports whether the restart policy restarts a container that
// exited with code.
func restartable(policy string, code int) bool {
	switch policy {
	case "Never":
		return false
	case "OnFailure":
		return code != 0
	}
	return true
}

// mustRestart reports whether the container should be replaced: it exited
// and the policy restarts it, or its liveness probe failed.
func (a *Agent) mustRestart(pod *api.Pod, rc *runtime.ContainerStatus, cs *containerState) bool {
	if code, exited := exitCode(rc); exited {
		return restartable(pod.Spec.RestartPolicy, code)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return rc.State == runtime.StateRunning && cs.unhealthyID == rc.ID
}

// runPod is the pod as the runtime gets it: with its project's services'
// environment (withEnv), restricted to its project's UIDs unless admitted
// privileged (api.RestrictPod), and, when it has persistent volumes, the UID of
// its project (runtime.ProjectUIDAnnotation), which keys them. The project
// is read from the store, not the cache, which may not have seen it
// deleted and made again: it must exist, not be terminating, and be no
// younger than the pod, so a pod left from an earlier project of the same
// name gets no volume. Whatever the stored pod says of its project's UID
// is dropped.
func (a *Agent) runPod(ctx context.Context, pod *api.Pod) (*api.Pod, error) {
	run := a.withEnv(pod)
	if run == pod {
		cp := *pod
		run = &cp
	}
	run.Annotations = maps.Clone(pod.Annotations)
	delete(run.Annotations, runtime.ProjectUIDAnnotation)
	if a.cfg.MirrorImage != nil {
		run.Spec.Containers = slices.Clone(run.Spec.Containers)
		for i := range run.Spec.Containers {
			run.Spec.Containers[i].Image = a.image(run.Spec.Containers[i].Image)
		}
	}
	o, err := a.cfg.Store.Get(ctx, api.Projects, "", pod.Namespace)
	if err != nil {
		return nil, fmt.Errorf("reading project %s: %w", pod.Namespace, err)
	}
	p := o.(*api.Project)
	// Defence in depth: the API server admitted the pod, but the node
	// runs it restricted (with its project's UIDs) unless it carries
	// the privileged marker, whatever wrote it to the store.
	if err := api.RestrictPod(run, p); err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(pod.Spec.Volumes, func(v api.Volume) bool { return v.Persistent != nil }) {
		return run, nil
	}
	switch {
	case p.DeletionTimestamp != nil:
		return nil, fmt.Errorf("persistent volumes: project %s is being deleted", pod.Namespace)
	case pod.CreationTimestamp != nil && p.CreationTimestamp != nil && pod.CreationTimestamp.Before(*p.CreationTimestamp):
		return nil, fmt.Errorf("persistent volumes: the pod is older than project %s, so it was left by an earlier project of that name", pod.Namespace)
	}
	if run.Annotations == nil {
		run.Annotations = map[string]string{}
	}
	run.Annotations[runtime.ProjectUIDAnnotation] = p.UID
	return run, nil
}

// image is the reference the agent pulls and runs for a container's
// image: through the registry's mirror when Config.MirrorImage has one.
func (a *Agent) image(image string) string {
	if a.cfg.MirrorImage != nil {
		if m, ok := a.cfg.MirrorImage(image); ok {
			return m
		}
	}
	return image
}

// withEnv returns the pod with the environment of the services in its
// project added to every container; a container's own variables win.
func (a *Agent) withEnv(pod *api.Pod) *api.Pod {
	var svcs []*api.Service
	for _, o := range a.services.List(pod.Namespace) {
		svcs = append(svcs, o.(*api.Service))
	}
	env := proxy.ServiceEnv(svcs)
	if len(env) == 0 {
		return pod
	}
	p := *pod
	p.Spec.Containers = slices.Clone(pod.Spec.Containers)
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		merged := slices.DeleteFunc(slices.Clone(env), func(e api.EnvVar) bool {
			return slices.ContainsFunc(c.Env, func(own api.EnvVar) bool { return own.Name == e.Name })
		})
		c.Env = append(merged, c.Env...)
	}
	return &p
}

// ignoreNotPresent drops the errors of containers whose image is not on
// the node: their pulls failed, and their status says so.
func ignoreNotPresent(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return errors.Join(slices.DeleteFunc(slices.Clone(j.Unwrap()), func(e error) bool {
			return errors.Is(e, runtime.ErrImageNotPresent)
		})...)
	}
	if errors.Is(err, runtime.ErrImageNotPresent) {
		return nil
	}
	return err
}

// status is the pod's status as the runtime snapshot and the agent's
// state show it. StartTime and conditions are merged in by writeStatus.
func (a *Agent) status(pod *api.Pod, rp *runtime.PodStatus, ps *podState) api.PodStatus {
	st := api.PodStatus{HostIP: a.cfg.Address}
	if rp != nil {
		st.PodIP = rp.IP
	}
	pending, exited, restarting, failed := false, 0, false, false
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		var rc *runtime.ContainerStatus
		if rp != nil {
			rc = rp.Container(c.Name)
		}
		cst := a.containerStatus(pod, c, rc, ps)
		st.ContainerStatuses = append(st.ContainerStatuses, cst)
		if rc == nil {
			pending = true
			continue
		}
		code, ok := exitCode(rc)
		switch {
		case !ok && rc.State == runtime.StateWaiting && rc.RestartCount == 0:
			pending = true
		case ok:
			exited++
			failed = failed || code != 0
			restarting = restarting || restartable(pod.Spec.RestartPolicy, code)
		}
	}
	switch {
	case pending:
		st.Phase = api.PodPending
	case exited == len(pod.Spec.Containers) && !restarting && failed:
		st.Phase = api.PodFailed
	case exited == len(pod.Spec.Containers) && !restarting:
		st.Phase = api.PodSucceeded
	default:
		st.Phase = api.PodRunning
	}

	ready := api.PodCondition{Type: PodReady, Status: api.ConditionTrue}
	var unready []string
	for _, c := range st.ContainerStatuses {
		if !c.Ready {
			unready = append(unready, c.Name)
		}
	}
	if st.Phase != api.PodRunning || len(unready) > 0 {
		ready.Status, ready.Reason = api.ConditionFalse, "ContainersNotReady"
		if len(unready) > 0 {
			ready.Message = "containers not ready: " + strings.Join(unready, ", ")
		}
	}
	if st.Phase == api.PodSucceeded || st.Phase == api.PodFailed {
		ready.Reason = "PodCompleted"
	}
	st.Conditions = []api.PodCondition{ready}

	// The pod's reason is what is wrong, for `slipway get pods`.
	switch {
	case ps.denied != "":
		st.Reason, st.Message = ReasonPolicyDenied, ps.denied
	case ps.syncErr != "":
		st.Reason, st.Message = ReasonCreateContainerError, ps.syncErr
	default:
		for _, c := range st.ContainerStatuses {
			if c.Reason == ReasonErrImagePull || c.Reason == ReasonCrashLoopBackOff || c.Reason == ReasonContainerCannotRun {
				st.Reason, st.Message = c.Reason, "container "+c.Name+": "+c.Message
				break
			}
		}
	}
	return st
}

func (a *Agent) containerStatus(pod *api.Pod, c *api.Container, rc *runtime.ContainerStatus, ps *podState) api.ContainerStatus {
	cs := ps.container(c.Name)
	s := api.ContainerStatus{Name: c.Name, Image: c.Image, State: runtime.StateWaiting, Reason: ReasonContainerCreating}
	if rc == nil {
		switch {
		case ps.denied != "":
			s.Reason, s.Message = ReasonPolicyDenied, ps.denied
		case cs.pullErr != "":
			s.Reason, s.Message = ReasonErrImagePull, cs.pullErr
		}
		return s
	}
	s.ImageID, s.ContainerID, s.RestartCount = rc.ImageID, rc.ID, int32(rc.RestartCount)
	code, exited := exitCode(rc)
	switch {
	case rc.State == runtime.StateRunning:
		s.State, s.Reason = runtime.StateRunning, ""
		a.mu.Lock()
		s.Ready = c.ReadinessProbe == nil || cs.readyID == rc.ID
		a.mu.Unlock()
	case exited && restartable(pod.Spec.RestartPolicy, code):
		s.Reason = ReasonCrashLoopBackOff
		s.Message = fmt.Sprintf("back-off %s restarting failed container; it last exited with code %d", cs.restart.delay, code)
		if rc.Message != "" {
			s.Message += ": " + rc.Message
		}
	case rc.State == runtime.StateTerminated:
		s.State, s.Reason, s.Message, s.ExitCode = runtime.StateTerminated, rc.Reason, rc.Message, int32(code)
	case exited:
		s.State, s.Reason, s.Message, s.ExitCode = runtime.StateTerminated, ReasonContainerCannotRun, rc.Message, int32(code)
	}
	return s
}

// writeStatus writes st over the pod's status, keeping its start time
// and the conditions that are not the agent's, and only when that changes
// the stored status.
func (a *Agent) writeStatus(ctx context.Context, pod *api.Pod, st api.PodStatus) error {
	now := time.Now().UTC()
	if same(pod.Status, merge(pod.Status, st, now)) {
		return nil
	}
	errMoved := errors.New("pod moved")
	_, err := a.cfg.Store.GuaranteedUpdate(ctx, api.Pods, pod.Namespace, pod.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		cur := o.(*api.Pod)
		if cur.UID != pod.UID || cur.Spec.NodeName != a.cfg.NodeName {
			return errMoved
		}
		cur.Status = merge(cur.Status, st, now)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, errMoved) {
		return nil // gone, replaced or rebound: the next sync removes it
	}
	if err != nil {
		return fmt.Errorf("node: writing the status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

func merge(old, st api.PodStatus, now time.Time) api.PodStatus {
	st.Conditions = slices.Clone(st.Conditions)
	st.StartTime = old.StartTime
	if st.StartTime == nil {
		st.StartTime = &now
	}
	if st.PodIP == "" && (st.Phase == api.PodSucceeded || st.Phase == api.PodFailed) {
		st.PodIP = old.PodIP
	}
	var conds []api.PodCondition
	for _, c := range old.Conditions {
		if c.Type != PodReady {
			conds = append(conds, c)
			continue
		}
		if c.Status == st.Conditions[0].Status {
			st.Conditions[0].LastTransitionTime = c.LastTransitionTime
		}
	}
	for i := range st.Conditions {
		if st.Conditions[i].LastTransitionTime.IsZero() {
			st.Conditions[i].LastTransitionTime = now
		}
	}
	st.Conditions = append(conds, st.Conditions...)
	return st
}

// same compares statuses as they are stored.
func same(a, b api.PodStatus) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
