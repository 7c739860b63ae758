package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// secBuildEnv is one server with builds, two tenants (mallory attacks,
// victim is attacked) and a loopback git server.
type secBuildEnv struct {
	t              *testing.T
	p              *proc
	admin          *client.Client
	mallory        *client.Client
	victim         *client.Client
	gitHost        string // host:port of the git server
	gitRepo        string // path of the bare repository on disk
	etcdAddr       string // host:port the embedded etcd's clients use
	hostHits       atomic.Int64
	hostListenPort string
}

func startSecBuildEnv(t *testing.T) *secBuildEnv {
	t.Helper()
	root := t.TempDir()
	repo := filepath.Join(root, "app.git")
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM base\nCOPY hello.txt /hello.txt\n"), 0o644)
	os.WriteFile(filepath.Join(work, "hello.txt"), []byte("hello from git\n"), 0o644)
	git(t, work, "add", ".")
	git(t, work, "commit", "-q", "-m", "first")
	git(t, root, "clone", "-q", "--bare", work, repo)
	e := &secBuildEnv{t: t, gitHost: gitServer(t, root), gitRepo: repo}

	users := htpasswdFile(t, map[string]string{"mallory": "mallorypw", "victim": "victimpw"})
	dir, addr := t.TempDir(), freePort(t)
	e.p = startServer(t, dir, addr, "--buildkitd", buildkitd(t), "--htpasswd", users,
		"--import-allow", e.gitHost, "--import-allow-cidr", "127.0.0.0/8")
	logIfDied(t, e.p)
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(e.p.out.String()), "\n")
			t.Logf("server log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			if b, err := os.ReadFile(filepath.Join(dir, "buildkit", "buildkitd.log")); err == nil {
				bl := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("buildkitd log (last lines):\n%s", strings.Join(bl[max(0, len(bl)-30):], "\n"))
			}
		}
	})
	e.admin = e.p.admin(t)
	e.mallory, e.victim = e.login("mallory", "mallorypw"), e.login("victim", "victimpw")
	ctx := context.Background()
	for _, pc := range []struct {
		c    *client.Client
		name string
	}{{e.mallory, "mal"}, {e.victim, "vic"}} {
		if err := pc.c.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: pc.name}}); err != nil {
			t.Fatalf("create project %s: %v", pc.name, err)
		}
		auth := remote.WithAuth(&authn.Basic{Username: "x", Password: pc.c.Token()})
		if err := remote.Write(mustRef(t, e.p.registry+"/"+pc.name+"/base:1"), busyboxImage(t), auth); err != nil {
			t.Fatalf("push base into %s: %v", pc.name, err)
		}
	}
	var addrs struct{ Client string }
	data, err := os.ReadFile(filepath.Join(dir, "etcd.json"))
	if err != nil || json.Unmarshal(data, &addrs) != nil || addrs.Client == "" {
		t.Fatalf("etcd.json = %s, %v; want the embedded etcd's client address", data, err)
	}
	e.etcdAddr = addrs.Client

	// A listener on every host address: a build step must reach none.
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	_, e.hostListenPort, _ = net.SplitHostPort(ln.Addr().String())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hostHits.Add(1)
		fmt.Fprintf(w, "host-listener-reached")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return e
}

func (e *secBuildEnv) login(user, pw string) *client.Client {
	e.t.Helper()
	ca, err := os.ReadFile(e.p.caFile())
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := client.New(e.p.url(), client.WithCAData(ca))
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := c.Login(context.Background(), user, pw)
	if err != nil {
		e.t.Fatalf("login %s: %v", user, err)
	}
	c, err = client.New(e.p.url(), client.WithCAData(ca), client.WithToken(resp.Token))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// build creates a Build directly (as `slipway start-build` does) from an
// inline Dockerfile on the project's base:1 and returns the create error.
func (e *secBuildEnv) build(c *client.Client, ns, name string, spec api.BuildSpec) error {
	if spec.Strategy.Type == "" {
		spec.Strategy = api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}}
	}
	if spec.Output.To == nil {
		spec.Output.To = &api.ObjectReference{Kind: "ImageStreamTag", Name: name + ":latest"}
	}
	return c.Create(context.Background(), api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Spec: spec})
}

func (e *secBuildEnv) mustBuild(t *testing.T, c *client.Client, ns, name string, spec api.BuildSpec) *api.Build {
	t.Helper()
	if err := e.build(c, ns, name, spec); err != nil {
		t.Fatalf("create build %s/%s: %v", ns, name, err)
	}
	return waitBuild(t, e.admin, ns, name)
}

// hostIP is an address of this machine other than loopback.
func hostIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address")
	return ""
}

// proberSource is a static program that tries each name=URL it is given
// and prints PROBE <name> REACHED|BLOCKED <detail>. "self" is a listener
// it starts inside the build step, to show that probing works at all;
// GATEWAY in a URL is the default gateway of the step's network.
const proberSource = `package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func gateway() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return "0.0.0.0"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 2 && fs[1] == "00000000" {
			b, _ := hex.DecodeString(fs[2])
			if len(b) == 4 {
				return net.IPv4(b[3], b[2], b[1], b[0]).String()
			}
		}
	}
	return "0.0.0.0"
}

// serve: listen on every address for the given seconds and say where.
func serve(secs string) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		fmt.Println("SERVE-FAILED", err)
		os.Exit(1)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			fmt.Printf("SERVING %s\n", net.JoinHostPort(n.IP.String(), port))
			break
		}
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "other-build-reached") }))
	d, _ := time.ParseDuration(secs + "s")
	time.Sleep(d)
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "serve" {
		serve(os.Args[2])
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err == nil {
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "self-reached") }))
	}
	hc := &http.Client{Timeout: 4 * time.Second}
	targets := append([]string{"self=http://" + ln.Addr().String() + "/"}, os.Args[1:]...)
	for _, a := range targets {
		name, url, _ := strings.Cut(a, "=")
		url = strings.ReplaceAll(url, "GATEWAY", gateway())
		resp, err := hc.Get(url)
		if err != nil {
			fmt.Printf("PROBE %s BLOCKED %s: %v\n", name, url, err)
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
		resp.Body.Close()
		fmt.Printf("PROBE %s REACHED %s: %d %q\n", name, url, resp.StatusCode, body)
	}
	fmt.Println("PROBES-DONE")
}
`

// proberImage is the busybox image plus the prober at /probe.
func proberImage(t *testing.T) v1.Image {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(proberSource), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module prober\n\ngo 1.22\n"), 0o600)
	cmd := exec.Command("go", "build", "-o", "probe", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the prober: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "probe", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	tw.Close()
	layer, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(busyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// probes runs one build in mallory's project that tries every way out of
// the build's network and returns each probe's result.
func (e *secBuildEnv) probes(t *testing.T) map[string]string {
	t.Helper()
	auth := remote.WithAuth(&authn.Basic{Username: "x", Password: e.mallory.Token()})
	if err := remote.Write(mustRef(t, e.p.registry+"/mal/prober:1"), proberImage(t), auth); err != nil {
		t.Fatal(err)
	}
	port := e.hostListenPort
	cmd, _ := json.Marshal([]string{"/probe",
		"loopback=http://127.0.0.1:" + port + "/",
		"gateway=http://GATEWAY:" + port + "/",
		"hostaddr=http://" + net.JoinHostPort(hostIP(t), port) + "/",
		"etcd=http://" + e.etcdAddr + "/version",
		"metadata=http://169.254.169.254/latest/meta-data/",
	})
	b := e.mustBuild(t, e.mallory, "mal", "probe", api.BuildSpec{
		Source:   api.BuildSource{Dockerfile: "FROM prober\nRUN " + string(cmd) + "\n"},
		Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "prober:1"}}},
	})
	if b.Status.Phase != api.BuildComplete || !strings.Contains(b.Status.LogTail, "PROBES-DONE") {
		t.Fatalf("the probe build = %s/%s %s; want it to run its probes\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	out := map[string]string{}
	for _, line := range strings.Split(b.Status.LogTail, "\n") {
		if _, rest, ok := strings.Cut(line, "PROBE "); ok {
			name, result, _ := strings.Cut(rest, " ")
			out[name] = result
		}
	}
	t.Logf("probe results (host listener hits: %d):\n%s", e.hostHits.Load(), b.Status.LogTail)
	if !strings.HasPrefix(out["self"], "REACHED") {
		t.Fatalf("the probe could not even reach a listener inside the build step (%q): the probes prove nothing", out["self"])
	}
	return out
}

// TestSecurityBuild plays the attacker against builds: a build step that
// reaches the host, a direct Build with a dangerous git URI, credentials
// in a git URI, caches shared between tenants, builds without an end, and
// a tenant that holds every build slot.
func TestSecurityBuild(t *testing.T) {
	e := startSecBuildEnv(t)
	ctx := context.Background()
	var probeResults map[string]string
	probed := false
	probe := func(t *testing.T) map[string]string {
		if !probed {
			probed = true
			probeResults = e.probes(t)
		}
		if probeResults == nil {
			t.Fatal("the probe build failed; see the first C2 row")
		}
		return probeResults
	}
	notReached := func(name string) func(t *testing.T) {
		return func(t *testing.T) {
			r, ok := probe(t)[name]
			if !ok {
				t.Fatalf("probe %s did not run", name)
			}
			if strings.HasPrefix(r, "REACHED") {
				t.Errorf("a build step reached %s: %s", name, r)
			}
		}
	}
	refused := func(uri string) func(t *testing.T) {
		return func(t *testing.T) {
			n := fmt.Sprintf("direct-%d", time.Now().UnixNano())
			err := e.build(e.mallory, "mal", n, api.BuildSpec{Source: api.BuildSource{Git: &api.GitBuildSource{URI: uri}}})
			if err == nil {
				b := waitBuild(t, e.admin, "mal", n)
				t.Fatalf("a direct Build from %s was accepted; it ended %s/%s: %s\n%s", uri, b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
			}
			if !strings.Contains(err.Error(), "spec.source.git.uri") || !strings.Contains(err.Error(), "http") {
				t.Errorf("create: %v; want an error naming spec.source.git.uri and saying to use http(s)", err)
			}
		}
	}
	pb := &privateBase{}
	noFrom := &api.DockerBuildStrategy{} // the Dockerfile's FROM stands
	onBase := &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}
	for _, row := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"C2 a build step reaches a listener on the host's loopback", notReached("loopback")},
		{"C2 a build step reaches the host through its network's gateway", notReached("gateway")},
		{"C2 a build step reaches the host's own address", notReached("hostaddr")},
		{"C2 a build step reaches the embedded etcd", notReached("etcd")},
		{"C2 no build step reached the host listener at all", func(t *testing.T) {
			probe(t)
			if n := e.hostHits.Load(); n != 0 {
				t.Errorf("the host listener answered %d requests from build steps", n)
			}
		}},
		{"C2 the embedded etcd answers a client without a certificate", func(t *testing.T) {
			for _, cfg := range []clientv3.Config{
				{Endpoints: []string{"http://" + e.etcdAddr}, DialTimeout: 5 * time.Second},
				{Endpoints: []string{"https://" + e.etcdAddr}, DialTimeout: 5 * time.Second, TLS: &tls.Config{InsecureSkipVerify: true}},
			} {
				c, err := clientv3.New(cfg)
				if err != nil {
					continue
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := c.Get(cctx, "/slipway/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				cancel()
				c.Close()
				if err == nil {
					t.Errorf("etcd at %s answered a client without a certificate: %d keys", cfg.Endpoints[0], resp.Count)
				}
			}
		}},
		{"C2 a build step reaches another project's build step", func(t *testing.T) {
			prober := proberImage(t)
			for _, pc := range []struct {
				c  *client.Client
				ns string
			}{{e.victim, "vic"}, {e.mallory, "mal"}} {
				auth := remote.WithAuth(&authn.Basic{Username: "x", Password: pc.c.Token()})
				if err := remote.Write(mustRef(t, e.p.registry+"/"+pc.ns+"/prober:1"), prober, auth); err != nil {
					t.Fatal(err)
				}
			}
			from := api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "prober:1"}}}
			if err := e.build(e.victim, "vic", "serving", api.BuildSpec{Strategy: from,
				Source: api.BuildSource{Dockerfile: "FROM prober\nRUN [\"/probe\", \"serve\", \"120\"]\n"}}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if o, err := e.admin.Get(ctx, api.Builds, "vic", "serving"); err == nil {
					b := o.(*api.Build)
					b.Status.Cancelled = true
					_ = e.admin.UpdateStatus(ctx, api.Builds, b)
				}
			})
			var addr string
			waitFor(t, 2*time.Minute, "the victim's build step serves", func() (bool, string) {
				o, err := e.admin.Get(ctx, api.Builds, "vic", "serving")
				if err != nil {
					return false, err.Error()
				}
				b := o.(*api.Build)
				if _, rest, ok := strings.Cut(b.Status.LogTail, "SERVING "); ok {
					addr, _, _ = strings.Cut(rest, "\n")
					return true, ""
				}
				return false, b.Status.Phase + "\n" + b.Status.LogTail
			})
			cmd, _ := json.Marshal([]string{"/probe", "peer=http://" + strings.TrimSpace(addr) + "/"})
			b := e.mustBuild(t, e.mallory, "mal", "peer", api.BuildSpec{Strategy: from,
				Source: api.BuildSource{Dockerfile: "FROM prober\nRUN " + string(cmd) + "\n"}})
			if b.Status.Phase != api.BuildComplete || !strings.Contains(b.Status.LogTail, "PROBE peer ") {
				t.Fatalf("mallory's probe build = %s/%s %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
			}
			if strings.Contains(b.Status.LogTail, "PROBE peer REACHED") {
				t.Errorf("mallory's build step reached the victim's build step at %s:\n%s", addr, b.Status.LogTail)
			}
		}},
		{"C2 a build step asks for the host network or an insecure sandbox", func(t *testing.T) {
			probe(t) // pushes mal/prober:1
			from := api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "prober:1"}}}
			cmd, _ := json.Marshal([]string{"/probe", "loopback=http://127.0.0.1:" + e.hostListenPort + "/"})
			for i, flag := range []string{"--network=host", "--security=insecure"} {
				n := fmt.Sprintf("entitled-%d", i)
				b := e.mustBuild(t, e.mallory, "mal", n, api.BuildSpec{Strategy: from,
					Source: api.BuildSource{Dockerfile: "FROM prober\nRUN " + flag + " " + string(cmd) + "\n"}})
				if strings.Contains(b.Status.LogTail, "PROBE loopback REACHED") {
					t.Errorf("RUN %s reached the host's loopback:\n%s", flag, b.Status.LogTail)
				}
				if b.Status.Phase == api.BuildComplete {
					t.Errorf("RUN %s built; want it refused (no entitlements)\n%s", flag, b.Status.LogTail)
				}
			}
		}},
		{"C2 RUN steps have no CAP_NET_RAW", e.noNetRaw},
		{"C2 ADD of a URL reaches a listener on the host's loopback", e.addFromHost},
		{"M3 a direct Build clones a file:// repository of the server", refused("file://" + e.gitRepo)},
		{"M3 a direct Build clones over ssh://", refused("ssh://git@127.0.0.1:22/app.git")},
		{"M3 a direct Build clones over git://", refused("git://127.0.0.1:9418/app.git")},
		{"M3 a direct Build names a local path", refused(e.gitRepo)},
		{"L12 credentials in a git URI land in the image, its annotations and the log", func(t *testing.T) {
			const token = "s3cr3t-git-token"
			b := e.mustBuild(t, e.mallory, "mal", "creds", api.BuildSpec{Source: api.BuildSource{Git: &api.GitBuildSource{URI: "http://bob:" + token + "@" + e.gitHost + "/app.git", Ref: "main"}}})
			if b.Status.Phase != api.BuildComplete {
				t.Fatalf("creds = %s/%s %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
			}
			if strings.Contains(b.Status.LogTail, token) || strings.Contains(b.Status.Message, token) {
				t.Errorf("the build log shows the git password:\n%s", b.Status.LogTail)
			}
			auth := remote.WithAuth(&authn.Basic{Username: "x", Password: e.mallory.Token()})
			img, err := remote.Image(mustRef(t, b.Status.OutputDockerImageReference), auth)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := img.RawConfigFile()
			man, _ := img.RawManifest()
			if strings.Contains(string(cfg), token) || strings.Contains(string(man), token) {
				t.Errorf("the image carries the git password:\nconfig %s\nmanifest %s", cfg, man)
			}
			if !strings.Contains(string(cfg), "http://"+e.gitHost+"/app.git") {
				t.Errorf("the image config does not name the source without its credentials: %s", cfg)
			}
		}},
		{"H6 a cache mount written by one project is read by another", func(t *testing.T) {
			secret := fmt.Sprintf("victim-secret-%d", time.Now().UnixNano())
			write := fmt.Sprintf(`FROM base
RUN --mount=type=cache,target=/cache ["/bin/busybox", "sh", "-c", "echo %s > /cache/secret"]
`, secret)
			read := `FROM base
RUN --mount=type=cache,target=/cache ["/bin/busybox", "sh", "-c", "echo CACHE-SAYS $(/bin/busybox cat /cache/secret 2>&1) NONCE"]
`
			if b := e.mustBuild(t, e.victim, "vic", "cache-write", api.BuildSpec{Source: api.BuildSource{Dockerfile: write}}); b.Status.Phase != api.BuildComplete {
				t.Fatalf("the victim's cache build = %s/%s %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
			}
			b := e.mustBuild(t, e.mallory, "mal", "cache-read", api.BuildSpec{Source: api.BuildSource{Dockerfile: strings.Replace(read, "NONCE", "mal", 1)}})
			if strings.Contains(b.Status.LogTail, secret) {
				t.Errorf("mallory's build read the victim's cache:\n%s", b.Status.LogTail)
			}
			if b.Status.Phase != api.BuildComplete {
				t.Errorf("mallory's cache build = %s/%s %s; a cache mount should work, in a cache of her own\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
			}
			// The victim's own next build still finds its cache.
			b = e.mustBuild(t, e.victim, "vic", "cache-read", api.BuildSpec{Source: api.BuildSource{Dockerfile: strings.Replace(read, "NONCE", "vic", 1)}})
			if !strings.Contains(b.Status.LogTail, "CACHE-SAYS "+secret) {
				t.Errorf("the victim's second build did not find its own cache: %s/%s\n%s", b.Status.Phase, b.Status.Reason, b.Status.LogTail)
			}
		}},
		{"H6 a build runs past its completionDeadlineSeconds", func(t *testing.T) {
			deadline := int64(10)
			b := e.mustBuild(t, e.mallory, "mal", "forever", api.BuildSpec{CompletionDeadlineSeconds: &deadline,
				Source: api.BuildSource{Dockerfile: "FROM base\nRUN [\"/bin/busybox\", \"sleep\", \"600\"]\n"}})
			if b.Status.Phase != api.BuildFailed || b.Status.Reason != "DeadlineExceeded" || !strings.Contains(b.Status.Message, "10s") {
				t.Errorf("forever = %s/%s %q; want Failed/DeadlineExceeded naming the 10s deadline\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
			}
		}},
		{"H6 one project holds every build slot while another waits", func(t *testing.T) {
			deadline := int64(400)
			var hogs []string
			for i := range 5 {
				n := fmt.Sprintf("hog-%d", i)
				hogs = append(hogs, n)
				if err := e.build(e.mallory, "mal", n, api.BuildSpec{CompletionDeadlineSeconds: &deadline,
					Source: api.BuildSource{Dockerfile: fmt.Sprintf("FROM base\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo %s; sleep 600\"]\n", n)}}); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				for _, n := range hogs {
					if o, err := e.admin.Get(ctx, api.Builds, "mal", n); err == nil {
						b := o.(*api.Build)
						b.Status.Cancelled = true
						_ = e.admin.UpdateStatus(ctx, api.Builds, b)
					}
				}
			})
			phases := func() string {
				var s []string
				for _, n := range hogs {
					if o, err := e.admin.Get(ctx, api.Builds, "mal", n); err == nil {
						s = append(s, n+"="+o.(*api.Build).Status.Phase)
					}
				}
				return strings.Join(s, " ")
			}
			// The hogs take what the controller gives them.
			waitFor(t, 2*time.Minute, "mallory's builds start", func() (bool, string) {
				running := strings.Count(phases(), "="+api.BuildRunning)
				return running >= 2, phases()
			})
			b := e.mustBuild(t, e.victim, "vic", "quick", api.BuildSpec{Source: api.BuildSource{Dockerfile: "FROM base\nRUN [\"/bin/busybox\", \"true\"]\n"}})
			if b.Status.Phase != api.BuildComplete {
				t.Errorf("the victim's build = %s/%s %s while mallory's were %s", b.Status.Phase, b.Status.Reason, b.Status.Message, phases())
			}
			// Mallory's builds beyond her share wait, and say why.
			waitFor(t, time.Minute, "a waiting hog says it waits for a slot", func() (bool, string) {
				for _, n := range hogs {
					if o, err := e.admin.Get(ctx, api.Builds, "mal", n); err == nil {
						if st := o.(*api.Build).Status; st.Phase == api.BuildPending && strings.Contains(st.Message, "waiting for a build slot") {
							return true, ""
						}
					}
				}
				return false, phases()
			})
		}},
		{"H2 a build FROM another project's base by digest uses BuildKit's cached copy", e.stealsCachedBase(pb, "stolen-from", noFrom, func(ref string) string {
			return "FROM " + ref + "\nRUN [\"/bin/busybox\", \"cat\", \"/secret.txt\"]\n"
		})},
		{"H2 a build COPY --from another project's base by digest uses BuildKit's cached copy", e.stealsCachedBase(pb, "stolen-copy", onBase, func(ref string) string {
			return "FROM base\nCOPY --from=" + ref + " /secret.txt /stolen.txt\nRUN [\"/bin/busybox\", \"cat\", \"/stolen.txt\"]\n"
		})},
		{"H2 a build RUN --mount=from another project's base by digest uses BuildKit's cached copy", e.stealsCachedBase(pb, "stolen-mount", onBase, func(ref string) string {
			return "FROM base\nRUN --mount=from=" + ref + ",target=/v [\"/bin/busybox\", \"cat\", \"/v/secret.txt\"]\n"
		})},
		{"H2 a build FROM another project's base through another port of the registry's host uses BuildKit's cached copy", func(t *testing.T) {
			ref, _ := e.victimPrivateBase(t, pb)
			e.stealsCachedBase(pb, "stolen-port", noFrom, func(string) string {
				return "FROM " + e.otherPort(t, ref) + "\nRUN [\"/bin/busybox\", \"cat\", \"/secret.txt\"]\n"
			})(t)
		}},
		{"H2 with image-puller granted in vic, mallory's build COPY --from the victim's base by digest works", e.pullsGrantedBase(pb)},
		{"M7 a git build's provenance lacks the commit it cloned and the base it resolved", e.provenanceNamesCommitAndBase},
	} {
		t.Run(row.name, row.run)
	}
}
