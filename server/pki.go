package server

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slipway.dev/slipway/pki"
	"strings"
	"time"
)

// PKI is the certificate authority Slipway makes for itself, and the serving
// certificate it signs. Both live in DATA/pki and are reused across starts.
type PKI struct {
	Dir    string
	CA     *x509.Certificate
	CAFile string
	Cert   tls.Certificate
}

// LoadOrCreatePKI reads the CA and serving certificate from dir, creating
// what is missing. The serving certificate is reissued when it does not
// cover every host in hosts or is about to expire.
func LoadOrCreatePKI(dir string, hosts []string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.crt")}
	caKeyFile := filepath.Join(dir, "ca.key")
	caCert, caKey, err := pki.LoadPair(p.CAFile, caKeyFile)
	if errors.Is(err, os.ErrNotExist) {
		caCert, caKey, err = pki.NewCert(nil, nil, "slipway-ca@"+fmt.Sprint(time.Now().Unix()), nil, 10*365*24*time.Hour)
		if err == nil {
			err = pki.WritePair(p.CAFile, caKeyFile, caCert, caKey)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("server: certificate authority in %s: %w", dir, err)
	}
	p.CA = caCert
	certFile, keyFile := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	cert, key, err := pki.LoadPair(certFile, keyFile)
	if err != nil || !pki.Covers(cert, hosts) || time.Until(cert.NotAfter) < 30*24*time.Hour || cert.CheckSignatureFrom(caCert) != nil {
		cert, key, err = pki.NewCert(caCert, caKey, "slipway-apiserver", hosts, 2*365*24*time.Hour)
		if err == nil {
			err = pki.WritePair(certFile, keyFile, cert, key)
		}
		if err != nil {
			return nil, fmt.Errorf("server: serving certificate: %w", err)
		}
	}
	p.Cert = tls.Certificate{Certificate: [][]byte{cert.Raw, caCert.Raw}, PrivateKey: key, Leaf: cert}
	return p, nil
}

// Fingerprint is the SHA-256 fingerprint of a certificate, as `slipway
// login` shows it.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = strings.ToUpper(hex.EncodeToString([]byte{b}))
	}
	return strings.Join(parts, ":")
}
