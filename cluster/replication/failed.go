package replication

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// failedCreate records on rc that a pod could not be made: the condition
// ReplicaFailure=True (reason FailedCreate, the error as message) and,
// when the message is new, a Warning event, so `slipway describe rc` and
// `slipway get events` say why replicas are missing (an exceeded quota,
// say) rather than the controller retrying in silence.
func (m *Manager) failedCreate(ctx context.Context, rc *api.ReplicationController, cause error) error {
	msg := cause.Error()
	for _, c := range rc.Status.Conditions {
		if c.Type == api.ReplicaFailure && c.Message == msg {
			return nil
		}
	}
	now := time.Now().UTC().Truncate(time.Second)
	_, err := m.Store.GuaranteedUpdate(ctx, api.ReplicationControllers, rc.Namespace, rc.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		s := &o.(*api.ReplicationController).Status
		s.Conditions = []api.ReplicationControllerCondition{{Type: api.ReplicaFailure, Status: api.ConditionTrue, Reason: api.FailedCreate, Message: msg, LastTransitionTime: now}}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	ev := &api.Event{
		ObjectMeta:     api.ObjectMeta{Namespace: rc.Namespace, Name: rc.Name + "." + hex.EncodeToString(suffix)},
		InvolvedObject: api.ObjectReference{Kind: "ReplicationController", Name: rc.Name, Namespace: rc.Namespace},
		Reason:         api.FailedCreate, Message: msg, Type: "Warning", Time: now,
	}
	return m.Store.Create(ctx, api.Events, ev)
}
