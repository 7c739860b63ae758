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
