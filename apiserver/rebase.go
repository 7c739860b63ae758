package apiserver

import (
	"context"
	"errors"
	"net/http"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
)

// Rebaser rebases a BuildConfig's output in the registry, with the rights
// of who, and returns the Build that records it (buildconfigs/NAME/rebase).
type Rebaser interface {
	RebaseBuildConfig(ctx context.Context, who identity.Info, project, config string) (*api.Build, error)
}

// NotRebasable is implemented by a Rebaser's error that says the config
// needs a build instead; the API answers it 409 with reason NotRebasable.
type NotRebasable interface{ NotRebasable() string }

// Denied is implemented by a Rebaser's error that says the requester may
// not do it; answered 403.
type Denied interface{ Denied() string }

// ReasonNotRebasable answers a server-side rebase that does not apply: the
// client starts a build instead.
const ReasonNotRebasable = "NotRebasable"

// rebase serves POST buildconfigs/NAME/rebase: the output of the config is
// rebased onto its base tag's image in the registry, with no build run, and
// the Build recording it is returned, Complete (201). An output already on
// the base answers 200 with an unnamed Build that says so: nothing is
// recorded.
func (s *Server) rebase(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	if s.cfg.Rebaser == nil {
		writeStatus(w, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "this API server has no registry to rebase in; start a build"))
		return
	}
	b, err := s.cfg.Rebaser.RebaseBuildConfig(r.Context(), identity.FromContext(r.Context()), info.Namespace, info.Name)
	var nr NotRebasable
	var dn Denied
	switch {
	case errors.As(err, &nr):
		writeStatus(w, api.NewStatus(http.StatusConflict, ReasonNotRebasable, "%s", nr.NotRebasable()))
	case errors.As(err, &dn):
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", dn.Denied()))
	case err != nil:
		writeError(w, err)
	case b.Name == "":
		writeJSON(w, http.StatusOK, b) // already on the base: nothing recorded
	default:
		writeJSON(w, http.StatusCreated, b)
	}
}
