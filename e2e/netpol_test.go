package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/netpol"
)

// TestNetworkIsolation is issue 14's isolation on the real engine: a pod
// of project shop reaches another pod of shop, but not a pod of project
// np-b, neither by its pod IP nor through np-b's service IP (the proxy
// refuses it); the host still reaches both (the platform's own paths).
// A NetworkPolicy in np-b naming shop lets shop in, by pod IP and by
// service; deleting it shuts shop out again. A pod that goes away leaves
// no address in the node's nftables sets; an address of the pod network
// that is no known pod reaches nothing. The rules outlive a killed
// server (pods run on, still isolated), and the restarted agent takes the
// tables over.
//
// The proxy runs in its default mode (nftables here: the kernel DNATs a
// cluster IP to the pod, and netpol's forward chain sees the pod); the
// userspace proxy, which dials from the host and so must ask netpol
// itself, is TestNetworkIsolationUserspaceProxy.
func TestNetworkIsolation(t *testing.T) { testNetworkIsolation(t, "netpol", 0) }

// TestNetworkIsolationUserspaceProxy is TestNetworkIsolation with
// --proxy-mode userspace.
func TestNetworkIsolationUserspaceProxy(t *testing.T) {
	testNetworkIsolation(t, "netpol-us", 1, "--proxy-mode", "userspace")
}

func testNetworkIsolation(t *testing.T, node string, rangeOffset int, extra ...string) {
	// A service range of this process's own (the flag given last wins),
	// in a /16 no other test's range uses.
	cidr := fmt.Sprintf("10.%d.%d.0/24", 44+rangeOffset, os.Getpid()%250)
	t.Cleanup(func() { removeServiceRange(t, cidr) })
	c := startCluster(t, node, append([]string{"--service-cidr", cidr}, extra...)...)
	ctx := context.Background()
	b := *c
	b.ns = "np-b"
	if err := c.admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: b.ns}}); err != nil {
		t.Fatal(err)
	}
	c.push("web:1", httpdImage(t, "a", 8080))
	b.push("web:1", httpdImage(t, "b", 8080))

	probe := &api.Probe{HTTPGet: &api.HTTPGetAction{Port: 8080}, PeriodSeconds: 1}
	pod := func(cl *cluster, name string) *api.Pod {
		p := &api.Pod{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: cl.ns, Labels: map[string]string{"app": name}},
			Spec: api.PodSpec{Containers: []api.Container{{
				Name: "web", Image: cl.ref("web:1"), ReadinessProbe: probe,
				Ports: []api.ContainerPort{{ContainerPort: 8080}},
			}}},
		}
		if err := cl.admin.Create(ctx, api.Pods, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pod(c, "client")
	pod(c, "web-a")
	pod(&b, "web-b")
	svc := &api.Service{
		ObjectMeta: api.ObjectMeta{Name: "web-b", Namespace: b.ns},
		Spec:       api.ServiceSpec{Selector: map[string]string{"app": "web-b"}, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}}},
	}
	if err := c.admin.Create(ctx, api.Services, svc); err != nil {
		t.Fatal(err)
	}
	ipOf := func(cl *cluster, name string) string {
		t.Helper()
		var ip string
		waitFor(t, time.Minute, cl.ns+"/"+name+" runs", func() (bool, string) {
			p, err := cl.pod(name)
			if err != nil {
				return false, err.Error()
			}
			ip = p.Status.PodIP
			return running(p), describePods([]*api.Pod{p})
		})
		return ip
	}
	client, webA, webB := ipOf(c, "client"), ipOf(c, "web-a"), ipOf(&b, "web-b")
	svcURL, _ := b.serviceURL("web-b")
	podURL := func(ip string) string { return "http://" + ip + ":8080/" }

	// The node's rules name all three pods before anything is checked,
	// so a pass below cannot be a pod the rules do not know yet.
	waitFor(t, 30*time.Second, "the node's nftables set holds every pod", func() (bool, string) {
		have := podSet(t, c.node)
		return slices.Contains(have, client) && slices.Contains(have, webA) && slices.Contains(have, webB), fmt.Sprint(have)
	})

	// fetch GETs url from inside the client pod (project shop).
	fetch := func(url string) (string, error) {
		out, errOut, err := c.cli.run("", "exec", "client", "--", "sh", "-c", "timeout 5 wget -q -O - "+url)
		if err != nil {
			return "", fmt.Errorf("%v: %s%s", err, out, errOut)
		}
		return strings.TrimSpace(out), nil
	}
	reaches := func(what, url, want string) {
		t.Helper()
		waitFor(t, 30*time.Second, "client reaches "+what, func() (bool, string) {
			body, err := fetch(url)
			if err != nil {
				return false, err.Error()
			}
			return body == want, "answered " + body
		})
	}
	refused := func(what, url string) {
		t.Helper()
		if body, err := fetch(url); err == nil {
			t.Fatalf("a pod of shop reached %s (%s) of project np-b: answered %q", what, url, body)
		}
	}
	refusedSoon := func(what, url string) {
		t.Helper()
		waitFor(t, 30*time.Second, "client is refused "+what, func() (bool, string) {
			body, err := fetch(url)
			return err != nil, "still answered " + body
		})
	}

	reaches("web-a, a pod of its own project", podURL(webA), "a")
	// The platform (the host: router, proxy, registry) reaches np-b.
	waitServing(t, podURL(webB), "b", 30*time.Second)
	waitServing(t, svcURL, "b", 30*time.Second)
	refused("pod web-b", podURL(webB))
	refused("service web-b", svcURL)
	// An address of the pod network that no pod's status names (a pod
	// whose IP the node does not know yet; here a bare container on the
	// bridge) reaches no pod: unknown is refused, not trusted.
	dk := newDockerCLI(t)
	if out, err := dk.run("", "run", "--rm", baseImage(t), "sh", "-c", "timeout 5 wget -q -O - "+podURL(webA)); err == nil {
		t.Fatalf("a container on the pod network that is no pod reached web-a: answered %q", out)
	}

	pol := &api.NetworkPolicy{
		ObjectMeta: api.ObjectMeta{Name: "from-shop", Namespace: b.ns},
		Spec: api.NetworkPolicySpec{
			PodSelector: api.LabelSelector{MatchLabels: map[string]string{"app": "web-b"}},
			Ingress: []api.NetworkPolicyIngressRule{{
				From:  []api.NetworkPolicyPeer{{NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{api.ProjectNameLabel: c.ns}}}},
				Ports: []api.NetworkPolicyPort{{Protocol: "TCP", Port: 8080}},
			}},
		},
	}
	// Made the way a user does; pol is the same policy, for later.
	c.apply(`kind: NetworkPolicy
metadata: {name: from-shop, namespace: np-b}
spec:
  podSelector: {matchLabels: {app: web-b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}]
    ports: [{protocol: TCP, port: 8080}]
`)
	if out := c.cli.ok("get", "netpol", "-n", b.ns); !strings.Contains(out, "from-shop") {
		t.Errorf("slipway get netpol -n %s:\n%s\nwant the policy listed", b.ns, out)
	}
	reaches("pod web-b once np-b lets shop in", podURL(webB), "b")
	reaches("service web-b once np-b lets shop in", svcURL, "b")

	if _, err := c.admin.Delete(ctx, api.NetworkPolicies, b.ns, pol.Name); err != nil {
		t.Fatal(err)
	}
	refusedSoon("pod web-b once the policy is gone", podURL(webB))
	refusedSoon("service web-b once the policy is gone", svcURL)
	reaches("web-a still", podURL(webA), "a")

	// The node's rules outlive the agent: with the server killed, the
	// pods run on, and shop is still shut out of np-b.
	if err := c.p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.p.done <- <-c.p.done
	inClient := func(url string) (string, error) {
		id, err := exec.Command("docker", "-H", c.d.Host(), "ps", "-q", "--filter", "label=io.slipway.pod.name=client", "--filter", "label=io.slipway.container=web").Output()
		if err != nil || len(strings.Fields(string(id))) != 1 {
			t.Fatalf("finding the client's container: %v: %q", err, id)
		}
		out, err := exec.Command("docker", "-H", c.d.Host(), "exec", strings.TrimSpace(string(id)), "sh", "-c", "timeout 5 wget -q -O - "+url).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if body, err := inClient(podURL(webB)); err == nil {
		t.Fatalf("with the server down, a pod of shop reached pod web-b: answered %q", body)
	}
	if body, err := inClient(podURL(webA)); err != nil || body != "a" {
		t.Fatalf("with the server down, the client could not reach web-a: %q, %v", body, err)
	}
	// Started again, the agent takes the tables over: a policy made now
	// is enforced, and its deletion too.
	c.p = startServer(t, c.p.dataDir, c.p.addr, c.args...)
	logIfDied(t, c.p)
	pol.ResourceVersion = ""
	if err := c.admin.Create(ctx, api.NetworkPolicies, pol); err != nil {
		t.Fatal(err)
	}
	reaches("pod web-b after the restart, once np-b lets shop in", podURL(webB), "b")
	reaches("service web-b after the restart", svcURL, "b")

	if _, err := c.admin.Delete(ctx, api.Pods, b.ns, "web-b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "web-b's address leaves the node's nftables set", func() (bool, string) {
		have := podSet(t, c.node)
		return !slices.Contains(have, webB), fmt.Sprint(have)
	})
}

// podSet lists the pod addresses in the node's netpol table (ip family).
func podSet(t *testing.T, node string) []string {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	s, err := conn.GetSetByName(&nftables.Table{Name: netpol.TablePrefix + node, Family: nftables.TableFamilyIPv4}, "pods")
	if err != nil {
		return nil // not made yet
	}
	els, err := conn.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range els {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			out = append(out, a.String())
		}
	}
	slices.Sort(out)
	return out
}
