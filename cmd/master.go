package cmd

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"slipway.dev/slipway/leader"
	"slipway.dev/slipway/server"
)

func masterCmd() *cobra.Command {
	var cfg server.Config
	var etcd, logLevel string
	c := &cobra.Command{
		Use:   "master",
		Short: "Run the master role: the API, the controllers and the scheduler",
		Long: `Run the master role against the cluster's etcd: serve the API, and take part
in the election of the controllers' leader. Run it as many times as you like
(on other machines, or on other --listen ports): every master serves the API,
and one at a time, the leader, runs the controllers (builds, triggers,
deployments, replication, endpoints, scans, promotions, node lifecycle) and
the scheduler. Its writes are fenced on its election key: a leader that was
paused or cut off past --leader-lease cannot write once another took over.
A leader that stops gracefully hands over at once; one that dies, after its
lease.

The registry (slipway registry) and nodes (slipway node) run separately.
DATA_DIR holds the cluster's PKI and admin password, shared with the other
roles.`,
		Example: `  slipway master --data-dir /shared/slipway --listen :8443 --registry 10.0.0.1:5000 \
      --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379

  # A second master on the same machine
  slipway master --data-dir ./slipway.local --listen :8444 --registry 127.0.0.1:5000 \
      --etcd-endpoints https://127.0.0.1:2379 --buildkitd none`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usagef("--log-level %q: use debug, info, warn or error", logLevel)
			}
			slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
			if etcd != "" {
				cfg.EtcdEndpoints = strings.Split(etcd, ",")
			}
			abs, err := filepath.Abs(cfg.DataDir)
			if err != nil {
				return err
			}
			cfg.DataDir, cfg.MasterOnly, cfg.Node.Disabled = abs, true, true
			srv, err := server.Start(c.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Slipway master is running. API: %s  Registry: %s\n", srv.URL, srv.RegistryHost)
			err = srv.Wait(c.Context())
			slog.Info("slipway master stopped")
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "slipway.local", "the cluster's shared directory: PKI, admin password, node token; build logs go under it")
	f.StringVar(&cfg.Listen, "listen", ":8443", "HTTPS address of the API")
	f.StringVar(&etcd, "etcd-endpoints", "", "comma-separated URLs of the cluster's etcd (required)")
	f.StringVar(&cfg.EtcdPrefix, "etcd-prefix", "/slipway/", "key prefix in etcd")
	etcdTLSFlags(f, &cfg)
	f.StringVar(&cfg.RegistryHost, "registry", "", "host:port of the cluster's registry (required)")
	f.StringSliceVar(&cfg.Hostnames, "hostname", nil, "extra host names or IPs for the serving certificate")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "your own serving certificate (PEM) instead of one from the platform CA")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "the key of --tls-cert-file")
	importFlags(f, &cfg)
	f.StringVar(&cfg.Buildkitd, "buildkitd", "", `buildkitd binary for builds (default: next to slipway, then PATH; "none" turns builds off)`)
	f.StringSliceVar(&cfg.BuildDenyCIDRs, "build-deny-cidr", nil, "address ranges build steps must not reach, such as the cluster's node network (the host itself, link-local addresses and etcd are always denied)")
	f.StringVar(&cfg.HTPasswd, "htpasswd", "", "htpasswd file (bcrypt) of users who may log in")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&cfg.NodeGracePeriod, "node-grace-period", 40*time.Second, "how long a node may miss heartbeats before it is NotReady")
	f.DurationVar(&cfg.PodEvictionTimeout, "pod-eviction-timeout", 30*time.Second, "how long pods of a NotReady node wait before they are made again elsewhere")
	f.StringVar(&cfg.Node.ServiceCIDR, "service-cidr", "10.43.0.0/16", "range of service ClusterIPs")
	leaderFlags(f, &cfg)
	limitFlags(f, &cfg)
	return c
}

// leaderFlags configure the controllers' election, for start and master.
func leaderFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.DurationVar(&cfg.LeaderLease, "leader-lease", leader.DefaultLease, "lease of the controllers' leader: how long a leader that died or hangs keeps the role before another server on the same etcd takes over (whole seconds)")
}
