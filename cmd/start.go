package cmd

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v2"

	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server"
)

func startCmd() *cobra.Command {
	var cfg server.Config
	var etcd string
	var logLevel string
	c := &cobra.Command{
		Use:   "start",
		Short: "Run all of Slipway in one process: etcd, API and controllers",
		Long: `Run all of Slipway in one process.

etcd is embedded, with its data under --data-dir, unless --etcd-endpoints
names an external cluster. The API serves HTTPS with a certificate signed by a
CA that Slipway generates into DATA_DIR/pki. At first start an "admin" user is
created; its password is printed once and saved in DATA_DIR/admin-password.
SIGTERM or Ctrl-C shuts down gracefully; a restart keeps all state.`,
		Example: `  # All-in-one on this machine
  slipway start --data-dir ./slipway.local

  # Against an external etcd cluster, with users from an htpasswd file
  slipway start --data-dir /var/lib/slipway \
      --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379 \
      --htpasswd /etc/slipway/users.htpasswd`,
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
			cfg.DataDir = abs
			srv, err := server.Start(c.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), `Slipway is running. API: %s  Registry: %s

Log in as admin:
  slipway login %s -u admin -p "$(cat %s)" \
      --certificate-authority %s
  docker login -u admin -p "$(slipway whoami -t)" %s

`, srv.URL, srv.RegistryHost, srv.URL, srv.AdminPasswordFile(), srv.PKI.CAFile, srv.RegistryHost)
			err = srv.Wait(c.Context())
			slog.Info("slipway stopped")
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "slipway.local", "where etcd data, certificates, the audit log and the admin password live")
	f.StringVar(&cfg.Listen, "listen", ":8443", "HTTPS address of the API")
	f.StringVar(&etcd, "etcd-endpoints", "", "comma-separated URLs of an external etcd cluster (default: embedded etcd)")
	f.StringVar(&cfg.EtcdPrefix, "etcd-prefix", "/slipway/", "key prefix in etcd")
	f.StringSliceVar(&cfg.Hostnames, "hostname", nil, "extra host names or IPs for the serving certificate")
	registryFlags(f, &cfg)
	f.StringVar(&cfg.Buildkitd, "buildkitd", "", `buildkitd binary for builds (default: next to slipway, then PATH; "none" turns builds off)`)
	f.StringVar(&cfg.HTPasswd, "htpasswd", "", "htpasswd file (bcrypt) of users who may log in")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return c
}

// storageFlag reads a distribution storage configuration from a YAML file.
type storageFlag struct{ s *configuration.Storage }

func (f storageFlag) String() string { return "" }
func (f storageFlag) Type() string   { return "FILE" }
func (f storageFlag) Set(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var st configuration.Storage
	if err := yaml.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%s is not a storage configuration: %w", path, err)
	}
	if len(st) == 0 {
		return fmt.Errorf("%s names no storage driver", path)
	}
	*f.s = st
	return nil
}

// registryFlags are the registry's flags, shared by start and registry.
func registryFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.StringVar(&cfg.RegistryListen, "registry-listen", "127.0.0.1:5000", "address of the integrated registry (plain HTTP on loopback, TLS elsewhere)")
	f.StringVar(&cfg.TLSCertFile, "tls-cert-file", "", "your own serving certificate (PEM) instead of one from the platform CA")
	f.StringVar(&cfg.TLSKeyFile, "tls-key-file", "", "the key of --tls-cert-file")
	f.Var(storageFlag{&cfg.RegistryStorage}, "registry-storage", "YAML file with a distribution storage section, such as {s3: {bucket: …}} (default: filesystem under the data dir)")
	importFlags(f, cfg)
}

// importFlags sets where import-image may reach.
func importFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.StringSliceVar(&cfg.Import.Registries, "import-allow", nil, "registries import-image may contact (host, host:port or *.domain); none by default")
	f.Func("import-allow-cidr", "internal address range import-image may dial anyway, such as 127.0.0.0/8 (repeatable)", func(s string) error {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return err
		}
		cfg.Import.CIDRs = append(cfg.Import.CIDRs, p)
		return nil
	})
	f.DurationVar(&cfg.Import.Interval, "import-interval", 15*time.Minute, "how often scheduled imports look for changes")
}

func registryCmd() *cobra.Command {
	var cfg server.Config
	var etcd string
	c := &cobra.Command{
		Use:   "registry",
		Short: "Run only the integrated registry, to scale it out",
		Long: `Run only the registry role against the cluster's etcd. Every replica must
share the registry storage (--data-dir on shared storage, or an object store)
and so the token keys and HTTP secret under DATA_DIR/registry.`,
		Example: `  slipway registry --data-dir /shared/slipway --registry-listen :5000 \
      --etcd-endpoints http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
			if etcd != "" {
				cfg.EtcdEndpoints = strings.Split(etcd, ",")
			}
			cfg.RegistryOnly = true
			srv, err := server.Start(c.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Slipway registry is running on %s.\n", srv.RegistryHost)
			return srv.Wait(c.Context())
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "slipway.local", "directory holding the registry's keys, secret and (by default) storage")
	f.StringVar(&etcd, "etcd-endpoints", "", "comma-separated URLs of the cluster's etcd (required)")
	f.StringVar(&cfg.EtcdPrefix, "etcd-prefix", "/slipway/", "key prefix in etcd")
	registryFlags(f, &cfg)
	var dataDir string
	rotate := &cobra.Command{
		Use:     "rotate-key",
		Short:   "Make a new signing key for registry tokens",
		Long:    "Make a new key for signing registry tokens. Registries sign with it within a minute; tokens signed with the old key stay valid until they expire (5 minutes), after which old key files may be deleted.",
		Example: "  slipway registry rotate-key --data-dir slipway.local",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			kid, err := registry.RotateKeys(filepath.Join(dataDir, "registry", "token-keys"))
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "New registry token key %s.\n", kid)
			return nil
		},
	}
	rotate.Flags().StringVar(&dataDir, "data-dir", "slipway.local", "the server's data directory")
	c.AddCommand(rotate)
	return c
}
