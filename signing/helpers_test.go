package signing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
	"slipway.dev/slipway/signing"
)

// hangGuard bounds each test's registry calls so a hang fails the test. It
// is not a timing assertion.
const hangGuard = 2 * time.Minute

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	t.Cleanup(cancel)
	return ctx
}

// fixture is a running Slipway with project "proj", owned by alice, whose
// registry the tests push to and sign in.
type fixture struct {
	env   *servertest.Env
	user  string
	token string
	auth  authn.Authenticator
}

func start(t *testing.T) *fixture {
	t.Helper()
	env := servertest.Start(t)
	alice := env.User(t, "alice")
	if err := alice.Create(ctxT(t), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "proj"}}); err != nil {
		t.Fatalf("create project: %v", err)
	}
	return &fixture{env: env, user: "alice", token: alice.Token(), auth: &authn.Basic{Username: "alice", Password: alice.Token()}}
}

func (f *fixture) opts(more ...signing.Option) []signing.Option {
	return append([]signing.Option{signing.WithAuth(f.auth)}, more...)
}

func (f *fixture) remote(t *testing.T) []remote.Option {
	return []remote.Option{remote.WithAuth(f.auth), remote.WithContext(ctxT(t))}
}

// push writes a new random image to proj/<repo>:<tag> and returns it by
// digest.
func (f *fixture) push(t *testing.T, repo, tag string) name.Digest {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag(f.env.Registry + "/proj/" + repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, f.remote(t)...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context().Digest(h.String())
}

// referrers lists the referrers of d with a plain GET of the OCI
// referrers API, authenticated through the registry's token flow.
func (f *fixture) referrers(t *testing.T, d name.Digest) v1.IndexManifest {
	t.Helper()
	rt, err := transport.NewWithContext(ctxT(t), d.Registry, f.auth, remote.DefaultTransport, []string{d.Repository.Scope(transport.PullScope)})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, fmt.Sprintf("http://%s/v2/%s/referrers/%s", d.RegistryStr(), d.RepositoryStr(), d.DigestStr()), nil)
	res, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET referrers of %s = %d %s", d, res.StatusCode, body)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("referrers of %s: %v\n%s", d, err, body)
	}
	return idx
}

var keyCache struct {
	sync.Mutex
	pairs []*signing.KeyPair
}

// key returns the i'th test key pair (password "pw"); scrypt makes each
// one take a moment, so they are shared by the tests.
func key(t *testing.T, i int) (*signing.KeyPair, *signing.Signer) {
	t.Helper()
	keyCache.Lock()
	defer keyCache.Unlock()
	for len(keyCache.pairs) <= i {
		kp, err := signing.GenerateKeyPair([]byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		keyCache.pairs = append(keyCache.pairs, kp)
	}
	kp := keyCache.pairs[i]
	s, err := signing.LoadSigner(kp.PrivateKey, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	return kp, s
}

// rawManifest is a manifest to PUT as it is.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// manifest fetches ref's manifest.
func (f *fixture) manifest(t *testing.T, ref name.Reference) (*v1.Manifest, types.MediaType) {
	t.Helper()
	desc, err := remote.Get(ref, f.remote(t)...)
	if err != nil {
		t.Fatalf("get %s: %v", ref, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	return &m, desc.MediaType
}

// putManifest writes m to ref (a tag or digest) in the same repository
// as its blobs.
func (f *fixture) putManifest(t *testing.T, ref name.Reference, m *v1.Manifest, mt types.MediaType) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(ref, rawManifest{b: b, mt: mt}, f.remote(t)...); err != nil {
		t.Fatalf("put %s: %v", ref, err)
	}
}

func sigTag(d name.Digest, suffix string) name.Tag {
	return d.Repository.Tag(strings.Replace(d.DigestStr(), ":", "-", 1) + "." + suffix)
}
