package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/cluster/netpol"
	"slipway.dev/slipway/cluster/node"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/cluster/runtime"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/store"
)

// NodeConfig configures the node role: the agent that runs pods on a
// Docker engine, and the service proxy.
type NodeConfig struct {
	// Disabled keeps the node role out of `slipway start`.
	Disabled bool
	// DockerHost is the engine, such as unix:///var/run/docker.sock.
	// Default: DOCKER_HOST, else the engine's default socket.
	DockerHost string
	// Name is the Node's name. Default: the host name.
	Name string
	// Address is the node's address for pods' hostIP. Default 127.0.0.1.
	Address string
	// ContainerPrefix tells this agent's containers from others' on the
	// same engine. Default "slipway".
	ContainerPrefix string
	// Network is the Docker network pods attach to. Default "bridge".
	Network string
	// Listen, if set, serves the agent's log and exec endpoints for API
	// servers in other processes, such as ":10250".
	Listen string
	// NoProxy keeps the service proxy off (a second agent on the same
	// machine shares the first's).
	NoProxy bool
	// NoIsolation turns project network isolation off: no nftables rules,
	// and NetworkPolicies are not enforced (cluster/netpol).
	NoIsolation bool
	// ServiceCIDR is the ClusterIP range. Default 10.43.0.0/16.
	ServiceCIDR string
	// ProxyMode is the service proxy's mode: auto (default), nftables or
	// userspace (proxy.ParseMode).
	ProxyMode string
	// Labels are the Node's labels.
	Labels map[string]string
	// HeartbeatInterval; default 10s.
	HeartbeatInterval time.Duration
	// MirrorImage maps a pod's outside image to a pull through the
	// registry's mirror (registry.MirrorImage). Set by the server from
	// the mirrors it serves, not a flag; nil pulls images from where
	// they name.
	MirrorImage func(image string) (string, bool)
}

// podGateway hands pods/log and pods/exec to the agent that runs the pod:
// this process's own (with a token that never leaves the process), or
// another's over TLS, where each side checks the other's certificate.
type podGateway struct {
	mu    sync.Mutex
	local *node.Agent
	name  string
	token string
	store *store.Store
	nodes *nodeServices
}

func (g *podGateway) setLocal(a *node.Agent, name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.local, g.name = a, name
}

func (g *podGateway) ServePod(w http.ResponseWriter, r *http.Request, pod *api.Pod, sub string) {
	g.mu.Lock()
	local, name := g.local, g.name
	g.mu.Unlock()
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/pods/" + pod.Namespace + "/" + pod.Name + "/" + sub
	r2.Header.Del("Authorization") // the user's token is not the agent's business
	if local != nil && pod.Spec.NodeName == name {
		r2.Header.Set("Authorization", "Bearer "+g.token)
		local.Handler().ServeHTTP(w, r2)
		return
	}
	o, err := g.store.Get(r.Context(), api.Nodes, "", pod.Spec.NodeName)
	if err != nil {
		http.Error(w, fmt.Sprintf("node %s of pod %s: %v", pod.Spec.NodeName, pod.Name, err), http.StatusBadGateway)
		return
	}
	addr := o.(*api.Node).Annotations[AgentEndpointAnnotation]
	if addr == "" {
		http.Error(w, fmt.Sprintf("node %s does not serve logs and exec to other processes; start it with --listen", pod.Spec.NodeName), http.StatusBadGateway)
		return
	}
	target, err := url.Parse(addr)
	if err == nil && target.Scheme != "https" {
		err = fmt.Errorf("node %s serves logs and exec at %s, not over https; restart it with this version's `slipway node`", pod.Spec.NodeName, addr)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = g.nodes.transport(pod.Spec.NodeName)
	rp.FlushInterval = -1
	rp.ServeHTTP(w, r2)
}

// AgentEndpointAnnotation on a Node is where its agent serves logs and
// exec, such as https://10.0.0.5:10250.
const AgentEndpointAnnotation = "slipway.dev/agent-endpoint"

// localToken is what this process's API server presents to its own
// agent; it never leaves the process.
func localToken() (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(buf), nil
}

// StartNode runs the node role: an agent on the Docker engine and, unless
// turned off, the service proxy, on st (the store in `slipway start`, the
// API as the node in `slipway node`). It returns the agent and a channel
// closed once the service proxy has stopped after ctx ended (and removed
// its nftables table); nil when no proxy runs. With cfg.Listen the agent
// serves logs and exec over TLS with listenTLS.
func StartNode(ctx context.Context, st store.Interface, cfg NodeConfig, dataDir, token string, listenTLS *tls.Config, auth func(ctx context.Context, pod *api.Pod, image string) (string, error), admit func(context.Context, *api.Pod) error) (*node.Agent, <-chan struct{}, error) {
	mode, err := proxy.ParseMode(cfg.ProxyMode)
	if err != nil {
		return nil, nil, fmt.Errorf("node: --proxy-mode: %w", err)
	}
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, nil, err
		}
		cfg.Name = strings.ToLower(h)
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1"
	}
	for _, w := range node.HostWarnings() {
		slog.Warn(w, "node", cfg.Name)
	}
	if cfg.ContainerPrefix == "" {
		cfg.ContainerPrefix = "slipway"
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	rt, err := runtime.NewDocker(runtime.Config{
		Host: cfg.DockerHost, Prefix: cfg.ContainerPrefix, DataDir: filepath.Join(dataDir, "node"),
		Network: cfg.Network, PauseBinary: self, PauseArgs: []string{"pause"},
	})
	if err != nil {
		return nil, nil, err
	}
	agentCfg := node.Config{
		Store: st, Runtime: rt, NodeName: cfg.Name, Address: cfg.Address, Labels: cfg.Labels,
		HeartbeatInterval: cfg.HeartbeatInterval, ServerToken: token, RegistryAuth: auth, Admit: admit,
		MirrorImage: cfg.MirrorImage,
	}
	agent, err := node.New(agentCfg)
	if err != nil {
		return nil, nil, err
	}
	go func() {
		if err := agent.Run(ctx); err != nil && ctx.Err() == nil {
			slog.Error("node agent stopped", "err", err)
		}
	}()
	if cfg.Listen != "" {
		if listenTLS == nil {
			return nil, nil, errors.New("node: --listen serves logs and exec only over TLS, with the node's certificate")
		}
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, nil, fmt.Errorf("node: --listen %s: %w", cfg.Listen, err)
		}
		srv := &http.Server{Handler: agent.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { <-ctx.Done(); srv.Close() }()
		go func() { _ = srv.Serve(tls.NewListener(ln, listenTLS)) }()
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			host = cfg.Address
		}
		endpoint := "https://" + net.JoinHostPort(host, port)
		go annotateNode(ctx, st, cfg.Name, endpoint)
	}
	var access proxy.ClientAccess
	if !cfg.NoIsolation {
		np, err := netpol.New(netpol.Config{
			Store: st, NodeName: cfg.Name, Address: cfg.Address,
			Enforcer: netpol.NFTables{Name: cfg.ContainerPrefix}, Subnets: rt.PodSubnets,
		})
		if err != nil {
			return nil, nil, err
		}
		go np.Run(ctx)
		access = np.Access
	} else if err := (netpol.NFTables{Name: cfg.ContainerPrefix}).Remove(); err != nil {
		// An earlier run's tables would go on filtering by stale addresses.
		slog.Warn("node: network isolation is off, but the rules of an earlier run could not be removed", "tables", netpol.TablePrefix+cfg.ContainerPrefix, "err", err)
	}
	if !cfg.NoProxy {
		vips, err := proxy.NewDummy("slipway0")
		if err != nil {
			return nil, nil, fmt.Errorf("node: service addresses on slipway0: %w (run as root, or turn the proxy off with --proxy=false)", err)
		}
		px, err := proxy.New(proxy.Config{Store: st, VIPs: vips, ServiceCIDR: cfg.ServiceCIDR, Mode: mode, Access: access})
		if err != nil {
			return nil, nil, err
		}
		done := make(chan struct{})
		go func() { defer close(done); px.Run(ctx) }()
		return agent, done, nil
	}
	return agent, nil, nil
}

// annotateNode records where the agent serves logs and exec, once the
// agent has registered the Node.
func annotateNode(ctx context.Context, st store.Interface, name, endpoint string) {
	for ctx.Err() == nil {
		_, err := st.GuaranteedUpdate(ctx, api.Nodes, "", name, store.UpdateOptions{}, func(o api.Object) error {
			n := o.(*api.Node)
			if n.Annotations == nil {
				n.Annotations = map[string]string{}
			}
			n.Annotations[AgentEndpointAnnotation] = endpoint
			return nil
		})
		if err == nil {
			return
		}
		time.Sleep(time.Second)
	}
}

// PullerServiceAccount is the account nodes pull a project's images as.
const PullerServiceAccount = "deployer"

// ensureAccount makes a project's service account with a cluster role in
// the project, and waits until the authorizer sees the binding.
func (s *Server) ensureAccount(ctx context.Context, ns, name, role, binding string, check rbac.Attributes) error {
	who := identity.Info{Name: api.ServiceAccountUser(ns, name), Groups: []string{identity.GroupAuthenticated}}
	check.Namespace = ns
	if ok, _ := s.API.Authorizer().Authorize(who, check); ok {
		return nil // the usual case: no writes on every pull, scan or verify
	}
	sa := &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}}
	if err := s.Store.Create(ctx, api.ServiceAccounts, sa); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	rb := &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: binding, Namespace: ns},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: role},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: name, Namespace: ns}},
	}
	if err := s.Store.Create(ctx, api.RoleBindings, rb); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok, _ := s.API.Authorizer().Authorize(who, check); ok {
			return nil
		}
	}
	return fmt.Errorf("service account %s/%s has no rights yet; check role binding %s", ns, name, binding)
}

// ensurePuller makes the project's deployer account, which may pull.
func (s *Server) ensurePuller(ctx context.Context, ns string) error {
	return s.ensureAccount(ctx, ns, PullerServiceAccount, rbac.ImagePuller, "system-image-pullers",
		rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers"})
}

// ensureBuilderAccount makes the project's builder account, which may push.
func (s *Server) ensureBuilderAccount(ctx context.Context, ns string) error {
	return s.ensureAccount(ctx, ns, builders.BuilderServiceAccount, rbac.ImageBuilder, "system-image-builders",
		rbac.Attributes{Verb: "update", Resource: "imagestreams", Subresource: "layers"})
}

// ErrPullDenied is a pod whose project may not pull its image.
var ErrPullDenied = errors.New("unauthorized: the pod's project may not pull this image")

// pullAuth returns the X-Registry-Auth for a pod's image: a short-lived
// token of its own project's deployer account, so a pod can only run
// images its project may pull. Images outside the integrated registry
// are pulled anonymously.
//
// It also decides the pull itself, with the registry's rule (a public
// project, or get imagestreams/layers there for the deployer): the engine
// serves a digest it has cached from its own manifest store without
// asking the registry, so another project's pods having pulled the image
// here must not let this one run it. A refusal fails the pull (the pod
// shows ErrImagePull) and is asked again with back-off.
func (s *Server) pullAuth(ctx context.Context, pod *api.Pod, image string) (string, error) {
	if !strings.HasPrefix(image, s.RegistryHost+"/") {
		return "", nil
	}
	if err := s.ensurePuller(ctx, pod.Namespace); err != nil {
		return "", err
	}
	if err := s.mayPull(ctx, pod.Namespace, strings.TrimPrefix(image, s.RegistryHost+"/")); err != nil {
		return "", err
	}
	secret, _, err := s.API.Authenticator().IssueServiceAccountToken(ctx, pod.Namespace, PullerServiceAccount, 10*time.Minute)
	if err != nil {
		return "", err
	}
	data, _ := json.Marshal(map[string]string{"username": PullerServiceAccount, "password": secret, "serveraddress": s.RegistryHost})
	return base64.URLEncoding.EncodeToString(data), nil
}

// mirrorNames are the names of the registry's pull-through mirrors, as
// configured (a master is given the same --mirror as its registries).
func (s *Server) mirrorNames() []string {
	var out []string
	for _, m := range s.cfg.Mirrors {
		out = append(out, m.Name)
	}
	return out
}

// mayPull applies the registry's pull rule to repo (PROJECT/STREAM with a
// tag or digest) for the deployer account of project ns.
func (s *Server) mayPull(ctx context.Context, ns, repo string) error {
	project, _, ok := strings.Cut(repo, "/")
	if !ok || project == "" {
		return fmt.Errorf("%w: %s names no project (want %s/PROJECT/STREAM)", ErrPullDenied, repo, s.RegistryHost)
	}
	if project == ns {
		return nil // ensurePuller has just checked it
	}
	if slices.Contains(s.mirrorNames(), project) {
		return nil // a mirror: any account may pull (registry/mirror.go)
	}
	if p, err := s.API.Project(ctx, project); err == nil && p.Spec.Public {
		return nil
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err // transient: the agent asks again
	}
	// The groups the authenticator gives the deployer's token.
	who := identity.Info{Name: api.ServiceAccountUser(ns, PullerServiceAccount), Groups: []string{
		identity.GroupAuthenticated, identity.GroupServiceAccounts, identity.GroupServiceAccounts + ":" + ns,
	}}
	if ok, _ := s.API.Authorizer().Authorize(who, rbac.Attributes{Verb: "get", Resource: "imagestreams", Subresource: "layers", Namespace: project}); ok {
		return nil
	}
	return fmt.Errorf("%w: project %s may not pull from project %s; an admin of %s can grant it with a RoleBinding of image-puller to %s", ErrPullDenied, ns, project, project, who.Name)
}

// startNode runs this process's node agent when a Docker engine answers;
// without one, pods wait for a node to join (`slipway node`).
func (s *Server) startNode(ctx context.Context) error {
	if err := pingDocker(ctx, s.cfg.Node.DockerHost); err != nil {
		slog.Warn("no Docker engine: this process runs no pods; pods stay Pending until a node joins (`slipway node`)", "err", err)
		return nil
	}
	ncfg := s.cfg.Node
	if names := s.mirrorNames(); len(names) > 0 {
		ncfg.MirrorImage = func(image string) (string, bool) { return registry.MirrorImage(s.RegistryHost, names, image) }
	}
	agent, proxyDone, err := StartNode(ctx, s.Store, ncfg, s.cfg.DataDir, s.nodeToken, nil, s.pullAuth, s.trust.Admit)
	if err != nil {
		return err
	}
	s.proxyDone = proxyDone
	s.Agent = agent
	name := s.cfg.Node.Name
	if name == "" {
		h, _ := os.Hostname()
		name = strings.ToLower(h)
	}
	s.pods.setLocal(agent, name)
	return nil
}

// pingDocker checks that an engine answers at host.
func pingDocker(ctx context.Context, host string) error {
	rt, err := runtime.NewDocker(runtime.Config{Host: host, Prefix: "ping", DataDir: os.TempDir(), PauseBinary: "/bin/true"})
	if err != nil {
		return err
	}
	defer rt.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = rt.ListPods(pctx)
	return err
}
