package registry_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server/servertest"
)

// discardWriter is the least a ResponseWriter can be, so that the
// benchmark measures the registry's handler and not a recorder.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkManifestGetFast measures the registry's handler alone for a
// manifest GET by tag with a registry JWT, as registrybench's clients
// send it, answered from the manifest cache.
func BenchmarkManifestGetFast(b *testing.B) {
	env := servertest.Start(b)
	ctx := b.Context()
	if err := env.Admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bench"}}); err != nil {
		b.Fatal(err)
	}
	img, err := random.Image(1024, 1)
	if err != nil {
		b.Fatal(err)
	}
	ref, err := name.ParseReference(env.Registry+"/bench/app:s-0", name.Insecure)
	if err != nil {
		b.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "x", Password: env.Admin.Token()}), remote.WithContext(ctx)); err != nil {
		b.Fatal(err)
	}
	q := url.Values{"service": {"slipway-registry"}, "scope": {"repository:bench/app:pull"}}
	treq, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+env.Registry+"/v2/token?"+q.Encode(), nil)
	treq.SetBasicAuth("x", env.Admin.Token())
	tres, err := http.DefaultClient.Do(treq)
	if err != nil {
		b.Fatal(err)
	}
	var tok struct{ Token string }
	err = json.NewDecoder(tres.Body).Decode(&tok)
	tres.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	mk := func() *http.Request {
		r, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+env.Registry+"/v2/bench/app/manifests/s-0", nil)
		r.Header.Set("Authorization", "Bearer "+tok.Token)
		r.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json")
		r.Header.Set("User-Agent", "go-containerregistry/v0.20.3")
		return r
	}
	reg := env.Server.Registry
	// The steady state: the fast path holds a link file only once it
	// has been quiet for a while (linked).
	time.Sleep(3 * time.Second)
	// Warm: the first GET may fill the cache.
	for range 3 {
		reg.ServeHTTP(&discardWriter{h: http.Header{}}, mk())
	}
	// One request and writer for every iteration: the fast path does
	// not change the request, and a fresh one per iteration would
	// measure the benchmark.
	r, w := mk(), &discardWriter{h: http.Header{}}
	before := registry.FastPathHits(reg)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		reg.ServeHTTP(w, r)
	}
	if got := registry.FastPathHits(reg) - before; got < int64(b.N) {
		b.Fatalf("%d of %d GETs answered from the cache", got, b.N)
	}
}
