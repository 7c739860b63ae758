package registry

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// FuzzVerifyToken: verify never panics, and accepts only what this
// registry signed: any accepted string carries exactly the claims of a
// token we issued, for our service, unexpired, with our issuer.
//
//	go test -run='^$' -fuzz=FuzzVerifyToken -fuzztime=20s ./registry/
func FuzzVerifyToken(f *testing.F) {
	ks, err := loadKeys(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	const svc = "slipway-registry"
	now := time.Now()
	issued := &claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: "alice", Audience: jwt.ClaimStrings{svc},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)), ID: "seed",
		},
		Access: []access{{Type: "repository", Name: "p/s", Actions: []string{"pull"}}},
		Groups: []string{"system:authenticated"},
	}
	good, err := ks.sign(issued)
	if err != nil {
		f.Fatal(err)
	}
	head, rest, _ := strings.Cut(good, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	enc := base64.RawURLEncoding.EncodeToString
	for _, s := range []string{
		good, "", ".", "..", "a.b.c", head + "." + payload + ".", head + ".." + sig,
		enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + payload + ".",
		enc([]byte(`{"alg":"HS256","kid":"`+ks.cur+`"}`)) + "." + payload + "." + sig,
		enc([]byte(`{"alg":"ES256","kid":"k99999999999999999999"}`)) + "." + payload + "." + sig,
		enc([]byte(`{"alg":"ES256","kid":["x"]}`)) + "." + payload + "." + sig,
		head + "." + enc([]byte(`{"iss":"slipway","aud":"slipway-registry","sub":"admin","exp":9999999999}`)) + "." + sig,
		"Bearer " + good, good + "=", good + ".x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := ks.verify(raw, svc)
		if err != nil {
			return
		}
		if !reflect.DeepEqual(c.Access, issued.Access) || c.Subject != issued.Subject || c.ID != issued.ID ||
			!reflect.DeepEqual(c.Groups, issued.Groups) || !c.ExpiresAt.Equal(issued.ExpiresAt.Time) {
			t.Fatalf("verify(%q) accepted claims %+v that were never issued", raw, c)
		}
	})
}
