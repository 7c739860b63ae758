package proxy_test

import (
	"context"
	"log"

	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/store"
)

// A node's proxy: cluster IPs from the default range go on slipway0, and
// every Service in the store is served on them until ctx ends.
func Example() {
	var st *store.Store // the node's store, over the cluster's etcd
	ctx := context.Background()

	vips, err := proxy.NewDummy(proxy.DefaultInterface)
	if err != nil {
		log.Fatal(err) // needs CAP_NET_ADMIN
	}
	p, err := proxy.New(proxy.Config{Store: st, VIPs: vips})
	if err != nil {
		log.Fatal(err)
	}
	p.Run(ctx)
}
