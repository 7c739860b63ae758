package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/deploy"
	"slipway.dev/slipway/store/etcd"
)

// chaosCluster is every role of a cluster as a process of its own on this
// machine: a three-member etcd (TLS, client certificates), two masters,
// two registry replicas on one S3 bucket (SeaweedFS) behind a TCP balancer, and two
// nodes on the package's dockerd, each node talking to its own master.
type chaosCluster struct {
	t     *testing.T
	h     *haCluster // the etcd client, the data directory, leader()
	etcds []*etcdProc
	d     *dockerd
	lb    *tcpBalancer // the registry's one name, as the platform knows it
	ca    []byte
	token string
	ns    string
	auth  remote.Option

	masterAddrs []string
	regAddrs    []string

	mu      sync.Mutex
	masters []*role // by index; a restart replaces one
	down    []bool  // masters killed or stopped: the API is not asked there
	regs    []*role
	nodes   []*role
}

func startChaosCluster(t *testing.T) *chaosCluster {
	t.Helper()
	dir := t.TempDir()
	pki, err := etcd.EnsurePKI(filepath.Join(dir, "pki", "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	x := &chaosCluster{t: t, d: dockerDaemon(t), ns: "chaos"}
	x.etcds = startEtcdProcs(t, t.TempDir(), pki, 3)
	var eps []string
	for _, e := range x.etcds {
		eps = append(eps, e.url())
	}
	c, err := etcd.ClientTLS(pki.Client, eps...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	x.regAddrs = []string{freePort(t), freePort(t)}
	x.lb = newTCPBalancer(t, x.regAddrs...)
	x.h = &haCluster{t: t, dir: dir, etcdURL: strings.Join(eps, ","), etcd: c, registry: x.lb.addr()}
	t.Cleanup(func() {
		if t.Failed() {
			x.dumpLogs()
		}
	})

	x.masterAddrs = []string{freePort(t), freePort(t)}
	x.masters, x.down = make([]*role, 2), make([]bool, 2)
	for i := range x.masterAddrs {
		x.startMaster(i)
	}
	admin := x.h.admin(x.masters[0])
	x.token = admin.Token()
	x.auth = remote.WithAuth(&authn.Basic{Username: "admin", Password: x.token})
	if x.ca, err = os.ReadFile(filepath.Join(dir, "pki", "ca.crt")); err != nil {
		t.Fatal(err)
	}
	x.regs = make([]*role, 2)
	for i := range x.regAddrs {
		x.startRegistry(i)
	}
	if err := admin.Create(context.Background(), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: x.ns}}); err != nil {
		t.Fatal(err)
	}
	x.nodes = make([]*role, 2)
	for i := range x.nodes {
		x.startNode(i)
	}
	return x
}

// startMaster runs master i (again) on its address.
func (x *chaosCluster) startMaster(i int) {
	x.t.Helper()
	addr := x.masterAddrs[i]
	r := startRole(x.t, "master", "--data-dir", x.h.dir, "--listen", addr, "--etcd-endpoints", x.h.etcdURL,
		"--registry", x.h.registry, "--buildkitd", "none", "--leader-lease", "2s", "--log-level", "info",
		"--node-grace-period", "20s", "--pod-eviction-timeout", "10s")
	r.addr = addr
	p := &proc{dataDir: x.h.dir, addr: addr}
	waitFor(x.t, 60*time.Second, "master "+addr+" is ready", func() (bool, string) {
		if r.exited() {
			x.t.Fatalf("slipway master on %s exited:\n%s", addr, r.out)
		}
		return p.ready(), ""
	})
	x.mu.Lock()
	x.masters[i], x.down[i] = r, false
	x.h.masters = append(x.h.masters, r)
	x.mu.Unlock()
}

// startRegistry runs registry replica i (again) on its address.
func (x *chaosCluster) startRegistry(i int) {
	x.t.Helper()
	addr := x.regAddrs[i]
	args := append([]string{"registry", "--data-dir", x.h.dir, "--registry-listen", addr, "--registry-host", x.lb.addr(), "--etcd-endpoints", x.h.etcdURL},
		sharedRegistryStorage(x.t, x.h.dir)...)
	r := startRole(x.t, args...)
	r.addr = addr
	waitFor(x.t, 60*time.Second, "registry replica "+addr+" answers /v2/", func() (bool, string) {
		if r.exited() {
			x.t.Fatalf("slipway registry on %s exited:\n%s", addr, r.out)
		}
		return registryUp(addr), ""
	})
	x.mu.Lock()
	x.regs[i] = r
	x.mu.Unlock()
}

func nodeName(i int) string { return fmt.Sprintf("chaos-%c", 'a'+i) }

// startNode joins node i through master i with a bootstrap token.
func (x *chaosCluster) startNode(i int) {
	x.t.Helper()
	n := nodeName(i)
	// Registered first, so it runs after the agent is stopped.
	x.t.Cleanup(func() { removeContainers(x.t, x.d, n) })
	var tr *api.TokenRequest
	x.api("bootstrap token for "+n, func(c *client.Client) (err error) {
		tr, err = c.CreateBootstrapToken(context.Background(), n, 10*time.Minute)
		return err
	})
	f := filepath.Join(x.t.TempDir(), n+".token")
	if err := os.WriteFile(f, []byte(tr.Status.Token+"\n"), 0o600); err != nil {
		x.t.Fatal(err)
	}
	r := startRole(x.t, "node", "--server", "https://"+x.masterAddrs[i], "--certificate-authority", filepath.Join(x.h.dir, "pki", "ca.crt"),
		"--bootstrap-token-file", f, "--data-dir", x.t.TempDir(), "--node-name", n, "--container-prefix", n, "--no-proxy",
		"--docker-host", x.d.Host(), "--listen", freePort(x.t), "--heartbeat-interval", "2s")
	x.nodes[i] = r
	x.waitNodeReady(n)
}

func (x *chaosCluster) waitNodeReady(n string) {
	x.t.Helper()
	waitFor(x.t, time.Minute, "node "+n+" is Ready", func() (bool, string) {
		var node *api.Node
		err := x.try(func(c *client.Client) error {
			ctx, cancel := requestContext()
			defer cancel()
			o, err := c.Get(ctx, api.Nodes, "", n)
			if err == nil {
				node = o.(*api.Node)
			}
			return err
		})
		if err != nil {
			return false, err.Error()
		}
		for _, cd := range node.Status.Conditions {
			if cd.Type == "Ready" {
				return cd.Status == api.ConditionTrue, fmt.Sprintf("%+v", cd)
			}
		}
		return false, "no Ready condition"
	})
}

// client is the admin's client on a master that is up.
func (x *chaosCluster) client() (*client.Client, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, addr := range x.masterAddrs {
		if !x.down[i] {
			return client.New("https://"+addr, client.WithCAData(x.ca), client.WithToken(x.token))
		}
	}
	return nil, errors.New("no master is up")
}

// requestContext bounds one request of the test: a master stopped with
// SIGSTOP holds a request sent to it just before for ever (seen: the tag
// loop hung in a List, the test failed waiting for its rounds, and then
// hung waiting for the loop).
func requestContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

// try runs f once on a master that is up.
func (x *chaosCluster) try(f func(*client.Client) error) error {
	c, err := x.client()
	if err != nil {
		return err
	}
	return f(c)
}

// api runs f on a master that is up until it succeeds: a fault may be
// under way.
func (x *chaosCluster) api(what string, f func(*client.Client) error) {
	x.t.Helper()
	waitFor(x.t, 30*time.Second, what, func() (bool, string) {
		if err := x.try(f); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

func (x *chaosCluster) masterIndex(r *role) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Index(x.masters, r)
}

func (x *chaosCluster) setDown(i int, down bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.down[i] = down
}

// waitLeader waits until one of the masters leads, not the one given.
func (x *chaosCluster) waitLeader(not *role, why string) *role {
	x.t.Helper()
	var l *role
	waitFor(x.t, 30*time.Second, why, func() (bool, string) {
		l = x.h.leader()
		return l != nil && l != not && !l.exited(), fmt.Sprintf("leader %v", l)
	})
	return l
}

func (x *chaosCluster) ref(repo string) string { return x.lb.addr() + "/" + x.ns + "/" + repo }

func (x *chaosCluster) dumpLogs() {
	dir, err := os.MkdirTemp("", "slipway-chaos-logs-")
	if err != nil {
		x.t.Log(err)
		return
	}
	write := func(name, s string) { _ = os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644) }
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, m := range x.h.masters {
		write(fmt.Sprintf("master-%d-pid%d.log", i, m.cmd.Process.Pid), m.out.String())
	}
	for i, r := range x.regs {
		if r != nil {
			write(fmt.Sprintf("registry-%d.log", i), r.out.String())
		}
	}
	for i, r := range x.nodes {
		if r != nil {
			write(nodeName(i)+".log", r.out.String())
		}
	}
	for _, e := range x.etcds {
		write("etcd-"+e.cfg.Name+".log", e.out.String())
	}
	x.t.Logf("the processes' logs are in %s", dir)
}

// pushed is one push that the registry answered 201.
type pushed struct {
	ref string // by digest, on the replica that took it
	img v1.Image
}

// chaosLoad is the steady load: pushes of small images to both replicas
// in turn, and tag moves of a build's base and of a deployment's image,
// each waited for until it caused its build or rollout.
type chaosLoad struct {
	x    *chaosCluster
	stop atomic.Bool
	wg   sync.WaitGroup

	mu          sync.Mutex
	pushes      []pushed
	pushErrs    int
	baseDigests []string // every digest base:latest was moved to
	webDigests  []string // every digest web:latest was moved to
	err         error    // the tag loop gave up
	rounds      atomic.Int64
}

func (l *chaosLoad) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

// pushLoop pushes a new small image, alternating replicas, until stopped.
func (l *chaosLoad) pushLoop() {
	defer l.wg.Done()
	for i := 0; !l.stop.Load(); i++ {
		addr := l.x.regAddrs[i%2]
		img, err := random.Image(2048, 2)
		if err != nil {
			l.fail(err)
			return
		}
		ref, _ := name.ParseReference(fmt.Sprintf("%s/%s/load:%d", addr, l.x.ns, i), name.Insecure)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = remote.Write(ref, img, l.x.auth, remote.WithContext(ctx))
		cancel()
		l.mu.Lock()
		if err != nil {
			l.pushErrs++
		} else {
			d, _ := img.Digest()
			l.pushes = append(l.pushes, pushed{ref: ref.Context().Digest(d.String()).String(), img: img})
		}
		l.mu.Unlock()
		if err != nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// moveTag pushes img as repo:latest through the registry's balancer until
// a push is answered 201. A push that failed may still have landed; the
// next attempt pushes the same image, so the tag moves once.
func (l *chaosLoad) moveTag(repo string, img v1.Image) (string, error) {
	ref, _ := name.ParseReference(l.x.ref(repo+":latest"), name.Insecure)
	var err error
	for deadline := time.Now().Add(loadFactor * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = remote.Write(ref, img, l.x.auth, remote.WithContext(ctx))
		cancel()
		if err == nil {
			d, _ := img.Digest()
			return d.String(), nil
		}
	}
	return "", fmt.Errorf("push %s: %w", ref, err)
}

// await polls cond until it holds, for up to loadFactor minutes.
func (l *chaosLoad) await(what string, cond func(*client.Client) (bool, string, error)) error {
	last := ""
	for deadline := time.Now().Add(loadFactor * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		err := l.x.try(func(c *client.Client) error {
			ok, state, err := cond(c)
			if err == nil && !ok {
				err = errors.New(state)
			}
			return err
		})
		if err == nil {
			return nil
		}
		last = err.Error()
	}
	return fmt.Errorf("%s: not within %d minutes; last seen: %s", what, loadFactor, last)
}

// tagLoop moves base:latest and web:latest to new images, one round at a
// time, each time waiting until the move made its build or rollout: a
// move never coalesces with the next, so each must make exactly one.
func (l *chaosLoad) tagLoop(base, web func(int) v1.Image) {
	defer l.wg.Done()
	for i := 1; !l.stop.Load(); i++ {
		d, err := l.moveTag("base", base(i))
		if err != nil {
			l.fail(err)
			return
		}
		l.mu.Lock()
		l.baseDigests = append(l.baseDigests, d)
		l.mu.Unlock()
		if err := l.await("a build of base@"+d, func(c *client.Client) (bool, string, error) {
			bs, err := l.x.builds(c)
			if err != nil {
				return false, "", err
			}
			return len(bs[d]) > 0, fmt.Sprintf("builds by base: %v", bs), nil
		}); err != nil {
			l.fail(err)
			return
		}
		d, err = l.moveTag("web", web(i))
		if err != nil {
			l.fail(err)
			return
		}
		l.mu.Lock()
		l.webDigests = append(l.webDigests, d)
		l.mu.Unlock()
		if err := l.await("a rollout of web@"+d, func(c *client.Client) (bool, string, error) {
			rs, err := l.x.rollouts(c)
			if err != nil {
				return false, "", err
			}
			return len(rs[d]) > 0, fmt.Sprintf("revisions by image: %v", rs), nil
		}); err != nil {
			l.fail(err)
			return
		}
		l.rounds.Add(1)
	}
}

// waitRounds waits until the tag loop has done n more rounds: the
// cluster kept working through what was just done to it.
func (l *chaosLoad) waitRounds(n int64, why string) {
	l.x.t.Helper()
	want := l.rounds.Load() + n
	waitFor(l.x.t, 2*time.Minute, fmt.Sprintf("%s: %d more rounds of tag moves, each making its build and rollout", why, n), func() (bool, string) {
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		if err != nil {
			l.x.t.Fatalf("%s: the load stopped: %v", why, err)
		}
		return l.rounds.Load() >= want, fmt.Sprintf("round %d", l.rounds.Load())
	})
}

// builds are app's builds by the base digest they were pinned to.
func (x *chaosCluster) builds(c *client.Client) (map[string][]string, error) {
	ctx, cancel := requestContext()
	defer cancel()
	items, _, err := c.List(ctx, api.Builds, x.ns, client.ListOptions{LabelSelector: builders.BuildConfigLabel + "=app"})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, o := range items {
		b := o.(*api.Build)
		from := ""
		if ds := b.Spec.Strategy.DockerStrategy; ds != nil && ds.From != nil {
			from = ds.From.Name
		}
		_, d, _ := strings.Cut(from, "@")
		out[d] = append(out[d], b.Name)
	}
	return out, nil
}

// rollouts are web's revisions by the image digest they roll out.
func (x *chaosCluster) rollouts(c *client.Client) (map[string][]string, error) {
	ctx, cancel := requestContext()
	defer cancel()
	items, _, err := c.List(ctx, api.ReplicationControllers, x.ns, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, rc := range deploy.Revisions(items, "web") {
		_, d, _ := strings.Cut(rc.Spec.Template.Spec.Containers[0].Image, "@")
		out[d] = append(out[d], rc.Name)
	}
	return out, nil
}

// TestClusterSurvivesChaos runs a cluster of processes (three etcd
// members, two masters, two registry replicas on one S3 bucket, two
// nodes) under a steady load of pushes, builds and rollouts, and does to
// it what happens to clusters: kill -9 the leading master; SIGSTOP the
// next leader past its lease, then SIGCONT it; kill an etcd member; kill
// -9 a registry replica in the middle of a push. Then: every push that
// was answered 201 pulls back byte for byte from either replica; every
// tag move made exactly one build or rollout; the stale leader landed no
// write after it lost; and all pods are back.
func TestClusterSurvivesChaos(t *testing.T) {
	x := startChaosCluster(t)
	ctx := context.Background()
	var hundred int32 = 100

	// The build: app is its base plus one layer of its own, and declares
	// rebase, so each move of base:latest rebuilds it as a rebase, which
	// needs no BuildKit (the masters run none).
	base := func(i int) v1.Image {
		img, err := mutate.Config(busyboxImage(t), v1.Config{Labels: map[string]string{"round": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	l := &chaosLoad{x: x}
	d0, err := l.moveTag("base", base(0))
	if err != nil {
		t.Fatal(err)
	}
	app, err := mutate.AppendLayers(base(0), fileLayer(t, "app/msg", "hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	app = mutate.Annotations(app, map[string]string{
		"org.opencontainers.image.base.name":   x.ref("base"),
		"org.opencontainers.image.base.digest": d0,
	}).(v1.Image)
	if _, err := l.moveTag("app", app); err != nil {
		t.Fatal(err)
	}
	l.baseDigests = append(l.baseDigests, d0)
	bc := &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: x.ns},
		Spec: api.BuildConfigSpec{
			Rebase:                       true,
			SuccessfulBuildsHistoryLimit: &hundred,
			FailedBuildsHistoryLimit:     &hundred,
			Source:                       api.BuildSource{Dockerfile: "FROM base\nCOPY msg /app/msg\n"},
			Strategy:                     api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:latest"}}},
			Output:                       api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}},
			Triggers:                     []api.BuildTrigger{{Type: "ImageChange"}},
		},
	}
	x.api("create bc/app", func(c *client.Client) error { return c.Create(ctx, api.BuildConfigs, bc) })

	// The deployment: two replicas of web:latest, one revision per move.
	web := func(i int) v1.Image {
		return podImage(t, map[string]string{"www/index.html": fmt.Sprintf("round %d\n", i)}, "httpd", "-f", "-p", "8080", "-h", "/www")
	}
	w0, err := l.moveTag("web", web(0))
	if err != nil {
		t.Fatal(err)
	}
	l.webDigests = append(l.webDigests, w0)
	dc := &api.DeploymentConfig{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: x.ns},
		Spec: api.DeploymentConfigSpec{
			Replicas:             2,
			RevisionHistoryLimit: &hundred,
			Selector:             map[string]string{"app": "web"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: "web:latest"}}},
			},
			Triggers: []api.DeploymentTrigger{{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
				Automatic: true, ContainerNames: []string{"web"}, From: api.ObjectReference{Kind: "ImageStreamTag", Name: "web:latest"}}}},
		},
	}
	x.api("create dc/web", func(c *client.Client) error { return c.Create(ctx, api.DeploymentConfigs, dc) })
	x.waitPodsBack("the first rollout")

	l.wg.Add(2)
	go l.pushLoop()
	go l.tagLoop(base, web)
	defer func() {
		l.stop.Store(true)
		l.wg.Wait()
	}()
	l.waitRounds(1, "under load")

	// 1. kill -9 the leading master; the other takes over; then it
	// comes back (on its address, which its node talks to).
	lead := x.waitLeader(nil, "a master leads")
	i := x.masterIndex(lead)
	x.setDown(i, true)
	if err := lead.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-lead.done
	lead.done <- nil
	t.Logf("killed -9 the leading master %d (%s)", i, lead.addr)
	x.waitLeader(lead, "the other master takes over from the killed leader")
	l.waitRounds(2, "after kill -9 of the leading master")
	x.startMaster(i)

	// 2. SIGSTOP the leader past its lease: the other takes over and
	// acts; then SIGCONT. The stale leader must notice it lost, and
	// whatever it tries to write then is refused by the fence.
	stale := x.waitLeader(nil, "a master leads")
	i = x.masterIndex(stale)
	x.setDown(i, true)
	if err := stale.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGSTOP the leading master %d (%s)", i, stale.addr)
	x.waitLeader(stale, "the other master takes over from the stopped leader")
	l.waitRounds(2, "while the old leader is stopped")
	woke := len(stale.out.String())
	if err := stale.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the stale leader notices it lost and stops its controllers", func() (bool, string) {
		return strings.Contains(stale.out.String()[woke:], "lost the leadership"), stale.out.String()[woke:]
	})
	x.setDown(i, false)
	// What the stale leader logged from when it woke until it was
	// elected again, if it was (a later fault may hand it the role).
	staleLog := func() string {
		s := stale.out.String()[woke:]
		if i := strings.Index(s, "became the leader"); i >= 0 {
			s = s[:i]
		}
		return s
	}
	l.waitRounds(1, "after the stale leader woke")

	// 3. Kill etcd's raft leader; two members keep a quorum. Then it
	// comes back and catches up.
	victim := x.etcdLeader()
	victim.kill()
	t.Logf("killed etcd member %s", victim.cfg.Name)
	l.waitRounds(2, "with one etcd member down")
	victim.start(t)
	waitFor(t, time.Minute, "etcd member "+victim.cfg.Name+" is back", func() (bool, string) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := x.h.etcd.Status(ctx, victim.url())
		return err == nil, fmt.Sprint(err)
	})

	// 4. kill -9 a registry replica in the middle of a push; the
	// balancer sends what follows to the other; then it comes back.
	x.killRegistryMidPush(l, 1)
	l.waitRounds(2, "with one registry replica killed")
	x.startRegistry(1)
	l.waitRounds(1, "after the registry replica came back")

	l.stop.Store(true)
	l.wg.Wait()
	if l.err != nil {
		t.Fatalf("the load stopped: %v", l.err)
	}

	// Every push answered 201 pulls back byte for byte from both
	// replicas.
	t.Logf("%d pushes answered 201, %d failed during the faults", len(l.pushes), l.pushErrs)
	for _, p := range l.pushes {
		ref, _ := name.ParseReference(p.ref, name.Insecure)
		for _, addr := range x.regAddrs {
			r, _ := name.ParseReference(addr+"/"+ref.Context().RepositoryStr()+"@"+ref.Identifier(), name.Insecure)
			if err := ggcrVerify(ctx, r, p.img, x.token); err != nil {
				t.Errorf("pushed as %s, answered 201: %v", p.ref, err)
			}
		}
	}

	// The records of images pushed through either replica name the
	// registry as the cluster knows it (the balancer), not the replica:
	// the scanner, pods and builds read them through that name.
	for _, p := range []pushed{l.pushes[0], l.pushes[len(l.pushes)-1]} {
		d, _ := p.img.Digest()
		var img *api.Image
		x.api("get image "+d.String(), func(c *client.Client) error {
			o, err := c.Get(ctx, api.Images, x.ns, d.String())
			if err == nil {
				img = o.(*api.Image)
			}
			return err
		})
		if want := x.ref("load@" + d.String()); img.DockerImageReference != want {
			t.Errorf("pushed as %s: image record names %s, want %s", p.ref, img.DockerImageReference, want)
		}
	}

	// Every move of base:latest made exactly one build, and each of them
	// finished: none was left behind by a leader that died.
	var bs map[string][]string
	x.api("list builds", func(c *client.Client) (err error) { bs, err = x.builds(c); return err })
	for _, d := range l.baseDigests {
		if len(bs[d]) != 1 {
			t.Errorf("base:latest moved to %s: builds %v, want exactly one", d, bs[d])
		}
	}
	for d, names := range bs {
		if !slices.Contains(l.baseDigests, d) {
			t.Errorf("builds %v of base %q, which base:latest never moved to", names, d)
		}
	}
	waitFor(t, time.Minute, "every build finishes", func() (bool, string) {
		var items []api.Object
		err := x.try(func(c *client.Client) (err error) {
			items, _, err = c.List(ctx, api.Builds, x.ns, client.ListOptions{})
			return err
		})
		if err != nil {
			return false, err.Error()
		}
		var running []string
		phases := map[string]int{}
		for _, o := range items {
			b := o.(*api.Build)
			phases[b.Status.Phase]++
			if !api.IsFinished(b.Status.Phase) {
				running = append(running, fmt.Sprintf("%s %s", b.Name, b.Status.Phase))
			}
		}
		if len(running) == 0 {
			t.Logf("%d builds: %v", len(items), phases)
			for _, o := range items {
				if b := o.(*api.Build); b.Status.Phase != api.BuildComplete {
					t.Logf("build %s: %s %s: %s", b.Name, b.Status.Phase, b.Status.Reason, b.Status.Message)
				}
			}
		}
		return len(running) == 0, strings.Join(running, "\n")
	})

	// Every move of web:latest made exactly one rollout.
	var rs map[string][]string
	x.api("list revisions", func(c *client.Client) (err error) { rs, err = x.rollouts(c); return err })
	for _, d := range l.webDigests {
		if len(rs[d]) != 1 {
			t.Errorf("web:latest moved to %s: revisions %v, want exactly one", d, rs[d])
		}
	}
	for d, names := range rs {
		if !slices.Contains(l.webDigests, d) {
			t.Errorf("revisions %v of image %q, which web:latest never moved to", names, d)
		}
	}
	t.Logf("%d tag moves of base and %d of web", len(l.baseDigests), len(l.webDigests))
	// Every rollout but the last ended: none shows Running for good
	// because the leader running it died, or a newer one took over.
	waitFor(t, time.Minute, "every revision but the latest finishes its rollout", func() (bool, string) {
		var items []api.Object
		err := x.try(func(c *client.Client) (err error) {
			items, _, err = c.List(ctx, api.ReplicationControllers, x.ns, client.ListOptions{})
			return err
		})
		if err != nil {
			return false, err.Error()
		}
		revs := deploy.Revisions(items, "web")
		var open []string
		for _, rc := range revs[:len(revs)-1] {
			if p := rc.Annotations[api.DeploymentPhaseAnnotation]; p != api.DeploymentComplete && p != api.DeploymentFailed {
				open = append(open, rc.Name+" "+p)
			}
		}
		return len(open) == 0, strings.Join(open, "\n")
	})

	// The stale leader: whatever it tried after it woke, the fence
	// refused; no controller write of it landed (the deployment
	// controller logs a revision only once its create landed). Its
	// metrics say how many writes the fence refused; one master leads.
	t.Logf("the stale leader's writes refused by the fence: %v (log: %d)", x.metric(stale.addr, "slipway_store_fenced_writes_total"), strings.Count(staleLog(), "no longer the leader"))
	waitFor(t, 30*time.Second, "exactly one master says it leads (slipway_leader_is_leader)", func() (bool, string) {
		var leading []string
		for _, addr := range x.masterAddrs {
			if x.metric(addr, "slipway_leader_is_leader") == "1" {
				leading = append(leading, addr)
			}
		}
		return len(leading) == 1, fmt.Sprintf("leading: %v", leading)
	})
	if strings.Contains(staleLog(), "deploy: new revision") {
		t.Errorf("the stale leader made a revision after it woke:\n%s", grepLines(staleLog(), "deploy: new revision"))
	}

	// All pods are back: every node Ready, and web's latest revision
	// runs its two replicas.
	for i := range x.nodes {
		x.waitNodeReady(nodeName(i))
	}
	x.waitPodsBack("after the faults")
	for i, m := range x.masters {
		if m.exited() {
			t.Errorf("master %d exited:\n%s", i, m.out)
		}
	}
	for i, r := range x.regs {
		if r.exited() {
			t.Errorf("registry %d exited:\n%s", i, r.out)
		}
	}
}

// metric is the value of a metric without labels on the master at addr,
// or "" if it does not answer.
func (x *chaosCluster) metric(addr, name string) string {
	c, err := client.New("https://"+addr, client.WithCAData(x.ca), client.WithToken(x.token))
	if err != nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, "GET", "/metrics", nil, nil, "")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

// waitPodsBack waits until web's latest revision runs two ready pods.
func (x *chaosCluster) waitPodsBack(why string) {
	x.t.Helper()
	waitFor(x.t, 2*time.Minute, why+": web's latest revision runs 2 ready pods", func() (bool, string) {
		var dc *api.DeploymentConfig
		var pods []*api.Pod
		err := x.try(func(c *client.Client) error {
			ctx, cancel := requestContext()
			defer cancel()
			o, err := c.Get(ctx, api.DeploymentConfigs, x.ns, "web")
			if err != nil {
				return err
			}
			dc = o.(*api.DeploymentConfig)
			items, _, err := c.List(ctx, api.Pods, x.ns, client.ListOptions{LabelSelector: fmt.Sprintf("%s=web-%d", api.DeploymentLabel, dc.Status.LatestVersion)})
			pods = asPods(items)
			return err
		})
		if err != nil {
			return false, err.Error()
		}
		n := 0
		for _, p := range pods {
			if running(p) {
				n++
			}
		}
		return n == 2 && len(pods) == 2, fmt.Sprintf("latest version %d\n%s", dc.Status.LatestVersion, describePods(pods))
	})
}

// etcdLeader is the member that leads etcd's raft now.
func (x *chaosCluster) etcdLeader() *etcdProc {
	x.t.Helper()
	var lead *etcdProc
	waitFor(x.t, 30*time.Second, "an etcd member leads", func() (bool, string) {
		for _, e := range x.etcds {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := x.h.etcd.Status(ctx, e.url())
			cancel()
			if err == nil && st.Header.MemberId == st.Leader {
				lead = e
				return true, ""
			}
		}
		return false, "no member says it leads"
	})
	return lead
}

// killRegistryMidPush starts a push of a large image to replica i and
// kills the replica with SIGKILL once part of it is uploaded.
func (x *chaosCluster) killRegistryMidPush(l *chaosLoad, i int) {
	x.t.Helper()
	img, err := random.Image(16<<20, 1)
	if err != nil {
		x.t.Fatal(err)
	}
	ref, _ := name.ParseReference(fmt.Sprintf("%s/%s/big:1", x.regAddrs[i], x.ns), name.Insecure)
	progress := make(chan v1.Update, 100)
	result := make(chan error, 1)
	go func() { result <- remote.Write(ref, img, x.auth, remote.WithProgress(progress)) }()
	var last v1.Update
	waitFor(x.t, time.Minute, "the large push to replica "+x.regAddrs[i]+" is under way", func() (bool, string) {
		for {
			select {
			case u, ok := <-progress:
				if !ok {
					return true, ""
				}
				last = u
				if u.Complete > 1<<20 {
					return true, ""
				}
				continue
			default:
			}
			return false, fmt.Sprintf("%+v", last)
		}
	})
	r := x.regs[i]
	if err := r.cmd.Process.Kill(); err != nil {
		x.t.Fatal(err)
	}
	<-r.done
	r.done <- nil
	go func() {
		for range progress {
		}
	}()
	err = <-result
	x.t.Logf("killed -9 registry replica %s after %d of %d bytes of a push; the push: %v", x.regAddrs[i], last.Complete, last.Total, err)
	d, _ := img.Digest()
	if err == nil {
		l.mu.Lock()
		l.pushes = append(l.pushes, pushed{ref: ref.Context().Digest(d.String()).String(), img: img})
		l.mu.Unlock()
	}
	// The pusher tries again through the other replica: what the killed
	// one left half-written in the shared storage must not spoil it.
	other, _ := name.ParseReference(fmt.Sprintf("%s/%s/big:1", x.regAddrs[1-i], x.ns), name.Insecure)
	waitFor(x.t, time.Minute, "the large push again, through the other replica", func() (bool, string) {
		if err := remote.Write(other, img, x.auth); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	l.mu.Lock()
	l.pushes = append(l.pushes, pushed{ref: other.Context().Digest(d.String()).String(), img: img})
	l.mu.Unlock()
}
