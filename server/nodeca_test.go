package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"

	"slipway.dev/slipway/pki"
)

// TestSignNodeIgnoresRequestedNames: the platform CA also signs the API
// server's certificate, so a node (or whoever holds its bootstrap token)
// asking for the API's address or name in its CSR must get neither: the
// certificate would let it pose as the API to other nodes and the CLI.
func TestSignNodeIgnoresRequestedNames(t *testing.T) {
	ca, caKey, err := pki.NewCert(nil, nil, "slipway-ca", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n := &nodeServices{ca: ca, caKey: caKey}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "system:node:n1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	cd, err := n.SignNode("n1", csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(cd)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.IPAddresses) != 0 || len(cert.DNSNames) != 0 || len(cert.URIs) != 0 {
		t.Errorf("node certificate carries IPs %v, names %v, URIs %v; want none (it would pass as the API server)", cert.IPAddresses, cert.DNSNames, cert.URIs)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err == nil {
		t.Error("the node certificate verifies as a server for 127.0.0.1")
	}
}
