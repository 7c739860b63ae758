package apiserver_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/server/servertest"
)

// selfSignedPEM is a certificate and key for host.
func selfSignedPEM(t *testing.T, host string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

// TestRouteTLSKey: a route's private key is a credential. The view role
// reads routes but sees the key redacted, in gets, lists and watches;
// edit and admin see it, and so does an out-of-process router (the
// system:router role, here dave's), which serves edge and reencrypt routes
// with it while it may neither write routes nor read secrets. A
// certificate that does not match its key, and a reencrypt route without
// the CA of its pods, are refused.
func TestRouteTLSKey(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	s := newSuite(t, env)
	s.setupTeam(t, "pa")
	alice, bob, carol := s.as("alice"), s.as("bob"), s.as("carol")
	cert, key := selfSignedPEM(t, "www.example.com")
	route := func(name string, tls map[string]any) map[string]any {
		return map[string]any{"metadata": map[string]any{"name": name}, "spec": map[string]any{
			"host": name + ".example.com", "to": map[string]any{"kind": "Service", "name": "web"}, "tls": tls}}
	}
	dave := s.as("dave")
	mustCode(t, "the admin makes dave a router", s.as("admin").post(t, clusterPath("clusterrolebindings"), &api.ClusterRoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "dave-router"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: rbac.Router}, Subjects: []api.Subject{user("dave")}}), http.StatusCreated)
	w := bob.watch(t, nsPath("pa", "routes"), nil)
	mustCode(t, "bob watches routes", w.result, http.StatusOK)
	dw := dave.watch(t, clusterPath("routes"), nil)
	mustCode(t, "dave (router) watches routes in every project", dw.result, http.StatusOK)
	mustCode(t, "alice creates an edge route with a key", alice.post(t, nsPath("pa", "routes"),
		route("www", map[string]any{"termination": "edge", "certificate": cert, "key": key})), http.StatusCreated)
	path := nsPath("pa", "routes", "www")
	keyLine := strings.Split(key, "\n")[1]
	for _, tc := range []struct {
		user  string
		sees  bool
		reads func() []byte
	}{
		{"bob", false, func() []byte { return bob.get(t, path).Body }},
		{"bob", false, func() []byte { return bob.get(t, path+"/status").Body }},
		{"bob", false, func() []byte { return bob.get(t, nsPath("pa", "routes")).Body }},
		{"bob", false, func() []byte { return w.next(t).Object }},
		{"carol", true, func() []byte { return carol.get(t, path).Body }},
		{"alice", true, func() []byte { return alice.get(t, nsPath("pa", "routes")).Body }},
		{"dave (router)", true, func() []byte { return dave.get(t, path).Body }},
		{"dave (router)", true, func() []byte { return dave.get(t, clusterPath("routes")).Body }},
		{"dave (router)", true, func() []byte { return dw.next(t).Object }},
	} {
		body := string(tc.reads())
		if got := strings.Contains(body, keyLine); got != tc.sees {
			t.Errorf("%s reads route www: the key is in the answer: %v, want %v: %s", tc.user, got, tc.sees, body)
		}
		if !tc.sees && !strings.Contains(body, api.RedactedSecret) {
			t.Errorf("%s reads route www: %s, want the key shown as %s", tc.user, body, api.RedactedSecret)
		}
	}
	w.close()
	dw.close()
	checkStatus(t, "dave (router) lists secrets", dave.get(t, nsPath("pa", "secrets")), http.StatusForbidden, api.ReasonForbidden, "")
	checkStatus(t, "dave (router) updates a route", dave.patch(t, path, map[string]any{"spec": map[string]any{"host": "evil.example.com"}}), http.StatusForbidden, api.ReasonForbidden, "")
	checkStatus(t, "bob (view) creates a route", bob.post(t, nsPath("pa", "routes"), route("bob", nil)), http.StatusForbidden, api.ReasonForbidden, "")

	other, _ := selfSignedPEM(t, "other.example.com")
	checkStatus(t, "a certificate with another's key", alice.post(t, nsPath("pa", "routes"),
		route("mismatch", map[string]any{"termination": "edge", "certificate": other, "key": key})), http.StatusBadRequest, api.ReasonInvalid, "do not make a pair")
	checkStatus(t, "reencrypt without destinationCACertificate", alice.post(t, nsPath("pa", "routes"),
		route("re", map[string]any{"termination": "reencrypt"})), http.StatusBadRequest, api.ReasonInvalid, "destinationCACertificate")
	checkStatus(t, "passthrough with a path", alice.post(t, nsPath("pa", "routes"),
		map[string]any{"metadata": map[string]any{"name": "pt"}, "spec": map[string]any{"host": "pt.example.com", "path": "/x",
			"to": map[string]any{"name": "web"}, "tls": map[string]any{"termination": "passthrough"}}}), http.StatusBadRequest, api.ReasonInvalid, "cannot have a path")
}
