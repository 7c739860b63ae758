package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
)

// fileLayer is a layer holding one file.
func fileLayer(t *testing.T, path, content string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := filepath.Dir(path)
	tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: path, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
	tw.Write([]byte(content))
	tw.Close()
	l, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

// TestMassRebaseRebuild: 200 build configs declare rebase and hold pushed
// images built on base v1 (known from their annotations). After base v2 is
// pushed, `rebuild --dry-run` lists all 200 and `rebuild` rebases all of
// them with no BuildKit at all (the server runs without one): every new
// image is the new base's layers plus its own app layer, records both
// digests, and runs under docker. Run again, it resumes past all 200.
func TestMassRebaseRebuild(t *testing.T) {
	const n = 200
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--buildkitd", "none")
	admin := p.admin(t)
	ctx := context.Background()
	for _, pr := range []string{"base", "team"} {
		if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: pr}}); err != nil {
			t.Fatal(err)
		}
	}
	// The team's builds may pull the shared base, as in OpenShift:
	// image-puller in the base project for the team's builder account.
	if err := admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "team-builders-pull", Namespace: "base"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "builder", Namespace: "team"}},
	}); err != nil {
		t.Fatal(err)
	}
	auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})
	v1img := busyboxImage(t)
	if err := remote.Write(mustRef(t, p.registry+"/base/os:1"), v1img, auth); err != nil {
		t.Fatal(err)
	}
	v1digest, _ := v1img.Digest()
	baseName := p.registry + "/base/os"

	appLayers := make([]string, n)
	oldDigests := make([]string, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			app := fileLayer(t, "app/msg", fmt.Sprintf("hello from app %d\n", i))
			img, err := mutate.AppendLayers(v1img, app)
			if err != nil {
				errs <- err
				return
			}
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.Config.Cmd = []string{"/bin/busybox", "cat", "/app/msg", "/etc/patched"}
			img, _ = mutate.ConfigFile(img, cf)
			img = mutate.Annotations(img, map[string]string{
				"org.opencontainers.image.base.name":   baseName,
				"org.opencontainers.image.base.digest": v1digest.String(),
			}).(v1.Image)
			if err := remote.Write(mustRef(t, fmt.Sprintf("%s/team/app-%03d:latest", p.registry, i)), img, auth); err != nil {
				errs <- err
				return
			}
			d, _ := app.Digest()
			appLayers[i] = d.String()
			id, _ := img.Digest()
			oldDigests[i] = id.String()
			bc := &api.BuildConfig{
				ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("app-%03d", i), Namespace: "team"},
				Spec: api.BuildConfigSpec{
					Rebase:   true,
					Source:   api.BuildSource{Dockerfile: "FROM base\nCOPY msg /app/msg\n"},
					Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "os:1"}}},
					Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: fmt.Sprintf("app-%03d:latest", i)}},
				},
			}
			errs <- admin.Create(ctx, api.BuildConfigs, bc)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// The security fix: base v2 has the old layer and a patch layer.
	v2img, err := mutate.AppendLayers(v1img, fileLayer(t, "etc/patched", "patched\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, p.registry+"/base/os:1"), v2img, auth); err != nil {
		t.Fatal(err)
	}
	v2digest, _ := v2img.Digest()
	v2layers := layerDigests(t, v2img)

	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	var plan struct {
		Items []struct {
			Name string
			Wave int
		} `json:"buildConfigs"`
	}
	if err := json.Unmarshal([]byte(c.ok("rebuild", "--base", "base/os:1", "--dry-run", "-o", "json")), &plan); err != nil {
		t.Fatal(err)
	}
	if len(plan.Items) != n {
		t.Fatalf("dry run lists %d build configs, want %d", len(plan.Items), n)
	}
	for i, it := range plan.Items {
		if want := fmt.Sprintf("app-%03d", i); it.Name != want || it.Wave != 1 {
			t.Fatalf("dry run item %d = %+v, want %s in wave 1", i, it, want)
		}
	}

	out, stderr, err := c.run("", "rebuild", "--base", "base/os:1", "--max-concurrent", "8")
	if err != nil || !strings.Contains(out, fmt.Sprintf("Rebuilt %d build config(s)", n)) {
		b := waitBuild(t, admin, "team", "app-000-1")
		t.Fatalf("rebuild: %v\n%s\n%s\nbuild app-000-1 log:\n%s", err, out, stderr, b.Status.LogTail)
	}
	for i := range n {
		b := waitBuild(t, admin, "team", fmt.Sprintf("app-%03d-1", i))
		if b.Status.Phase != api.BuildComplete || b.Status.RebasedFrom != oldDigests[i] {
			t.Fatalf("build app-%03d-1 = %s (%s) rebasedFrom %q, want Complete from %s\n%s", i, b.Status.Phase, b.Status.Message, b.Status.RebasedFrom, oldDigests[i], b.Status.LogTail)
		}
		img, err := remote.Image(mustRef(t, fmt.Sprintf("%s/team/app-%03d@%s", p.registry, i, b.Status.OutputDigest)), auth)
		if err != nil {
			t.Fatal(err)
		}
		got := layerDigests(t, img)
		if len(got) != len(v2layers)+1 || strings.Join(got[:len(v2layers)], ",") != strings.Join(v2layers, ",") || got[len(v2layers)] != appLayers[i] {
			t.Fatalf("app-%03d layers = %v, want the new base's %v and then its app layer %s", i, got, v2layers, appLayers[i])
		}
		m, _ := img.Manifest()
		if m.Annotations["org.opencontainers.image.base.digest"] != v2digest.String() {
			t.Fatalf("app-%03d base annotation = %q, want %s", i, m.Annotations["org.opencontainers.image.base.digest"], v2digest)
		}
		tagged, err := remote.Image(mustRef(t, fmt.Sprintf("%s/team/app-%03d:latest", p.registry, i)), auth)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := tagged.Digest(); d.String() != b.Status.OutputDigest {
			t.Fatalf("app-%03d:latest = %s, want the rebased %s", i, d, b.Status.OutputDigest)
		}
	}

	// Every rebased image runs: its app file and the base's patch are there.
	dc := newDockerCLI(t)
	dc.login(p.registry, "admin", admin.Token())
	runErrs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			img := fmt.Sprintf("%s/team/app-%03d:latest", p.registry, i)
			out, err := dc.run("", "run", "--rm", "--network", "none", img)
			if err != nil || out != fmt.Sprintf("hello from app %d\npatched\n", i) { // the pull's progress goes to stderr
				runErrs <- fmt.Errorf("docker run %s: %v: %q", img, err, out)
			}
			dc.run("", "rmi", img)
		}()
	}
	wg.Wait()
	close(runErrs)
	for err := range runErrs {
		t.Error(err)
	}

	// Resume: run again, nothing left to do.
	if out := c.ok("rebuild", "--base", "base/os:1"); !strings.Contains(out, fmt.Sprintf("(%d already up to date, 0 failed)", n)) {
		t.Errorf("a second rebuild said:\n%s", out)
	}
}
