package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/apiserver"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/cluster/node"
	"slipway.dev/slipway/pki"
	"slipway.dev/slipway/registry"
)

// RemoteNodeConfig configures `slipway node`: a node that reaches the
// cluster only through the API, as system:node:NAME, and holds no etcd
// credentials at all.
type RemoteNodeConfig struct {
	// Server is the API's URL, such as https://10.0.0.1:8443.
	Server string
	// CAFile is the platform CA (the API server's DATA_DIR/pki/ca.crt).
	CAFile string
	// BootstrapTokenFile holds a one-use token from `slipway adm
	// create-bootstrap-token NAME`. Needed to join the first time, or
	// again after the node's credential was revoked.
	BootstrapTokenFile string
	// DataDir keeps the node's credential (DataDir/node-credentials/NAME)
	// and its pods' volumes (DataDir/node).
	DataDir string
	Node    NodeConfig
}

// RemoteNode is a running `slipway node`.
type RemoteNode struct {
	Name  string
	Agent *node.Agent
	// ProxyDone closes once the service proxy has stopped after the
	// context ended (and removed its nftables table); nil when none runs.
	ProxyDone <-chan struct{}
}

// StartRemoteNode joins the cluster (when the node has no valid
// credential yet) and runs the node role through the API.
func StartRemoteNode(ctx context.Context, cfg RemoteNodeConfig) (*RemoteNode, error) {
	if cfg.Server == "" || cfg.CAFile == "" {
		return nil, errors.New("node: --server (the API's URL) and --certificate-authority (its CA, DATA_DIR/pki/ca.crt of the API server) are required")
	}
	if cfg.Node.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, err
		}
		cfg.Node.Name = strings.ToLower(h)
	}
	name := cfg.Node.Name
	pool, caPEM, err := caPool(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("node: --certificate-authority: %w", err)
	}
	cert, err := nodeCredential(ctx, cfg, pool, caPEM)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg.Server, client.WithCAData(caPEM), client.WithClientCertificate(cert))
	if err != nil {
		return nil, err
	}
	reg, err := c.RegistryHost(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: asking the API for its registry: %w", err)
	}
	mirrors, err := c.Mirrors(ctx)
	if err != nil {
		return nil, fmt.Errorf("node: asking the API for its registry's mirrors: %w", err)
	}
	if len(mirrors) > 0 {
		cfg.Node.MirrorImage = func(image string) (string, bool) { return registry.MirrorImage(reg, mirrors, image) }
	}
	if err := pingDocker(ctx, cfg.Node.DockerHost); err != nil {
		return nil, fmt.Errorf("node: no Docker engine answers at %q: %w (install docker.io and start it, or pass --docker-host)", cfg.Node.DockerHost, err)
	}
	auth := func(ctx context.Context, pod *api.Pod, image string) (string, error) {
		if !strings.HasPrefix(image, reg+"/") {
			return "", nil
		}
		return c.PullCredentials(ctx, pod.Namespace, pod.Name, image)
	}
	admit := func(ctx context.Context, pod *api.Pod) error {
		err := c.AdmitPod(ctx, pod.Namespace, pod.Name)
		if st, ok := api.StatusFor(err); ok {
			return errors.New(st.Message)
		}
		return err
	}
	st := &client.Store{C: c, Fields: map[*api.Resource]string{api.Pods: "spec.nodeName=" + name}}
	agent, proxyDone, err := StartNode(ctx, st, cfg.Node, cfg.DataDir, "", nodeListenerTLS(cert, pool), auth, admit)
	if err != nil {
		return nil, err
	}
	slog.Info("slipway node is running", "node", name, "api", cfg.Server, "registry", reg)
	return &RemoteNode{Name: name, Agent: agent, ProxyDone: proxyDone}, nil
}

// nodeCredential returns the node's certificate: the one it keeps, while
// it is valid and the API still takes it, or a new one got by joining
// with the bootstrap token.
func nodeCredential(ctx context.Context, cfg RemoteNodeConfig, pool *x509.CertPool, caPEM []byte) (tls.Certificate, error) {
	name := cfg.Node.Name
	dir := filepath.Join(cfg.DataDir, "node-credentials", name)
	certFile, keyFile := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	why := "it has none yet"
	if leaf, key, err := pki.LoadPair(certFile, keyFile); err == nil {
		_, verr := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		switch {
		case verr != nil:
			why = "its certificate is not the cluster CA's: " + verr.Error()
		case leaf.Subject.CommonName != apiserver.NodeUserPrefix+name:
			why = "its certificate is " + leaf.Subject.CommonName + "'s"
		case time.Until(leaf.NotAfter) < time.Hour:
			why = "its certificate expires at " + leaf.NotAfter.Format(time.RFC3339)
		default:
			cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
			c, err := client.New(cfg.Server, client.WithCAData(caPEM), client.WithClientCertificate(cert))
			if err != nil {
				return tls.Certificate{}, err
			}
			_, err = c.WhoAmI(ctx)
			st, isStatus := api.StatusFor(err)
			if err == nil || !isStatus || st.Code != http.StatusUnauthorized {
				return cert, nil // taken, or the API is not answering yet
			}
			why = "the API refuses its certificate: " + st.Message
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		why = err.Error()
	}
	if cfg.BootstrapTokenFile == "" {
		return tls.Certificate{}, fmt.Errorf("node %s has no valid credential (%s): join with --bootstrap-token-file, a token from `slipway adm create-bootstrap-token %s`", name, why, name)
	}
	data, err := os.ReadFile(cfg.BootstrapTokenFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node: --bootstrap-token-file: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: apiserver.NodeUserPrefix + name, Organization: []string{apiserver.GroupNodes}}}
	if ip := net.ParseIP(cfg.Node.Address); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := client.New(cfg.Server, client.WithCAData(caPEM), client.WithToken(strings.TrimSpace(string(data))))
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM, _, err := c.JoinNode(ctx, name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("node %s: joining the cluster: %w", name, err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return tls.Certificate{}, errors.New("node: the API answered the join with no certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, err
	}
	if err := pki.WritePair(certFile, keyFile, leaf, key); err != nil {
		return tls.Certificate{}, fmt.Errorf("node: keeping the credential: %w", err)
	}
	slog.Info("node: joined the cluster", "node", name, "credential", certFile, "why", why)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
