// Package replication keeps each ReplicationController's count of pods:
// it creates pods from the template when there are too few and removes
// the surplus, gracefully, when there are too many. A pod lost with its
// node is deleted by the node lifecycle controller and replaced here.
package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/controller"
	"slipway.dev/slipway/store"
)

// Manager reconciles ReplicationControllers.
type Manager struct {
	Store *store.Store
	// Grace is how long a surplus pod stays, marked terminating and out of
	// its services' endpoints, before it is deleted. Default 2s.
	Grace time.Duration

	pods *store.Informer
	rcs  *store.Informer
}

// byController indexes pods by "ns/RC" of the ReplicationController that
// made them, so a reconcile reads its own pods, not the project's.
const byController = "replication.controller"

// Run reconciles until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	if m.Grace == 0 {
		m.Grace = 2 * time.Second
	}
	m.pods = store.NewInformer(m.Store, api.Pods)
	m.rcs = store.NewInformer(m.Store, api.ReplicationControllers)
	m.pods.AddIndex(byController, func(o api.Object) []string {
		if rc := o.GetObjectMeta().Labels[api.ControllerLabel]; rc != "" {
			return []string{controller.Key(o.GetObjectMeta().Namespace, rc)}
		}
		return nil
	})
	c := controller.New("replication: controller", controller.ReconcileFunc(m.Reconcile))
	c.Watch(m.rcs, nil)
	c.Watch(m.pods, func(ev store.Event) []string {
		p := ev.Object.(*api.Pod)
		if rc := p.Labels[api.ControllerLabel]; rc != "" {
			return []string{controller.Key(p.Namespace, rc)}
		}
		return nil
	})
	c.Run(ctx)
}

// Reconcile brings one ReplicationController ("ns/name") to its count.
func (m *Manager) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	ns, name := controller.SplitKey(key)
	o, ok := m.rcs.Get(ns, name)
	if !ok {
		return controller.Result{}, nil // gone: its pods go with the project or by hand
	}
	return m.reconcile(ctx, o.(*api.ReplicationController))
}

// owned returns the live pods rc made, counts ready ones, deletes those
// that finished or whose grace as surplus has passed, and says when the
// next surplus pod's grace ends.
func (m *Manager) owned(ctx context.Context, rc *api.ReplicationController) (active []*api.Pod, ready int32, next time.Duration, err error) {
	pods, _ := m.pods.ByIndex(byController, controller.Key(rc.Namespace, rc.Name))
	for _, o := range pods {
		p := o.(*api.Pod)
		if p.Status.Phase == api.PodFailed || p.Status.Phase == api.PodSucceeded {
			if err := m.remove(ctx, p); err != nil { // finished: replaced below
				return nil, 0, 0, err
			}
			continue
		}
		if at := p.Annotations[api.TerminatingAnnotation]; at != "" {
			// A surplus pod, out of its services' endpoints: deleted
			// once its grace has passed.
			t, perr := time.Parse(time.RFC3339Nano, at)
			if left := time.Until(t.Add(m.Grace)); perr == nil && left > 0 {
				if next == 0 || left < next {
					next = left
				}
				continue
			}
			if err := m.remove(ctx, p); err != nil {
				return nil, 0, 0, err
			}
			continue
		}
		active = append(active, p)
		if api.PodReady(p) {
			ready++
		}
	}
	return active, ready, next, nil
}

func (m *Manager) reconcile(ctx context.Context, rc *api.ReplicationController) (controller.Result, error) {
	if rc.DeletionTimestamp != nil {
		return controller.Result{}, nil
	}
	active, ready, next, err := m.owned(ctx, rc)
	if err != nil {
		return controller.Result{}, err
	}
	res := controller.Result{RequeueAfter: next}
	want := int(rc.Spec.Replicas)
	switch {
	case len(active) < want:
		// Pods run restricted unless admission marked the template
		// privileged: checked again here, with the project's UIDs.
		o, err := m.Store.Get(ctx, api.Projects, "", rc.Namespace)
		if err != nil {
			return res, fmt.Errorf("replication: reading the project of %s/%s: %w", rc.Namespace, rc.Name, err)
		}
		for range want - len(active) {
			p, err := m.newPod(rc)
			if err != nil {
				return res, err
			}
			err = api.RestrictPod(p, o.(*api.Project))
			if err == nil {
				err = m.Store.Create(ctx, api.Pods, p)
			}
			if err != nil {
				err = fmt.Errorf("replication: creating a pod for %s/%s: %w", rc.Namespace, rc.Name, err)
				// Said on the controller, and retried with backoff (a
				// quota refusal lasts until something frees room).
				if cerr := m.failedCreate(ctx, rc, err); cerr != nil {
					slog.Warn("replication: recording a failed create", "rc", rc.Namespace+"/"+rc.Name, "err", cerr)
				}
				return res, err
			}
			// Wait until the cache shows it, so the next pass counts it.
			if rv, err := store.ParseResourceVersion(p.ResourceVersion); err == nil {
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_ = m.pods.WaitFor(wctx, rv)
				cancel()
			}
		}
	case len(active) > want:
		// Remove the least useful first: unscheduled, then not ready, then
		// the newest.
		sort.SliceStable(active, func(i, j int) bool {
			a, b := active[i], active[j]
			if (a.Spec.NodeName == "") != (b.Spec.NodeName == "") {
				return a.Spec.NodeName == ""
			}
			if api.PodReady(a) != api.PodReady(b) {
				return !api.PodReady(a)
			}
			return a.CreationTimestamp.After(*b.CreationTimestamp)
		})
		for _, p := range active[:len(active)-want] {
			if err := m.markTerminating(ctx, p); err != nil {
				return res, err
			}
		}
		if res.RequeueAfter == 0 || m.Grace < res.RequeueAfter {
			res.RequeueAfter = m.Grace
		}
		active = active[len(active)-want:]
	}
	if rc.Status.Replicas == int32(min(len(active), want)) && rc.Status.ReadyReplicas == ready && len(rc.Status.Conditions) == 0 {
		return res, nil
	}
	_, err = m.Store.GuaranteedUpdate(ctx, api.ReplicationControllers, rc.Namespace, rc.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		s := &o.(*api.ReplicationController).Status
		s.Replicas, s.ReadyReplicas = int32(min(len(active), want)), ready
		// Every pod it wants exists: nothing failed any more.
		s.Conditions = nil
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return res, nil
	}
	return res, err
}

func (m *Manager) newPod(rc *api.ReplicationController) (*api.Pod, error) {
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		return nil, err
	}
	t := rc.Spec.Template
	p := &api.Pod{ObjectMeta: api.ObjectMeta{
		Name:        rc.Name + "-" + hex.EncodeToString(suffix),
		Namespace:   rc.Namespace,
		Labels:      map[string]string{},
		Annotations: map[string]string{},
	}, Spec: t.Spec}
	for k, v := range t.Labels {
		p.Labels[k] = v
	}
	for k, v := range t.Annotations {
		p.Annotations[k] = v
	}
	p.Labels[api.ControllerLabel] = rc.Name
	p.Spec.NodeName = ""
	return p, nil
}

func (m *Manager) markTerminating(ctx context.Context, p *api.Pod) error {
	_, err := m.Store.GuaranteedUpdate(ctx, api.Pods, p.Namespace, p.Name, store.UpdateOptions{}, func(o api.Object) error {
		pod := o.(*api.Pod)
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[api.TerminatingAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// remove deletes a pod (finished, or surplus past its grace).
func (m *Manager) remove(ctx context.Context, p *api.Pod) error {
	if _, err := m.Store.Delete(ctx, api.Pods, p.Namespace, p.Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("replication: deleting pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
