package registry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestKeySetVerify covers what the black-box tests cannot mint: tokens
// signed with the registry's own key but expired, for another audience, or
// from another issuer.
func TestKeySetVerify(t *testing.T) {
	ks, err := loadKeys(t.TempDir())
	if err != nil {
		t.Fatalf("loadKeys: %v", err)
	}
	const svc = "slipway-registry"
	now := time.Now()
	mk := func(mut func(c *claims)) *claims {
		c := &claims{
			RegisteredClaims: jwt.RegisteredClaims{
				Issuer: Issuer, Subject: "alice", Audience: jwt.ClaimStrings{svc},
				IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
				ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)),
			},
			Access: []access{{Type: "repository", Name: "p/s", Actions: []string{"pull"}}},
		}
		if mut != nil {
			mut(c)
		}
		return c
	}
	sign := func(c *claims) string {
		s, err := ks.sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	good := sign(mk(nil))
	if c, err := ks.verify(good, svc); err != nil || !c.allows("repository", "p/s", "pull") || c.allows("repository", "p/s", "push") {
		t.Fatalf("verify a good token: got %+v, %v; want pull on p/s only", c, err)
	}
	cases := map[string]*claims{
		"expired":          mk(func(c *claims) { c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute)) }),
		"no expiry":        mk(func(c *claims) { c.ExpiresAt = nil }),
		"not yet valid":    mk(func(c *claims) { c.NotBefore = jwt.NewNumericDate(now.Add(time.Hour)) }),
		"another audience": mk(func(c *claims) { c.Audience = jwt.ClaimStrings{"elsewhere"} }),
		"another issuer":   mk(func(c *claims) { c.Issuer = "mallory" }),
	}
	for name, c := range cases {
		if _, err := ks.verify(sign(c), svc); err == nil {
			t.Errorf("verify a token that is %s: got no error, want one", name)
		}
	}
	if _, err := ks.verify(good, "elsewhere"); err == nil {
		t.Errorf("verify for another service: got no error, want one")
	}
	// A token whose kid names no key file is refused, and a kid cannot
	// reach outside the key directory.
	for _, kid := range []string{"nope", "../token-keys/x", ""} {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, mk(nil))
		tok.Header["kid"] = kid
		ks.mu.RLock()
		key := ks.keys[ks.cur]
		ks.mu.RUnlock()
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ks.verify(s, svc); err == nil || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("verify with kid %q: got %v, want an unknown-key error", kid, err)
		}
	}

	// Rotation: the old key still verifies, the new one signs.
	oldKid := ks.cur
	newKid, err := ks.Rotate()
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if newKid == oldKid {
		t.Fatalf("Rotate kept kid %q", newKid)
	}
	if _, err := ks.verify(good, svc); err != nil {
		t.Errorf("verify a pre-rotation token: %v", err)
	}
	fresh := sign(mk(nil))
	tok, _, err := jwt.NewParser().ParseUnverified(fresh, &claims{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Header["kid"]; got != newKid {
		t.Errorf("kid after rotation: got %v, want %q", got, newKid)
	}
	// Another replica's keys, loaded from the same directory, verify it.
	other, err := loadKeys(ks.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.verify(fresh, svc); err != nil {
		t.Errorf("a second key set on the same directory: %v", err)
	}
}

// TestVerifiedTokenCache: a token that verified is remembered with its
// claims; a token that failed is not; a key rotation or reload drops
// everything, so a token whose key file is gone is refused at once.
func TestVerifiedTokenCache(t *testing.T) {
	dir := t.TempDir()
	ks, err := loadKeys(dir)
	if err != nil {
		t.Fatalf("loadKeys: %v", err)
	}
	const svc = "slipway-registry"
	now := time.Now()
	c := &claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: "alice", Audience: jwt.ClaimStrings{svc},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		},
		Access: []access{{Type: "repository", Name: "p/s", Actions: []string{"pull"}}},
	}
	good, err := ks.sign(c)
	if err != nil {
		t.Fatal(err)
	}
	cached := func() int {
		ks.vmu.RLock()
		defer ks.vmu.RUnlock()
		return len(ks.verified)
	}
	bad := good[:len(good)-4] + "AAAA"
	for range 2 {
		if _, err := ks.verify(bad, svc); err == nil {
			t.Fatalf("verify a token with a broken signature: no error")
		}
	}
	if n := cached(); n != 0 {
		t.Fatalf("a token that failed was cached (%d entries)", n)
	}
	for range 2 {
		got, err := ks.verify(good, svc)
		if err != nil || !got.allows("repository", "p/s", "pull") || got.allows("repository", "p/q", "pull") {
			t.Fatalf("verify a good token: %+v, %v", got, err)
		}
	}
	if n := cached(); n != 1 {
		t.Fatalf("a good token verified twice: %d cache entries, want 1", n)
	}
	if _, err := ks.verify(good, "elsewhere"); err == nil {
		t.Errorf("a cached token verified for another service")
	}

	if _, err := ks.Rotate(); err != nil {
		t.Fatal(err)
	}
	if n := cached(); n != 0 {
		t.Fatalf("after a key rotation the cache holds %d tokens, want none", n)
	}
	if _, err := ks.verify(good, svc); err != nil {
		t.Fatalf("a token of the previous key after a rotation: %v", err)
	}
	// Retire the key that signed it: once the keys are reloaded, the
	// cached token goes with them.
	kid, _ := jwtHeaderKid(t, good)
	if err := os.Remove(filepath.Join(dir, kid+".pem")); err != nil {
		t.Fatal(err)
	}
	if err := ks.reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := ks.verify(good, svc); err == nil {
		t.Errorf("a cached token whose key was removed still verifies after a reload")
	}
}

func jwtHeaderKid(t *testing.T, tok string) (string, error) {
	t.Helper()
	p, _, err := jwt.NewParser().ParseUnverified(tok, &claims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := p.Header["kid"].(string)
	return kid, nil
}
