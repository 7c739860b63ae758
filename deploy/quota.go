package deploy

import (
	"context"

	"slipway.dev/slipway/api"
)

// surfaceReplicaFailure copies the latest revision's ReplicaFailure (its
// pods refused, by a quota say) to the config, so `slipway describe dc`
// and `get dc -o yaml` say why replicas are missing, and clears it when
// the revision has its pods.
func (c *Controller) surfaceReplicaFailure(ctx context.Context, dc *api.DeploymentConfig, latest *api.ReplicationController) error {
	for _, cd := range latest.Status.Conditions {
		if cd.Type == api.ReplicaFailure && cd.Status == api.ConditionTrue {
			return c.setCondition(ctx, dc, api.ReplicaFailure, api.ConditionTrue, cd.Reason, "revision "+latest.Name+": "+cd.Message)
		}
	}
	for _, cd := range dc.Status.Conditions {
		if cd.Type == api.ReplicaFailure && cd.Status == api.ConditionTrue {
			return c.setCondition(ctx, dc, api.ReplicaFailure, api.ConditionFalse, "", "")
		}
	}
	return nil
}
