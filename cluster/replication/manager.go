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
	"sync"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Manager reconciles ReplicationControllers.
type Manager struct {
	Store *store.Store
	// Grace is how long a surplus pod stays, marked terminating and out of
	// its services' endpoints, before it is deleted. Default 2s.
	Grace time.Duration

	pods    *store.Informer
	rcs     *store.Informer
	mu      sync.Mutex
	closing map[string]bool // pods being removed: "ns/name"
}

// Run reconciles until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	if m.Grace == 0 {
		m.Grace = 2 * time.Second
	}
	m.closing = map[string]bool{}
	m.pods = store.NewInformer(m.Store, api.Pods)
	m.rcs = store.NewInformer(m.Store, api.ReplicationControllers)
	q := store.NewWorkQueue()
	m.rcs.AddHandler(func(ev store.Event) {
		o := ev.Object.GetObjectMeta()
		q.Add(o.Namespace + "/" + o.Name)
	})
	m.pods.AddHandler(func(ev store.Event) {
		p := ev.Object.(*api.Pod)
		if rc := p.Labels[api.ControllerLabel]; rc != "" {
			q.Add(p.Namespace + "/" + rc)
		}
	})
	go m.pods.Run(ctx)
	go m.rcs.Run(ctx)
	q.Process(ctx, m.rcs, "replication: controller", func(o api.Object) error { return m.reconcile(ctx, o.(*api.ReplicationController)) })
}

// owned returns the live pods rc made, and counts ready ones.
func (m *Manager) owned(rc *api.ReplicationController) (active []*api.Pod, ready int32) {
	for _, o := range m.pods.List(rc.Namespace) {
		p := o.(*api.Pod)
		if p.Labels[api.ControllerLabel] != rc.Name {
			continue
		}
		if p.Status.Phase == api.PodFailed || p.Status.Phase == api.PodSucceeded {
			m.remove(p, 0) // finished: replaced below
			continue
		}
		if p.Annotations[api.TerminatingAnnotation] != "" {
			continue
		}
		active = append(active, p)
		if api.PodReady(p) {
			ready++
		}
	}
	return active, ready
}

func (m *Manager) reconcile(ctx context.Context, rc *api.ReplicationController) error {
	if rc.DeletionTimestamp != nil {
		return nil
	}
	active, ready := m.owned(rc)
	want := int(rc.Spec.Replicas)
	switch {
	case len(active) < want:
		for range want - len(active) {
			p, err := m.newPod(rc)
			if err != nil {
				return err
			}
			if err := m.Store.Create(ctx, api.Pods, p); err != nil {
				err = fmt.Errorf("replication: creating a pod for %s/%s: %w", rc.Namespace, rc.Name, err)
				// Said on the controller, and retried with backoff (a
				// quota refusal lasts until something frees room).
				if cerr := m.failedCreate(ctx, rc, err); cerr != nil {
					slog.Warn("replication: recording a failed create", "rc", rc.Namespace+"/"+rc.Name, "err", cerr)
				}
				return err
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
				return err
			}
			m.remove(p, m.Grace)
		}
		active = active[len(active)-want:]
	}
	if rc.Status.Replicas == int32(min(len(active), want)) && rc.Status.ReadyReplicas == ready && len(rc.Status.Conditions) == 0 {
		return nil
	}
	_, err := m.Store.GuaranteedUpdate(ctx, api.ReplicationControllers, rc.Namespace, rc.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		s := &o.(*api.ReplicationController).Status
		s.Replicas, s.ReadyReplicas = int32(min(len(active), want)), ready
		// Every pod it wants exists: nothing failed any more.
		s.Conditions = nil
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
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
		pod.Annotations[api.TerminatingAnnotation] = time.Now().UTC().Format(time.RFC3339)
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// remove deletes a pod after grace, once.
func (m *Manager) remove(p *api.Pod, grace time.Duration) {
	key := p.Namespace + "/" + p.Name
	m.mu.Lock()
	if m.closing[key] {
		m.mu.Unlock()
		return
	}
	m.closing[key] = true
	m.mu.Unlock()
	go func() {
		defer func() {
			m.mu.Lock()
			delete(m.closing, key)
			m.mu.Unlock()
		}()
		time.Sleep(grace)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := m.Store.Delete(ctx, api.Pods, p.Namespace, p.Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
			slog.Warn("replication: deleting a surplus pod", "pod", key, "err", err)
		}
	}()
}
