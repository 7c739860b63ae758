package cmd

import (
	"github.com/spf13/pflag"

	"slipway.dev/slipway/server"
)

// routerFlags are the edge router's flags of `slipway start`.
func routerFlags(f *pflag.FlagSet, r *server.RouterConfig) {
	f.StringVar(&r.HTTPListen, "router-http-listen", "", `address the edge router serves routes on over HTTP, such as ":80" (default: not served; routes are still admitted)`)
	f.StringVar(&r.HTTPSListen, "router-https-listen", "", `address the edge router serves TLS routes on (edge, reencrypt, passthrough by SNI), such as ":443" (default: not served)`)
	f.BoolVar(&r.Disabled, "no-router", false, "run no edge router in this process (routes are neither admitted nor served here)")
}
