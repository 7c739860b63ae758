// Package cluster is the home of the parts that run pods: runtime (the
// Docker engine behind a small interface), node (the kubelet-style agent),
// scheduler (binding and node lifecycle), replication, endpoints and
// proxy (services).
package cluster
