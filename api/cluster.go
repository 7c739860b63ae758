package api

import (
	"net"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// The cluster resources are a subset of Kubernetes v1 in the same shape:
// Nodes run Pods; ReplicationControllers keep N copies of a pod template;
// Services select pods by label and Endpoints list the ready ones;
// DeploymentConfigs roll out new revisions when an image tag moves.

// NodeRestrictionLabelPrefix starts the Node labels only cluster admins
// set: a node's own credential may not add, change or remove them on its
// Node, as Kubernetes' NodeRestriction keeps node-restriction.kubernetes.io/.
// Select nodes by them (nodeSelector) to keep workloads on the machines an
// admin vouches for: a compromised node can claim any other label.
const NodeRestrictionLabelPrefix = "node-restriction.slipway.dev/"

// Node is a machine that runs pods. Cluster-scoped; the node agent
// registers it and renews status.conditions[Ready] by heartbeat.
type Node struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       NodeSpec   `json:"spec"`
	Status     NodeStatus `json:"status,omitempty"`
}

// NodeSpec is what admins set.
type NodeSpec struct {
	// Unschedulable keeps new pods off the node (cordon).
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// NodeStatus is what the agent reports.
type NodeStatus struct {
	Capacity    ResourceList    `json:"capacity,omitempty"`
	Allocatable ResourceList    `json:"allocatable,omitempty"`
	Conditions  []NodeCondition `json:"conditions,omitempty"`
	// Address is where the node's pods and proxy are reached.
	Address string `json:"address,omitempty"`
}

// NodeCondition is Ready=True|False|Unknown with the last heartbeat.
type NodeCondition struct {
	Type              string    `json:"type"`
	Status            string    `json:"status"`
	Reason            string    `json:"reason,omitempty"`
	Message           string    `json:"message,omitempty"`
	LastHeartbeatTime time.Time `json:"lastHeartbeatTime"`
}

// ResourceList holds quantities: cpu in millicores, memory in bytes, pods
// as a count.
type ResourceList struct {
	MilliCPU int64 `json:"cpu,omitempty"`
	Memory   int64 `json:"memory,omitempty"`
	Pods     int64 `json:"pods,omitempty"`
}

// Pod is one or more containers sharing a network namespace and volumes.
type Pod struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       PodSpec   `json:"spec"`
	Status     PodStatus `json:"status,omitempty"`
}

// PodSpec is the containers and how to run them.
type PodSpec struct {
	Containers []Container `json:"containers"`
	Volumes    []Volume    `json:"volumes,omitempty"`
	// RestartPolicy is Always (default), OnFailure or Never.
	RestartPolicy string            `json:"restartPolicy,omitempty"`
	NodeSelector  map[string]string `json:"nodeSelector,omitempty"`
	// NodeName is set by the scheduler when it binds the pod.
	NodeName string `json:"nodeName,omitempty"`
	// ServiceAccountName is the project's service account the pod runs
	// as; it matters for the privileged exception (security.go).
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// SecurityContext is how the pod's containers run (security.go).
	SecurityContext *PodSecurityContext `json:"securityContext,omitempty"`
	// HostNetwork, HostPID and HostIPC ask for the node's namespaces;
	// restricted pods may not.
	HostNetwork bool `json:"hostNetwork,omitempty"`
	HostPID     bool `json:"hostPID,omitempty"`
	HostIPC     bool `json:"hostIPC,omitempty"`
}

// Container is one process image in a pod.
type Container struct {
	Name           string               `json:"name"`
	Image          string               `json:"image"`
	Command        []string             `json:"command,omitempty"`
	Args           []string             `json:"args,omitempty"`
	Env            []EnvVar             `json:"env,omitempty"`
	Ports          []ContainerPort      `json:"ports,omitempty"`
	Resources      ResourceRequirements `json:"resources,omitempty"`
	VolumeMounts   []VolumeMount        `json:"volumeMounts,omitempty"`
	LivenessProbe  *Probe               `json:"livenessProbe,omitempty"`
	ReadinessProbe *Probe               `json:"readinessProbe,omitempty"`
	// SecurityContext overrides the pod's for this container.
	SecurityContext *SecurityContext `json:"securityContext,omitempty"`
}

// ContainerPort is a port the container listens on; HostPort publishes it
// on the node.
type ContainerPort struct {
	Name          string `json:"name,omitempty"`
	ContainerPort int32  `json:"containerPort"`
	HostPort      int32  `json:"hostPort,omitempty"`
	Protocol      string `json:"protocol,omitempty"` // TCP (default) or UDP
}

// ResourceRequirements are requests (for scheduling) and limits (enforced).
type ResourceRequirements struct {
	Requests ResourceList `json:"requests,omitempty"`
	Limits   ResourceList `json:"limits,omitempty"`
}

// Volume is emptyDir (lives as long as the pod) or persistent (a named
// directory under the node's data dir that outlives the pod).
type Volume struct {
	Name       string                  `json:"name"`
	EmptyDir   *struct{}               `json:"emptyDir,omitempty"`
	Persistent *PersistentVolumeSource `json:"persistent,omitempty"`
	// HostPath is refused for every pod (security.go).
	HostPath *HostPathVolumeSource `json:"hostPath,omitempty"`
}

// PersistentVolumeSource names a volume that outlives its pods.
type PersistentVolumeSource struct {
	ClaimName string `json:"claimName"`
}

// VolumeMount mounts a pod volume into a container.
type VolumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// Probe checks a container: an HTTP GET, a TCP connect or a command.
type Probe struct {
	HTTPGet             *HTTPGetAction   `json:"httpGet,omitempty"`
	TCPSocket           *TCPSocketAction `json:"tcpSocket,omitempty"`
	Exec                *ExecAction      `json:"exec,omitempty"`
	InitialDelaySeconds int32            `json:"initialDelaySeconds,omitempty"`
	PeriodSeconds       int32            `json:"periodSeconds,omitempty"`
	TimeoutSeconds      int32            `json:"timeoutSeconds,omitempty"`
	FailureThreshold    int32            `json:"failureThreshold,omitempty"`
}

// HTTPGetAction probes with a GET; 200–399 is healthy.
type HTTPGetAction struct {
	Path string `json:"path,omitempty"`
	Port int32  `json:"port"`
}

// TCPSocketAction probes with a connect.
type TCPSocketAction struct {
	Port int32 `json:"port"`
}

// ExecAction probes by running a command in the container; exit 0 is
// healthy.
type ExecAction struct {
	Command []string `json:"command"`
}

// Pod phases.
const (
	PodPending   = "Pending"
	PodRunning   = "Running"
	PodSucceeded = "Succeeded"
	PodFailed    = "Failed"
	PodUnknown   = "Unknown"
)

// PodStatus is written by the scheduler (PodScheduled) and the node agent.
type PodStatus struct {
	Phase      string         `json:"phase,omitempty"`
	Conditions []PodCondition `json:"conditions,omitempty"`
	// PodIP is the address the pod's containers share.
	PodIP             string            `json:"podIP,omitempty"`
	HostIP            string            `json:"hostIP,omitempty"`
	ContainerStatuses []ContainerStatus `json:"containerStatuses,omitempty"`
	Reason            string            `json:"reason,omitempty"`
	Message           string            `json:"message,omitempty"`
	StartTime         *time.Time        `json:"startTime,omitempty"`
}

// PodCondition is PodScheduled or Ready, True or False, with a reason.
type PodCondition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// ContainerStatus is one container's state as the agent last saw it.
type ContainerStatus struct {
	Name         string `json:"name"`
	Image        string `json:"image"`
	ImageID      string `json:"imageID,omitempty"`
	ContainerID  string `json:"containerID,omitempty"`
	Ready        bool   `json:"ready"`
	RestartCount int32  `json:"restartCount"`
	// State is Waiting, Running or Terminated, with a reason for the first
	// and last.
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
	ExitCode int32  `json:"exitCode,omitempty"`
}

// Condition helpers.
const (
	ConditionTrue  = "True"
	ConditionFalse = "False"
)

// PodTemplateSpec is the pod a controller makes copies of.
type PodTemplateSpec struct {
	ObjectMeta `json:"metadata"`
	Spec       PodSpec `json:"spec"`
}

// ReplicationController keeps Replicas pods matching Selector running.
type ReplicationController struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ReplicationControllerSpec   `json:"spec"`
	Status     ReplicationControllerStatus `json:"status,omitempty"`
}

// ReplicationControllerSpec is the count, the selector and the template.
type ReplicationControllerSpec struct {
	Replicas int32             `json:"replicas"`
	Selector map[string]string `json:"selector"`
	Template *PodTemplateSpec  `json:"template"`
}

// ReplicationControllerStatus counts pods.
type ReplicationControllerStatus struct {
	Replicas      int32 `json:"replicas"`
	ReadyReplicas int32 `json:"readyReplicas"`
	// Conditions holds ReplicaFailure=True while pods cannot be made
	// (a quota refuses them, say), with the refusal as its message.
	Conditions []ReplicationControllerCondition `json:"conditions,omitempty"`
}

// ReplicationControllerCondition has the shape of a DeploymentCondition.
type ReplicationControllerCondition = DeploymentCondition

// ReplicaFailure is the condition of a ReplicationController that cannot
// make its pods; FailedCreate its reason.
const (
	ReplicaFailure = "ReplicaFailure"
	FailedCreate   = "FailedCreate"
)

// Service is a stable address in front of the pods its selector matches.
type Service struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ServiceSpec `json:"spec"`
}

// ServiceSpec is the selector and ports. ClusterIP is a virtual address
// from the service range (default 10.43.0.0/16), assigned when the service
// is made; every node's proxy listens on it and balances across the
// service's endpoints.
type ServiceSpec struct {
	Selector  map[string]string `json:"selector"`
	Ports     []ServicePort     `json:"ports"`
	ClusterIP string            `json:"clusterIP,omitempty"`
}

// ServicePort maps Port on the service to TargetPort on the pods.
type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Protocol   string `json:"protocol,omitempty"` // TCP (default) or UDP
	Port       int32  `json:"port"`
	TargetPort int32  `json:"targetPort,omitempty"`
}

// Endpoints lists the ready pod addresses behind a Service, same name.
type Endpoints struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Subsets    []EndpointSubset `json:"subsets,omitempty"`
}

// EndpointSubset is addresses × ports.
type EndpointSubset struct {
	Addresses []EndpointAddress `json:"addresses,omitempty"`
	Ports     []ServicePort     `json:"ports,omitempty"`
}

// EndpointAddress is one ready pod.
type EndpointAddress struct {
	IP       string `json:"ip"`
	NodeName string `json:"nodeName,omitempty"`
	PodName  string `json:"podName,omitempty"`
}

// The cluster resources.
var (
	Nodes = Register(&Resource{
		Name: "nodes", Kind: "Node", ShortNames: []string{"no"}, HasStatus: true,
		New: func() Object { return &Node{} },
		Columns: []Column{
			{Header: "READY", Path: "status.conditions[type=Ready].status"},
			{Header: "REASON", Path: "status.conditions[type=Ready].reason"},
			{Header: "ADDRESS", Path: "status.address", Wide: true},
		},
	})
	Pods = Register(&Resource{
		Name: "pods", Kind: "Pod", ShortNames: []string{"po"}, Namespaced: true, HasStatus: true,
		New: func() Object { return &Pod{} },
		Validate: func(o Object) FieldErrors {
			return validatePodSpec("spec", &o.(*Pod).Spec)
		},
		Columns: []Column{
			{Header: "STATUS", Path: "status.phase"},
			{Header: "READY", Path: "status.conditions[type=Ready].status"},
			{Header: "REASON", Path: "status.reason"},
			{Header: "IP", Path: "status.podIP", Wide: true},
			{Header: "NODE", Path: "spec.nodeName", Wide: true},
		},
	})
	ReplicationControllers = Register(&Resource{
		Name: "replicationcontrollers", Kind: "ReplicationController", ShortNames: []string{"rc"},
		Namespaced: true, HasStatus: true,
		New: func() Object { return &ReplicationController{} },
		Validate: func(o Object) FieldErrors {
			rc := o.(*ReplicationController)
			var errs FieldErrors
			if rc.Spec.Replicas < 0 {
				errs.Add("spec.replicas", FieldValueInvalid, "must not be negative")
			}
			if len(rc.Spec.Selector) == 0 {
				errs.Add("spec.selector", FieldValueRequired, "a selector is required, such as {app: web}")
			}
			if rc.Spec.Template == nil {
				errs.Add("spec.template", FieldValueRequired, "a pod template is required")
				return errs
			}
			for k, v := range rc.Spec.Selector {
				if rc.Spec.Template.Labels[k] != v {
					errs.Add("spec.template.metadata.labels", FieldValueInvalid, "must match the selector (%s=%s), or the controller would never see its pods", k, v)
				}
			}
			errs = append(errs, validatePodSpec("spec.template.spec", &rc.Spec.Template.Spec)...)
			return errs
		},
		Columns: []Column{{Header: "DESIRED", Path: "spec.replicas"}, {Header: "READY", Path: "status.readyReplicas"}},
	})
	Services = Register(&Resource{
		Name: "services", Kind: "Service", ShortNames: []string{"svc"}, Namespaced: true,
		New: func() Object { return &Service{} },
		Validate: func(o Object) FieldErrors {
			s := o.(*Service)
			var errs FieldErrors
			if len(s.Spec.Ports) == 0 {
				errs.Add("spec.ports", FieldValueRequired, "a service needs at least one port")
			}
			for i, p := range s.Spec.Ports {
				if p.Port < 1 || p.Port > 65535 {
					errs.Add(fieldIndex("spec.ports", i, "port"), FieldValueInvalid, "must be 1-65535")
				}
				if p.TargetPort < 0 || p.TargetPort > 65535 {
					errs.Add(fieldIndex("spec.ports", i, "targetPort"), FieldValueInvalid, "must be 1-65535")
				}
				if p.Protocol != "" && p.Protocol != "TCP" && p.Protocol != "UDP" {
					errs.Add(fieldIndex("spec.ports", i, "protocol"), FieldValueInvalid, "must be TCP or UDP")
				}
			}
			return errs
		},
		Columns: []Column{{Header: "CLUSTER-IP", Path: "spec.clusterIP"}},
	})
	EndpointsResource = Register(&Resource{
		Name: "endpoints", Kind: "Endpoints", ShortNames: []string{"ep"}, Namespaced: true,
		New: func() Object { return &Endpoints{} },
		// Which addresses a writer may name is the API server's
		// admission (apiserver/tenancy.go); this is only their shape.
		Validate: func(o Object) FieldErrors {
			var errs FieldErrors
			for i, sub := range o.(*Endpoints).Subsets {
				sp := fieldIndex("subsets", i, "")
				for j, a := range sub.Addresses {
					if net.ParseIP(a.IP) == nil {
						errs.Add(fieldIndex(sp+"addresses", j, "ip"), FieldValueInvalid, "%q is not an IP address", a.IP)
					}
				}
				for j, p := range sub.Ports {
					if p.Port < 1 || p.Port > 65535 || p.TargetPort < 0 || p.TargetPort > 65535 {
						errs.Add(fieldIndex(sp+"ports", j, ""), FieldValueInvalid, "ports must be 1-65535")
					}
					if p.Protocol != "" && p.Protocol != "TCP" && p.Protocol != "UDP" {
						errs.Add(fieldIndex(sp+"ports", j, "protocol"), FieldValueInvalid, "must be TCP or UDP")
					}
				}
			}
			return errs
		},
	})
)

func validatePodSpec(path string, s *PodSpec) FieldErrors {
	var errs FieldErrors
	if len(s.Containers) == 0 {
		errs.Add(path+".containers", FieldValueRequired, "a pod needs at least one container")
	}
	switch s.RestartPolicy {
	case "", "Always", "OnFailure", "Never":
	default:
		errs.Add(path+".restartPolicy", FieldValueInvalid, "must be Always, OnFailure or Never")
	}
	vols := map[string]bool{}
	for i, v := range s.Volumes {
		if msgs := validation.IsDNS1123Label(v.Name); len(msgs) > 0 {
			errs.Add(fieldIndex(path+".volumes", i, "name"), FieldValueInvalid, "%s", msgs[0])
		}
		if n := btoi(v.EmptyDir != nil) + btoi(v.Persistent != nil) + btoi(v.HostPath != nil); n != 1 {
			errs.Add(fieldIndex(path+".volumes", i, ""), FieldValueInvalid, "give exactly one of emptyDir or persistent")
		}
		if v.Persistent != nil {
			if msgs := validation.IsDNS1123Label(v.Persistent.ClaimName); len(msgs) > 0 {
				errs.Add(fieldIndex(path+".volumes", i, "persistent.claimName"), FieldValueInvalid, "%s", msgs[0])
			}
		}
		vols[v.Name] = true
	}
	errs = append(errs, validateSecurity(path, s)...)
	names := map[string]bool{}
	for i, c := range s.Containers {
		cp := fieldIndex(path+".containers", i, "")
		if msgs := validation.IsDNS1123Label(c.Name); len(msgs) > 0 {
			errs.Add(cp+"name", FieldValueInvalid, "%s", msgs[0])
		}
		if names[c.Name] {
			errs.Add(cp+"name", FieldValueInvalid, "container names must be unique in a pod")
		}
		names[c.Name] = true
		if c.Image == "" {
			errs.Add(cp+"image", FieldValueRequired, "an image is required")
		}
		for j, p := range c.Ports {
			if p.ContainerPort < 1 || p.ContainerPort > 65535 || p.HostPort < 0 || p.HostPort > 65535 {
				errs.Add(fieldIndex(cp+"ports", j, ""), FieldValueInvalid, "ports must be 1-65535")
			}
			if p.Protocol != "" && p.Protocol != "TCP" && p.Protocol != "UDP" {
				errs.Add(fieldIndex(cp+"ports", j, "protocol"), FieldValueInvalid, "must be TCP or UDP")
			}
		}
		for j, m := range c.VolumeMounts {
			if !vols[m.Name] {
				errs.Add(fieldIndex(cp+"volumeMounts", j, "name"), FieldValueInvalid, "no volume named %q in the pod", m.Name)
			}
			if len(m.MountPath) == 0 || m.MountPath[0] != '/' {
				errs.Add(fieldIndex(cp+"volumeMounts", j, "mountPath"), FieldValueInvalid, "must be an absolute path")
			}
		}
		r := c.Resources
		if r.Requests.MilliCPU < 0 || r.Requests.Memory < 0 || r.Limits.MilliCPU < 0 || r.Limits.Memory < 0 {
			errs.Add(cp+"resources", FieldValueInvalid, "quantities must not be negative")
		}
	}
	return errs
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Labels and annotations the cluster controllers put on pods.
const (
	// ControllerLabel names the ReplicationController that made a pod;
	// the scheduler spreads pods with the same value.
	ControllerLabel = "slipway.dev/controller"
	// TerminatingAnnotation marks a pod being scaled down: endpoints drop
	// it at once, and it is deleted after a grace period, so the proxy
	// stops sending it requests before it stops.
	TerminatingAnnotation = "slipway.dev/terminating"
)

// PodReady reports whether a pod's Ready condition is True.
func PodReady(p *Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == ConditionTrue
		}
	}
	return false
}

// SelectorMatches reports whether labels carry every key=value of sel. An
// empty selector matches nothing.
func SelectorMatches(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}
