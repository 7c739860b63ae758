// Package endpoints keeps each Service's address and Endpoints: it gives
// a new service a ClusterIP from the service range, and lists the
// addresses of the ready pods its selector matches, with the service's
// target ports. The service proxy on every node balances across them.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/controller"
	"slipway.dev/slipway/store"
)

// Controller reconciles Endpoints from Services and Pods.
type Controller struct {
	Store *store.Store
	// IPs hands out ClusterIPs. Required.
	IPs *proxy.Allocator

	pods, services, endpoints *store.Informer
}

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.pods = store.NewInformer(c.Store, api.Pods)
	c.services = store.NewInformer(c.Store, api.Services)
	c.endpoints = store.NewInformer(c.Store, api.EndpointsResource)
	ctl := controller.New("endpoints: service", controller.ReconcileFunc(c.Reconcile))
	ctl.Watch(c.services, nil)
	ctl.Watch(c.pods, func(ev store.Event) []string {
		p := ev.Object.(*api.Pod)
		var keys []string
		for _, o := range c.services.List(p.Namespace) {
			if api.SelectorMatches(o.(*api.Service).Spec.Selector, p.Labels) {
				keys = append(keys, controller.Key(p.Namespace, o.GetObjectMeta().Name))
			}
		}
		return keys
	})
	ctl.Watch(c.endpoints, func(store.Event) []string { return nil }) // cached, not watched
	ctl.Run(ctx)
}

// Reconcile brings one service's ("ns/name") address and endpoints up to
// date; a service that is gone takes its endpoints with it.
func (c *Controller) Reconcile(ctx context.Context, key string) (controller.Result, error) {
	ns, name := controller.SplitKey(key)
	o, ok := c.services.Get(ns, name)
	if !ok {
		if _, err := c.Store.Delete(ctx, api.EndpointsResource, ns, name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
			return controller.Result{}, fmt.Errorf("endpoints: deleting the endpoints of deleted service %s: %w", key, err)
		}
		return controller.Result{}, nil
	}
	return controller.Result{}, c.reconcile(ctx, o.(*api.Service))
}

// Subsets computes what a service's endpoints should hold.
func Subsets(svc *api.Service, pods []api.Object) []api.EndpointSubset {
	var addrs []api.EndpointAddress
	for _, o := range pods {
		p := o.(*api.Pod)
		if !api.SelectorMatches(svc.Spec.Selector, p.Labels) || p.Status.PodIP == "" || !api.PodReady(p) ||
			p.Annotations[api.TerminatingAnnotation] != "" || p.DeletionTimestamp != nil {
			continue
		}
		addrs = append(addrs, api.EndpointAddress{IP: p.Status.PodIP, NodeName: p.Spec.NodeName, PodName: p.Name})
	}
	if len(addrs) == 0 {
		return nil
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].PodName < addrs[j].PodName })
	var ports []api.ServicePort
	for _, sp := range svc.Spec.Ports {
		p := sp
		if p.TargetPort == 0 {
			p.TargetPort = p.Port
		}
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		ports = append(ports, p)
	}
	return []api.EndpointSubset{{Addresses: addrs, Ports: ports}}
}

// assignIP gives svc the lowest free ClusterIP, and waits until the cache
// shows it, so the next service sees it taken. One worker runs at a time.
func (c *Controller) assignIP(ctx context.Context, svc *api.Service) error {
	var taken []string
	for _, o := range c.services.List("") {
		if ip := o.(*api.Service).Spec.ClusterIP; ip != "" {
			taken = append(taken, ip)
		}
	}
	ip, err := c.IPs.AllocateClusterIP(taken)
	if err != nil {
		return err
	}
	o, err := c.Store.GuaranteedUpdate(ctx, api.Services, svc.Namespace, svc.Name, store.UpdateOptions{}, func(o api.Object) error {
		s := o.(*api.Service)
		if s.Spec.ClusterIP == "" {
			s.Spec.ClusterIP = ip
		}
		return nil
	})
	if err != nil {
		return err
	}
	if rv, err := store.ParseResourceVersion(o.GetObjectMeta().ResourceVersion); err == nil {
		return c.services.WaitFor(ctx, rv)
	}
	return nil
}

func (c *Controller) reconcile(ctx context.Context, svc *api.Service) error {
	if svc.Spec.ClusterIP == "" {
		return c.assignIP(ctx, svc)
	}
	if len(svc.Spec.Selector) == 0 {
		// No selector: its Endpoints are written by hand (admitted by the
		// API server), as in Kubernetes; the controller never touches
		// them. Writing the empty set here raced a manual write.
		return nil
	}
	want := Subsets(svc, c.pods.List(svc.Namespace))
	cur, ok := c.endpoints.Get(svc.Namespace, svc.Name)
	if !ok {
		ep := &api.Endpoints{ObjectMeta: api.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace}, Subsets: want}
		return c.Store.Create(ctx, api.EndpointsResource, ep) // ErrExists: a stale cache; the retry updates
	}
	if reflect.DeepEqual(cur.(*api.Endpoints).Subsets, want) {
		return nil
	}
	_, err := c.Store.GuaranteedUpdate(ctx, api.EndpointsResource, svc.Namespace, svc.Name, store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.Endpoints).Subsets = want
		return nil
	})
	return err
}
