package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCAAndLeafRoundTrip(t *testing.T) {
	ca, caKey, err := NewCert(nil, nil, "test-ca", nil, time.Hour)
	if err != nil || !ca.IsCA {
		t.Fatalf("NewCert(CA) = %v, %v; want a CA", ca, err)
	}
	leaf, key, err := NewCert(ca, caKey, "leaf", []string{"127.0.0.1", "localhost"}, time.Hour, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("leaf not signed by the CA: %v", err)
	}
	if len(leaf.ExtKeyUsage) != 2 {
		t.Errorf("leaf usages = %v, want server and client auth", leaf.ExtKeyUsage)
	}
	if !Covers(leaf, []string{"127.0.0.1", "localhost"}) || Covers(leaf, []string{"10.0.0.1"}) || Covers(leaf, []string{"example.com"}) {
		t.Errorf("Covers: wrong answer for %v %v", leaf.IPAddresses, leaf.DNSNames)
	}
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	if _, _, err := LoadPair(cf, kf); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadPair(missing) = %v, want ErrNotExist", err)
	}
	if err := WritePair(cf, kf, leaf, key); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(kf); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, %v; want 0600", st.Mode(), err)
	}
	got, gotKey, err := LoadPair(cf, kf)
	if err != nil || !got.Equal(leaf) || !gotKey.Equal(key) {
		t.Errorf("LoadPair = %v, %v; want what was written", got.Subject, err)
	}
	if err := os.WriteFile(kf, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadPair(cf, kf); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadPair(corrupt key) = %v, want a parse error", err)
	}
}
