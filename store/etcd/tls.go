package etcd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
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
	ca, caKey, err := loadPair(caFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		ca, caKey, err = newCert(nil, nil, "slipway-etcd-ca", nil, 10*365*24*time.Hour)
		if err == nil {
			err = writePair(caFile, caKeyFile, ca, caKey)
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
		cert, _, err := loadPair(certFile, keyFile)
		if err == nil && cert.CheckSignatureFrom(ca) == nil && time.Until(cert.NotAfter) > 30*24*time.Hour && covers(cert, c.hosts) {
			continue
		}
		cert, key, err := newCert(ca, caKey, "slipway-etcd-"+c.name, c.hosts, 2*365*24*time.Hour)
		if err == nil {
			err = writePair(certFile, keyFile, cert, key)
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

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func newCert(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, hosts []string, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Slipway"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(ttl),
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA = true
		tmpl.BasicConstraintsValid = true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		signer, signerKey = parent, parentKey
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		// Both: a member serves clients and peers, and dials peers (and
		// its own gRPC gateway) with the same certificate.
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func writePair(certFile, keyFile string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644)
}

func loadPair(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		if _, statErr := os.Stat(certFile); errors.Is(statErr, os.ErrNotExist) {
			return nil, nil, statErr
		}
		return nil, nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not an ECDSA key", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	return cert, key, err
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
