package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"slipway.dev/slipway/api"
)

// CreateBootstrapToken mints a one-use token with which the node named
// node joins the cluster (JoinNode) within ttl (0: an hour; at most a
// day). Cluster admins only.
func (c *Client) CreateBootstrapToken(ctx context.Context, node string, ttl time.Duration) (*api.TokenRequest, error) {
	in := api.TokenRequest{Spec: api.TokenRequestSpec{ExpirationSeconds: int64(ttl / time.Second)}}
	var out api.TokenRequest
	return &out, c.doJSON(ctx, http.MethodPost, Path(api.Nodes, "", node, "bootstrap-token"), nil, in, "", &out)
}

// JoinNode sends the certificate request of node (PEM, common name
// system:node:NODE) with the client's token, which must be a bootstrap
// token for node, and returns the node's certificate and the platform
// CA, PEM. The token is used up.
func (c *Client) JoinNode(ctx context.Context, node string, csr []byte) (cert, ca []byte, err error) {
	var out struct {
		Certificate string `json:"certificate"`
		CA          string `json:"ca"`
	}
	in := map[string]string{"csr": string(csr)}
	if err := c.doJSON(ctx, http.MethodPost, "/bootstrap/nodes/"+url.PathEscape(node), nil, in, "", &out); err != nil {
		return nil, nil, err
	}
	return []byte(out.Certificate), []byte(out.CA), nil
}

// PullCredentials asks, as the node that runs pod ns/name, for the
// X-Registry-Auth that pulls image for it ("" pulls anonymously).
func (c *Client) PullCredentials(ctx context.Context, ns, name, image string) (string, error) {
	var out struct {
		Auth string `json:"auth"`
	}
	err := c.doJSON(ctx, http.MethodPost, Path(api.Pods, ns, name, "pullcredentials"), nil, map[string]string{"image": image}, "", &out)
	return out.Auth, err
}

// AdmitPod asks, as the node that runs pod ns/name, whether its project's
// image policies let it start; the error says why not.
func (c *Client) AdmitPod(ctx context.Context, ns, name string) error {
	var st api.Status
	return c.doJSON(ctx, http.MethodPost, Path(api.Pods, ns, name, "admission"), nil, struct{}{}, "", &st)
}
