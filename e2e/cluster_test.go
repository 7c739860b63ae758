package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/cluster/netpol"
)

// The cluster tests run pods: `slipway start` with its node agent on the
// package's private dockerd, whose bridge gives pods addresses the host
// reaches, and its service proxy on slipway0. Each test has its own
// container prefix (so agents never adopt or remove another test's
// containers) and its own service range; its containers are removed when
// it ends, even if the server was killed.

// loadFactor stretches waitFor's deadlines for a loaded machine.
const loadFactor = 4

// serviceRanges counts this process's cluster tests: each gets a /24 of
// service addresses of its own, 10.(46+n).(pid mod 250).0/24. The ranges
// are this process's too, as dockertest's bridges are: every range's
// cluster IPs sit on the one slipway0, and a test removes its range's
// when it ends, so another test process on the machine (another run of
// the e2e tests) must not hold the same range.
var serviceRanges atomic.Int32

// cluster is one `slipway start` running pods, with a project, a CLI
// logged in to it, and push credentials.
type cluster struct {
	t     *testing.T
	p     *proc
	d     *dockerd
	admin *client.Client
	cli   cli
	node  string   // node name, also the container prefix
	cidr  string   // the service range
	args  []string // the server's flags, to start it again
	ns    string
	auth  remote.Option
}

// startCluster starts a server whose node is called node, with extra
// server flags.
func startCluster(t *testing.T, node string, extra ...string) *cluster {
	t.Helper()
	d := dockerDaemon(t)
	if _, err := os.Stat("/usr/bin/busybox"); err != nil {
		t.Fatalf("busybox-static is missing: %s", depsHint)
	}
	dir, addr := t.TempDir(), freePort(t)
	// Registered before the server's own cleanup, so it runs after the
	// server is killed: nothing is left to make the containers again.
	t.Cleanup(func() { removeContainers(t, d, node) })
	n := serviceRanges.Add(1)
	if n > 150 { // 10.213-10.215 are the pods' (dockertest.PerProcess)
		t.Fatalf("more than 150 cluster tests in one process: no service range left")
	}
	cidr := fmt.Sprintf("10.%d.%d.0/24", 45+n, os.Getpid()%250)
	// The proxy makes the host refuse the range's addresses that no
	// service holds (an "unreachable" route, which outlives it, as a
	// node's should); the test leaves the machine as it found it.
	t.Cleanup(func() { removeServiceRange(t, cidr) })
	args := append([]string{
		"--docker-host", d.Host(), "--node-name", node, "--container-prefix", node,
		"--buildkitd", "none", "--service-cidr", cidr,
	}, extra...)
	p := startServer(t, dir, addr, args...)
	logIfDied(t, p)
	c := &cluster{t: t, p: p, d: d, admin: p.admin(t), node: node, ns: "shop", cidr: cidr, args: args}
	c.auth = remote.WithAuth(&authn.Basic{Username: "admin", Password: c.admin.Token()})
	if err := c.admin.Create(context.Background(), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: c.ns}}); err != nil {
		t.Fatal(err)
	}
	c.cli = cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.cli.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.cli.ok("project", c.ns)
	t.Cleanup(func() {
		if t.Failed() {
			c.dump()
		}
	})
	return c
}

// dump logs what a failed test needs to see: the pods and replication
// controllers, and the end of the server's log.
func (c *cluster) dump() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if items, _, err := c.admin.List(ctx, api.Pods, c.ns, client.ListOptions{}); err == nil {
		c.t.Logf("pods at the end:\n%s", describePods(asPods(items)))
	}
	if items, _, err := c.admin.List(ctx, api.ReplicationControllers, c.ns, client.ListOptions{}); err == nil {
		for _, o := range items {
			rc := o.(*api.ReplicationController)
			c.t.Logf("rc %s: spec %d, status %d/%d ready, annotations %v", rc.Name, rc.Spec.Replicas, rc.Status.Replicas, rc.Status.ReadyReplicas, rc.Annotations)
		}
	}
	lines := strings.Split(strings.TrimSpace(c.p.out.String()), "\n")
	c.t.Logf("server log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
}

// removeServiceRange takes away what the cluster's proxy left on the
// machine for its service range, as a node's proxy should leave it: the
// range's reject route and its cluster IPs on slipway0, and slipway0
// itself once no cluster IP is left on it.
func removeServiceRange(t *testing.T, cidr string) {
	_ = exec.Command("ip", "route", "del", "unreachable", cidr).Run()
	// The proxy's nftables table, when it was killed before removing it.
	_ = exec.Command("nft", "delete", "table", "ip", "slipway-proxy-"+strings.ReplaceAll(cidr, "/", "-")).Run()
	_, rng, err := net.ParseCIDR(cidr)
	if err != nil {
		return
	}
	iface, err := net.InterfaceByName("slipway0")
	if err != nil {
		return
	}
	addrs, _ := iface.Addrs()
	left := 0
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil {
			continue
		}
		if !rng.Contains(ipn.IP) {
			left++
			continue
		}
		ones, _ := ipn.Mask.Size()
		if out, err := exec.Command("ip", "addr", "del", fmt.Sprintf("%s/%d", ipn.IP, ones), "dev", "slipway0").CombinedOutput(); err != nil {
			t.Logf("removing cluster IP %s: %v: %s", ipn.IP, err, out)
		}
	}
	if left == 0 {
		_ = exec.Command("ip", "link", "del", "slipway0").Run()
	}
}

// removeContainers removes every container an agent with this prefix
// made on the engine, and its network policy tables, which outlive the
// agent on purpose.
func removeContainers(t *testing.T, d *dockerd, prefix string) {
	if err := (netpol.NFTables{Name: prefix}).Remove(); err != nil {
		t.Logf("removing the nftables tables of %s: %v", prefix, err)
	}
	out, err := exec.Command("docker", "-H", d.Host(), "ps", "-aq", "--filter", "label=io.slipway.runtime="+prefix).Output()
	if err != nil {
		t.Logf("listing the containers of %s: %v", prefix, err)
		return
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return
	}
	if out, err := exec.Command("docker", append([]string{"-H", d.Host(), "rm", "-f", "-v"}, ids...)...).CombinedOutput(); err != nil {
		t.Logf("removing the containers of %s: %v\n%s", prefix, err, out)
	}
}

// podImage is busyboxImage with the applets pods use linked into /bin,
// the files given (path → content, relative to /) and cmd as its command.
func podImage(t *testing.T, files map[string]string, cmd ...string) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, applet := range []string{"sh", "httpd", "wget", "hostname", "cat", "sleep", "mv", "mkdir", "env", "echo", "timeout"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	// Pods run as their project's UID, not root: like any image made to
	// run so, this one ships the directories its commands write to
	// world-writable (/www for the pages httpd serves).
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	tw.WriteHeader(&tar.Header{Name: "www/", Typeflag: tar.TypeDir, Mode: 0o777})
	dirs := map[string]bool{"tmp": true, "www": true}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if dir := path.Dir(n); dir != "." && !dirs[dir] {
			dirs[dir] = true
			tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n]))})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	layer, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(busyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd, cf.Config.Env = cmd, []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// httpdImage serves body at / on port with busybox httpd.
func httpdImage(t *testing.T, body string, port int) v1.Image {
	return podImage(t, map[string]string{"www/index.html": body}, "httpd", "-f", "-p", fmt.Sprint(port), "-h", "/www")
}

// ref is the integrated registry's name for repoTag in the test's project.
func (c *cluster) ref(repoTag string) string { return c.p.registry + "/" + c.ns + "/" + repoTag }

// push writes img to repoTag in the test's project and returns its digest.
func (c *cluster) push(repoTag string, img v1.Image) string {
	c.t.Helper()
	if err := remote.Write(mustRef(c.t, c.ref(repoTag)), img, c.auth); err != nil {
		c.t.Fatalf("push %s: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		c.t.Fatal(err)
	}
	return d.String()
}

// apply runs `slipway apply -f` on a manifest.
func (c *cluster) apply(manifest string) {
	c.t.Helper()
	f := filepath.Join(c.t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.cli.ok("apply", "-f", f)
}

// waitFor polls cond until it holds; on timeout the test fails with the
// last state cond described.
//
// timeout is what the step takes on an idle machine, give or take; the
// wait allows loadFactor times that, because the whole suite runs its
// packages, dockerds and builds at once on two cores. A deadline only
// bounds how long a failure takes to report, so a generous one costs a
// passing run nothing.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	timeout *= loadFactor
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		if state != "" {
			last = state
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last seen:\n%s", what, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func asPods(items []api.Object) []*api.Pod {
	out := make([]*api.Pod, 0, len(items))
	for _, o := range items {
		out = append(out, o.(*api.Pod))
	}
	slices.SortFunc(out, func(a, b *api.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// pods lists the project's pods matching a label selector ("" for all).
func (c *cluster) pods(selector string) []*api.Pod {
	c.t.Helper()
	items, _, err := c.admin.List(context.Background(), api.Pods, c.ns, client.ListOptions{LabelSelector: selector})
	if err != nil {
		c.t.Fatal(err)
	}
	return asPods(items)
}

func (c *cluster) pod(name string) (*api.Pod, error) {
	o, err := c.admin.Get(context.Background(), api.Pods, c.ns, name)
	if err != nil {
		return nil, err
	}
	return o.(*api.Pod), nil
}

func (c *cluster) rc(name string) *api.ReplicationController {
	c.t.Helper()
	o, err := c.admin.Get(context.Background(), api.ReplicationControllers, c.ns, name)
	if api.IsNotFound(err) {
		return nil
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return o.(*api.ReplicationController)
}

func (c *cluster) dc(name string) *api.DeploymentConfig {
	c.t.Helper()
	o, err := c.admin.Get(context.Background(), api.DeploymentConfigs, c.ns, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return o.(*api.DeploymentConfig)
}

// serviceURL waits for the service's cluster IP and returns http://IP:PORT/
// and the IP.
func (c *cluster) serviceURL(name string) (url, ip string) {
	c.t.Helper()
	var svc *api.Service
	waitFor(c.t, 30*time.Second, "service "+name+" gets a cluster IP", func() (bool, string) {
		o, err := c.admin.Get(context.Background(), api.Services, c.ns, name)
		if err != nil {
			return false, err.Error()
		}
		svc = o.(*api.Service)
		return svc.Spec.ClusterIP != "", fmt.Sprintf("%+v", svc.Spec)
	})
	return fmt.Sprintf("http://%s:%d/", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port), svc.Spec.ClusterIP
}

// running reports whether a pod runs with every container ready.
func running(p *api.Pod) bool {
	if p.Status.Phase != api.PodRunning || !api.PodReady(p) || p.Annotations[api.TerminatingAnnotation] != "" {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if !cs.Ready || cs.State != "Running" {
			return false
		}
	}
	return len(p.Status.ContainerStatuses) == len(p.Spec.Containers)
}

func describePods(ps []*api.Pod) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %s node=%q phase=%s reason=%q msg=%q ip=%s ready=%v terminating=%q", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.Status.Message, p.Status.PodIP, api.PodReady(p), p.Annotations[api.TerminatingAnnotation])
		for _, cd := range p.Status.Conditions {
			fmt.Fprintf(&b, " [%s=%s %s %q]", cd.Type, cd.Status, cd.Reason, cd.Message)
		}
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " {%s %s %s restarts=%d ready=%v}", cs.Name, cs.State, cs.Reason, cs.RestartCount, cs.Ready)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// waitRunning waits until exactly n pods match selector and all run
// ready, and returns them.
func (c *cluster) waitRunning(selector string, n int, timeout time.Duration) []*api.Pod {
	c.t.Helper()
	var ps []*api.Pod
	waitFor(c.t, timeout, fmt.Sprintf("%d pods %s running and ready", n, selector), func() (bool, string) {
		ps = c.pods(selector)
		if len(ps) != n {
			return false, describePods(ps)
		}
		for _, p := range ps {
			if !running(p) {
				return false, describePods(ps)
			}
		}
		return true, ""
	})
	return ps
}

// get is one GET on a new connection.
func get(url string, timeout time.Duration) (string, error) {
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return strings.TrimSpace(string(body)), nil
}

// waitServing waits until GET url answers want.
func waitServing(t *testing.T, url, want string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "GET "+url+" answers "+want, func() (bool, string) {
		body, err := get(url, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		return body == want, "answered " + body
	})
}

// TestTwoTierApp is issue 5's two-tier app: a backend of three replicas
// behind a service, reached through the proxy from the host (every
// replica answers), and a web pod of two containers that share an
// emptyDir and talk over localhost, with the sidecar reaching the backend
// through the service's environment variables. Then a killed container is
// restarted in place and a deleted pod is replaced.
func TestTwoTierApp(t *testing.T) {
	c := startCluster(t, "twotier")
	ctx := context.Background()
	c.push("backend:latest", podImage(t, nil, "sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"))
	tools := c.ref("tools:1")
	c.push("tools:1", podImage(t, nil, "sh"))
	c.apply(`kind: DeploymentConfig
metadata: {name: backend}
spec:
  replicas: 3
  selector: {app: backend}
  template:
    metadata: {labels: {app: backend}}
    spec:
      containers:
      - name: backend
        image: backend:latest
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {port: 8080}, periodSeconds: 1}
  triggers:
  - type: ConfigChange
  - type: ImageChange
    imageChangeParams: {automatic: true, containerNames: [backend], from: {kind: ImageStreamTag, name: "backend:latest"}}
---
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{port: 80, targetPort: 8080}]
`)
	c.cli.ok("rollout", "status", "dc/backend", "--timeout", "2m")
	backends := c.waitRunning("deployment=backend-1", 3, time.Minute)
	url, svcHost := c.serviceURL("backend")

	// Every replica answers through the proxy: each serves its own host
	// name, which is its pod's name.
	names := map[string]bool{}
	for _, p := range backends {
		names[p.Name] = true
	}
	reachAll := func(names map[string]bool) {
		t.Helper()
		seen := map[string]bool{}
		waitFor(t, 30*time.Second, "every backend answers through "+url, func() (bool, string) {
			body, err := get(url, 2*time.Second)
			if err != nil {
				return false, err.Error()
			}
			if !names[body] {
				t.Fatalf("GET %s = %q, which is not one of the backends %v", url, body, names)
			}
			seen[body] = true
			return len(seen) == len(names), fmt.Sprintf("answers from %v of %v", seen, names)
		})
	}
	reachAll(names)

	// The web pod: `web` serves the shared volume on 8081; `sidecar`
	// writes into it what it fetched from the backend (through the
	// service's environment variables) and from web over localhost.
	// (timeout, not wget -T: Debian's static busybox 1.35 crashes on -T.)
	sidecar := `while true; do
  timeout 5 wget -q -O /shared/.b "http://$BACKEND_SERVICE_HOST:$BACKEND_SERVICE_PORT/" && mv /shared/.b /shared/backend.txt
  timeout 5 wget -q -O /shared/.l http://127.0.0.1:8081/index.html && mv /shared/.l /shared/local.txt
  sleep 1
done`
	mounts := []api.VolumeMount{{Name: "shared", MountPath: "/shared"}}
	web := &api.Pod{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: c.ns, Labels: map[string]string{"app": "web"}},
		Spec: api.PodSpec{
			Volumes: []api.Volume{{Name: "shared", EmptyDir: &struct{}{}}},
			Containers: []api.Container{
				{
					Name: "web", Image: tools, VolumeMounts: mounts,
					Command:        []string{"sh", "-c", "echo served by web > /shared/index.html && exec httpd -f -p 8081 -h /shared"},
					Ports:          []api.ContainerPort{{ContainerPort: 8081}},
					ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Path: "/index.html", Port: 8081}, PeriodSeconds: 1},
				},
				{Name: "sidecar", Image: tools, VolumeMounts: mounts, Command: []string{"sh", "-c", sidecar}},
			},
		},
	}
	if err := c.admin.Create(ctx, api.Pods, web); err != nil {
		t.Fatal(err)
	}
	webPod := c.waitRunning("app=web", 1, time.Minute)[0]
	env := c.cli.ok("exec", "web", "-c", "sidecar", "--", "env")
	if !strings.Contains(env, "BACKEND_SERVICE_HOST="+svcHost+"\n") || !strings.Contains(env, "BACKEND_SERVICE_PORT=80\n") {
		t.Errorf("sidecar's environment has no BACKEND_SERVICE_HOST=%s and BACKEND_SERVICE_PORT=80:\n%s", svcHost, env)
	}
	// The web container reads what the sidecar wrote (the shared volume):
	// a backend's name (the sidecar reached the service).
	waitFor(t, 30*time.Second, "web sees the sidecar's backend.txt", func() (bool, string) {
		out, errOut, err := c.cli.run("", "exec", "web", "-c", "web", "--", "cat", "/shared/backend.txt")
		got := strings.TrimSpace(out)
		if err == nil && names[got] {
			return true, ""
		}
		// What the sidecar's fetch says, for the failure message.
		try, tryErr, _ := c.cli.run("", "exec", "web", "-c", "sidecar", "--", "sh", "-c", `timeout 5 wget -O - "http://$BACKEND_SERVICE_HOST:$BACKEND_SERVICE_PORT/" 2>&1; busybox route -n; busybox ip addr 2>&1`)
		return false, fmt.Sprintf("cat: %q %q %v\nthe sidecar's fetch: %s%s", out, errOut, err, try, tryErr)
	})
	// The sidecar fetched web's page over 127.0.0.1: localhost is shared.
	waitFor(t, 30*time.Second, "sidecar fetched web over localhost", func() (bool, string) {
		out, errOut, err := c.cli.run("", "exec", "web", "-c", "sidecar", "--", "cat", "/shared/local.txt")
		return err == nil && strings.TrimSpace(out) == "served by web", fmt.Sprintf("%q %q %v", out, errOut, err)
	})
	// The same, over HTTP to the pod's address from the host.
	podURL := "http://" + webPod.Status.PodIP + ":8081/"
	if body, err := get(podURL+"backend.txt", 2*time.Second); err != nil || !names[body] {
		t.Errorf("GET %sbackend.txt = %q, %v; want one of the backends %v", podURL, body, err, names)
	}
	if body, err := get(podURL+"local.txt", 2*time.Second); err != nil || body != "served by web" {
		t.Errorf("GET %slocal.txt = %q, %v; want \"served by web\"", podURL, body, err)
	}

	// Pods reach each other by pod IP: the sidecar fetches a backend
	// replica straight from its address, with no service in between.
	direct := c.cli.ok("exec", "web", "-c", "sidecar", "--", "sh", "-c", "timeout 5 wget -q -O - http://"+backends[0].Status.PodIP+":8080/")
	if strings.TrimSpace(direct) != backends[0].Name {
		t.Errorf("sidecar → %s:8080 (pod IP of %s) = %q, want its hostname", backends[0].Status.PodIP, backends[0].Name, direct)
	}

	// A killed container is restarted in the same pod.
	victim := backends[0]
	before := victim.Status.ContainerStatuses[0]
	newDockerCLI(t).ok("kill", before.ContainerID)
	waitFor(t, time.Minute, "the killed container of "+victim.Name+" is restarted", func() (bool, string) {
		p, err := c.pod(victim.Name)
		if err != nil {
			return false, err.Error()
		}
		cs := p.Status.ContainerStatuses[0]
		return cs.RestartCount > before.RestartCount && cs.ContainerID != before.ContainerID && running(p), describePods([]*api.Pod{p})
	})

	// A deleted pod is replaced: three again, under a new name.
	gone := backends[1].Name
	c.cli.ok("delete", "pod", gone)
	var now []*api.Pod
	waitFor(t, time.Minute, "backend-1 is back at 3 pods after "+gone+" was deleted", func() (bool, string) {
		now = c.pods("deployment=backend-1")
		rc := c.rc("backend-1")
		state := fmt.Sprintf("rc status %+v\n%s", rc.Status, describePods(now))
		if len(now) != 3 || rc.Status.Replicas != 3 || rc.Status.ReadyReplicas != 3 {
			return false, state
		}
		for _, p := range now {
			if p.Name == gone || !running(p) {
				return false, state
			}
		}
		return true, ""
	})
	names = map[string]bool{}
	for _, p := range now {
		names[p.Name] = true
	}
	reachAll(names) // the replacement is behind the service too
}

// TestNodeLoss runs a second node agent (`slipway node`, its own container
// prefix, no proxy) beside the server's, spreads a controller's replicas
// over both, and kills the second with SIGKILL: its node turns NotReady,
// and its pods are made again on the first node.
func TestNodeLoss(t *testing.T) {
	// The agents heartbeat every 10s (not configurable), so the grace
	// period must be longer than that, or healthy nodes flap.
	// Heartbeats every 2s, so a 6s grace period does not flap.
	c := startCluster(t, "node-a", "--heartbeat-interval", "2s", "--node-grace-period", "6s", "--pod-eviction-timeout", "4s")
	ctx := context.Background()
	t.Cleanup(func() { removeContainers(t, c.d, "node-b") }) // after the kill below
	nodeB := exec.Command(binary(t), append(nodeJoinArgs(t, c, "node-b"), "--data-dir", c.p.dataDir,
		"--node-name", "node-b", "--container-prefix", "node-b", "--no-proxy",
		"--docker-host", c.d.Host(), "--listen", freePort(t), "--heartbeat-interval", "2s")...)
	var out bytes.Buffer
	nodeB.Stdout, nodeB.Stderr = &out, &out
	if err := nodeB.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = nodeB.Wait(); close(exited) }()
	t.Cleanup(func() { _ = nodeB.Process.Kill(); <-exited })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("slipway node output:\n%s", out.String())
		}
	})
	nodeReady := func(name string) (string, bool) {
		o, err := c.admin.Get(ctx, api.Nodes, "", name)
		if err != nil {
			return err.Error(), false
		}
		for _, cd := range o.(*api.Node).Status.Conditions {
			if cd.Type == "Ready" {
				return fmt.Sprintf("%s %s %s", cd.Status, cd.Reason, cd.Message), cd.Status == api.ConditionTrue
			}
		}
		return "no Ready condition", false
	}
	waitFor(t, time.Minute, "node-b registers and is ready", func() (bool, string) {
		s, ok := nodeReady("node-b")
		return ok, s
	})

	c.push("web:1", podImage(t, nil, "sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"))
	var replicas int32 = 4
	rc := &api.ReplicationController{
		ObjectMeta: api.ObjectMeta{Name: "spread", Namespace: c.ns},
		Spec: api.ReplicationControllerSpec{
			Replicas: replicas,
			Selector: map[string]string{"app": "spread"},
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "spread"}},
				Spec: api.PodSpec{Containers: []api.Container{{
					Name: "web", Image: c.ref("web:1"),
					ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 8080}, PeriodSeconds: 1},
				}}},
			},
		},
	}
	if err := c.admin.Create(ctx, api.ReplicationControllers, rc); err != nil {
		t.Fatal(err)
	}
	pods := c.waitRunning("app=spread", int(replicas), 90*time.Second)
	var onB []string
	for _, p := range pods {
		if p.Spec.NodeName == "node-b" {
			onB = append(onB, p.Name)
		}
	}
	if len(onB) == 0 || len(onB) == len(pods) {
		t.Fatalf("the scheduler put %d of %d replicas on node-b, want them spread over both nodes:\n%s", len(onB), len(pods), describePods(pods))
	}
	// The API reaches node-b's agent for exec (its --listen endpoint).
	if got := strings.TrimSpace(c.cli.ok("exec", onB[0], "--", "hostname")); got != onB[0] {
		t.Errorf("exec %s -- hostname = %q, want the pod's name", onB[0], got)
	}

	killed := time.Now()
	if err := nodeB.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-exited
	waitFor(t, 90*time.Second, "node-b is NotReady in `slipway get nodes`", func() (bool, string) {
		out := c.cli.ok("get", "nodes")
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "node-b" {
				return f[1] == "False", out
			}
		}
		return false, out
	})
	if s, ok := nodeReady("node-a"); !ok {
		t.Errorf("node-a is not ready: %s", s)
	}
	t.Logf("node-b NotReady %s after the kill", time.Since(killed).Round(time.Second))
	waitFor(t, 90*time.Second, "node-b's pods are made again on node-a", func() (bool, string) {
		now := c.pods("app=spread")
		state := describePods(now)
		if len(now) != int(replicas) {
			return false, state
		}
		for _, p := range now {
			if p.Spec.NodeName != "node-a" || !running(p) || slices.Contains(onB, p.Name) {
				return false, state
			}
		}
		return true, ""
	})
	t.Logf("all %d replicas running on node-a %s after the kill", replicas, time.Since(killed).Round(time.Second))
}

// TestBadPodInput: an image that does not exist, a host port another pod
// holds on the only node, and a memory request no node has each leave a
// pod waiting with a reason that says why, while the healthy pods keep
// running untouched.
func TestBadPodInput(t *testing.T) {
	c := startCluster(t, "badinput")
	ctx := context.Background()
	c.push("web:1", httpdImage(t, "healthy", 8080))
	image := c.ref("web:1")
	_, port, _ := net.SplitHostPort(freePort(t))
	hp, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	hostPort := int32(hp)
	probe := &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 8080}, PeriodSeconds: 1}
	pod := func(name string, ct api.Container) *api.Pod {
		ct.Name = "web"
		return &api.Pod{ObjectMeta: api.ObjectMeta{Name: name, Namespace: c.ns}, Spec: api.PodSpec{Containers: []api.Container{ct}}}
	}
	withPort := api.Container{Image: image, ReadinessProbe: probe, Ports: []api.ContainerPort{{ContainerPort: 8080, HostPort: hostPort}}}
	for _, p := range []*api.Pod{
		pod("holder", withPort),
		pod("healthy", api.Container{Image: image, ReadinessProbe: probe}),
	} {
		if err := c.admin.Create(ctx, api.Pods, p); err != nil {
			t.Fatal(err)
		}
	}
	var good []*api.Pod
	for _, name := range []string{"holder", "healthy"} {
		waitFor(t, time.Minute, name+" runs", func() (bool, string) {
			p, err := c.pod(name)
			if err != nil {
				return false, err.Error()
			}
			if running(p) {
				good = append(good, p)
			}
			return running(p), describePods([]*api.Pod{p})
		})
	}

	missing := c.ref("nothing:here")
	huge := api.Container{Image: image}
	huge.Resources.Requests.Memory = 1000 << 30 // 1000Gi
	for _, p := range []*api.Pod{
		pod("missing", api.Container{Image: missing}),
		pod("clash", withPort),
		pod("huge", huge),
	} {
		if err := c.admin.Create(ctx, api.Pods, p); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, time.Minute, "missing shows ErrImagePull naming its image", func() (bool, string) {
		p, err := c.pod("missing")
		if err != nil {
			return false, err.Error()
		}
		ok := p.Status.Reason == "ErrImagePull" && strings.Contains(p.Status.Message, missing) && p.Status.Phase == api.PodPending
		if ok {
			t.Logf("missing: %s: %s", p.Status.Reason, p.Status.Message)
		}
		return ok, describePods([]*api.Pod{p})
	})
	if out := c.cli.ok("get", "pods"); !strings.Contains(out, "ErrImagePull") {
		t.Errorf("get pods does not show ErrImagePull:\n%s", out)
	}
	unschedulable := func(name, why string) {
		t.Helper()
		waitFor(t, time.Minute, name+" is Unschedulable: "+why, func() (bool, string) {
			p, err := c.pod(name)
			if err != nil {
				return false, err.Error()
			}
			for _, cd := range p.Status.Conditions {
				if cd.Type == "PodScheduled" && cd.Status == api.ConditionFalse && cd.Reason == "Unschedulable" && strings.Contains(cd.Message, why) {
					t.Logf("%s: %s: %s", name, cd.Reason, cd.Message)
					return p.Spec.NodeName == "" && p.Status.Phase != api.PodRunning, describePods([]*api.Pod{p})
				}
			}
			return false, describePods([]*api.Pod{p})
		})
	}
	unschedulable("clash", "free ports")
	unschedulable("huge", "Insufficient memory")

	// The healthy pods ran on, untouched: same containers, no restarts,
	// still answering (holder on its host port too).
	for _, before := range good {
		p, err := c.pod(before.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !running(p) || p.Status.ContainerStatuses[0].ContainerID != before.Status.ContainerStatuses[0].ContainerID || p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("%s changed while the bad pods were tried:\nbefore %safter  %s", p.Name, describePods([]*api.Pod{before}), describePods([]*api.Pod{p}))
		}
		if body, err := get("http://"+p.Status.PodIP+":8080/", 2*time.Second); err != nil || body != "healthy" {
			t.Errorf("GET %s's address = %q, %v; want healthy", p.Name, body, err)
		}
	}
	if body, err := get(fmt.Sprintf("http://127.0.0.1:%d/", hostPort), 2*time.Second); err != nil || body != "healthy" {
		t.Errorf("GET holder's host port %d = %q, %v; want healthy", hostPort, body, err)
	}
}
