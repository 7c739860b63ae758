package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/console"
	"slipway.dev/slipway/lineage"
	"slipway.dev/slipway/server/servertest"
)

// TestConsoleLineage: GET lineage traces an image as `slipway trace`
// does, with the session's rights: its signature and SBOM referrers by
// digest for a user of its project, its base in a project the user may
// not read as a hidden node, and for a user of another project a refusal
// that names nothing of it.
func TestConsoleLineage(t *testing.T) {
	env := servertest.Start(t)
	ctx := context.Background()
	admin := env.Admin
	for _, p := range []string{"dev", "secret"} {
		if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}); err != nil {
			t.Fatal(err)
		}
	}
	for ns, u := range map[string]string{"dev": "alice", "secret": "carol"} {
		if err := admin.Create(ctx, api.RoleBindings, &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: "admin-" + u, Namespace: ns},
			RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "admin"}, Subjects: []api.Subject{{Kind: api.SubjectUser, Name: u}}}); err != nil {
			t.Fatal(err)
		}
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	push := func(ref string, img v1.Image) string {
		t.Helper()
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(r, img, auth); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		d, _ := img.Digest()
		return d.String()
	}
	base, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	baseDigest := push(env.Registry+"/secret/base:1", base)
	app, _ := random.Image(256, 1)
	app = mutate.Annotations(app, map[string]string{builders.BaseNameAnnotation: env.Registry + "/secret/base", builders.BaseDigestAnnotation: baseDigest}).(v1.Image)
	appDigest := push(env.Registry+"/dev/web:latest", app)

	// A signature by the project's key, and a CycloneDX SBOM referrer.
	if err := admin.Create(ctx, api.SigningKeys, &api.SigningKey{ObjectMeta: api.ObjectMeta{Name: "default", Namespace: "dev"}}); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"image": env.Registry + "/dev/web@" + appDigest})
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		resp, err := admin.Do(ctx, http.MethodPost, client.Path(api.SigningKeys, "dev", "default", "sign"), nil, body, "application/json")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("signing web@%s: %v", appDigest, err)
		}
	}
	sbom, _ := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: static.NewLayer([]byte(`{"bomFormat":"CycloneDX"}`), "application/vnd.cyclonedx+json")})
	sbom = mutate.ConfigMediaType(sbom, "application/vnd.cyclonedx+json")
	sbom = mutate.Subject(sbom, v1.Descriptor{MediaType: types.DockerManifestSchema2, Digest: mustHash(t, appDigest), Size: mustSize(t, app)}).(v1.Image)
	sbomDigest := push(env.Registry+"/dev/web@"+mustDigestOf(t, sbom), sbom)

	trace := func(b *browser, ns, target string) (answer, console.LineageAnswer) {
		t.Helper()
		a := b.do(http.MethodGet, console.Prefix+"lineage?"+url.Values{"namespace": {ns}, "target": {target}}.Encode(), nil, nil)
		var out console.LineageAnswer
		if a.Code == http.StatusOK {
			if err := json.Unmarshal([]byte(a.Body), &out); err != nil {
				t.Fatalf("lineage answer %s: %v", a.Body, err)
			}
		}
		return a, out
	}
	kinds := func(g *lineage.Graph) map[string]lineage.Node {
		out := map[string]lineage.Node{}
		for _, n := range g.Nodes {
			out[n.Kind+" "+n.Digest] = n
		}
		return out
	}

	alice := newBrowser(t, env)
	mustCode(t, "alice logs in", alice.login("alice", servertest.Password("alice")), http.StatusOK)
	a, got := trace(alice, "dev", "web:latest")
	mustCode(t, "alice traces web:latest", a, http.StatusOK)
	if got.Root != "image:"+appDigest {
		t.Errorf("root = %q, want image:%s", got.Root, appDigest)
	}
	var sigDigest string
	for _, n := range got.Graph.Nodes {
		if n.Kind == "Signature" {
			sigDigest = n.Digest
		}
	}
	k := kinds(got.Graph)
	if sigDigest == "" || !strings.HasPrefix(sigDigest, "sha256:") {
		t.Errorf("alice's trace has no signature by digest: %+v", got.Graph.Nodes)
	}
	if _, ok := k["SBOM "+sbomDigest]; !ok {
		t.Errorf("alice's trace has no SBOM %s: %+v", sbomDigest, got.Graph.Nodes)
	}
	if n := k["Image "+baseDigest]; !n.NotVisible || n.Detail != lineage.NotVisibleMessage {
		t.Errorf("the base in secret = %+v, want a node not visible to alice", n)
	}
	if strings.Contains(a.Body, "secret/base:1") {
		t.Errorf("alice's trace names secret's tag: %s", a.Body)
	}
	// The same by digest alone, and as STREAM@DIGEST.
	for _, target := range []string{appDigest, "web@" + appDigest} {
		a, got := trace(alice, "dev", target)
		mustCode(t, "alice traces "+target, a, http.StatusOK)
		if _, ok := kinds(got.Graph)["Signature "+sigDigest]; !ok {
			t.Errorf("alice's trace of %s lacks the signature %s", target, sigDigest)
		}
	}

	carol := newBrowser(t, env)
	mustCode(t, "carol logs in", carol.login("carol", servertest.Password("carol")), http.StatusOK)
	for _, target := range []string{"web:latest", "web@" + appDigest, appDigest, "dc/web", "pod/web"} {
		a, _ := trace(carol, "dev", target)
		mustCode(t, "carol traces dev's "+target, a, http.StatusForbidden)
		if strings.Contains(a.Body, sigDigest) || strings.Contains(a.Body, sbomDigest) || !strings.Contains(target, appDigest) && strings.Contains(a.Body, appDigest) {
			t.Errorf("carol's refused trace of %s told her something of dev's: %s", target, a.Body)
		}
	}
	a = newBrowser(t, env).do(http.MethodGet, console.Prefix+"lineage?namespace=dev&target=web:latest", nil, nil)
	mustCode(t, "lineage without a session", a, http.StatusUnauthorized)
	mustCode(t, "lineage without a target", alice.do(http.MethodGet, console.Prefix+"lineage?namespace=dev", nil, nil), http.StatusBadRequest)
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func mustSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	n, err := img.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustDigestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
