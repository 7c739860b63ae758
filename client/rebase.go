package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"slipway.dev/slipway/api"
)

// ReasonNotRebasable is the reason of a 409 from buildconfigs/NAME/rebase:
// the config needs a build instead.
const ReasonNotRebasable = "NotRebasable"

// RebaseBuildConfig asks the server to rebase a build config's output onto
// its base tag's image in the registry, with no build run; it returns the
// Build that records it. IsNotRebasable(err) says to start a build instead.
func (c *Client) RebaseBuildConfig(ctx context.Context, ns, name string) (*api.Build, error) {
	resp, err := c.Do(ctx, http.MethodPost, Path(api.BuildConfigs, ns, name, "rebase"), nil, []byte("{}"), "application/json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b := &api.Build{}
	if err := json.NewDecoder(resp.Body).Decode(b); err != nil {
		return nil, err
	}
	return b, nil
}

// IsNotRebasable says a server-side rebase does not apply to the config.
func IsNotRebasable(err error) bool {
	var st *api.Status
	return errors.As(err, &st) && st.Reason == ReasonNotRebasable
}
