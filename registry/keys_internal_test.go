package registry

import (
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
