package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer is the "iss" of every registry token.
const Issuer = "slipway"

// access is one grant in a token: a repository and the actions allowed on
// it, in the shape of the Docker token specification.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type claims struct {
	jwt.RegisteredClaims
	Access []access `json:"access"`
	// Groups are the subject's groups, so audit and pushedBy see who it
	// was without another lookup.
	Groups []string `json:"groups,omitempty"`
}

// keySet holds the signing keys in a directory, one PEM file each, named by
// creation time. The newest signs; all verify, so tokens signed before a
// rotation stay valid until they expire.
type keySet struct {
	dir  string
	mu   sync.RWMutex
	keys map[string]*ecdsa.PrivateKey // by kid (file name)
	cur  string
	// loaded is when the directory was last read; signing re-reads it
	// now and then so a rotation by another process takes effect.
	loaded time.Time
	// lastMiss is when a token with an unknown kid last made us reread
	// the directory: anyone can send such tokens, so at most one a second
	// may.
	lastMiss time.Time
	now      func() time.Time

	// verified remembers tokens that verified, by the raw token, until
	// their own expiry (tokenLeeway included, as verify allows). Every
	// reload drops it, so a rotation or a removed key file is seen by the
	// next request; gen stops a verification that raced a reload from
	// adding its result afterwards. A token that failed is never added.
	// Keyed by the token itself, not a hash of it: a map lookup of the
	// string costs a tenth of hashing it with sha256, and only tokens
	// our keys signed get in, within maxVerified and maxVerifiedBytes.
	vmu           sync.RWMutex
	verified      map[string]verifiedToken
	verifiedBytes int
	gen           uint64
}

type verifiedToken struct {
	c       *claims // shared, read-only
	service string  // the audience it was verified for
	exp     time.Time
}

const (
	// maxKidLen bounds the key ids we look at; ours are "k" and a
	// UnixNano timestamp.
	maxKidLen = 24
	// missReloadEvery is how often an unknown kid may reload the keys.
	missReloadEvery = time.Second
	// maxTokenLen bounds the registry JWTs we parse. Ours carry one grant
	// per scope asked for, a few hundred bytes each.
	maxTokenLen = 64 << 10
	// maxVerified and maxVerifiedBytes (of tokens) bound the
	// verified-token cache; a full cache is swept of expired tokens, then
	// emptied if that is not enough.
	maxVerified      = 8192
	maxVerifiedBytes = 32 << 20
	// tokenLeeway is the clock skew verify allows.
	tokenLeeway = 5 * time.Second
)

// RotateKeys makes a new signing key in dir (DATA_DIR/registry/token-keys).
// Running registries start signing with it within a minute; tokens signed
// with older keys verify until they expire.
func RotateKeys(dir string) (string, error) {
	ks, err := loadKeys(dir)
	if err != nil {
		return "", err
	}
	return ks.Rotate()
}

func loadKeys(dir string) (*keySet, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ks := &keySet{dir: dir, now: time.Now}
	if err := ks.reload(); err != nil {
		return nil, err
	}
	if ks.cur == "" {
		if _, err := ks.Rotate(); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

func (ks *keySet) reload() error {
	entries, err := os.ReadDir(ks.dir)
	if err != nil {
		return err
	}
	keys := map[string]*ecdsa.PrivateKey{}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(ks.dir, e.Name()))
		if err != nil {
			return err
		}
		block, _ := pem.Decode(data)
		if block == nil {
			return fmt.Errorf("registry: %s is not PEM", e.Name())
		}
		k, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return fmt.Errorf("registry: %s: %w", e.Name(), err)
		}
		kid := strings.TrimSuffix(e.Name(), ".pem")
		keys[kid] = k
		names = append(names, kid)
	}
	sort.Strings(names)
	ks.vmu.Lock()
	ks.verified, ks.verifiedBytes = nil, 0
	ks.gen++
	ks.vmu.Unlock()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	ks.keys = keys
	ks.loaded = ks.now()
	ks.cur = ""
	if len(names) > 0 {
		ks.cur = names[len(names)-1]
	}
	return nil
}

// Rotate makes a new signing key. Tokens signed with older keys verify
// until they expire; delete old key files after the token lifetime.
func (ks *keySet) Rotate() (string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", err
	}
	kid := fmt.Sprintf("k%d", time.Now().UnixNano())
	path := filepath.Join(ks.dir, kid+".pem")
	if err := os.WriteFile(path+".tmp", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return "", err
	}
	return kid, ks.reload()
}

func (ks *keySet) sign(c *claims) (string, error) {
	ks.mu.RLock()
	stale := ks.now().Sub(ks.loaded) > time.Minute
	ks.mu.RUnlock()
	if stale {
		if err := ks.reload(); err != nil {
			return "", err
		}
	}
	ks.mu.RLock()
	kid, key := ks.cur, ks.keys[ks.cur]
	ks.mu.RUnlock()
	t := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	t.Header["kid"] = kid
	return t.SignedString(key)
}

var errBadToken = errors.New("registry: invalid token")

// verify checks signature, algorithm, issuer, audience and lifetime. A
// token that verified before is answered from the cache until it expires.
// The claims returned are shared: do not modify them.
func (ks *keySet) verify(raw, service string) (*claims, error) {
	if len(raw) > maxTokenLen {
		return nil, fmt.Errorf("%w: over %d bytes", errBadToken, maxTokenLen)
	}
	ks.vmu.RLock()
	v, hit := ks.verified[raw]
	gen := ks.gen
	ks.vmu.RUnlock()
	if hit && v.service == service {
		if time.Now().Before(v.exp.Add(tokenLeeway)) {
			return v.c, nil
		}
		return nil, fmt.Errorf("%w: token has expired", errBadToken)
	}
	c, err := ks.verifySlow(raw, service)
	if err != nil {
		return nil, err
	}
	ks.remember(raw, service, gen, c)
	return c, nil
}

// remember adds a verified token to the cache, unless the keys were
// reloaded since its verification began.
func (ks *keySet) remember(raw, service string, gen uint64, c *claims) {
	if c.ExpiresAt == nil {
		return
	}
	now := time.Now()
	ks.vmu.Lock()
	defer ks.vmu.Unlock()
	if ks.gen != gen {
		return
	}
	if _, ok := ks.verified[raw]; ok {
		// The same token, verified for another service before.
		delete(ks.verified, raw)
		ks.verifiedBytes -= len(raw)
	}
	if len(ks.verified) >= maxVerified || ks.verifiedBytes+len(raw) > maxVerifiedBytes {
		for k, v := range ks.verified {
			if !now.Before(v.exp.Add(tokenLeeway)) {
				delete(ks.verified, k)
				ks.verifiedBytes -= len(k)
			}
		}
		if len(ks.verified) >= maxVerified || ks.verifiedBytes+len(raw) > maxVerifiedBytes {
			ks.verified, ks.verifiedBytes = nil, 0
		}
	}
	if ks.verified == nil {
		ks.verified = map[string]verifiedToken{}
	}
	// A copy: raw may share its bytes with a larger header.
	raw = strings.Clone(raw)
	ks.verified[raw] = verifiedToken{c: c, service: service, exp: c.ExpiresAt.Time}
	ks.verifiedBytes += len(raw)
}

func (ks *keySet) verifySlow(raw, service string) (*claims, error) {
	c := &claims{}
	_, err := jwt.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		ks.mu.RLock()
		k, ok := ks.keys[kid]
		ks.mu.RUnlock()
		if !ok && ks.mayReload(kid) {
			// A key made by another replica since we loaded.
			if err := ks.reload(); err == nil {
				ks.mu.RLock()
				k, ok = ks.keys[kid]
				ks.mu.RUnlock()
			}
		}
		if !ok {
			return nil, fmt.Errorf("unknown key id %q", trunc(kid))
		}
		return &k.PublicKey, nil
	},
		jwt.WithValidMethods([]string{jwt.SigningMethodES256.Alg()}),
		jwt.WithIssuer(Issuer),
		jwt.WithAudience(service),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(tokenLeeway),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadToken, err)
	}
	return c, nil
}

// mayReload decides whether an unknown kid is worth rereading the key
// directory for, and if so claims the reload. Only a kid of our own form
// can name a key, and a rotation elsewhere makes one newer than ours and
// not in the future. Any other kid reloads only if our keys are over a
// minute old (a replica with a skewed clock). Either way, at most once per
// missReloadEvery.
func (ks *keySet) mayReload(kid string) bool {
	n, ok := kidTime(kid)
	if !ok {
		return false
	}
	now := ks.now()
	ks.mu.Lock()
	defer ks.mu.Unlock()
	cur, _ := kidTime(ks.cur)
	fresh := n > cur && n <= now.Add(time.Minute).UnixNano()
	if !fresh && now.Sub(ks.loaded) <= time.Minute {
		return false
	}
	if now.Sub(ks.lastMiss) < missReloadEvery {
		return false
	}
	ks.lastMiss = now
	return true
}

// kidTime reads the creation time in a kid of ours, "k<UnixNano>".
func kidTime(kid string) (int64, bool) {
	if len(kid) < 2 || len(kid) > maxKidLen || kid[0] != 'k' {
		return 0, false
	}
	n, err := strconv.ParseInt(kid[1:], 10, 64)
	return n, err == nil && n > 0 && kid[1] != '+'
}

// allows reports whether the token grants action on repository name.
func (c *claims) allows(typ, name, action string) bool {
	for _, a := range c.Access {
		if a.Type != typ || a.Name != name {
			continue
		}
		for _, x := range a.Actions {
			if x == action || x == "*" {
				return true
			}
		}
	}
	return false
}
