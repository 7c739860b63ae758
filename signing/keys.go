package signing

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	sigs "github.com/sigstore/cosign/v2/pkg/signature"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// KeyPair is a cosign key pair, as `cosign generate-key-pair` writes it.
type KeyPair struct {
	// PrivateKey is the PEM block "ENCRYPTED SIGSTORE PRIVATE KEY": the
	// PKCS #8 key sealed with scrypt and secretbox under the password. It is
	// safe to store; `cosign sign --key` reads it with COSIGN_PASSWORD.
	PrivateKey []byte
	// PublicKey is the PEM "PUBLIC KEY" (PKIX), what `cosign verify --key`
	// takes.
	PublicKey []byte
	// Fingerprint identifies PublicKey; see Fingerprint.
	Fingerprint string
}

// GenerateKeyPair makes an ECDSA P-256 key pair with cosign's own code, the
// private key encrypted under password. An empty password is refused: the
// private key is meant to be stored, and cosign's encryption with an empty
// password protects nothing.
func GenerateKeyPair(password []byte) (*KeyPair, error) {
	if len(password) == 0 {
		return nil, errors.New("signing: a key pair needs a password to encrypt its private key")
	}
	kb, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		return nil, fmt.Errorf("signing: generating a key pair: %w", err)
	}
	fp, err := Fingerprint(kb.PublicBytes)
	if err != nil {
		return nil, err
	}
	return &KeyPair{PrivateKey: kb.PrivateBytes, PublicKey: kb.PublicBytes, Fingerprint: fp}, nil
}

// Signer signs with one private key. It is safe for concurrent use.
type Signer struct {
	sv          signature.SignerVerifier
	publicKey   []byte
	fingerprint string
}

// LoadSigner decrypts a private key written by GenerateKeyPair or by
// `cosign generate-key-pair`. A wrong password fails with an error that
// says "decrypt".
func LoadSigner(encryptedPEM, password []byte) (*Signer, error) {
	sv, err := cosign.LoadPrivateKey(encryptedPEM, password, nil)
	if err != nil {
		return nil, fmt.Errorf("signing: loading the private key: %w", err)
	}
	pub, err := sv.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("signing: loading the private key: %w", err)
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, fmt.Errorf("signing: loading the private key: %w", err)
	}
	fp, err := fingerprint(pub)
	if err != nil {
		return nil, err
	}
	return &Signer{sv: sv, publicKey: pem, fingerprint: fp}, nil
}

// PublicKey is the PEM public key that verifies this signer's signatures.
func (s *Signer) PublicKey() []byte { return append([]byte(nil), s.publicKey...) }

// Fingerprint identifies the signer's public key; see Fingerprint.
func (s *Signer) Fingerprint() string { return s.fingerprint }

// Fingerprint is "sha256:" and the hex SHA-256 of a PEM public key's DER
// (PKIX) encoding: the same key always has the same fingerprint, however
// its PEM is wrapped.
func Fingerprint(publicKeyPEM []byte) (string, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(publicKeyPEM)
	if err != nil {
		return "", fmt.Errorf("signing: reading a public key: %w", err)
	}
	return fingerprint(pub)
}

func fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("signing: encoding a public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// verifierKey is one trusted public key.
type verifierKey struct {
	v           signature.Verifier
	fingerprint string
}

// loadVerifiers reads PEM public keys the way `cosign verify --key` does
// (SHA-256 for ECDSA and RSA).
func loadVerifiers(pubKeys [][]byte) ([]verifierKey, error) {
	if len(pubKeys) == 0 {
		return nil, errors.New("signing: verify needs at least one public key")
	}
	out := make([]verifierKey, 0, len(pubKeys))
	for i, k := range pubKeys {
		v, err := sigs.LoadPublicKeyRaw(k, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("signing: public key %d: %w", i, err)
		}
		fp, err := Fingerprint(k)
		if err != nil {
			return nil, fmt.Errorf("signing: public key %d: %w", i, err)
		}
		out = append(out, verifierKey{v: v, fingerprint: fp})
	}
	return out, nil
}
