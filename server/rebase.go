package server

import (
	"context"
	"errors"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
)

// registryRebaser hands buildconfigs/NAME/rebase to the registry, which is
// made after the API server.
type registryRebaser struct{ s *Server }

func (r registryRebaser) RebaseBuildConfig(ctx context.Context, who identity.Info, project, config string) (*api.Build, error) {
	if r.s.Registry == nil {
		return nil, errors.New("the registry is not running on this server yet; try again in a moment")
	}
	return r.s.Registry.RebaseBuildConfig(ctx, who, project, config)
}
