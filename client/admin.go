package client

import (
	"context"
	"net/url"
)

// RegistryAdmin calls the registry's administration under /admin/v1/
// (image pruning, garbage collection, blob holders): method on path
// (relative to /admin/v1/), in as the JSON body, the answer decoded into
// out.
func (c *Client) RegistryAdmin(ctx context.Context, method, path string, query url.Values, in, out any) error {
	return c.doJSON(ctx, method, "/admin/v1/"+path, query, in, "application/json", out)
}
