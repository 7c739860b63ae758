package cmd

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"slipway.dev/slipway/client"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/router"
	"slipway.dev/slipway/server"
)

// routerFlags are the edge router's flags of `slipway start`.
func routerFlags(f *pflag.FlagSet, r *server.RouterConfig) {
	f.StringVar(&r.HTTPListen, "router-http-listen", "", `address the edge router serves routes on over HTTP, such as ":80" (default: not served; routes are still admitted)`)
	f.StringVar(&r.HTTPSListen, "router-https-listen", "", `address the edge router serves TLS routes on (edge, reencrypt, passthrough by SNI), such as ":443" (default: not served)`)
	f.BoolVar(&r.Disabled, "no-router", false, "run no edge router in this process (routes are neither admitted nor served here)")
}

// routerCmd is the router as a role of its own, on the API.
func routerCmd() *cobra.Command {
	var httpListen, httpsListen, metricsListen, cidr string
	c := &cobra.Command{
		Use:   "router --http-listen ADDR --https-listen ADDR",
		Short: "Run an edge router on its own, through the API",
		Long: `Run the edge router out of the server's process: it watches routes and
endpoints through the API (as the logged-in user, or --server and --token)
and serves them, as ` + "`slipway start --router-http-listen`" + ` does in process.

Its identity needs the ` + rbac.Router + ` cluster role: read routes, with
the TLS keys of edge and reencrypt routes (which viewers see redacted), and
endpoints in every project, and write route status; no secrets. Give it a service
account of its own, bound cluster-wide, rather than an admin's token.
Start the server with --no-router if this router is to be the only one
(both would write the same verdicts).`,
		Example: `  slipway new-project infra && slipway create serviceaccount router -n infra
  printf 'kind: ClusterRoleBinding\nmetadata: {name: router}\nroleRef: {kind: ClusterRole, name: ` + rbac.Router + `}\nsubjects: [{kind: ServiceAccount, namespace: infra, name: router}]\n' | slipway apply -f -
  slipway router --server https://api.example.com:8443 --certificate-authority ca.crt \
      --token "$(slipway create token router -n infra --duration 720h)" \
      --http-listen :80 --https-listen :443 --metrics-listen 127.0.0.1:9101`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if httpListen == "" && httpsListen == "" {
				return usagef("give --http-listen, --https-listen or both: where the router serves routes")
			}
			cl, _, err := connect()
			if err != nil {
				return err
			}
			slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			r, err := router.New(router.Config{Store: &client.Store{C: cl}, HTTPListen: httpListen, HTTPSListen: httpsListen, ServiceCIDR: cidr, Metrics: reg})
			if err != nil {
				return err
			}
			if metricsListen != "" {
				ln, err := net.Listen("tcp", metricsListen)
				if err != nil {
					return fmt.Errorf("--metrics-listen %s: %w", metricsListen, err)
				}
				srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 10 * time.Second}
				go func() { <-c.Context().Done(); srv.Close() }()
				go func() {
					if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
						slog.Error("router: metrics", "err", err)
					}
				}()
			}
			h, hs := r.Addrs()
			fmt.Fprintf(c.OutOrStdout(), "Slipway router is serving routes: http %v, https %v.\n", h, hs)
			r.Run(c.Context())
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&httpListen, "http-listen", "", `address to serve routes on over HTTP, such as ":80"`)
	f.StringVar(&httpsListen, "https-listen", "", `address to serve TLS routes on, such as ":443"`)
	f.StringVar(&metricsListen, "metrics-listen", "", "address to serve Prometheus metrics on, such as 127.0.0.1:9101 (default: none)")
	f.StringVar(&cidr, "service-cidr", proxy.DefaultServiceCIDR, "the cluster's service range, never dialed as an endpoint")
	return c
}
