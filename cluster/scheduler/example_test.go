package scheduler_test

import (
	"context"
	"log"
	"time"

	"slipway.dev/slipway/cluster/scheduler"
	"slipway.dev/slipway/store"
)

// A master runs one Scheduler and one NodeLifecycle controller over the
// cluster's store.
func Example() {
	ctx := context.Background()
	var s *store.Store // the server's store
	sch, err := scheduler.New(scheduler.Config{Store: s})
	if err != nil {
		log.Fatal(err)
	}
	lifecycle, err := scheduler.NewNodeLifecycle(scheduler.LifecycleConfig{
		Store:           s,
		GracePeriod:     40 * time.Second, // heartbeats every 10s may miss three
		EvictionTimeout: 30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	go lifecycle.Run(ctx)
	sch.Run(ctx)
}
