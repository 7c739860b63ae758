package apiserver

import (
	"context"
	"fmt"
	"net/http"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// Quota admission proper (counting, limit ranges) is the store's, so that
// controllers' writes meet it too (store/quota.go). The API server adds
// two things: who may change a project's quota, and the Warning headers
// of soft limits.

// authorizeQuotaPolicy lets only those who may write resourcequotas (or
// limitranges) cluster-wide change them: a project's admin holds every
// verb on every resource of the project, and must not be able to raise
// the project's own quota. Reading stays the project's.
func (s *Server) authorizeQuotaPolicy(u identity.Info, info *requestInfo) error {
	res := info.Resource
	if res != api.ResourceQuotas && res != api.LimitRanges {
		return nil
	}
	switch info.Verb {
	case "get", "list", "watch":
		return nil
	}
	at := rbac.Attributes{Verb: info.Verb, Resource: res.Name, Subresource: info.Subresource, Name: info.Name}
	if s.clusterWide(u, at) {
		return nil
	}
	return api.NewStatus(http.StatusForbidden, api.ReasonForbidden,
		"%s in project %s are set by cluster admins: %s %s needs the verb on %s in every project (a ClusterRoleBinding, as cluster-admin has), which %s lacks; ask a cluster admin to change it",
		res.Kind+"s", info.Namespace, info.Verb, res.Name, res.Name, u.Name)
}

// quotaWarnings returns ctx with a sink that turns each soft-limit
// warning of the write into a Warning header on w (as Kubernetes sends
// them: `299 - "text"`), which the CLI prints.
func quotaWarnings(ctx context.Context, w http.ResponseWriter) context.Context {
	return store.WithWarnings(ctx, func(msg string) {
		w.Header().Add("Warning", fmt.Sprintf("299 - %q", msg))
	})
}

// admitPodResources refuses an update that changes the containers or
// their resources of a pod: quotas and limit ranges judged them when the
// pod was made (in the store, for every writer), and an update must not
// grow a pod past them afterwards.
func (s *Server) admitPodResources(ctx context.Context, info *requestInfo, obj api.Object) error {
	p, ok := obj.(*api.Pod)
	if !ok || info.Verb == "create" || info.Subresource != "" {
		return nil
	}
	o, err := s.store.Get(ctx, api.Pods, p.Namespace, p.Name)
	if err != nil {
		return err
	}
	cur := o.(*api.Pod)
	same := len(cur.Spec.Containers) == len(p.Spec.Containers)
	for i := 0; same && i < len(p.Spec.Containers); i++ {
		same = cur.Spec.Containers[i].Name == p.Spec.Containers[i].Name && cur.Spec.Containers[i].Resources == p.Spec.Containers[i].Resources
	}
	if same {
		return nil
	}
	var fe api.FieldErrors
	fe.Add("spec.containers", api.FieldValueForbidden, "a pod's containers and their resources cannot change once it is made (quotas and limit ranges judged them then); delete the pod and create it again, or change the template of its controller")
	return fe.Invalid("Pod", p.Name)
}
