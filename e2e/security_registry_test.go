package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"slipway.dev/slipway/api"
)

// The attacker tests of the registry and identity findings of the security
// review (M6, L1, L2, L6, L7, L8, L16). Each row plays the attacker over
// real HTTP against `slipway start`: a user whose account was deleted,
// another project's user, anonymous callers, an online password guesser
// and a pusher pointing the server at internal addresses.

// secRegistry is one server with three htpasswd users and a private
// project "vic" that only admin can read.
type secRegistry struct {
	*trustServer
	hc *http.Client
}

func (s *secRegistry) regURL(path string) string { return "http://" + s.p.registry + path }

// reg sends one registry request with a platform token as the Basic
// password ("" for anonymous) and returns the status, headers and body.
func (s *secRegistry) reg(method, path, user, token string, body []byte, header map[string]string) (int, http.Header, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.regURL(path), bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.SetBasicAuth(user, token)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, string(b)
}

// ociCode is the first error code of a registry error body.
func ociCode(body string) string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// putBlob uploads data to repo in one POST and returns its digest.
func (s *secRegistry) putBlob(repo string, data []byte) string {
	s.t.Helper()
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	code, h, body := s.reg(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", "admin", s.admin.Token(), nil, nil)
	if code != http.StatusAccepted {
		s.t.Fatalf("start an upload to %s: %d %s", repo, code, body)
	}
	loc := strings.TrimPrefix(h.Get("Location"), "http://"+s.p.registry)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	code, _, body = s.reg(http.MethodPut, loc+sep+"digest="+d, "admin", s.admin.Token(), data, map[string]string{"Content-Type": "application/octet-stream"})
	if code != http.StatusCreated {
		s.t.Fatalf("upload blob to %s: %d %s", repo, code, body)
	}
	return d
}

// on returns s with t as the test its helpers fail.
func (s *secRegistry) on(t *testing.T) *secRegistry {
	ts := *s.trustServer
	ts.t = t
	return &secRegistry{trustServer: &ts, hc: s.hc}
}

func startSecRegistry(t *testing.T, extra ...string) *secRegistry {
	t.Helper()
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw", "leaver": "leaverpw", "victim": "victimpw"})
	sum := sha1.Sum([]byte("shapw"))
	f, err := os.OpenFile(ht, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// An unsalted {SHA} entry, as `htpasswd -s` writes.
	fmt.Fprintf(f, "shauser:{SHA}%s\n", base64.StdEncoding.EncodeToString(sum[:]))
	f.Close()
	s := &secRegistry{trustServer: startTrustServer(t, append([]string{"--htpasswd", ht}, extra...)...), hc: &http.Client{Timeout: 60 * time.Second}}
	return s
}

func TestSecurityRegistry(t *testing.T) {
	s := startSecRegistry(t, "--import-allow", "198.18.0.1:5000,0.1.2.3:5000,240.0.0.1:5000,[64:ff9b::a00:1]:5000,[2002:a00:1::1]:5000")
	ctx := context.Background()
	s.projects("vic")
	s.push("vic/app:latest", mustRandomImage(t))
	mal := s.client("mallory", "mallorypw")

	rows := []struct {
		name string
		run  func(t *testing.T, s *secRegistry)
	}{
		{"M6 an admin revokes another user's tokens without deleting the user; a user cannot revoke someone else's", func(t *testing.T, s *secRegistry) {
			victim := s.client("victim", "victimpw")
			if _, err := mal.RevokeUserTokens(ctx, "victim"); err == nil || !strings.Contains(err.Error(), "forbidden") && !strings.Contains(err.Error(), "cannot") {
				t.Errorf("mallory revokes victim's tokens: err = %v, want 403", err)
			}
			if _, err := victim.WhoAmI(ctx); err != nil {
				t.Fatalf("victim's token after mallory's attempt: %v, want it still valid", err)
			}
			out := s.cli.ok("adm", "revoke-tokens", "victim")
			if !strings.Contains(out, "revoked") {
				t.Errorf("slipway adm revoke-tokens victim printed %q", out)
			}
			if _, err := victim.WhoAmI(ctx); err == nil {
				t.Errorf("victim's token works after the admin revoked it")
			}
			if code, _, body := s.reg(http.MethodGet, "/v2/", "victim", victim.Token(), nil, nil); code != http.StatusUnauthorized {
				t.Errorf("registry GET /v2/ with the revoked token = %d %s, want 401", code, body)
			}
			if _, err := s.admin.Get(ctx, api.Users, "", "victim"); err != nil {
				t.Errorf("the user after revoking its tokens: %v, want it kept", err)
			}
			if again := s.client("victim", "victimpw"); again.Token() == "" {
				t.Errorf("victim cannot log in again after the revoke")
			}
			s.cli.fails("not found", "adm", "revoke-tokens", "nobody")
		}},
		{"M6 a deleted user's login token is refused, and a new user of that name does not revive it", func(t *testing.T, s *secRegistry) {
			leaver := s.client("leaver", "leaverpw")
			if _, err := leaver.WhoAmI(ctx); err != nil {
				t.Fatalf("whoami with a fresh token: %v", err)
			}
			if code, _, body := s.reg(http.MethodGet, "/v2/", "leaver", leaver.Token(), nil, nil); code != http.StatusOK {
				t.Fatalf("GET /v2/ with a fresh token = %d %s, want 200", code, body)
			}
			if _, err := s.admin.Delete(ctx, api.Users, "", "leaver"); err != nil {
				t.Fatalf("admin deletes user leaver: %v", err)
			}
			waitFor(t, 30*time.Second, "the deleted user's token to be refused by the API and the registry", func() (bool, string) {
				_, apiErr := leaver.WhoAmI(ctx)
				code, _, body := s.reg(http.MethodGet, "/v2/", "leaver", leaver.Token(), nil, nil)
				return apiErr != nil && code == http.StatusUnauthorized, fmt.Sprintf("whoami err=%v; registry GET /v2/ = %d %s", apiErr, code, body)
			})
			again := s.client("leaver", "leaverpw") // re-creates the User
			if _, err := leaver.WhoAmI(ctx); err == nil {
				t.Errorf("after leaver logged in again, the token issued before the deletion works again; want it refused")
			}
			if _, err := again.WhoAmI(ctx); err != nil {
				t.Errorf("the new login's token: %v, want it to work", err)
			}
		}},
		{"L1 a missing project and a private one answer alike to another user", func(t *testing.T, s *secRegistry) {
			for _, path := range []string{"/manifests/latest", "/tags/list", "/blobs/sha256:" + strings.Repeat("0", 64)} {
				c1, _, b1 := s.reg(http.MethodGet, "/v2/nosuchproject/app"+path, "mallory", mal.Token(), nil, nil)
				c2, _, b2 := s.reg(http.MethodGet, "/v2/vic/app"+path, "mallory", mal.Token(), nil, nil)
				if c1 != c2 || ociCode(b1) != ociCode(b2) {
					t.Errorf("GET %s: missing project = %d %s; private project = %d %s; want the same answer", path, c1, ociCode(b1), c2, ociCode(b2))
				}
				if c1 == http.StatusOK {
					t.Errorf("GET /v2/nosuchproject/app%s = 200, want a refusal", path)
				}
			}
			// The same through the token flow: a JWT that grants nothing.
			for _, repo := range []string{"nosuchproject/app", "vic/app"} {
				jwtTok := s.registryJWT("mallory", mal.Token(), "repository:"+repo+":pull")
				req, _ := http.NewRequest(http.MethodGet, s.regURL("/v2/"+repo+"/manifests/latest"), nil)
				req.Header.Set("Authorization", "Bearer "+jwtTok)
				resp, err := s.hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("GET /v2/%s/manifests/latest with mallory's JWT = %d %s, want 403 for both projects", repo, resp.StatusCode, b)
				}
			}
		}},
		{"L2 a JWT with an unknown key id does not make the registry reread its key directory", func(t *testing.T, s *secRegistry) {
			// Read the keys once now, so no periodic reload is due.
			s.registryJWT("mallory", mal.Token(), "")
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			der, _ := x509.MarshalECPrivateKey(key)
			// A key that is older than the registry's newest, so no
			// rotation can explain it: only a reload for an unknown kid
			// would find it.
			kid := "k0000000000000000001"
			kf := filepath.Join(s.p.dataDir, "registry", "token-keys", kid+".pem")
			if err := os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(kf) })
			for _, k := range []string{kid, strings.Repeat("k", 8<<10)} {
				tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
					"iss": "slipway", "aud": "slipway-registry", "sub": "mallory",
					"exp": time.Now().Add(time.Minute).Unix(), "iat": time.Now().Unix(),
				})
				tok.Header["kid"] = k
				raw, err := tok.SignedString(key)
				if err != nil {
					t.Fatal(err)
				}
				req, _ := http.NewRequest(http.MethodGet, s.regURL("/v2/"), nil)
				req.Header.Set("Authorization", "Bearer "+raw)
				resp, err := s.hc.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("GET /v2/ with a JWT whose kid (%d bytes) the registry did not load = %d %s, want 401", len(k), resp.StatusCode, b)
				}
			}
		}},
		{"L7 a manifest whose layers point at foreign URLs is refused", func(t *testing.T, s *secRegistry) {
			cfg := s.putBlob("vic/foreign", []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:`+strings.Repeat("1", 64)+`"]}}`))
			for _, mt := range []string{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip"} {
				layer := s.putBlob("vic/foreign", []byte("layer for "+mt))
				m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},
"layers":[{"mediaType":%q,"digest":%q,"size":20,"urls":["http://127.0.0.1:2379/version","http://169.254.169.254/latest/meta-data/"]}]}`,
					cfg, len(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:`+strings.Repeat("1", 64)+`"]}}`), mt, layer)
				code, _, body := s.reg(http.MethodPut, "/v2/vic/foreign/manifests/x", "admin", s.admin.Token(), []byte(m), map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
				if code != http.StatusBadRequest || ociCode(body) != "MANIFEST_INVALID" {
					t.Errorf("PUT a manifest with a %s layer listing internal URLs = %d %s, want 400 MANIFEST_INVALID", mt, code, body)
				} else if !strings.Contains(body, "push") {
					t.Errorf("refusal %s does not say what to do", body)
				}
			}
		}},
		{"L8 imports refuse addresses in 0.0.0.0/8, 198.18.0.0/15, 240.0.0.0/4, NAT64 and 6to4 of private IPv4", func(t *testing.T, s *secRegistry) {
			srcs := map[string]string{"i1": "198.18.0.1:5000/a/b:latest", "i2": "0.1.2.3:5000/a/b:latest", "i3": "240.0.0.1:5000/a/b:latest",
				"i4": "[64:ff9b::a00:1]:5000/a/b:latest", "i5": "[2002:a00:1::1]:5000/a/b:latest"}
			for name, src := range srcs {
				is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "vic"}, Spec: api.ImageStreamSpec{Tags: []api.TagReference{
					{Name: "latest", From: &api.ObjectReference{Kind: "DockerImage", Name: src}, ImportPolicy: api.TagImportPolicy{Insecure: true}},
				}}}
				if err := s.admin.Create(ctx, api.ImageStreams, is); err != nil {
					t.Fatalf("create stream %s: %v", name, err)
				}
			}
			for name, src := range srcs {
				var msg string
				waitFor(t, 4*time.Minute, "the import of "+src+" to finish", func() (bool, string) {
					o, err := s.admin.Get(ctx, api.ImageStreams, "vic", name)
					if err != nil {
						return false, err.Error()
					}
					for _, tg := range o.(*api.ImageStream).Status.Tags {
						if tg.Tag == "latest" && len(tg.Conditions) > 0 {
							c := tg.Conditions[0]
							msg = c.Reason + ": " + c.Message
							return true, msg
						}
					}
					return false, "no condition yet"
				})
				if !strings.Contains(msg, "internal address") {
					t.Errorf("import of %s: %s; want it refused as an internal address", src, msg)
				}
			}
		}},
		{"L16 deleting a manifest in p/a leaves the referrers of p/a/b alone", func(t *testing.T, s *secRegistry) {
			empty := []byte("{}")
			img := mustRandomImage(t)
			raw, err := img.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			var subject, artifact string
			for _, repo := range []string{"vic/a", "vic/a/b"} {
				subject = s.push(repo+":base", img)
				e := s.putBlob(repo, empty)
				man := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig",
"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},
"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2}],
"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}}`, e, e, subject, len(raw))
				sum := sha256.Sum256([]byte(man))
				artifact = "sha256:" + hex.EncodeToString(sum[:])
				code, _, body := s.reg(http.MethodPut, "/v2/"+repo+"/manifests/"+artifact, "admin", s.admin.Token(), []byte(man), map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
				if code != http.StatusCreated {
					t.Fatalf("push the referrer to %s: %d %s", repo, code, body)
				}
			}
			if code, _, body := s.reg(http.MethodDelete, "/v2/vic/a/manifests/"+artifact, "admin", s.admin.Token(), nil, nil); code != http.StatusAccepted {
				t.Fatalf("delete the referrer in vic/a: %d %s", code, body)
			}
			code, _, body := s.reg(http.MethodGet, "/v2/vic/a/b/referrers/"+subject, "admin", s.admin.Token(), nil, nil)
			if code != http.StatusOK || !strings.Contains(body, artifact) {
				t.Errorf("referrers of vic/a/b after deleting the referrer in vic/a = %d %s, want it still to list %s", code, body, artifact)
			}
			_, _, body = s.reg(http.MethodGet, "/v2/vic/a/referrers/"+subject, "admin", s.admin.Token(), nil, nil)
			if strings.Contains(body, artifact) {
				t.Errorf("referrers of vic/a still list the deleted %s: %s", artifact, body)
			}
		}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) { r.run(t, s.on(t)) })
	}
}

// TestSecurityRegistryLogin has its own server: its rows throttle logins
// from 127.0.0.1.
func TestSecurityRegistryLogin(t *testing.T) {
	s := startSecRegistry(t)
	rows := []struct {
		name string
		run  func(t *testing.T, s *secRegistry)
	}{
		{"L6 an unsalted {SHA} htpasswd entry does not log in", func(t *testing.T, s *secRegistry) {
			code, _, body := s.login("shauser", "shapw")
			if code != http.StatusUnauthorized {
				t.Errorf("login as a {SHA} htpasswd user = %d %s, want 401", code, body)
			}
		}},
		{"L6 an online password guesser is throttled with 429 and Retry-After", func(t *testing.T, s *secRegistry) {
			var code int
			var hdr http.Header
			var body string
			for i := 0; i < 40; i++ {
				code, hdr, body = s.login("victim", fmt.Sprintf("guess-%d", i))
				if code != http.StatusUnauthorized {
					break
				}
			}
			if code != http.StatusTooManyRequests {
				t.Fatalf("after 40 wrong passwords for victim, login = %d %s, want 429", code, body)
			}
			if ra := hdr.Get("Retry-After"); ra == "" || ra == "0" {
				t.Errorf("429 has Retry-After %q, want a number of seconds", ra)
			}
			if !strings.Contains(body, "try again") {
				t.Errorf("429 body %s does not say when to try again", body)
			}
			// The guesser's right password is not even checked now.
			if code, _, body := s.login("victim", "victimpw"); code != http.StatusTooManyRequests {
				t.Errorf("victim's right password while throttled = %d %s, want 429", code, body)
			}
		}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) { r.run(t, s.on(t)) })
	}
}

// login posts a password login and returns the raw answer.
func (s *secRegistry) login(user, password string) (int, http.Header, string) {
	s.t.Helper()
	ca, err := os.ReadFile(s.p.caFile())
	if err != nil {
		s.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodPost, s.p.url()+"/oauth/token", nil)
	req.SetBasicAuth(user, password)
	resp, err := hc.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// registryJWT asks the token endpoint for scope as user.
func (s *secRegistry) registryJWT(user, token, scope string) string {
	s.t.Helper()
	path := "/v2/token?service=slipway-registry"
	if scope != "" {
		path += "&scope=" + scope
	}
	code, _, body := s.reg(http.MethodGet, path, user, token, nil, nil)
	if code != http.StatusOK {
		s.t.Fatalf("token for %s: %d %s", scope, code, body)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.Token == "" {
		s.t.Fatalf("token answer %s: %v", body, err)
	}
	return out.Token
}

func mustRandomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
