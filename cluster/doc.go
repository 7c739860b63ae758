// Package cluster holds the scheduler, node agent, service proxy and
// deployer. It is built by the deploy issue (#5); nothing is here yet.
package cluster
