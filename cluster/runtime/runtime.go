// Package runtime runs pods on one node for the node agent: a pod is an
// infra ("pause") container that owns the network and IPC namespaces, plus
// one container per spec container joined to them, so the containers share
// one IP and localhost. Runtime is what the agent needs from a container
// engine; Docker implements it on the Docker Engine API, and a CRI runtime
// can follow.
//
// The runtime keeps no state of its own: everything it knows is read back
// from the engine (labels on its containers) and from its data directory,
// so a new Runtime value adopts the pods a previous one started.
package runtime

import (
	"context"
	"errors"
	"io"
	"time"

	"slipway.dev/slipway/api"
)

// Runtime runs pods. Pods are named by their UID. Restart policy, probes
// and back-off are the agent's: the runtime starts what it is told and
// reports what it sees.
type Runtime interface {
	// EnsureImage makes the image ref present on the node. auth is the
	// base64url-encoded JSON credentials that the Docker API takes in
	// X-Registry-Auth, or "" for anonymous. With auth it always pulls, so
	// the registry checks those credentials even when the image is cached
	// (the cache is shared by every project on the node); anonymous, an
	// image present under the name ref is not pulled again (refs that
	// move should be digests). A failed pull wraps ErrImagePull.
	EnsureImage(ctx context.Context, ref, auth string) error

	// SyncPod makes the pod run: it creates and starts the sandbox if the
	// pod has no running one (replacing every container of a dead
	// sandbox, each one attempt further), and creates and starts each spec
	// container that has no container yet. Containers that exist, running
	// or exited, are left alone; restarting them is RestartContainer's.
	// Images must be present (EnsureImage); a missing one wraps
	// ErrImageNotPresent. Errors are joined per container, and the other
	// containers are still started. Do not sync a pod the agent considers
	// finished: its sandbox would be recreated.
	SyncPod(ctx context.Context, pod *api.Pod) error

	// RestartContainer replaces the named container of a synced pod with
	// a new one, one attempt (RestartCount) further; a running one is
	// stopped first.
	RestartContainer(ctx context.Context, pod *api.Pod, container string) error

	// ListPods returns every pod this runtime has containers for, sorted
	// by namespace and name, with the latest attempt of each container.
	ListPods(ctx context.Context) ([]PodStatus, error)

	// StopPod stops the pod's containers, then its sandbox, and keeps
	// them (and their logs and exit codes) until RemovePod.
	StopPod(ctx context.Context, uid string) error

	// RemovePod removes the pod's containers and emptyDir volumes.
	// Persistent volumes stay. Removing an unknown pod is not an error.
	RemovePod(ctx context.Context, uid string) error

	// Logs copies a container's stdout and stderr to w; with follow it
	// returns when the container stops or ctx ends.
	Logs(ctx context.Context, uid, container string, follow bool, w io.Writer) error

	// Exec runs cmd in a running container and returns its exit code.
	Exec(ctx context.Context, uid, container string, cmd []string, stdout, stderr io.Writer) (int, error)
}

// Errors. Each is wrapped with what failed; test with errors.Is.
var (
	// ErrImagePull is a pull that failed: an unknown image or tag, bad
	// credentials, an unreachable registry. The message says which; the
	// agent shows it in the pod's status with reason ErrImagePull.
	ErrImagePull = errors.New("runtime: image pull failed")
	// ErrImageNotPresent is a container whose image is not on the node.
	ErrImageNotPresent = errors.New("runtime: image not present")
	// ErrNotFound is a pod or container the runtime has no container for.
	ErrNotFound = errors.New("runtime: not found")
)

// Container states, as in api.ContainerStatus.State.
const (
	StateWaiting    = "Waiting" // created, never started
	StateRunning    = "Running"
	StateTerminated = "Terminated"
)

// PodStatus is one pod as the engine shows it.
type PodStatus struct {
	UID       string
	Namespace string
	Name      string
	// IP is the sandbox's address on the pod network, "" if it has none.
	IP string
	// SandboxRunning is false when the sandbox has stopped: the
	// containers have lost their network, and SyncPod replaces them all.
	SandboxRunning bool
	// Created is when the sandbox was created.
	Created    time.Time
	Containers []ContainerStatus // sorted by name
}

// ContainerStatus is the latest attempt of one spec container.
type ContainerStatus struct {
	Name    string
	ID      string
	Image   string // as the spec named it
	ImageID string
	State   string // StateWaiting, StateRunning or StateTerminated
	// Reason is set for Terminated: Completed (exit 0), Error or
	// OOMKilled.
	Reason string
	// Message is the engine's error, such as a command that could not
	// be started.
	Message    string
	ExitCode   int
	StartedAt  time.Time
	FinishedAt time.Time
	// RestartCount is the attempt number: 0 for the first container.
	RestartCount int
}

// Container returns the status of the named container, or nil.
func (p *PodStatus) Container(name string) *ContainerStatus {
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}
