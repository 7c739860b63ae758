package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/deploy"
	"slipway.dev/slipway/leader"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// syncBuffer is a process's output, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// role is one `slipway master` or `slipway registry` process.
type role struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
	addr string
}

// startRole runs `slipway ARGS...` until the test ends (SIGTERM, then
// SIGKILL; SIGCONT first, in case the test stopped it).
func startRole(t *testing.T, args ...string) *role {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &role{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-r.done:
			r.done <- err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *role) exited() bool {
	select {
	case err := <-r.done:
		r.done <- err
		return true
	default:
		return false
	}
}

// haCluster is an external etcd (in the test process, TLS with client
// certificates) with masters and a registry sharing one data directory.
type haCluster struct {
	t        *testing.T
	dir      string
	etcdURL  string
	etcd     *clientv3.Client
	registry string
	masters  []*role
}

func startHACluster(t *testing.T) *haCluster {
	t.Helper()
	dir := t.TempDir()
	// The roles find the client certificate in DATA_DIR/pki/etcd.
	pki, err := etcd.EnsurePKI(filepath.Join(dir, "pki", "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := etcd.Start(etcd.Config{Name: "ha", Dir: filepath.Join(t.TempDir(), "etcd"), TLS: &pki.Member})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	files, _ := etcd.ExistingPKI(filepath.Join(dir, "pki", "etcd"))
	c, err := etcd.ClientTLS(files, m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &haCluster{t: t, dir: dir, etcdURL: m.ClientURL, etcd: c, registry: freePort(t)}
}

// startMaster runs one more `slipway master` and waits until its API is
// ready.
func (h *haCluster) startMaster() *role {
	h.t.Helper()
	addr := freePort(h.t)
	r := startRole(h.t, "master", "--data-dir", h.dir, "--listen", addr, "--etcd-endpoints", h.etcdURL,
		"--registry", h.registry, "--buildkitd", "none", "--leader-lease", "2s", "--log-level", "info")
	r.addr = addr
	p := &proc{dataDir: h.dir, addr: addr, out: &bytes.Buffer{}, done: make(chan error, 1)}
	deadline := time.Now().Add(60 * loadFactor * time.Second)
	for {
		if r.exited() {
			h.t.Fatalf("slipway master exited:\n%s", r.out)
		}
		if ok := p.ready(); ok {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("slipway master not ready:\n%s", r.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.masters = append(h.masters, r)
	h.t.Cleanup(func() {
		if h.t.Failed() {
			h.t.Logf("master on %s (pid %d):\n%s", addr, r.cmd.Process.Pid, r.out)
		}
	})
	return r
}

// ready reports whether p's API answers /readyz.
func (p *proc) ready() bool {
	ca, err := os.ReadFile(p.caFile())
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(p.url() + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// leader is the master that leads now, or nil.
func (h *haCluster) leader() *role {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	id, _, err := leader.Current(ctx, h.etcd, store.DefaultPrefix+"leader/controllers")
	if err != nil {
		h.t.Fatal(err)
	}
	for _, m := range h.masters {
		if strings.Contains(id, fmt.Sprintf(" pid %d ", m.cmd.Process.Pid)) {
			return m
		}
	}
	return nil
}

func (h *haCluster) admin(m *role) *client.Client {
	return (&proc{dataDir: h.dir, addr: m.addr}).admin(h.t)
}

// TestMastersElectOneLeader runs two `slipway master` processes and a
// registry on one external etcd. Only the elected master runs the
// controllers: every tag push makes exactly one rollout. kill -9 the
// leader: the other takes over and rolls out the next push. SIGSTOP the
// new leader past its lease: a third master takes over; SIGCONT: the
// stale leader finds its writes fenced and stops its controllers, and
// still every push made exactly one rollout.
func TestMastersElectOneLeader(t *testing.T) {
	h := startHACluster(t)
	first := h.startMaster()
	reg := startRole(t, "registry", "--data-dir", h.dir, "--registry-listen", h.registry, "--etcd-endpoints", h.etcdURL)
	second := h.startMaster()
	admin := h.admin(first)
	ctx := context.Background()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "ha"}}); err != nil {
		t.Fatal(err)
	}
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "ha"},
		Spec: api.DeploymentConfigSpec{
			Replicas: 0,
			Selector: map[string]string{"app": "app"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "app"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "app:latest"}}},
			},
			Triggers: []api.DeploymentTrigger{{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
				Automatic: true, ContainerNames: []string{"web"}, From: api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}}}},
		},
	}
	if err := admin.Create(ctx, api.DeploymentConfigs, dc); err != nil {
		t.Fatal(err)
	}

	pushes := 0
	// pushImage moves app:latest to a new image, through the registry.
	pushImage := func(c *client.Client) {
		t.Helper()
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(h.registry+"/ha/app:latest", name.Insecure)
		auth := remote.WithAuth(&authn.Basic{Username: "admin", Password: c.Token()})
		waitFor(t, 30*time.Second, "push ha/app:latest", func() (bool, string) {
			err := remote.Write(ref, img, auth)
			if err != nil {
				return false, fmt.Sprintf("%v\nregistry:\n%s", err, reg.out)
			}
			return true, ""
		})
		pushes++
	}
	// waitRollout waits until revision app-N (N pushes so far) exists;
	// then there must be exactly N revisions and latestVersion N.
	waitRollout := func(c *client.Client, why string) {
		t.Helper()
		want := pushes
		waitFor(t, 30*time.Second, fmt.Sprintf("%s: push %d rolls out app-%d", why, want, want), func() (bool, string) {
			o, err := c.Get(ctx, api.DeploymentConfigs, "ha", "app")
			if err != nil {
				return false, fmt.Sprintf("get dc/app: %#v", err)
			}
			return o.(*api.DeploymentConfig).Status.LatestVersion >= int64(want), fmt.Sprintf("latestVersion %d", o.(*api.DeploymentConfig).Status.LatestVersion)
		})
		h.checkOneRolloutPerPush(c, want)
	}
	push := func(c *client.Client, why string) {
		t.Helper()
		pushImage(c)
		waitRollout(c, why)
	}

	push(admin, "two masters")
	lead := h.leader()
	if lead == nil {
		t.Fatalf("no master leads; etcd election holds none of the masters")
	}
	standby := first
	if lead == first {
		standby = second
	}
	if n := strings.Count(standby.out.String(), "became the leader"); n != 0 {
		t.Fatalf("the standby master ran the controllers too (%d terms):\n%s", n, standby.out)
	}

	// kill -9 the leader: the standby takes over after the lease.
	if err := lead.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-lead.done
	lead.done <- nil
	standbyAdmin := h.admin(standby)
	push(standbyAdmin, "after kill -9 of the leader")
	if h.leader() != standby {
		t.Fatalf("after the leader was killed, the leader is not the standby:\n%s", standby.out)
	}

	// A third master; then a push, and at once SIGSTOP the leader, most
	// likely with the rollout pending in it, past its lease.
	third := h.startMaster()
	stale := standby
	pushImage(standbyAdmin)
	if err := stale.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the third master takes over from the stopped one", func() (bool, string) {
		l := h.leader()
		return l == third, fmt.Sprintf("leader %v", l)
	})
	thirdAdmin := h.admin(third)
	waitRollout(thirdAdmin, "a push the old leader may not have acted on before it stopped")
	// While the stale leader sleeps, a push it has not seen: when it
	// wakes, its watches deliver both, and any write it tries is fenced.
	push(thirdAdmin, "while the old leader is stopped")
	if err := stale.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the stale leader notices it lost and stops its controllers", func() (bool, string) {
		return strings.Contains(stale.out.String(), "lost the leadership"), stale.out.String()
	})
	push(thirdAdmin, "after the stale leader woke")
	h.checkOneRolloutPerPush(thirdAdmin, pushes)
	refused := strings.Count(stale.out.String(), "no longer the leader")
	t.Logf("the stale leader's writes refused by the fence: %d", refused)
	if h.leader() != third {
		t.Fatalf("the stale leader took the role back")
	}
}

// checkOneRolloutPerPush: exactly n revisions of app, and latestVersion n.
func (h *haCluster) checkOneRolloutPerPush(c *client.Client, n int) {
	h.t.Helper()
	ctx := context.Background()
	o, err := c.Get(ctx, api.DeploymentConfigs, "ha", "app")
	if err != nil {
		h.t.Fatal(err)
	}
	rcs, _, err := c.List(ctx, api.ReplicationControllers, "ha", client.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	revs := deploy.Revisions(rcs, "app")
	var names []string
	for _, rc := range revs {
		names = append(names, rc.Name)
	}
	if lv := o.(*api.DeploymentConfig).Status.LatestVersion; lv != int64(n) || len(revs) != n {
		h.t.Fatalf("after %d tag pushes: latestVersion %d and revisions %v; want exactly one rollout per push", n, lv, names)
	}
}
