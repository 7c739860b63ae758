package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/cluster/proxy"
)

// Issue 11's node-side findings, played by an attacker against a real
// `slipway start` with its node agent and service proxy: mallory, a user
// with a project of her own, against the project "shop" (the victim),
// whose private image a pod of its own has brought into the node's cache.
func TestSecurityNode(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "pw-mallory"})
	c := startCluster(t, "secnode", "--htpasswd", ht)
	ctx := context.Background()

	// The victim: a private image with a secret, run by a pod of shop, so
	// the engine has it cached.
	digest := c.push("vault:1", podImage(t, map[string]string{"secret.txt": "the victim's secret"}, "sleep", "3600"))
	victimRef := c.ref("vault@" + digest)
	if err := c.admin.Create(ctx, api.Pods, &api.Pod{
		ObjectMeta: api.ObjectMeta{Name: "vault", Namespace: c.ns, Labels: map[string]string{"app": "vault"}},
		Spec:       api.PodSpec{Containers: []api.Container{{Name: "app", Image: victimRef}}},
	}); err != nil {
		t.Fatal(err)
	}
	c.waitRunning("app=vault", 1, 2*time.Minute)

	// The attacker: mallory and her own project.
	mallory := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	mallory.ok("login", c.p.url(), "-u", "mallory", "-p", "pw-mallory", "--certificate-authority", c.p.caFile())
	mallory.ok("new-project", "mal")
	mal := securityClient(t, c.p, "mallory", "pw-mallory")

	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"H2 a pod of another project runs the victim's cached private image by digest", func(t *testing.T) {
			pod := &api.Pod{
				ObjectMeta: api.ObjectMeta{Name: "thief", Namespace: "mal"},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: "app", Image: victimRef}}},
			}
			if err := mal.Create(ctx, api.Pods, pod); err != nil {
				if st, ok := api.StatusFor(err); ok && st.Code == http.StatusForbidden {
					t.Logf("the API refused the pod (also fine): %v", err)
					return
				}
				t.Fatal(err)
			}
			waitFor(t, 2*time.Minute, "mallory's pod fails to pull the victim's image", func() (bool, string) {
				o, err := mal.Get(ctx, api.Pods, "mal", "thief")
				if err != nil {
					return false, err.Error()
				}
				p := o.(*api.Pod)
				state := describePods([]*api.Pod{p})
				for _, cs := range p.Status.ContainerStatuses {
					if cs.State == "Running" || cs.ContainerID != "" {
						t.Fatalf("mallory's pod runs the victim's private image %s:\n%s", victimRef, state)
					}
					if cs.Reason == "ErrImagePull" {
						if !strings.Contains(cs.Message, "unauthorized") || !strings.Contains(cs.Message, "may not pull") {
							t.Errorf("the pull error %q does not say why (unauthorized, may not pull)", cs.Message)
						}
						return true, ""
					}
				}
				return false, state
			})
			// The victim's pods are not hurt by it.
			c.waitRunning("app=vault", 1, time.Minute)
		}},

		{"H4 exec of an endless output through the API: server memory stays bounded, the client is told", func(t *testing.T) {
			pid := c.p.cmd.Process.Pid
			before := vmRSS(t, pid)
			var peak atomic.Int64
			peak.Store(before)
			stop := make(chan struct{})
			var sampler sync.WaitGroup
			sampler.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(50 * time.Millisecond):
					}
					if rss := vmRSS(t, pid); rss > peak.Load() {
						peak.Store(rss)
					}
				}
			})
			// 200 MiB of output; the server may keep 16 MiB of it in flight
			// at most, and in practice a few frames.
			out, errOut, err := c.cli.run("", "exec", "vault", "--", "busybox", "head", "-c", strconv.Itoa(200<<20), "/dev/zero")
			close(stop)
			sampler.Wait()
			grew := peak.Load() - before
			t.Logf("server VmRSS %d MiB before, peak %d MiB (+%d MiB); client got %d bytes, stderr %q, err %v", before>>20, peak.Load()>>20, grew>>20, len(out), errOut, err)
			if grew > 200<<20 {
				t.Errorf("the server's RSS grew by %d MiB during the exec, want < 200 MiB", grew>>20)
			}
			if err == nil || !strings.Contains(errOut, "16 MiB") || !strings.Contains(errOut, "stopped") {
				t.Errorf("slipway exec of 200 MiB of output: err %v, stderr %q; want a failure saying the output passed 16 MiB and the command was stopped", err, errOut)
			}
			if len(out) != 16<<20 {
				t.Errorf("the client got %d bytes of output, want the first 16 MiB", len(out))
			}
			// The server still serves, and the stopped command is gone.
			waitFor(t, time.Minute, "the stopped exec's process ends", func() (bool, string) {
				ps, psErr, err := c.cli.run("", "exec", "vault", "--", "busybox", "ps", "-o", "args")
				return err == nil && !strings.Contains(ps, "/dev/zero"), fmt.Sprintf("%v %s%s", err, ps, psErr)
			})
		}},

		{"C3 an Endpoints written by hand points a service at the host's loopback", func(t *testing.T) {
			stealThroughProxy(t, c, mal, "mal", "steal-lo", "127.0.0.1")
		}},
		{"C3 an Endpoints written by hand points a service at the node's own address", func(t *testing.T) {
			stealThroughProxy(t, c, mal, "mal", "steal-host", nodeAddress(t))
		}},
		// The API lets a cluster admin name outside addresses; the proxy
		// still never dials the node's own.
		{"C3 a cluster admin's outside Endpoints name the node's own address", func(t *testing.T) {
			stealThroughProxy(t, c, c.admin, c.ns, "steal-admin", nodeAddress(t))
		}},

		{"C3 a service-range address with no service is refused on the host, not routed out", func(t *testing.T) {
			// A service of the victim's, to learn the range by.
			if err := c.admin.Create(ctx, api.Services, &api.Service{
				ObjectMeta: api.ObjectMeta{Name: "vault", Namespace: c.ns},
				Spec:       api.ServiceSpec{Selector: map[string]string{"app": "vault"}, Ports: []api.ServicePort{{Port: 80}}},
			}); err != nil {
				t.Fatal(err)
			}
			c.serviceURL("vault")
			items, _, err := c.admin.List(ctx, api.Services, "", client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			used := map[string]bool{}
			var some netip.Addr
			for _, o := range items {
				if a, err := netip.ParseAddr(o.(*api.Service).Spec.ClusterIP); err == nil {
					used[a.String()], some = true, a
				}
			}
			if !some.IsValid() {
				t.Fatal("no service has a cluster IP to find the service range by")
			}
			b := some.As4()
			var free string
			for i := 254; i > 1; i-- {
				b[3] = byte(i)
				if a := netip.AddrFrom4(b); !used[a.String()] {
					free = a.String()
					break
				}
			}
			conn, err := net.DialTimeout("tcp", net.JoinHostPort(free, "80"), 10*time.Second)
			if err == nil {
				conn.Close()
			}
			if !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Errorf("dial %s:80 (in the service range, no service) = %v, want EHOSTUNREACH from the host's reject route", free, err)
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
}

// stealThroughProxy is the C3 attack: a Service of project ns without a
// selector, and its Endpoints written by hand to ip, where a listener of
// the host (all addresses: what only the host reaches, such as etcd or
// the agent) answers. The API may refuse the Endpoints; if it takes them,
// the proxy must refuse to dial them, and say so in its log.
func stealThroughProxy(t *testing.T, c *cluster, mal *client.Client, ns, name, ip string) {
	ctx := context.Background()
	var hits atomic.Int64
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprint(w, "host-only secret")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := int32(ln.Addr().(*net.TCPAddr).Port)

	svc := &api.Service{
		ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns},
		Spec:       api.ServiceSpec{Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: port}}},
	}
	if err := mal.Create(ctx, api.Services, svc); err != nil {
		t.Fatal(err)
	}
	subsets := []api.EndpointSubset{{Addresses: []api.EndpointAddress{{IP: ip}}, Ports: []api.ServicePort{{Name: "http", Port: port}}}}
	// The endpoints controller may create the object meanwhile: a
	// conflict is retried, anything else is the API's answer.
	var werr error
	for range 5 {
		if o, err := mal.Get(ctx, api.EndpointsResource, ns, name); err == nil {
			ep := o.(*api.Endpoints)
			ep.Subsets = subsets
			werr = mal.Update(ctx, api.EndpointsResource, ep)
		} else {
			werr = mal.Create(ctx, api.EndpointsResource, &api.Endpoints{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Subsets: subsets})
		}
		if st, ok := api.StatusFor(werr); !ok || st.Code != http.StatusConflict {
			break
		}
	}
	if werr != nil {
		t.Logf("the API refused the Endpoints (also fine; the proxy is checked by cluster/proxy's tests): %v", werr)
		return
	}
	var clusterIP string
	waitFor(t, 30*time.Second, "service "+name+" gets a cluster IP", func() (bool, string) {
		o, err := mal.Get(ctx, api.Services, ns, name)
		if err != nil {
			return false, err.Error()
		}
		clusterIP = o.(*api.Service).Spec.ClusterIP
		return clusterIP != "", "no cluster IP yet"
	})
	url := "http://" + net.JoinHostPort(clusterIP, "80") + "/"
	// The proxy took the connection and refused the endpoint: its log
	// says so. Until then, nothing must answer.
	waitFor(t, time.Minute, "the proxy refuses endpoint "+ip+" of "+ns+"/"+name, func() (bool, string) {
		body, err := get(url, 2*time.Second)
		if err == nil {
			t.Fatalf("GET %s = %q: the proxy relayed a cluster IP to %s, an address of the host", url, body, ip)
		}
		log := c.p.out.String()
		return strings.Contains(log, "endpoint refused") && strings.Contains(log, ns+"/"+name), err.Error()
	})
	if n := hits.Load(); n != 0 {
		t.Errorf("the host's listener got %d requests through the proxy, want 0", n)
	}
	t.Logf("the API took the Endpoints %s/%s (%s); the proxy refused to dial them", ns, name, ip)
}

// nodeAddress is an IPv4 address of this host other than loopback,
// link-local and the cluster IPs on slipway0: the node's own address.
func nodeAddress(t *testing.T) string {
	t.Helper()
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, iface := range ifaces {
		if iface.Name == proxy.DefaultInterface {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ip, _ := netip.AddrFromSlice(n.IP)
				if ip = ip.Unmap(); ip.Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
					return ip.String()
				}
			}
		}
	}
	t.Skip("this host has no IPv4 address but loopback and cluster IPs")
	return ""
}

// securityClient logs an htpasswd user in through the Go client.
func securityClient(t *testing.T, p *proc, user, password string) *client.Client {
	t.Helper()
	ca, err := os.ReadFile(p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(p.url(), client.WithCAData(ca))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Login(context.Background(), user, password)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	c, err = client.New(p.url(), client.WithCAData(ca), client.WithToken(resp.Token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// vmRSS is a process's resident memory in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Errorf("reading the server's memory: %v", err)
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
