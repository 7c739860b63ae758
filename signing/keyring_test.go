package signing_test

import (
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
)

// TestKeyringSignerFollowsTheStoredKey: the keyring decrypts a key once
// and reuses it, but only while the stored key is the one it decrypted: a
// key replaced in the store signs with the new key at once, and one that
// no longer decrypts fails.
func TestKeyringSignerFollowsTheStoredKey(t *testing.T) {
	env := servertest.Start(t)
	ctx := ctxT(t)
	st := env.Server.Store
	pw := []byte("a password for this test only, 32+ bytes")
	k := &signing.Keyring{Store: st, Password: pw}
	kp1, err := signing.GenerateKeyPair(pw)
	if err != nil {
		t.Fatal(err)
	}
	kp2, err := signing.GenerateKeyPair(pw)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, api.SigningKeySecrets, &api.SigningKeySecret{ObjectMeta: api.ObjectMeta{Name: "k", Namespace: "p"}, EncryptedPrivateKey: string(kp1.PrivateKey)}); err != nil {
		t.Fatal(err)
	}
	set := func(pem string) {
		t.Helper()
		if _, err := st.GuaranteedUpdate(ctx, api.SigningKeySecrets, "p", "k", store.UpdateOptions{}, func(o api.Object) error {
			o.(*api.SigningKeySecret).EncryptedPrivateKey = pem
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	s1, err := k.Signer(ctx, "p", "k")
	if err != nil {
		t.Fatal(err)
	}
	if s1.Fingerprint() != kp1.Fingerprint {
		t.Fatalf("signer %s, want key 1 (%s)", s1.Fingerprint(), kp1.Fingerprint)
	}
	if again, err := k.Signer(ctx, "p", "k"); err != nil || again != s1 {
		t.Errorf("the same stored key was decrypted again (%p, %p, %v)", again, s1, err)
	}
	set(string(kp2.PrivateKey))
	if s2, err := k.Signer(ctx, "p", "k"); err != nil {
		t.Errorf("after the key was replaced: %v", err)
	} else if s2.Fingerprint() != kp2.Fingerprint {
		t.Errorf("after the key was replaced the signer is %s, want key 2 (%s)", s2.Fingerprint(), kp2.Fingerprint)
	}
	set("not a key")
	if s, err := k.Signer(ctx, "p", "k"); err == nil {
		t.Errorf("a stored key that does not decrypt gave signer %s", s.Fingerprint())
	}
}
