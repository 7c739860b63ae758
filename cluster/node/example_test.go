package node_test

import (
	"context"
	"log"
	"net/http"
	"os/signal"
	"syscall"

	"slipway.dev/slipway/cluster/node"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/store"
)

// A node role: the runtime on the node's dockerd, the agent on the
// cluster's store, and its handler where the API server can reach it.
func ExampleNew() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var s *store.Store // the cluster's store
	rt, err := runtime.NewDocker(runtime.Config{
		Prefix: "node1", DataDir: "/var/lib/slipway/node",
		PauseBinary: "/proc/self/exe", PauseArgs: []string{"pause"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()
	agent, err := node.New(node.Config{
		Store: s, Runtime: rt, NodeName: "node1", Address: "192.0.2.10",
		Labels:      map[string]string{"zone": "a"},
		ServerToken: "the token the API server presents",
	})
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(http.ListenAndServeTLS(":10250", "node.crt", "node.key", agent.Handler())) }()
	if err := agent.Run(ctx); err != nil {
		log.Fatal(err)
	}
}
