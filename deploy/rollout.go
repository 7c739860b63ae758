package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// The deployer: one goroutine per revision being rolled out, moving
// replicas between revisions in steps and reading readiness from the
// replication controllers' status.

// ErrTimeout is a rollout that did not finish within its timeout.
var ErrTimeout = errors.New("deploy: rollout timed out")

// supersededError ends the rollout of a revision once a newer one exists:
// the newer revision's rollout takes over, and scales this one down with
// the others. Without it, both rollouts ran, each scaling its own
// revision up and the other down, until the older one timed out.
type supersededError struct{ by string }

func (e supersededError) Error() string { return "superseded by " + e.by }

func (c *Controller) startRollout(ctx context.Context, ns, dc, revision string) {
	key := ns + "/" + revision
	c.mu.Lock()
	if c.deployers[key] {
		c.mu.Unlock()
		return
	}
	c.deployers[key] = true
	c.mu.Unlock()
	go func() {
		defer func() {
			c.mu.Lock()
			delete(c.deployers, key)
			c.mu.Unlock()
			c.queue.Add(ns + "/" + dc)
		}()
		if err := c.rollout(ctx, ns, dc, revision); err != nil && ctx.Err() == nil {
			slog.Warn("deploy: rollout failed", "revision", key, "err", err)
		}
	}()
}

// rollout runs the strategy for revision, and on failure rolls back to
// the last complete revision.
func (c *Controller) rollout(ctx context.Context, ns, dcName, revision string) error {
	o, ok := c.dcs.Get(ns, dcName)
	if !ok {
		return nil
	}
	dc := o.(*api.DeploymentConfig)
	if by := c.newer(dc, revision); by != "" {
		return c.supersede(ctx, ns, revision, by)
	}
	if err := c.setPhase(ctx, ns, revision, api.DeploymentRunning, ""); errors.Is(err, errFinished) {
		return nil
	} else if err != nil {
		return err
	}
	timeout := 600 * time.Second
	st := dc.Spec.Strategy
	switch {
	case st.Type == "Recreate" && st.RecreateParams != nil && st.RecreateParams.TimeoutSeconds != nil:
		timeout = time.Duration(*st.RecreateParams.TimeoutSeconds) * time.Second
	case st.Type != "Recreate" && st.RollingParams != nil && st.RollingParams.TimeoutSeconds != nil:
		timeout = time.Duration(*st.RollingParams.TimeoutSeconds) * time.Second
	}
	rctx, cancel := context.WithTimeoutCause(ctx, timeout, ErrTimeout)
	defer cancel()
	var err error
	if st.Type == "Recreate" {
		err = c.recreate(rctx, dc, revision)
	} else {
		err = c.rolling(rctx, dc, revision)
	}
	if ctx.Err() != nil {
		return ctx.Err() // shutting down: the next controller resumes it
	}
	if err == nil {
		_ = c.setCondition(ctx, dc, "Progressing", api.ConditionTrue, "NewReplicationControllerAvailable", "revision "+revision+" is available")
		return c.setPhase(ctx, ns, revision, api.DeploymentComplete, "")
	}
	if s := (supersededError{}); errors.As(err, &s) {
		return c.supersede(ctx, ns, revision, s.by)
	}
	if errors.Is(context.Cause(rctx), ErrTimeout) {
		err = fmt.Errorf("%w after %s: %v", ErrTimeout, timeout, err)
	}
	reason := err.Error()
	back := c.rollBack(ctx, dc, revision)
	if back != "" {
		reason += "; rolled back to " + back
	}
	_ = c.setCondition(ctx, dc, "Progressing", api.ConditionFalse, "RolloutFailed", reason)
	_ = c.setPhase(ctx, ns, revision, api.DeploymentFailed, reason)
	return err
}

// rollBack scales the failed revision to zero and the last complete one
// back to the config's count. It returns the revision restored, or "".
func (c *Controller) rollBack(ctx context.Context, dc *api.DeploymentConfig, failed string) string {
	revs := Revisions(c.rcs.List(dc.Namespace), dc.Name)
	var good *api.ReplicationController
	for _, rc := range revs {
		if rc.Name != failed && rc.Annotations[api.DeploymentPhaseAnnotation] == api.DeploymentComplete {
			good = rc
		}
	}
	if good != nil {
		if err := c.scale(ctx, dc.Namespace, good.Name, dc.Spec.Replicas); err != nil {
			slog.Warn("deploy: rolling back", "revision", good.Name, "err", err)
		}
	}
	if err := c.scale(ctx, dc.Namespace, failed, 0); err != nil {
		slog.Warn("deploy: scaling down a failed revision", "revision", failed, "err", err)
	}
	if good == nil {
		return ""
	}
	return good.Name
}

// supersede ends revision's rollout as Failed, superseded by a newer
// revision, with no rollback: the newer one's rollout scales it down.
func (c *Controller) supersede(ctx context.Context, ns, revision, by string) error {
	if err := c.setPhase(ctx, ns, revision, api.DeploymentFailed, "superseded by "+by); err != nil && !errors.Is(err, errFinished) {
		return err
	}
	return nil
}

// newer is the newest revision of dc after revision, or "".
func (c *Controller) newer(dc *api.DeploymentConfig, revision string) string {
	revs := Revisions(c.rcs.List(dc.Namespace), dc.Name)
	if len(revs) == 0 {
		return ""
	}
	var n int64 = -1
	for _, rc := range revs {
		if rc.Name == revision {
			n = Version(rc)
		}
	}
	if last := revs[len(revs)-1]; n >= 0 && Version(last) > n {
		return last.Name
	}
	return ""
}

// counts reads the revisions: the new one, and the others with replicas.
// A newer revision than the new one ends the rollout (supersededError).
func (c *Controller) counts(dc *api.DeploymentConfig, revision string) (cur *api.ReplicationController, old []*api.ReplicationController, err error) {
	for _, rc := range Revisions(c.rcs.List(dc.Namespace), dc.Name) {
		if rc.Name == revision {
			cur = rc
		} else if cur != nil && Version(rc) > Version(cur) {
			return nil, nil, supersededError{by: rc.Name}
		} else if rc.Spec.Replicas > 0 || rc.Status.Replicas > 0 {
			old = append(old, rc)
		}
	}
	return cur, old, nil
}

func (c *Controller) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(c.Poll):
		return nil
	}
}

// rolling scales the new revision up and the old ones down in steps: at
// most replicas+maxSurge pods, and at least replicas-maxUnavailable ready.
func (c *Controller) rolling(ctx context.Context, dc *api.DeploymentConfig, revision string) error {
	p := dc.Spec.Strategy.RollingParams
	if p == nil {
		p = &api.RollingDeploymentParams{}
	}
	if err := c.hook(ctx, dc, revision, "pre", p.Pre); err != nil {
		return err
	}
	want := dc.Spec.Replicas
	surge := int32(math.Ceil(float64(want) * 0.25))
	unavailable := int32(math.Floor(float64(want) * 0.25))
	if p.MaxSurge != nil {
		surge = *p.MaxSurge
	}
	if p.MaxUnavailable != nil {
		unavailable = *p.MaxUnavailable
	}
	if surge == 0 && unavailable == 0 {
		surge = 1
	}
	for {
		cur, old, err := c.counts(dc, revision)
		if err != nil {
			return err
		}
		if cur == nil {
			return errors.New("the revision was deleted")
		}
		var oldSpec, oldReady int32
		for _, rc := range old {
			oldSpec += rc.Spec.Replicas
			oldReady += rc.Status.ReadyReplicas
		}
		if cur.Spec.Replicas == want && cur.Status.ReadyReplicas >= want && oldSpec == 0 {
			break
		}
		// Up: never more than want+surge pods in all.
		if up := min(want, want+surge-oldSpec); up > cur.Spec.Replicas {
			if err := c.scale(ctx, dc.Namespace, revision, up); err != nil {
				return err
			}
		}
		// Down: keep want-unavailable ready; old pods that are not ready
		// can always go.
		removable := max(0, cur.Status.ReadyReplicas+oldReady-(want-unavailable)) + (oldSpec - oldReady)
		for _, rc := range old {
			if removable <= 0 {
				break
			}
			n := min(removable, rc.Spec.Replicas)
			if n > 0 {
				if err := c.scale(ctx, dc.Namespace, rc.Name, rc.Spec.Replicas-n); err != nil {
					return err
				}
				removable -= n
			}
		}
		if err := c.wait(ctx); err != nil {
			return fmt.Errorf("%d of %d new pods ready: %w", cur.Status.ReadyReplicas, want, err)
		}
	}
	return c.hook(ctx, dc, revision, "post", p.Post)
}

// recreate scales the old revisions to zero, then the new one up.
func (c *Controller) recreate(ctx context.Context, dc *api.DeploymentConfig, revision string) error {
	p := dc.Spec.Strategy.RecreateParams
	if p == nil {
		p = &api.RecreateDeploymentParams{}
	}
	if err := c.hook(ctx, dc, revision, "pre", p.Pre); err != nil {
		return err
	}
	for {
		_, old, err := c.counts(dc, revision)
		if err != nil {
			return err
		}
		if len(old) == 0 {
			break
		}
		for _, rc := range old {
			if rc.Spec.Replicas > 0 {
				if err := c.scale(ctx, dc.Namespace, rc.Name, 0); err != nil {
					return err
				}
			}
		}
		if err := c.wait(ctx); err != nil {
			return fmt.Errorf("old pods still running: %w", err)
		}
	}
	if err := c.hook(ctx, dc, revision, "mid", p.Mid); err != nil {
		return err
	}
	if err := c.scale(ctx, dc.Namespace, revision, dc.Spec.Replicas); err != nil {
		return err
	}
	for {
		cur, _, err := c.counts(dc, revision)
		if err != nil {
			return err
		}
		if cur == nil {
			return errors.New("the revision was deleted")
		}
		if cur.Status.ReadyReplicas >= dc.Spec.Replicas {
			break
		}
		if err := c.wait(ctx); err != nil {
			return fmt.Errorf("%d of %d new pods ready: %w", cur.Status.ReadyReplicas, dc.Spec.Replicas, err)
		}
	}
	return c.hook(ctx, dc, revision, "post", p.Post)
}

// hook runs a lifecycle hook as a pod made from the revision's container,
// and waits for it. A failed hook fails the rollout unless its policy is
// Ignore.
func (c *Controller) hook(ctx context.Context, dc *api.DeploymentConfig, revision, stage string, h *api.LifecycleHook) error {
	if h == nil || h.ExecNewPod == nil {
		return nil
	}
	o, err := c.Store.Get(ctx, api.ReplicationControllers, dc.Namespace, revision)
	if err != nil {
		return err
	}
	tpl := o.(*api.ReplicationController).Spec.Template
	var ct *api.Container
	for i := range tpl.Spec.Containers {
		if tpl.Spec.Containers[i].Name == h.ExecNewPod.ContainerName {
			ct = &tpl.Spec.Containers[i]
		}
	}
	if ct == nil {
		return fmt.Errorf("the %s hook names container %q, which the template does not have", stage, h.ExecNewPod.ContainerName)
	}
	hc := *ct
	hc.Command, hc.Args = h.ExecNewPod.Command, nil
	hc.Env = append(append([]api.EnvVar(nil), ct.Env...), h.ExecNewPod.Env...)
	hc.LivenessProbe, hc.ReadinessProbe, hc.Ports = nil, nil, nil
	name := revision + "-hook-" + stage
	pod := &api.Pod{
		ObjectMeta: api.ObjectMeta{Name: name, Namespace: dc.Namespace, Labels: map[string]string{api.DeploymentConfigLabel + "-hook": dc.Name}},
		Spec: api.PodSpec{
			Containers: []api.Container{hc}, Volumes: tpl.Spec.Volumes, RestartPolicy: "Never", NodeSelector: tpl.Spec.NodeSelector,
			ServiceAccountName: tpl.Spec.ServiceAccountName, SecurityContext: tpl.Spec.SecurityContext,
			HostNetwork: tpl.Spec.HostNetwork, HostPID: tpl.Spec.HostPID, HostIPC: tpl.Spec.HostIPC,
		},
	}
	if v, ok := tpl.Annotations[api.PodSecurityAnnotation]; ok {
		pod.Annotations = map[string]string{api.PodSecurityAnnotation: v}
	}
	proj, err := c.Store.Get(ctx, api.Projects, "", dc.Namespace)
	if err != nil {
		return fmt.Errorf("the %s hook pod: reading the project: %w", stage, err)
	}
	if err := api.RestrictPod(pod, proj.(*api.Project)); err != nil {
		return fmt.Errorf("the %s hook pod: %w", stage, err)
	}
	if err := c.Store.Create(ctx, api.Pods, pod); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	for {
		o, err := c.Store.Get(ctx, api.Pods, dc.Namespace, name)
		if err != nil {
			return fmt.Errorf("the %s hook pod: %w", stage, err)
		}
		switch p := o.(*api.Pod); p.Status.Phase {
		case api.PodSucceeded:
			return nil
		case api.PodFailed:
			if h.FailurePolicy == "Ignore" {
				slog.Warn("deploy: hook failed; ignored by its policy", "pod", name)
				return nil
			}
			return fmt.Errorf("the %s hook (pod %s) failed: %s", stage, name, p.Status.Message)
		}
		if err := c.wait(ctx); err != nil {
			return fmt.Errorf("the %s hook (pod %s) did not finish: %w", stage, name, err)
		}
	}
}
