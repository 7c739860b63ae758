package builders

import (
	"context"
	"errors"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// quotaRecheck is how often a build waiting for quota looks again, for
// room that no build's end announces (a quota raised, say).
const quotaRecheck = 15 * time.Second

// startWithinQuota moves b to Running if its project's builds quota has
// room (store.StartBuild counts and commits race-free). Otherwise b stays
// Pending with reason WaitingForQuota and the quota's message, and is
// looked at again when a build of the project ends, or after
// quotaRecheck: a build queues for quota instead of failing.
func (c *Controller) startWithinQuota(ctx context.Context, b *api.Build) (bool, error) {
	now := time.Now().UTC().Truncate(time.Second)
	err := c.Store.StartBuild(ctx, b.Namespace, b.Name, func(nb *api.Build) {
		nb.Status.Phase, nb.Status.StartTimestamp, nb.Status.Reason, nb.Status.Message = api.BuildRunning, &now, "", ""
	})
	var qe *store.QuotaError
	if !errors.As(err, &qe) {
		return err == nil, err
	}
	key := b.Namespace + "/" + b.Name
	if _, scheduled := c.rechecks.LoadOrStore(key, true); !scheduled {
		time.AfterFunc(quotaRecheck, func() {
			c.rechecks.Delete(key)
			c.queue.Add(key)
		})
	}
	msg := "waiting for quota: " + qe.Error()
	if b.Status.Reason == api.BuildWaitingForQuota && b.Status.Message == msg {
		return false, nil
	}
	return false, c.setStatus(ctx, b, func(s *api.BuildStatus) {
		if s.Phase == api.BuildPending {
			s.Reason, s.Message = api.BuildWaitingForQuota, msg
		}
	})
}

// quotaFreed looks again at the builds of project ns that wait for quota.
func (c *Controller) quotaFreed(ns string) {
	waiting, _ := c.builds.ByIndex(byQuotaWait, ns)
	for _, o := range waiting {
		b := o.(*api.Build)
		c.queue.Add(b.Namespace + "/" + b.Name)
	}
}
