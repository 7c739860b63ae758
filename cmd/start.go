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

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/apiserver"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server"
	embedded "slipway.dev/slipway/store/etcd"
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
names an external cluster. The embedded etcd serves only https clients that
present a certificate of its own CA (DATA_DIR/pki/etcd); roles that share the
data directory (slipway node, slipway registry) use it without flags. The API serves HTTPS with a certificate signed by a
CA that Slipway generates into DATA_DIR/pki. At first start an "admin" user is
created; its password is printed once and saved in DATA_DIR/admin-password.
SIGTERM or Ctrl-C shuts down gracefully; a restart keeps all state.`,
		Example: `  # All-in-one on this machine
  slipway start --data-dir ./slipway.local

  # Against an external etcd cluster, with users from an htpasswd file
  slipway start --data-dir /var/lib/slipway \
      --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379 \
      --etcd-cafile /etc/slipway/etcd-ca.crt --etcd-certfile /etc/slipway/etcd-client.crt \
      --etcd-keyfile /etc/slipway/etcd-client.key \
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
	etcdTLSFlags(f, &cfg)
	f.StringSliceVar(&cfg.Hostnames, "hostname", nil, "extra host names or IPs for the serving certificate")
	registryFlags(f, &cfg)
	f.StringVar(&cfg.Buildkitd, "buildkitd", "", `buildkitd binary for builds (default: next to slipway, then PATH; "none" turns builds off)`)
	f.StringSliceVar(&cfg.BuildDenyCIDRs, "build-deny-cidr", nil, "address ranges build steps must not reach, such as the cluster's node network (the host itself, link-local addresses and etcd are always denied)")
	f.StringVar(&cfg.HTPasswd, "htpasswd", "", "htpasswd file (bcrypt) of users who may log in")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&cfg.Node.Disabled, "no-node", false, "run no pods in this process (nodes join with `slipway node`)")
	f.DurationVar(&cfg.NodeGracePeriod, "node-grace-period", 40*time.Second, "how long a node may miss heartbeats before it is NotReady")
	f.DurationVar(&cfg.PodEvictionTimeout, "pod-eviction-timeout", 30*time.Second, "how long pods of a NotReady node wait before they are made again elsewhere")
	nodeFlags(f, &cfg.Node)
	routerFlags(f, &cfg.Router)
	limitFlags(f, &cfg)
	leaderFlags(f, &cfg)
	f.Int64Var(&cfg.EtcdQuotaBackendBytes, "etcd-quota-backend-bytes", embedded.DefaultQuotaBackendBytes, "size of the embedded etcd's database past which it raises the NOSPACE alarm and refuses every write (reported in /readyz and metrics)")
	f.StringVar(&cfg.EtcdCompactionRetention, "etcd-compaction-retention", embedded.DefaultCompactionRetention, `history the embedded etcd keeps: a duration ("5m", periodic compaction) or a number of revisions ("100000")`)
	return c
}

// limitFlags are the platform's limits per project and per image stream,
// for every role that writes objects (start, registry).
func limitFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.IntVar(&cfg.MaxProjectsPerUser, "max-projects-per-user", apiserver.DefaultMaxProjectsPerUser, "most projects one user may create (cluster admins are not counted; -1: no cap)")
	f.Int64Var(&cfg.Limits.PerKind, "project-object-limit", server.DefaultProjectObjectLimit, "most objects of one kind a project may hold (creates past it are refused), so that no project can fill etcd")
	f.StringToInt64Var(&cfg.Limits.ByResource, "project-object-limits", map[string]int64{"images": server.DefaultProjectImageLimit}, "per-kind overrides of --project-object-limit, such as images=50000,pods=10000 (0: no cap)")
	f.IntVar(&cfg.Limits.TagsPerStream, "max-tags-per-stream", imagestreams.DefaultTagsPerStream, "most tags one image stream may hold; a push of a new tag past it is refused")
	f.IntVar(&cfg.Limits.HistoryPerTag, "max-tag-history", imagestreams.DefaultHistoryPerTag, "history entries kept per tag; older ones are dropped")
}

// etcdTLSFlags are the client certificate flags for --etcd-endpoints.
func etcdTLSFlags(f *pflag.FlagSet, cfg *server.Config) {
	f.StringVar(&cfg.EtcdTLS.CAFile, "etcd-cafile", "", "CA that signs etcd's serving certificate (default for https endpoints: DATA_DIR/pki/etcd/ca.crt, which the embedded etcd makes)")
	f.StringVar(&cfg.EtcdTLS.CertFile, "etcd-certfile", "", "client certificate to present to etcd (default for https endpoints: DATA_DIR/pki/etcd/client.crt)")
	f.StringVar(&cfg.EtcdTLS.KeyFile, "etcd-keyfile", "", "key of --etcd-certfile (default for https endpoints: DATA_DIR/pki/etcd/client.key)")
}

// nodeFlags are the node role's flags, shared by start and node.
func nodeFlags(f *pflag.FlagSet, n *server.NodeConfig) {
	f.StringVar(&n.DockerHost, "docker-host", "", "Docker engine that runs pods (default: $DOCKER_HOST, then /var/run/docker.sock)")
	f.StringVar(&n.Name, "node-name", "", "this node's name (default: the host name)")
	f.StringVar(&n.Address, "node-address", "", "this node's address, for pods' hostIP (default 127.0.0.1)")
	f.StringVar(&n.ContainerPrefix, "container-prefix", "slipway", "prefix of this node's container names, to share an engine with other nodes")
	f.StringVar(&n.Network, "pod-network", "bridge", "Docker network pods attach to")
	f.StringVar(&n.ServiceCIDR, "service-cidr", "10.43.0.0/16", "range of service ClusterIPs")
	f.BoolVar(&n.NoProxy, "no-proxy", false, "run no service proxy on this node (another on the machine serves it)")
	f.BoolVar(&n.NoIsolation, "no-network-isolation", false, "let every pod reach every other project's pods (no nftables rules; NetworkPolicies are not enforced)")
	n.ProxyMode = string(proxy.ModeAuto)
	f.Var(proxyModeFlag{&n.ProxyMode}, "proxy-mode", "how the service proxy forwards: nftables (kernel DNAT, table ip slipway-proxy; needs CAP_NET_ADMIN), userspace (relays in this process), or auto (nftables when the kernel allows it, else userspace; the choice is logged)")
	f.StringToStringVar(&n.Labels, "node-labels", nil, "labels of this node, for nodeSelector: zone=a,disk=ssd")
	f.DurationVar(&n.HeartbeatInterval, "heartbeat-interval", 10*time.Second, "how often this node renews its Ready condition (keep it under half of the server's --node-grace-period)")
}

func nodeCmd() *cobra.Command {
	var cfg server.RemoteNodeConfig
	c := &cobra.Command{
		Use:   "node",
		Short: "Run a node: the agent that runs pods on Docker, and the service proxy",
		Long: `Run the node role against the cluster's API: register this machine as a Node,
run the pods the scheduler binds to it on the Docker engine, and proxy
services. The node holds no etcd credentials: it acts through the API as
system:node:NAME, with a client certificate of the platform CA that it gets
once by joining with a one-use bootstrap token (slipway adm
create-bootstrap-token NAME), kept under DATA_DIR/node-credentials/NAME. It
reads only the pods bound to it and what they need, and writes only its own
Node and its pods' status. Deleting the Node (slipway adm revoke-node NAME)
revokes the credential; the node then joins again only with a new token.
With --listen it serves its pods' logs and exec over TLS with its
certificate, to API servers only. Pods' volumes live under DATA_DIR/node.`,
		Example: `  # On the API server's machine, as a cluster admin
  slipway adm create-bootstrap-token worker-1 > worker-1.token

  # On the node
  slipway node --server https://10.0.0.1:8443 --certificate-authority ca.crt \
      --bootstrap-token-file worker-1.token --node-name worker-1 --listen :10250

  # A second node on the same machine and engine
  slipway node --server https://127.0.0.1:8443 --certificate-authority slipway.local/pki/ca.crt \
      --bootstrap-token-file second.token --node-name second --container-prefix second --no-proxy`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			for k := range cfg.Node.Labels {
				if strings.HasPrefix(k, api.NodeRestrictionLabelPrefix) {
					return usagef("--node-labels %s: a node may not set labels under %s on its own Node (they select where workloads run); a cluster admin sets them on the Node (slipway get node NAME -o yaml, add the label, slipway apply -f)", k, api.NodeRestrictionLabelPrefix)
				}
			}
			slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
			abs, err := filepath.Abs(cfg.DataDir)
			if err != nil {
				return err
			}
			cfg.DataDir = abs
			if err := os.MkdirAll(abs, 0o700); err != nil {
				return err
			}
			n, err := server.StartRemoteNode(c.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Slipway node %s is running.\n", n.Name)
			<-c.Context().Done()
			if n.ProxyDone != nil {
				select {
				case <-n.ProxyDone:
				case <-time.After(10 * time.Second):
					slog.Warn("proxy: did not stop in time; its nftables table stays until the next start replaces it")
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Server, "server", "", "URL of the cluster's API, such as https://10.0.0.1:8443 (required)")
	f.StringVar(&cfg.CAFile, "certificate-authority", "", "the platform CA, the API server's DATA_DIR/pki/ca.crt (required)")
	f.StringVar(&cfg.BootstrapTokenFile, "bootstrap-token-file", "", "`FILE` holding a one-use token from slipway adm create-bootstrap-token NAME, to join the first time or after a revocation")
	f.StringVar(&cfg.DataDir, "data-dir", "slipway.local", "where the node keeps its credential and its pods' volumes")
	f.StringVar(&cfg.Node.Listen, "listen", "", "address to serve pod logs and exec to API servers over TLS, such as :10250")
	nodeFlags(f, &cfg.Node)
	return c
}

// pauseCmd is each pod's sandbox process: it holds the pod's network
// namespace and reaps orphans until it is stopped.
func pauseCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "pause",
		Short:   "Hold a pod's namespaces (run by the node agent in each pod's sandbox)",
		Example: "  slipway pause",
		Hidden:  true,
		Args:    cobra.NoArgs,
		Run:     func(*cobra.Command, []string) { runtime.PauseMain() },
	}
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
	f.Var(storageFlag{&cfg.RegistryStorage}, "registry-storage", "YAML file with a distribution storage section, for S3 or an S3-compatible store:\n{s3: {bucket: B, region: us-east-1, regionendpoint: http://HOST:8333, forcepathstyle: true, secure: false, accesskey: K, secretkey: S, rootdirectory: /slipway}}\n(default: the filesystem under the data dir; replicas sharing a bucket must share DATA_DIR/registry too)")
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
	f.Func("mirror", "serve the upstream registry `NAME=URL[,credentials=FILE][,ttl=5m][,expire=168h]` read-through as NAME/REPO, pull-only, for signed-in users; the URL's host must be on --import-allow (give a master the same --mirror as its registries; repeatable). A tag is checked with the upstream at most once per ttl (0: on every pull) and served from the cache while the upstream is down; cached manifests nobody pulled for expire (0: never) are dropped, and `slipway adm gc` frees their blobs. credentials=FILE holds USERNAME:PASSWORD for the upstream (one line, read at every fetch, so it can be replaced to rotate); it goes only to the upstream and the token service it names, never to users; but what that account may pull, every signed-in user may pull through the mirror, so give it no more than they should read. Example: --mirror docker.io=https://registry-1.docker.io,credentials=/etc/slipway/hub.cred,ttl=10m --import-allow '*.docker.io,production.cloudflare.docker.com', then docker pull 127.0.0.1:5000/docker.io/library/alpine", func(s string) error {
		m, err := registry.ParseMirror(s)
		if err != nil {
			return err
		}
		cfg.Mirrors = append(cfg.Mirrors, m)
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
      --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379,https://10.0.0.3:2379`,
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
	f.StringVar(&cfg.RegistryHost, "registry-host", "", "host:port clients reach the registry at, when it differs from --registry-listen: the load balancer in front of the replicas, as the masters' --registry names it (default: the listen address)")
	f.StringVar(&etcd, "etcd-endpoints", "", "comma-separated URLs of the cluster's etcd (required)")
	f.StringVar(&cfg.EtcdPrefix, "etcd-prefix", "/slipway/", "key prefix in etcd")
	etcdTLSFlags(f, &cfg)
	registryFlags(f, &cfg)
	limitFlags(f, &cfg)
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
