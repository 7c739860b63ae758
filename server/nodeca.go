package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/apiserver"
	"slipway.dev/slipway/cluster/node"
	"slipway.dev/slipway/pki"
)

// NodeCertTTL is how long a node's certificate lives. A node joins again
// with a new bootstrap token to get another.
const NodeCertTTL = 365 * 24 * time.Hour

// nodeServices is what the API server does for nodes in other processes
// (apiserver.NodeServices): the platform CA signs their certificates,
// and the pull and admission decisions are this process's.
type nodeServices struct {
	s     *Server
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	caPEM []byte
	// client is the certificate this API server presents to node agents.
	client tls.Certificate
	pool   *x509.CertPool

	mu         sync.Mutex
	transports map[string]*http.Transport // by node name
}

func (s *Server) newNodeServices() (*nodeServices, error) {
	dir := filepath.Join(s.cfg.DataDir, "pki")
	ca, key, err := pki.LoadPair(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	if err != nil {
		return nil, fmt.Errorf("server: the platform CA signs node certificates: %w", err)
	}
	cert, ckey, err := pki.NewCert(ca, key, node.APIServerCommonName, nil, 2*365*24*time.Hour, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &nodeServices{
		s: s, ca: ca, caKey: key, pool: pool,
		caPEM:      pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}),
		client:     tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: ckey, Leaf: cert},
		transports: map[string]*http.Transport{},
	}, nil
}

func (n *nodeServices) CA() []byte { return n.caPEM }

// SignNode signs a node's certificate: common name system:node:NAME,
// organization system:nodes, for client and server authentication (the
// agent serves logs and exec with it), and none of the addresses or
// names the CSR asks for (see below).
func (n *nodeServices) SignNode(name string, csr *x509.CertificateRequest) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: apiserver.NodeUserPrefix + name, Organization: []string{apiserver.GroupNodes}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(NodeCertTTL),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		// No addresses or names from the CSR: the platform CA also signs
		// the API server's certificate, so a node certificate for the
		// API's address would impersonate it. The API checks an agent by
		// its CN alone.
	}
	return x509.CreateCertificate(rand.Reader, tmpl, n.ca, csr.PublicKey, n.caKey)
}

func (n *nodeServices) PullCredentials(ctx context.Context, pod *api.Pod, image string) (string, error) {
	return n.s.pullAuth(ctx, pod, image)
}

func (n *nodeServices) Admit(ctx context.Context, pod *api.Pod) error {
	return n.s.trust.Admit(ctx, pod)
}

// transport reaches the agent of node name over TLS: it presents this
// API server's certificate and accepts only a certificate of the
// platform CA for system:node:NAME, whatever address it dialed.
func (n *nodeServices) transport(name string) *http.Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if tr, ok := n.transports[name]; ok {
		return tr
	}
	want := apiserver.NodeUserPrefix + name
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{n.client},
			// The name is checked below, against the node, not the
			// address: a node's address is its own to write.
			InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errors.New("the agent presented no certificate")
				}
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				leaf := cs.PeerCertificates[0]
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: n.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					return fmt.Errorf("the agent's certificate is not the platform CA's: %w", err)
				}
				if leaf.Subject.CommonName != want {
					return fmt.Errorf("the agent's certificate is %q's, not node %s's", leaf.Subject.CommonName, name)
				}
				return nil
			},
		},
	}
	n.transports[name] = tr
	return tr
}

// nodeListenerTLS is the agent's TLS: it serves with the node's
// certificate and accepts only clients with a certificate of the CA in
// caFile (the agent's handler then wants an API server's).
func nodeListenerTLS(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca,
	}
}

// caPool reads a PEM CA file into a pool.
func caPool(file string) (*x509.CertPool, []byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, data, nil
}
