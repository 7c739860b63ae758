package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slipway.dev/slipway/pki"
	"time"
)

// TLSFiles names the PEM files of one side of mutual TLS: the CA that
// signs the other side's certificates, and this side's certificate and key.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

// IsZero reports whether no file is named.
func (f TLSFiles) IsZero() bool { return f == TLSFiles{} }

// Check says which file is missing or unreadable, and how to fix it.
func (f TLSFiles) Check() error {
	if f.CAFile == "" || f.CertFile == "" || f.KeyFile == "" {
		return errors.New("etcd: TLS needs all three of --etcd-cafile, --etcd-certfile and --etcd-keyfile")
	}
	for _, p := range []string{f.CAFile, f.CertFile, f.KeyFile} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("etcd: TLS file: %w", err)
		}
	}
	return nil
}

// ClientConfig is the tls.Config of a client presenting CertFile and
// trusting only CAFile.
func (f TLSFiles) ClientConfig() (*tls.Config, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("etcd: client certificate %s: %w", f.CertFile, err)
	}
	pem, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("etcd: CA %s: %w", f.CAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("etcd: CA %s holds no PEM certificate", f.CAFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// PKI is what EnsurePKI keeps in its directory: a CA of etcd's own (not the
// platform's, so no other certificate the platform signs opens etcd), the
// member's certificate, and the one client certificate Slipway's roles
// use.
type PKI struct {
	Member, Client TLSFiles
}

// EnsurePKI loads the etcd CA and certificates from dir, creating what is
// missing. The member's certificate covers loopback and hosts.
func EnsurePKI(dir string, hosts ...string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcd: PKI directory: %w", err)
	}
	p := func(n string) string { return filepath.Join(dir, n) }
	caFile, caKeyFile := p("ca.crt"), p("ca.key")
	ca, caKey, err := pki.LoadPair(caFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		ca, caKey, err = pki.NewCert(nil, nil, "slipway-etcd-ca", nil, 10*365*24*time.Hour)
		if err == nil {
			err = pki.WritePair(caFile, caKeyFile, ca, caKey)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("etcd: CA in %s: %w", dir, err)
	}
	hosts = append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	for _, c := range []struct {
		name  string
		hosts []string
	}{{"member", hosts}, {"client", nil}} {
		certFile, keyFile := p(c.name+".crt"), p(c.name+".key")
		cert, _, err := pki.LoadPair(certFile, keyFile)
		if err == nil && cert.CheckSignatureFrom(ca) == nil && time.Until(cert.NotAfter) > 30*24*time.Hour && pki.Covers(cert, c.hosts) {
			continue
		}
		cert, key, err := pki.NewCert(ca, caKey, "slipway-etcd-"+c.name, c.hosts, 2*365*24*time.Hour,
			// A member serves clients and peers, and dials peers (and its
			// own gRPC gateway) with the same certificate.
			x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
		if err == nil {
			err = pki.WritePair(certFile, keyFile, cert, key)
		}
		if err != nil {
			return nil, fmt.Errorf("etcd: %s certificate in %s: %w", c.name, dir, err)
		}
	}
	return &PKI{
		Member: TLSFiles{CAFile: caFile, CertFile: p("member.crt"), KeyFile: p("member.key")},
		Client: TLSFiles{CAFile: caFile, CertFile: p("client.crt"), KeyFile: p("client.key")},
	}, nil
}

// ExistingPKI returns the client files EnsurePKI made in dir, if they are
// there: roles that share the all-in-one's data directory use them.
func ExistingPKI(dir string) (TLSFiles, bool) {
	f := TLSFiles{CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "client.key")}
	return f, f.Check() == nil
}
