package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/sirupsen/logrus"

	"slipway.dev/slipway/api"
)

// TestMirror runs `slipway start --mirror docker.io=UPSTREAM` with a second
// registry (distribution, in this process, on loopback) as Docker Hub: the
// real docker pulls through the mirror, stock cosign verifies the
// upstream's signature from it, a pod naming docker.io/library/web:1 runs
// from it, and with the upstream stopped all three still work from the
// cache.
func TestMirror(t *testing.T) {
	logrus.SetLevel(logrus.FatalLevel)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"inmemory":    configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.HTTP.Secret = "mirror-test"
	cfg.HTTP.RelativeURLs = true
	up := httptest.NewServer(handlers.NewApp(context.Background(), cfg))
	t.Cleanup(up.Close)
	upHost := strings.TrimPrefix(up.URL, "http://")

	// The upstream's image, signed there with a key of the test's own.
	img := httpdImage(t, "mirrored", 8080)
	if err := remote.Write(mustRef(t, upHost+"/library/web:1"), img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	digest := d.String()
	dir := t.TempDir()
	cosign := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, cosignBinary(t), args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "DOCKER_CONFIG=" + filepath.Join(dir, "docker"), "TUF_ROOT=" + filepath.Join(dir, "tuf"), "COSIGN_PASSWORD="}
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		if err := cmd.Run(); err != nil {
			t.Fatalf("cosign %s: %v\n%s%s", strings.Join(args, " "), err, o.String(), e.String())
		}
		return o.String()
	}
	cosign("generate-key-pair")
	cosign("sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry", "--allow-http-registry", "-y", upHost+"/library/web@"+digest)

	c := startCluster(t, "mirror", "--mirror", "docker.io="+up.URL, "--import-allow", upHost, "--import-allow-cidr", "127.0.0.0/8")
	mirrored := c.p.registry + "/docker.io/library/web"
	dk := newDockerCLI(t)
	dk.login(c.p.registry, "admin", c.admin.Token())
	verify := func() {
		t.Helper()
		_, _, err := cosignRun(t, dir, c.p.registry, "admin", c.admin.Token(), "verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", mirrored+"@"+digest)
		if err != nil {
			t.Fatalf("cosign verify through the mirror: %v", err)
		}
	}
	pull := func() {
		t.Helper()
		if out := dk.ok("pull", mirrored+":1"); !strings.Contains(out, digest) {
			t.Fatalf("docker pull %s:1 does not show the upstream's digest %s:\n%s", mirrored, digest, out)
		}
	}
	run := func(pod string) {
		t.Helper()
		// A pod names the image as on Docker Hub; its node pulls it
		// through the mirror, with the project's credentials.
		p := &api.Pod{ObjectMeta: api.ObjectMeta{Name: pod, Namespace: c.ns}, Spec: api.PodSpec{Containers: []api.Container{{
			Name: "web", Image: "docker.io/library/web:1",
			ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 8080}, PeriodSeconds: 1},
		}}}}
		if err := c.admin.Create(context.Background(), api.Pods, p); err != nil {
			t.Fatal(err)
		}
		var ip string
		waitFor(t, time.Minute, pod+" runs from the mirror", func() (bool, string) {
			p, err := c.pod(pod)
			if err != nil {
				return false, err.Error()
			}
			ip = p.Status.PodIP
			return running(p), describePods([]*api.Pod{p})
		})
		if body, err := get("http://"+ip+":8080/", 30*time.Second); err != nil || body != "mirrored" {
			t.Fatalf("GET %s:8080 on pod %s = %q, %v", ip, pod, body, err)
		}
	}
	pull()
	dk.ok("rmi", mirrored+":1")
	run("first")
	verify()
	// Read every blob through the mirror once: docker fetches no layer
	// its engine already holds (another test's image may share one), and
	// skopeo below reads them all with the upstream down (seen on a fresh
	// root: 503 for a busybox layer docker had not asked the mirror for).
	ref, err := name.ParseReference(mirrored+":1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	cached, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "admin", Password: c.admin.Token()}))
	if err != nil {
		t.Fatalf("reading %s through the mirror: %v", ref, err)
	}
	if err := validate.Image(cached); err != nil {
		t.Fatalf("reading every blob of %s through the mirror: %v", ref, err)
	}

	// Docker Hub is down: everything pulled so far comes from the cache.
	up.Close()
	resp, err := http.Get(up.URL + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the upstream still answers after Close")
	}
	// (docker and the agent resolve the tag at the registry on every
	// pull; the blobs' coming from the cache the registry tests show.)
	pull()
	run("second")
	verify()
	// skopeo reads every blob, all from the cache.
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatalf("skopeo is not installed: %s", depsHint)
	}
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	skopeo := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "skopeo", append([]string{"--policy", policy}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	creds := "admin:" + c.admin.Token()
	var inspect struct{ Digest string }
	if err := json.Unmarshal([]byte(skopeo("inspect", "--tls-verify=false", "--creds", creds, "docker://"+mirrored+":1")), &inspect); err != nil || inspect.Digest != digest {
		t.Fatalf("skopeo inspect through the mirror: digest %q, %v; want %s", inspect.Digest, err, digest)
	}
	skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, "docker://"+mirrored+":1", "oci:"+filepath.Join(dir, "oci")+":web")
	out := dk.fails("pull", c.p.registry+"/docker.io/library/never:1")
	// (docker shows a 503's status, not its message; ggcr and skopeo
	// show "has no cached copy", registry/mirror_test.go.)
	if !strings.Contains(out, "503") {
		t.Errorf("pulling an uncached image with the upstream down says:\n%s\nwant 503 Service Unavailable", out)
	}
}
