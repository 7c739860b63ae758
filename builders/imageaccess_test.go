package builders

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	"google.golang.org/protobuf/proto"
)

// TestImageAccess: a build's image is used only if the registry answers
// the build's builder account for it; the registry's host on another port
// is refused without a request, and other registries are not asked.
func TestImageAccess(t *testing.T) {
	var requests atomic.Int64
	reg := ggcrregistry.New()
	// Only builder/good may read, and only project mal.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		user, pw, ok := r.BasicAuth()
		switch {
		case !ok:
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
		case user != BuilderServiceAccount || pw != "good" || (r.URL.Path != "/v2/" && !strings.HasPrefix(r.URL.Path, "/v2/mal/")):
			w.WriteHeader(http.StatusForbidden)
		default:
			reg.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	// Pushed straight into the registry behind the check.
	inner := httptest.NewServer(reg)
	for _, repo := range []string{"mal/base", "vic/private"} {
		ref, _ := name.ParseReference(strings.TrimPrefix(inner.URL, "http://")+"/"+repo+":1", name.Insecure)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	inner.Close()
	for _, tc := range []struct {
		ref, secret string
		denied      bool
		asks        bool // reaches the registry
		says        string
	}{
		{ref: host + "/mal/base@" + d.String(), secret: "good", asks: true},
		{ref: host + "/mal/base:1", secret: "good", asks: true},
		{ref: host + "/vic/private@" + d.String(), secret: "good", denied: true, asks: true, says: "add-role-to-user image-puller system:serviceaccount:mal:builder -n vic"},
		{ref: host + "/mal/base@" + d.String(), secret: "revoked", denied: true, asks: true},
		{ref: hostOf(host) + ":1/vic/private@" + d.String(), secret: "good", denied: true, says: "another port"},
		{ref: "docker.io/library/busybox:latest", secret: "good"},
		{ref: "busybox", secret: "good"},
	} {
		before := requests.Load()
		a := newImageAccess(host, "mal", tc.secret)
		err := a.check(context.Background(), tc.ref)
		if got := errors.Is(err, errImageDenied); got != tc.denied || (err != nil && !tc.denied) {
			t.Errorf("check(%s, secret %s) = %v, want denied %v", tc.ref, tc.secret, err, tc.denied)
		}
		if err != nil && !strings.Contains(err.Error(), tc.says) {
			t.Errorf("check(%s) = %v, want it to say %q", tc.ref, err, tc.says)
		}
		if asked := requests.Load() > before; asked != tc.asks {
			t.Errorf("check(%s) asked the registry: %v, want %v", tc.ref, asked, tc.asks)
		}
	}
}

// TestScopeDefinitionForcesPull: every image source of a build's LLB is
// handed over for checking and set to force-pull mode, and the graph stays
// whole.
func TestScopeDefinitionForcesPull(t *testing.T) {
	const stolen = "127.0.0.1:5000/vic/private@sha256:0123456789012345678901234567890123456789012345678901234567890123"
	st := llb.Image("docker.io/library/busybox:latest").
		File(llb.Copy(llb.Image(stolen), "/secret.txt", "/stolen.txt")).
		Run(llb.Shlex("true"), llb.AddMount("/v", llb.Image("127.0.0.1:5000/mal/base:1"))).Root()
	def, err := st.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	scoped, err := scopeDefinition(def.ToPB(), cacheScope("mal"), func(ref string) { refs = append(refs, ref) })
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(refs)
	want := []string{"127.0.0.1:5000/mal/base:1", stolen, "docker.io/library/busybox:latest"}
	if !slices.Equal(refs, want) {
		t.Errorf("images handed over = %v, want %v", refs, want)
	}
	have := map[string]bool{}
	for _, dt := range scoped.Def {
		have[string(dt)] = true
	}
	n := 0
	for _, dt := range scoped.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		if src := op.GetSource(); src != nil && strings.HasPrefix(src.Identifier, dockerImageScheme) {
			n++
			if m := src.Attrs[pb.AttrImageResolveMode]; m != pb.AttrImageResolveModeForcePull {
				t.Errorf("%s: resolve mode %q, want %q", src.Identifier, m, pb.AttrImageResolveModeForcePull)
			}
		}
	}
	if n != 3 {
		t.Errorf("%d image sources in the rewritten definition, want 3", n)
	}
	if len(scoped.Metadata) != len(def.Metadata) {
		t.Errorf("metadata: %d entries, want %d", len(scoped.Metadata), len(def.Metadata))
	}
}

// TestScopeDefinitionRefusesDaemonFetches: sources buildkitd fetches
// itself, from the host's network, are refused; images and local
// contexts pass.
func TestScopeDefinitionRefusesDaemonFetches(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   llb.State
		ok   bool
	}{
		{"image", llb.Image("docker.io/library/busybox:latest"), true},
		{"local", llb.Local("context"), true},
		{"http", llb.HTTP("http://127.0.0.1:2379/version"), false},
		{"https", llb.HTTP("https://169.254.169.254/latest/meta-data/"), false},
		{"git", llb.Git("https://example.invalid/repo.git", "main"), false},
	} {
		def, err := tc.st.Marshal(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, err = scopeDefinition(def.ToPB(), cacheScope("mal"), func(string) {})
		if (err == nil) != tc.ok {
			t.Errorf("%s: scopeDefinition = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "RUN step") {
			t.Errorf("%s: %v; want it to say what to do instead", tc.name, err)
		}
	}
}
