package runtime

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/moby/moby/client"
)

// PodSubnets lists the IPv4 subnets of the Docker network pods attach to
// (Config.Network): every address a pod of this engine can have. The
// node's network policy treats an address there that it does not know
// as a pod it may not trust yet, rather than as the outside world.
func (d *Docker) PodSubnets(ctx context.Context) ([]netip.Prefix, error) {
	res, err := d.cli.NetworkInspect(ctx, d.cfg.Network, client.NetworkInspectOptions{})
	if err != nil {
		return nil, fmt.Errorf("runtime: inspecting network %s: %w", d.cfg.Network, err)
	}
	var out []netip.Prefix
	for _, c := range res.Network.IPAM.Config {
		if c.Subnet.IsValid() && c.Subnet.Addr().Is4() {
			out = append(out, c.Subnet.Masked())
		}
	}
	return out, nil
}
