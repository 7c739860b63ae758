package api

import "time"

// DeploymentConfig rolls out a pod template as numbered revisions, each a
// ReplicationController named NAME-N, in OpenShift v3's shape. Image
// triggers resolve ImageStreamTags to digests, so every revision pins the
// exact images it runs, and a tag that moves rolls out a new revision.
type DeploymentConfig struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       DeploymentConfigSpec   `json:"spec"`
	Status     DeploymentConfigStatus `json:"status,omitempty"`
}

// DeploymentConfigSpec is the template, the count, how to roll out and
// what starts a rollout.
type DeploymentConfigSpec struct {
	Replicas int32               `json:"replicas"`
	Selector map[string]string   `json:"selector"`
	Template *PodTemplateSpec    `json:"template"`
	Strategy DeploymentStrategy  `json:"strategy,omitempty"`
	Triggers []DeploymentTrigger `json:"triggers,omitempty"`
	// Paused stops new rollouts until resumed.
	Paused bool `json:"paused,omitempty"`
	// RevisionHistoryLimit is how many old revisions (scaled to zero) are
	// kept for rollback. Default 10.
	RevisionHistoryLimit *int32 `json:"revisionHistoryLimit,omitempty"`
	// MinReadySeconds is how long a new pod must be ready to count.
	MinReadySeconds int32 `json:"minReadySeconds,omitempty"`
}

// DeploymentStrategy is Rolling (default) or Recreate.
type DeploymentStrategy struct {
	Type           string                    `json:"type,omitempty"`
	RollingParams  *RollingDeploymentParams  `json:"rollingParams,omitempty"`
	RecreateParams *RecreateDeploymentParams `json:"recreateParams,omitempty"`
}

// RollingDeploymentParams: at most Replicas+MaxSurge pods exist, and at
// least Replicas-MaxUnavailable are ready, at every step. A rollout that
// is not done within TimeoutSeconds (default 600) fails and the previous
// revision is scaled back up.
type RollingDeploymentParams struct {
	MaxSurge       *int32         `json:"maxSurge,omitempty"`
	MaxUnavailable *int32         `json:"maxUnavailable,omitempty"`
	TimeoutSeconds *int64         `json:"timeoutSeconds,omitempty"`
	Pre            *LifecycleHook `json:"pre,omitempty"`
	Post           *LifecycleHook `json:"post,omitempty"`
}

// RecreateDeploymentParams: the old revision is scaled to zero, then the
// new one up. Mid runs between the two.
type RecreateDeploymentParams struct {
	TimeoutSeconds *int64         `json:"timeoutSeconds,omitempty"`
	Pre            *LifecycleHook `json:"pre,omitempty"`
	Mid            *LifecycleHook `json:"mid,omitempty"`
	Post           *LifecycleHook `json:"post,omitempty"`
}

// LifecycleHook runs a command in a new pod made from one of the
// template's containers. FailurePolicy is Abort (default: the rollout
// fails) or Ignore.
type LifecycleHook struct {
	FailurePolicy string      `json:"failurePolicy,omitempty"`
	ExecNewPod    *ExecNewPod `json:"execNewPod"`
}

// ExecNewPod is the hook's command and the container it copies.
type ExecNewPod struct {
	Command       []string `json:"command"`
	ContainerName string   `json:"containerName"`
	Env           []EnvVar `json:"env,omitempty"`
}

// DeploymentTrigger is ConfigChange (the template changed) or ImageChange
// (a tag moved).
type DeploymentTrigger struct {
	Type              string                              `json:"type"`
	ImageChangeParams *DeploymentTriggerImageChangeParams `json:"imageChangeParams,omitempty"`
}

// DeploymentTriggerImageChangeParams says which containers take the image
// a tag points at. Automatic false (set by rollout undo) keeps the image
// pinned until someone turns it back on.
type DeploymentTriggerImageChangeParams struct {
	Automatic          bool            `json:"automatic"`
	ContainerNames     []string        `json:"containerNames"`
	From               ObjectReference `json:"from"`
	LastTriggeredImage string          `json:"lastTriggeredImage,omitempty"`
}

// DeploymentConfigStatus is written by the deployment controller.
type DeploymentConfigStatus struct {
	LatestVersion      int64 `json:"latestVersion"`
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	Replicas           int32 `json:"replicas"`
	ReadyReplicas      int32 `json:"readyReplicas"`
	UpdatedReplicas    int32 `json:"updatedReplicas"`
	// Details says why the latest revision was made.
	Details    *DeploymentDetails    `json:"details,omitempty"`
	Conditions []DeploymentCondition `json:"conditions,omitempty"`
}

// DeploymentDetails is the cause of a revision.
type DeploymentDetails struct {
	Message string `json:"message,omitempty"`
	Cause   string `json:"cause,omitempty"`
}

// DeploymentCondition is Progressing or Available.
type DeploymentCondition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Annotations on a revision's ReplicationController.
const (
	DeploymentConfigAnnotation  = "openshift.io/deployment-config.name"
	DeploymentVersionAnnotation = "openshift.io/deployment-config.latest-version"
	DeploymentPhaseAnnotation   = "openshift.io/deployment.phase"
	DeploymentReasonAnnotation  = "openshift.io/deployment.status-reason"
	DeploymentCauseAnnotation   = "openshift.io/deployment.cause"
	// DeploymentConfigLabel on revisions and their pods names the config.
	DeploymentConfigLabel = "deploymentconfig"
	// DeploymentLabel on pods names the revision (NAME-N).
	DeploymentLabel = "deployment"
)

// Revision phases.
const (
	DeploymentNew      = "New"
	DeploymentPending  = "Pending"
	DeploymentRunning  = "Running"
	DeploymentComplete = "Complete"
	DeploymentFailed   = "Failed"
)

// DeploymentConfigs is the resource.
var DeploymentConfigs = Register(&Resource{
	Name: "deploymentconfigs", Kind: "DeploymentConfig", ShortNames: []string{"dc"},
	Namespaced: true, HasStatus: true,
	New: func() Object { return &DeploymentConfig{} },
	Validate: func(o Object) FieldErrors {
		dc := o.(*DeploymentConfig)
		var errs FieldErrors
		if dc.Spec.Replicas < 0 {
			errs.Add("spec.replicas", FieldValueInvalid, "must not be negative")
		}
		if dc.Spec.Template == nil {
			errs.Add("spec.template", FieldValueRequired, "a pod template is required")
			return errs
		}
		for k, v := range dc.Spec.Selector {
			if dc.Spec.Template.Labels[k] != v {
				errs.Add("spec.template.metadata.labels", FieldValueInvalid, "must match the selector (%s=%s)", k, v)
			}
		}
		errs = append(errs, validatePodSpec("spec.template.spec", &dc.Spec.Template.Spec)...)
		switch dc.Spec.Strategy.Type {
		case "", "Rolling", "Recreate":
		default:
			errs.Add("spec.strategy.type", FieldValueInvalid, "must be Rolling or Recreate")
		}
		names := map[string]bool{}
		for _, c := range dc.Spec.Template.Spec.Containers {
			names[c.Name] = true
		}
		for i, t := range dc.Spec.Triggers {
			switch t.Type {
			case "ConfigChange":
			case "ImageChange":
				p := t.ImageChangeParams
				if p == nil || p.From.Kind != "ImageStreamTag" || p.From.Name == "" {
					errs.Add(fieldIndex("spec.triggers", i, "imageChangeParams.from"), FieldValueRequired, "an ImageChange trigger follows an ImageStreamTag, such as {kind: ImageStreamTag, name: web:latest}")
					continue
				}
				if len(p.ContainerNames) == 0 {
					errs.Add(fieldIndex("spec.triggers", i, "imageChangeParams.containerNames"), FieldValueRequired, "name the containers that take the image")
				}
				for _, n := range p.ContainerNames {
					if !names[n] {
						errs.Add(fieldIndex("spec.triggers", i, "imageChangeParams.containerNames"), FieldValueInvalid, "no container named %q in the template", n)
					}
				}
			default:
				errs.Add(fieldIndex("spec.triggers", i, "type"), FieldValueInvalid, "must be ConfigChange or ImageChange, not %q", t.Type)
			}
		}
		return errs
	},
	Columns: []Column{
		{Header: "REVISION", Path: "status.latestVersion"},
		{Header: "DESIRED", Path: "spec.replicas"},
		{Header: "CURRENT", Path: "status.readyReplicas"},
	},
})
