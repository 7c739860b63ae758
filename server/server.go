// Package server assembles Slipway's roles into running processes: the
// all-in-one `slipway start` (embedded etcd, API, controllers, registry,
// node) and the separate master, registry and node roles. The controllers
// run only in the process elected among those sharing the etcd.
package server

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slipway.dev/slipway/pki"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/distribution/distribution/v3/configuration"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/apiserver"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/cluster/node"
	"slipway.dev/slipway/console"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/leader"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/router"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// Config configures the all-in-one server.
type Config struct {
	// DataDir holds etcd's data (when embedded), the PKI, the audit log and
	// the admin password. Required.
	DataDir string
	// Listen is the API's HTTPS address. Default ":8443"; port 0 picks a
	// free port.
	Listen string
	// EtcdEndpoints selects an external etcd cluster; empty embeds one.
	EtcdEndpoints []string
	// EtcdTLS is the client certificate for EtcdEndpoints. Default, for
	// https endpoints: the one the embedded etcd made in DataDir/pki/etcd.
	EtcdTLS etcd.TLSFiles
	// EtcdPrefix is the key prefix in etcd. Default "/slipway/".
	EtcdPrefix string
	// Hostnames are extra names and addresses for the serving certificate;
	// localhost, 127.0.0.1, ::1 and the machine's host name are always in.
	Hostnames []string
	// HTPasswd is an optional htpasswd file of users.
	HTPasswd string
	// RegistryListen is the registry's address. Default 127.0.0.1:5000;
	// port 0 picks a free port. Plain HTTP on loopback, TLS with the
	// platform certificate anywhere else.
	RegistryListen string
	// RegistryStorage is a distribution storage configuration; default
	// the filesystem under DataDir/registry/storage.
	RegistryStorage configuration.Storage
	// RegistryFaults fails named steps of a push, for tests.
	RegistryFaults *registry.FaultInjector
	// RegistryOnly runs only the registry role (`slipway registry`), for
	// scaling it out: it needs EtcdEndpoints and shares the data dir's
	// registry keys, HTTP secret and storage with its peers.
	RegistryOnly bool
	// Import says which external registries import-image may reach.
	Import registry.ImportPolicy
	// Mirrors are pull-through mirrors the registry serves (each
	// upstream host must be on Import's allow-list).
	Mirrors []registry.Mirror
	// Buildkitd is the buildkitd binary builds run on. Default: found next
	// to slipway or on PATH; "none" turns builds off.
	Buildkitd string
	// NoScanner runs no scan controller: images are never scanned (and
	// policies that need a scan refuse them). For benchmarks that time
	// other paths on both sides; never set by `slipway start`.
	NoScanner bool
	// BuildDenyCIDRs are ranges build steps must not reach, besides the
	// host itself and link-local addresses (always denied): the cluster's
	// other nodes, say. The hosts of EtcdEndpoints are always denied.
	BuildDenyCIDRs []string
	// TLSCertFile and TLSKeyFile are a certificate of your own for the
	// API and a non-loopback registry. Default: one signed by the
	// platform CA in DataDir/pki.
	TLSCertFile, TLSKeyFile string
	// Out receives what an operator must see once, such as the admin
	// password. Default os.Stdout.
	Out io.Writer
	// Node is the node role that `slipway start` runs in process.
	Node NodeConfig
	// Router is the edge router that `slipway start` runs in process.
	Router RouterConfig
	// Limits are the platform's caps per project (objects of each kind)
	// and per image stream (tags, history), so that no project fills
	// etcd. Zero fields take the defaults below (DefaultLimits).
	Limits store.Limits
	// MaxProjectsPerUser caps the projects one user creates (cluster
	// admins are not counted), so the per-project limits cannot be
	// multiplied. Default apiserver.DefaultMaxProjectsPerUser; negative:
	// no cap.
	MaxProjectsPerUser int
	// EtcdQuotaBackendBytes and EtcdCompactionRetention configure the
	// embedded etcd (etcd.Config's QuotaBackendBytes and
	// CompactionRetention; defaults 4 GiB and "5m"). An external
	// cluster keeps its own settings; its space is reported all the same.
	EtcdQuotaBackendBytes   int64
	EtcdCompactionRetention string
	// MasterOnly runs only the master role (`slipway master`): the API,
	// the controllers and the scheduler, without registry or node; it
	// needs EtcdEndpoints and RegistryHost. Any number of masters (and
	// all-in-ones) may share one etcd: one at a time is elected to run
	// the controllers.
	MasterOnly bool
	// RegistryHost is the cluster's registry (host:port), for the master
	// role, which runs none of its own; for the registry role, the name it
	// is reached at when that is not its listen address (a load balancer).
	RegistryHost string
	// LeaderLease is the lease of the controllers' election: how long a
	// leader that stopped renewing (killed, paused, cut off) keeps the
	// role. Default leader.DefaultLease (15s).
	LeaderLease time.Duration
	// NodeGracePeriod is how long a node may miss heartbeats before it is
	// NotReady (default 40s); PodEvictionTimeout is how long its pods then
	// wait before they are made again elsewhere (default 30s).
	NodeGracePeriod, PodEvictionTimeout time.Duration
}

// Default platform limits: large enough for real projects (a busy CI
// project pushes a few thousand images before pruning), small enough
// that one project's objects are a small part of etcd's quota.
const (
	DefaultProjectObjectLimit = 5000
	DefaultProjectImageLimit  = 20000
)

// DefaultLimits fills the zero fields of l.
func DefaultLimits(l store.Limits) store.Limits {
	if l.PerKind == 0 {
		l.PerKind = DefaultProjectObjectLimit
	}
	by := map[string]int64{"images": DefaultProjectImageLimit}
	for k, v := range l.ByResource {
		by[k] = v
	}
	l.ByResource = by
	l.TagsPerStream = cmp.Or(l.TagsPerStream, imagestreams.DefaultTagsPerStream)
	l.HistoryPerTag = cmp.Or(l.HistoryPerTag, imagestreams.DefaultHistoryPerTag)
	if l.Hint == "" {
		l.Hint = "ask a cluster admin to raise the platform's limits (slipway start --project-object-limit, --project-object-limits KIND=N, --max-tags-per-stream)"
	}
	return l
}

// Validate fills defaults and checks what is required.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("server: --data-dir is required")
	}
	if err := registry.ValidateMirrors(c.Mirrors, c.Import); err != nil {
		return err
	}
	by := map[string]int64{}
	for k, v := range c.Limits.ByResource {
		r, ok := api.Lookup(k)
		if !ok || !r.Namespaced || v < 0 {
			return fmt.Errorf("server: --project-object-limits %s=%d: give a number of at least 0 (no cap) for a kind that lives in projects (images, imagestreams, pods, …)", k, v)
		}
		by[r.Name] = v
	}
	c.Limits.ByResource = by
	c.Limits = DefaultLimits(c.Limits)
	if c.Limits.PerKind < 0 || c.Limits.TagsPerStream < 0 || c.Limits.HistoryPerTag < 0 {
		return fmt.Errorf("server: limits must be positive: --project-object-limit %d, --max-tags-per-stream %d, --max-tag-history %d", c.Limits.PerKind, c.Limits.TagsPerStream, c.Limits.HistoryPerTag)
	}
	if c.Listen == "" {
		c.Listen = ":8443"
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("server: --listen %q: %w", c.Listen, err)
	}
	if c.RegistryListen == "" {
		c.RegistryListen = "127.0.0.1:5000"
	}
	if c.EtcdPrefix == "" {
		c.EtcdPrefix = store.DefaultPrefix
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if hb, grace := cmp.Or(c.Node.HeartbeatInterval, 10*time.Second), cmp.Or(c.NodeGracePeriod, 40*time.Second); grace < 2*hb {
		return fmt.Errorf("server: --node-grace-period %s must be at least twice the heartbeat interval (%s), or healthy nodes flap to NotReady", grace, hb)
	}
	if !c.EtcdTLS.IsZero() {
		if err := c.EtcdTLS.Check(); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	if c.MasterOnly && (len(c.EtcdEndpoints) == 0 || c.RegistryHost == "") {
		return errors.New("server: the master role needs --etcd-endpoints of the cluster's etcd and --registry of its registry (host:port)")
	}
	if c.LeaderLease != 0 && c.LeaderLease < time.Second {
		return fmt.Errorf("server: --leader-lease %s is too short: give at least 1s", c.LeaderLease)
	}
	if c.RegistryOnly && len(c.EtcdEndpoints) == 0 {
		return errors.New("server: the registry role needs --etcd-endpoints of the cluster's etcd")
	}
	return nil
}

// Server is a running all-in-one Slipway.
type Server struct {
	cfg Config
	URL string // https://host:port of the API
	// RegistryHost is host:port of the integrated registry.
	RegistryHost string
	Registry     *registry.Registry
	regHTTP      *http.Server
	userCert     tls.Certificate
	PKI          *PKI
	API          *apiserver.Server
	Store        *store.Store
	member       *etcd.Member
	client       *clientv3.Client
	http         *http.Server
	audit        *os.File
	cancel       context.CancelFunc
	// buildsDone closes when the buildkitd supervisor has stopped
	// buildkitd and removed the build network (bridge, firewall chains),
	// which shutdown waits for: the process must not exit first.
	buildsDone  chan struct{}
	buildDaemon *builders.Daemon
	// Elector campaigns for the controllers' leadership; leaderDone
	// closes once it has stopped (and resigned).
	Elector    *leader.Elector
	leaderDone chan struct{}
	// proxyDone closes when the service proxy has stopped (and removed
	// its nftables table); nil when none runs.
	proxyDone <-chan struct{}
	nodeToken string
	pods      *podGateway
	trust     *trust
	// Agent is the in-process node agent, when one runs.
	Agent *node.Agent
	// Router is the in-process edge router, when one runs.
	Router *router.Router
	reg    *prometheus.Registry
	// cleaner removes a deleted project's registry content, once the
	// registry runs.
	cleaner registryCleaner
	done    chan struct{}
	errc    chan error
}

// Start brings up etcd, the API and the controllers, and returns once the
// API answers /readyz. On error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	s := &Server{cfg: cfg, done: make(chan struct{}), errc: make(chan error, 2)}
	defer func() {
		if err != nil {
			s.shutdown(context.Background())
		}
	}()
	endpoints := cfg.EtcdEndpoints
	if len(endpoints) == 0 {
		if s.member, err = s.startEmbeddedEtcd(); err != nil {
			return nil, err
		}
		endpoints = []string{s.member.ClientURL}
		// Same process: skip gRPC and TCP altogether.
		s.client = s.member.InProcessClient()
	} else if s.client, err = etcd.ClientTLS(s.etcdClientTLS(), endpoints...); err != nil {
		return nil, err
	}
	s.Store = store.New(s.client, store.WithPrefix(cfg.EtcdPrefix), store.WithLimits(cfg.Limits))
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Hostnames...)
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	if host, _, _ := net.SplitHostPort(cfg.Listen); host != "" && host != "0.0.0.0" && host != "::" {
		hosts = append(hosts, host)
	}
	if s.PKI, err = LoadOrCreatePKI(filepath.Join(cfg.DataDir, "pki"), dedupe(hosts)); err != nil {
		return nil, err
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		if s.userCert, err = tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("server: --tls-cert-file/--tls-key-file: %w", err)
		}
	}
	if s.audit, err = os.OpenFile(filepath.Join(cfg.DataDir, "audit.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
		return nil, fmt.Errorf("server: audit log: %w", err)
	}
	if s.nodeToken, err = localToken(); err != nil {
		return nil, err
	}
	nodes, err := s.newNodeServices()
	if err != nil {
		return nil, err
	}
	s.pods = &podGateway{token: s.nodeToken, store: s.Store, nodes: nodes}
	if s.trust, err = s.newTrust(); err != nil {
		return nil, err
	}
	s.reg = s.metrics()
	s.API, err = apiserver.New(apiserver.Config{Store: s.Store, HTPasswd: cfg.HTPasswd, Audit: s.audit, Webhooks: &builders.Webhooks{Store: s.Store}, Pods: s.pods, Signer: s.trust, Rebaser: registryRebaser{s}, BuildLogs: filepath.Join(cfg.DataDir, "builds"), ServiceCIDR: cfg.Node.ServiceCIDR,
		ProjectCleaner: &s.cleaner, RegistryAdmin: &s.cleaner, Metrics: s.reg, MaxProjectsPerUser: cfg.MaxProjectsPerUser, Nodes: nodes})
	if err != nil {
		return nil, err
	}
	bootCtx, cancelBoot := context.WithTimeout(ctx, 60*time.Second)
	defer cancelBoot()
	if err := rbac.Bootstrap(bootCtx, s.Store); err != nil {
		hint := "check --etcd-endpoints"
		if s.member == nil && s.etcdClientTLS().IsZero() {
			hint += "; the embedded etcd of `slipway start` serves only https:// clients with a certificate: give --etcd-cafile, --etcd-certfile and --etcd-keyfile (DATA/pki/etcd/ca.crt, client.crt, client.key), or share its data directory"
		}
		return nil, fmt.Errorf("server: etcd at %s is not answering (%w); %s", strings.Join(endpoints, ","), err, hint)
	}
	if cfg.RegistryOnly {
		return s.startRegistryOnly(bootCtx)
	}
	if err := s.API.Authenticator().Bootstrap(bootCtx, cfg.DataDir, func(password, file string) {
		fmt.Fprintf(cfg.Out, "\nCreated user \"admin\" with password: %s\n(shown once; also saved in %s, mode 0600)\n\n", password, file)
	}); err != nil {
		return nil, fmt.Errorf("server: creating the admin user: %w", err)
	}
	runCtx, err := s.runCaches(bootCtx)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listen on %s: %w (is another slipway running? use --listen)", cfg.Listen, err)
	}
	apiHandler := s.API.Handler()
	con, err := console.New(console.Config{API: apiHandler, Authorizer: s.API.Authorizer(), RegistryTransport: s.registryTransport()})
	if err != nil {
		ln.Close()
		return nil, err
	}
	s.http = &http.Server{
		Handler:           s.readyz(withConsole(con, apiHandler)),
		TLSConfig:         s.tlsConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	s.URL = "https://" + net.JoinHostPort(host, port)
	s.API.SetMirrors(s.mirrorNames())
	if cfg.MasterOnly {
		s.RegistryHost = cfg.RegistryHost
		s.API.SetRegistryHost(s.RegistryHost)
	} else if err := s.startRegistry(runCtx); err != nil {
		ln.Close()
		return nil, err
	}
	s.startTrust(runCtx)
	if err := s.startControllers(runCtx); err != nil {
		ln.Close()
		return nil, err
	}
	if !cfg.MasterOnly {
		if err := s.startRouter(runCtx); err != nil {
			ln.Close()
			return nil, err
		}
	}
	if !cfg.Node.Disabled && !cfg.MasterOnly {
		if err := s.startNode(runCtx); err != nil {
			ln.Close()
			return nil, err
		}
	}
	go func() { s.errc <- s.http.ServeTLS(ln, "", "") }()
	if s.member != nil {
		go func() {
			if err, ok := <-s.member.Err(); ok && err != nil {
				s.errc <- fmt.Errorf("embedded etcd: %w", err)
			}
		}()
	}
	slog.Info("slipway is serving", "api", s.URL, "registry", s.RegistryHost, "dataDir", cfg.DataDir, "etcd", strings.Join(endpoints, ","))
	return s, nil
}

// registryCleaner hands the project finalizer to the registry, which is
// made after the API. Until then, deletions fail and are retried.
type registryCleaner struct {
	reg atomic.Pointer[registry.Registry]
}

func (c *registryCleaner) CleanProject(ctx context.Context, project string) error {
	r := c.reg.Load()
	if r == nil {
		return errors.New("the registry is not running yet")
	}
	return r.CleanProject(ctx, project)
}

func (s *Server) tlsConfig() *tls.Config {
	cert := s.PKI.Cert
	if s.userCert.Certificate != nil {
		cert = s.userCert
	}
	// Nodes authenticate with a certificate of the platform CA
	// (apiserver/nodes.go); everyone else with a bearer token.
	pool := x509.NewCertPool()
	pool.AddCert(s.PKI.CA)
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
}

// registryTransport reaches the integrated registry, which serves TLS
// with the platform's certificate off loopback: the system's roots and
// the platform CA are trusted.
func (s *Server) registryTransport() http.RoundTripper {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	pool.AddCert(s.PKI.CA)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return tr
}

// buildDenyCIDRs are BuildDenyCIDRs and the etcd endpoints' addresses.
func (s *Server) buildDenyCIDRs() []string {
	out := append([]string{}, s.cfg.BuildDenyCIDRs...)
	for _, ep := range s.cfg.EtcdEndpoints {
		u, err := url.Parse(ep)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(u.Hostname()); ip != nil && !ip.IsLoopback() {
			bits := 32
			if ip.To4() == nil {
				bits = 128
			}
			out = append(out, fmt.Sprintf("%s/%d", ip, bits))
		}
	}
	return out
}

// runCaches starts the API's caches and controllers and waits until the
// caches have synced.
func (s *Server) runCaches(bootCtx context.Context) (context.Context, error) {
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.API.Run(runCtx)
	select {
	case <-s.API.Ready():
		return runCtx, nil
	case <-bootCtx.Done():
		return nil, errors.New("server: caches did not sync within 60s; is etcd healthy?")
	}
}

// startRegistryOnly runs the caches the registry needs (tokens, RBAC,
// projects) and the registry, without serving the API.
func (s *Server) startRegistryOnly(bootCtx context.Context) (*Server, error) {
	runCtx, err := s.runCaches(bootCtx)
	if err != nil {
		return nil, err
	}
	if err := s.startRegistry(runCtx); err != nil {
		return nil, err
	}
	slog.Info("slipway registry is serving", "registry", s.RegistryHost, "etcd", strings.Join(s.cfg.EtcdEndpoints, ","))
	return s, nil
}

// startRegistry serves the integrated registry: plain HTTP on loopback, as
// Docker trusts 127.0.0.0/8 without TLS, and TLS anywhere else.
func (s *Server) startRegistry(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.RegistryListen)
	if err != nil {
		return fmt.Errorf("server: registry listen on %s: %w (use --registry-listen)", s.cfg.RegistryListen, err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	s.RegistryHost = net.JoinHostPort(host, port)
	if s.cfg.RegistryOnly && s.cfg.RegistryHost != "" {
		// A replica behind a load balancer: image records, tokens and
		// pull references name the balancer, as the masters do.
		s.RegistryHost = s.cfg.RegistryHost
	}
	s.API.SetRegistryHost(s.RegistryHost)
	s.Registry, err = registry.New(ctx, registry.Config{
		Store:   s.Store,
		Authn:   s.API.Authenticator(),
		Authz:   s.API.Authorizer(),
		Project: s.API.Project,
		Dir:     filepath.Join(s.cfg.DataDir, "registry"),
		Storage: s.cfg.RegistryStorage,
		Host:    s.RegistryHost,
		Faults:  s.cfg.RegistryFaults,
		Import:  s.cfg.Import,
		Mirrors: s.cfg.Mirrors,
		SignRebase: func(ctx context.Context, project, image string, prov *signing.Provenance) error {
			return s.trust.signRebase(ctx, project, image, prov)
		},
	})
	if err != nil {
		ln.Close()
		return err
	}
	s.cleaner.reg.Store(s.Registry)
	go s.Registry.Run(ctx)
	go s.Registry.RunRetention(ctx, retentionInterval)
	s.regHTTP = &http.Server{
		Handler:           s.Registry,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	loopback := ip != nil && ip.IsLoopback()
	go func() {
		var err error
		if loopback {
			err = s.regHTTP.Serve(ln)
		} else {
			s.regHTTP.TLSConfig = s.tlsConfig()
			err = s.regHTTP.ServeTLS(ln, "", "")
		}
		s.errc <- err
	}()
	return nil
}

// startEmbeddedEtcd reuses the addresses of the first start, so the member's
// recorded peer URL stays valid across restarts.
func (s *Server) startEmbeddedEtcd() (*etcd.Member, error) {
	addrFile := filepath.Join(s.cfg.DataDir, "etcd.json")
	var addrs struct{ Client, Peer string }
	if data, err := os.ReadFile(addrFile); err == nil {
		_ = json.Unmarshal(data, &addrs)
	}
	if addrs.Client == "" || addrs.Peer == "" {
		var err error
		if addrs.Client, err = etcd.FreeAddr("127.0.0.1:0"); err != nil {
			return nil, err
		}
		if addrs.Peer, err = etcd.FreeAddr("127.0.0.1:0"); err != nil {
			return nil, err
		}
		data, _ := json.Marshal(addrs)
		if err := pki.WriteAtomic(addrFile, data, 0o600); err != nil {
			return nil, err
		}
	}
	// Clients and peers need a certificate of etcd's own CA: build steps,
	// pods and other local users must not talk to it. The server itself
	// uses the in-process client; roles sharing the data directory use
	// the client certificate.
	pki, err := etcd.EnsurePKI(filepath.Join(s.cfg.DataDir, "pki", "etcd"))
	if err != nil {
		return nil, err
	}
	return etcd.Start(etcd.Config{Name: "slipway", Dir: filepath.Join(s.cfg.DataDir, "etcd"), ClientAddr: addrs.Client, PeerAddr: addrs.Peer, TLS: &pki.Member,
		QuotaBackendBytes: s.cfg.EtcdQuotaBackendBytes, CompactionRetention: s.cfg.EtcdCompactionRetention})
}

// etcdClientTLS is the client certificate for external endpoints: the
// configured one, else (for https endpoints) the one an embedded etcd made
// in the shared data directory.
func (s *Server) etcdClientTLS() etcd.TLSFiles {
	if !s.cfg.EtcdTLS.IsZero() {
		return s.cfg.EtcdTLS
	}
	for _, ep := range s.cfg.EtcdEndpoints {
		if !strings.HasPrefix(ep, "https://") {
			return etcd.TLSFiles{}
		}
	}
	if f, ok := etcd.ExistingPKI(filepath.Join(s.cfg.DataDir, "pki", "etcd")); ok {
		return f
	}
	return etcd.TLSFiles{}
}

// EtcdClientTLS is the client certificate for EtcdEndpoints, for tools
// and benchmarks on the same machine; zero for plain HTTP.
func (s *Server) EtcdClientTLS() etcd.TLSFiles {
	if s.member != nil {
		if f, ok := etcd.ExistingPKI(filepath.Join(s.cfg.DataDir, "pki", "etcd")); ok {
			return f
		}
	}
	return s.etcdClientTLS()
}

// Wait blocks until the server fails or ctx ends, then shuts down
// gracefully: in-flight requests finish (up to 20s), watches close, and
// etcd stops cleanly.
func (s *Server) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s.shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close shuts the server down.
func (s *Server) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s.shutdown(ctx)
}

func (s *Server) shutdown(ctx context.Context) {
	// Stopping the controllers first also ends open watches, which
	// http.Server.Shutdown would otherwise wait on until its deadline.
	if s.cancel != nil {
		s.cancel()
	}
	if s.leaderDone != nil {
		// The elector resigns once the controllers have stopped, so
		// another process takes over at once, not after the lease.
		select {
		case <-s.leaderDone:
		case <-ctx.Done():
		}
	}
	if s.http != nil {
		_ = s.http.Shutdown(ctx)
	}
	if s.regHTTP != nil {
		_ = s.regHTTP.Shutdown(ctx)
	}
	if s.buildsDone != nil {
		// buildkitd stops on the cancel above; its network is removed
		// after it exits. Exiting before that left the bridge and the
		// firewall chains on the host.
		select {
		case <-s.buildsDone:
		case <-ctx.Done():
			slog.Warn("builds: buildkitd did not stop in time; its build network may be left on the host until the next start removes it")
		}
	}
	if s.proxyDone != nil {
		select {
		case <-s.proxyDone:
		case <-ctx.Done():
			slog.Warn("proxy: did not stop in time; its nftables table stays until the next start replaces it")
		}
	}
	if s.client != nil {
		s.client.Close()
	}
	if s.member != nil {
		s.member.Close()
	}
	if s.API != nil {
		// After the HTTP servers' shutdown, so every request has ended:
		// the API's last buffered audit lines reach the log.
		_ = s.API.Close()
	}
	if s.audit != nil {
		s.audit.Close()
	}
}

// EtcdEndpoints are the client URLs of the etcd this server uses.
func (s *Server) EtcdEndpoints() []string {
	if s.member != nil {
		return []string{s.member.ClientURL}
	}
	return s.cfg.EtcdEndpoints
}

// AdminClient logs in as the admin user created at first start, trusting
// this server's CA. For tests, benchmarks and tools on the same machine.
func (s *Server) AdminClient(ctx context.Context) (*client.Client, error) {
	ca, err := os.ReadFile(s.PKI.CAFile)
	if err != nil {
		return nil, err
	}
	pw, err := os.ReadFile(s.AdminPasswordFile())
	if err != nil {
		return nil, err
	}
	c, err := client.New(s.URL, client.WithCAData(ca))
	if err != nil {
		return nil, err
	}
	resp, err := c.Login(ctx, "admin", strings.TrimSpace(string(pw)))
	if err != nil {
		return nil, err
	}
	return client.New(s.URL, client.WithCAData(ca), client.WithToken(resp.Token))
}

// AdminPasswordFile is where the first start saved the admin password.
func (s *Server) AdminPasswordFile() string { return filepath.Join(s.cfg.DataDir, "admin-password") }

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range in {
		if h != "" && !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	return out
}

// withConsole serves the web console under console.Prefix and the API
// everywhere else; the console reaches the API through apiHandler, as the
// user of its session.
func withConsole(con http.Handler, apiHandler http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, console.Prefix):
			con.ServeHTTP(w, r)
		case r.URL.Path == strings.TrimSuffix(console.Prefix, "/") && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			http.Redirect(w, r, console.Prefix, http.StatusMovedPermanently)
		default:
			apiHandler.ServeHTTP(w, r)
		}
	})
}
