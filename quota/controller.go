// Package quota keeps each ResourceQuota's status: what its project uses
// of every resource the quota names, next to the hard and soft limits.
// Enforcement is not here but in the store (store/quota.go), which every
// writer goes through; this controller only reports, with the store's own
// count (store.QuotaUsage), so status and admission agree.
package quota

import (
	"context"
	"errors"
	"maps"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Controller reconciles ResourceQuota status.
type Controller struct {
	Store *store.Store
	// Resync is how often every quota is counted again, for count/
	// quotas on kinds the controller does not watch. Default 30s.
	Resync time.Duration
}

// watched are the kinds whose changes move a quota's usage often enough
// to count again at once.
var watched = []*api.Resource{api.Pods, api.Services, api.ImageStreams, api.Builds, api.Images}

// Run reconciles until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	if c.Resync == 0 {
		c.Resync = 30 * time.Second
	}
	quotas := store.NewInformer(c.Store, api.ResourceQuotas)
	q := store.NewWorkQueue()
	addProject := func(ns string) {
		for _, o := range quotas.List(ns) {
			q.Add(ns + "/" + o.GetObjectMeta().Name)
		}
	}
	quotas.AddHandler(func(ev store.Event) {
		if ev.Type != api.Deleted {
			m := ev.Object.GetObjectMeta()
			q.Add(m.Namespace + "/" + m.Name)
		}
	})
	go quotas.Run(ctx)
	for _, r := range watched {
		inf := store.NewInformer(c.Store, r)
		inf.AddHandler(func(ev store.Event) { addProject(ev.Object.GetObjectMeta().Namespace) })
		go inf.Run(ctx)
	}
	go func() {
		t := time.NewTicker(c.Resync)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				addProject("")
			}
		}
	}()
	q.Process(ctx, quotas, "quota: status", func(o api.Object) error { return c.reconcile(ctx, o.(*api.ResourceQuota)) })
}

func (c *Controller) reconcile(ctx context.Context, rq *api.ResourceQuota) error {
	names := rq.QuotaNames()
	used, err := c.Store.QuotaUsage(ctx, rq.Namespace, names)
	if err != nil {
		return err
	}
	want := api.ResourceQuotaStatus{Hard: rq.Spec.Hard, Soft: rq.Spec.Soft, Used: map[string]string{}}
	for _, n := range names {
		want.Used[n] = api.FormatQuota(n, used[n])
	}
	if sameStatus(rq.Status, want) {
		return nil
	}
	_, err = c.Store.GuaranteedUpdate(ctx, api.ResourceQuotas, rq.Namespace, rq.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.ResourceQuota).Status = want
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

func sameStatus(a, b api.ResourceQuotaStatus) bool {
	return maps.Equal(a.Hard, b.Hard) && maps.Equal(a.Soft, b.Soft) && maps.Equal(a.Used, b.Used)
}
