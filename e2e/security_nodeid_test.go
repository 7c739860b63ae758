package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// Issue 12's node boundary, played with a real second node: `slipway
// node` joins a cluster with a bootstrap token and acts only through the
// API, as system:node:nid-b. Its credential is then turned against the
// cluster: other nodes' pods, Secrets, RoleBindings, etcd, the agent
// endpoints, and, revoked, everything.
func TestSecurityNodeIdentity(t *testing.T) {
	c := startCluster(t, "nid-a", "--node-labels", "role=a", "--heartbeat-interval", "2s")
	ctx := context.Background()

	// Node b joins with a bootstrap token, in a data directory of its
	// own: nothing of the server's.
	nodeDir, listen := t.TempDir(), freePort(t)
	t.Cleanup(func() { removeContainers(t, c.d, "nid-b") })
	args := append(nodeJoinArgs(t, c, "nid-b"), "--data-dir", nodeDir, "--node-name", "nid-b", "--container-prefix", "nid-b",
		"--no-proxy", "--docker-host", c.d.Host(), "--listen", listen, "--heartbeat-interval", "2s", "--node-labels", "role=b")
	cmd := exec.Command(binary(t), args...)
	var out bytes.Buffer
	cmd.Stdout = &syncWriter{w: &out}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("slipway node output:\n%s", cmd.Stdout.(*syncWriter).String())
		}
	})
	waitFor(t, time.Minute, "node nid-b joins and is ready", func() (bool, string) {
		o, err := c.admin.Get(ctx, api.Nodes, "", "nid-b")
		if err != nil {
			return false, err.Error()
		}
		for _, cd := range o.(*api.Node).Status.Conditions {
			if cd.Type == "Ready" {
				return cd.Status == api.ConditionTrue, fmt.Sprintf("%+v", cd)
			}
		}
		return false, "no Ready condition"
	})
	for _, a := range cmd.Args {
		if strings.Contains(a, "etcd") {
			t.Fatalf("slipway node was given an etcd argument: %q", cmd.Args)
		}
	}

	// A private image, a Secret, and a pod on each node.
	digest := c.push("app:1", podImage(t, map[string]string{"hello.txt": "hello from b"}, "sleep", "3600"))
	image := c.ref("app@" + digest)
	if err := c.admin.Create(ctx, api.Secrets, &api.Secret{
		ObjectMeta: api.ObjectMeta{Name: "db", Namespace: c.ns},
		StringData: map[string]string{"password": "the victim's password"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := c.admin.Create(ctx, api.Pods, &api.Pod{
			ObjectMeta: api.ObjectMeta{Name: "on-" + n, Namespace: c.ns, Labels: map[string]string{"app": "on-" + n}},
			Spec:       api.PodSpec{NodeSelector: map[string]string{"role": n}, Containers: []api.Container{{Name: "app", Image: image}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The joined node runs its pod end to end: pulled with the
	// credentials the API gave it for its pod, admitted by the API.
	c.waitRunning("app=on-b", 1, 2*time.Minute)
	c.waitRunning("app=on-a", 1, 2*time.Minute)
	if p, _ := c.pod("on-b"); p.Spec.NodeName != "nid-b" {
		t.Fatalf("pod on-b is on %q, want nid-b", p.Spec.NodeName)
	}
	// Its exec and logs go through the API to the agent over TLS, each
	// side checking the other's certificate.
	if got := c.cli.ok("exec", "on-b", "--", "cat", "/hello.txt"); !strings.Contains(got, "hello from b") {
		t.Fatalf("slipway exec on-b = %q, want the file's content", got)
	}

	// node b's own credential, as it keeps it.
	credDir := filepath.Join(nodeDir, "node-credentials", "nid-b")
	cert, err := tls.LoadX509KeyPair(filepath.Join(credDir, "node.crt"), filepath.Join(credDir, "node.key"))
	if err != nil {
		t.Fatalf("node nid-b's credential: %v", err)
	}
	ca, err := os.ReadFile(c.p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	nb, err := client.New(c.p.url(), client.WithCAData(ca), client.WithClientCertificate(cert))
	if err != nil {
		t.Fatal(err)
	}
	if u, err := nb.WhoAmI(ctx); err != nil || u.Name != "system:node:nid-b" {
		t.Fatalf("whoami with nid-b's certificate = %+v, %v; want system:node:nid-b", u, err)
	}
	podA, err := c.pod("on-a")
	if err != nil {
		t.Fatal(err)
	}

	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"N1 a node's credential lists and watches only the pods bound to it, and cannot read another node's pod", func(t *testing.T) {
			items, _, err := nb.List(ctx, api.Pods, "", client.ListOptions{})
			if err != nil {
				t.Fatalf("list pods as nid-b: %v", err)
			}
			var names []string
			for _, o := range items {
				p := o.(*api.Pod)
				names = append(names, p.Namespace+"/"+p.Name+"@"+p.Spec.NodeName)
				if p.Spec.NodeName != "nid-b" {
					t.Errorf("nid-b's list holds pod %s/%s of node %q", p.Namespace, p.Name, p.Spec.NodeName)
				}
			}
			if len(items) != 1 {
				t.Errorf("nid-b's list of pods = %v, want its own pod %s/on-b only", names, c.ns)
			}
			// A watch sends what exists first, in key order: on-a would
			// come before on-b.
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := nb.Watch(wctx, api.Pods, "", "", client.ListOptions{})
			if err != nil {
				t.Fatalf("watch pods as nid-b: %v", err)
			}
			for ev := range ch {
				if ev.Type == api.Error {
					t.Fatalf("watch: %v", ev.Err)
				}
				p := ev.Object.(*api.Pod)
				if p.Spec.NodeName != "nid-b" {
					t.Fatalf("nid-b's watch sent pod %s/%s of node %q", p.Namespace, p.Name, p.Spec.NodeName)
				}
				if p.Name == "on-b" {
					break
				}
			}
			cancel()
			_, err = nb.Get(ctx, api.Pods, c.ns, "on-a")
			wantCode(t, err, http.StatusForbidden, "get pod on-a (on nid-a) as nid-b")
		}},
		{"N2 a node's credential reads no Secret its pods do not reference", func(t *testing.T) {
			_, err := nb.Get(ctx, api.Secrets, c.ns, "db")
			wantCode(t, err, http.StatusForbidden, "get secret db as nid-b")
			_, _, err = nb.List(ctx, api.Secrets, c.ns, client.ListOptions{})
			wantCode(t, err, http.StatusForbidden, "list secrets of "+c.ns+" as nid-b")
			_, _, err = nb.List(ctx, api.Secrets, "", client.ListOptions{})
			wantCode(t, err, http.StatusForbidden, "list every secret as nid-b")
		}},
		{"N3 a node's credential reads and writes no RoleBinding", func(t *testing.T) {
			_, _, err := nb.List(ctx, api.RoleBindings, c.ns, client.ListOptions{})
			wantCode(t, err, http.StatusForbidden, "list rolebindings as nid-b")
			_, _, err = nb.List(ctx, api.ClusterRoleBindings, "", client.ListOptions{})
			wantCode(t, err, http.StatusForbidden, "list clusterrolebindings as nid-b")
			err = nb.Create(ctx, api.RoleBindings, &api.RoleBinding{
				ObjectMeta: api.ObjectMeta{Name: "node-admin", Namespace: c.ns},
				RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "admin"},
				Subjects:   []api.Subject{{Kind: "User", Name: "system:node:nid-b"}},
			})
			wantCode(t, err, http.StatusForbidden, "create a rolebinding as nid-b")
		}},
		{"N4 a node's credential writes no other Node, no other node's pod, and not its own credential's record", func(t *testing.T) {
			_, err := nb.Get(ctx, api.Nodes, "", "nid-a")
			wantCode(t, err, http.StatusForbidden, "get node nid-a as nid-b")
			p := *podA
			p.Status.Phase = api.PodFailed
			wantCode(t, nb.UpdateStatus(ctx, api.Pods, &p), http.StatusForbidden, "update the status of pod on-a as nid-b")
			_, err = nb.Delete(ctx, api.Pods, c.ns, "on-b")
			wantCode(t, err, http.StatusForbidden, "delete its own pod as nid-b")
			err = nb.Create(ctx, api.Pods, &api.Pod{ObjectMeta: api.ObjectMeta{Name: "planted", Namespace: c.ns},
				Spec: api.PodSpec{NodeName: "nid-b", Containers: []api.Container{{Name: "app", Image: image}}}})
			wantCode(t, err, http.StatusForbidden, "create a pod as nid-b")
			// Its own Node it may write, but the serial of its credential
			// stays the platform's.
			o, err := nb.Get(ctx, api.Nodes, "", "nid-b")
			if err != nil {
				t.Fatalf("get its own Node as nid-b: %v", err)
			}
			n := o.(*api.Node)
			was := n.Annotations["slipway.dev/node-credential"]
			n.Annotations["slipway.dev/node-credential"] = "forged"
			if err := nb.Update(ctx, api.Nodes, n); err != nil {
				t.Fatalf("update its own Node as nid-b: %v", err)
			}
			o, err = c.admin.Get(ctx, api.Nodes, "", "nid-b")
			if err != nil {
				t.Fatal(err)
			}
			if got := o.GetObjectMeta().Annotations["slipway.dev/node-credential"]; got != was || was == "" {
				t.Errorf("node nid-b's credential record = %q after nid-b wrote %q, want %q kept", got, "forged", was)
			}
		}},
		{"N5 a node's credential gets registry pull credentials only for its own pods", func(t *testing.T) {
			_, err := nb.PullCredentials(ctx, c.ns, "on-a", image)
			wantCode(t, err, http.StatusForbidden, "pull credentials for pod on-a (on nid-a) as nid-b")
			_, err = nb.PullCredentials(ctx, c.ns, "on-b", c.p.registry+"/other/stream:1")
			wantCode(t, err, http.StatusForbidden, "pull credentials for an image pod on-b does not run")
			auth, err := nb.PullCredentials(ctx, c.ns, "on-b", image)
			if err != nil || auth == "" {
				t.Errorf("pull credentials for its own pod's image = %q, %v; want some", auth, err)
			}
		}},
		{"N6 a node holds no etcd credentials, and its certificate is nothing to etcd", func(t *testing.T) {
			var files []string
			filepath.WalkDir(nodeDir, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.Contains(p, string(filepath.Separator)+"node"+string(filepath.Separator)) {
					files = append(files, strings.TrimPrefix(p, nodeDir))
				}
				return nil
			})
			for _, f := range files {
				if strings.Contains(f, "etcd") {
					t.Errorf("the node's data directory holds %s", f)
				}
			}
			t.Logf("the node's own files (pod volumes aside): %v", files)
			var addrs struct{ Client string }
			data, err := os.ReadFile(filepath.Join(c.p.dataDir, "etcd.json"))
			if err == nil {
				err = json.Unmarshal(data, &addrs)
			}
			if err != nil || addrs.Client == "" {
				t.Fatalf("etcd.json = %s, %v", data, err)
			}
			etcdCA, err := os.ReadFile(filepath.Join(c.p.dataDir, "pki", "etcd", "ca.crt"))
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(etcdCA)
			etcdGet := func(cert tls.Certificate) error {
				cl, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + addrs.Client}, DialTimeout: 5 * time.Second,
					TLS: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}})
				if err != nil {
					return err
				}
				defer cl.Close()
				gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err = cl.Get(gctx, "/slipway/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				return err
			}
			// The control: the server's own etcd credential reads.
			server, err := tls.LoadX509KeyPair(filepath.Join(c.p.dataDir, "pki", "etcd", "client.crt"), filepath.Join(c.p.dataDir, "pki", "etcd", "client.key"))
			if err != nil {
				t.Fatal(err)
			}
			if err := etcdGet(server); err != nil {
				t.Fatalf("the server's etcd credential cannot read etcd either (%v): the check below proves nothing", err)
			}
			if err := etcdGet(cert); err == nil {
				t.Errorf("nid-b's certificate read etcd at %s", addrs.Client)
			} else {
				t.Logf("etcd refused nid-b's certificate: %v", err)
			}
		}},
		{"N7 the agent's logs and exec answer only the API server's certificate", func(t *testing.T) {
			url := "https://" + listen + "/pods/" + c.ns + "/on-b/log"
			try := func(certs []tls.Certificate) (int, error) {
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(ca)
				hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs, InsecureSkipVerify: true}}}
				resp, err := hc.Get(url)
				if err != nil {
					return 0, err
				}
				defer resp.Body.Close()
				io.Copy(io.Discard, resp.Body)
				return resp.StatusCode, nil
			}
			// A certificate of the platform CA, but a node's.
			if code, err := try([]tls.Certificate{cert}); err == nil && code != http.StatusUnauthorized {
				t.Errorf("GET %s with nid-b's own certificate = %d, want 401", url, code)
			}
			if code, err := try(nil); err == nil {
				t.Errorf("GET %s without a client certificate = %d, want the handshake refused", url, code)
			}
			if body, err := get("http://"+listen+"/pods/"+c.ns+"/on-b/log", 10*time.Second); err == nil && strings.Contains(body, "hello") {
				t.Errorf("plain HTTP to the agent answered the pod's log: %q", body)
			}
		}},
		{"N8 a bootstrap token joins only its node, once, and opens nothing else", func(t *testing.T) {
			tr, err := c.admin.CreateBootstrapToken(ctx, "nid-c", 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			bt, err := client.New(c.p.url(), client.WithCAData(ca), client.WithToken(tr.Status.Token))
			if err != nil {
				t.Fatal(err)
			}
			_, err = bt.WhoAmI(ctx)
			wantCode(t, err, http.StatusUnauthorized, "whoami with a bootstrap token")
			_, _, err = bt.List(ctx, api.Pods, "", client.ListOptions{})
			wantCode(t, err, http.StatusUnauthorized, "list pods with a bootstrap token")
			_, _, err = bt.JoinNode(ctx, "nid-a", csrFor(t, "system:node:nid-a"))
			wantCode(t, err, http.StatusUnauthorized, "join as nid-a with nid-c's token")
			_, _, err = bt.JoinNode(ctx, "nid-c", csrFor(t, "system:node:nid-a"))
			wantCode(t, err, http.StatusBadRequest, "join as nid-c asking for nid-a's name")
			if _, _, err := bt.JoinNode(ctx, "nid-c", csrFor(t, "system:node:nid-c")); err != nil {
				t.Fatalf("join nid-c with its token: %v", err)
			}
			_, _, err = bt.JoinNode(ctx, "nid-c", csrFor(t, "system:node:nid-c"))
			wantCode(t, err, http.StatusUnauthorized, "join nid-c a second time with the same token")
			if _, err := c.admin.Delete(ctx, api.Nodes, "", "nid-c"); err != nil {
				t.Fatal(err)
			}
		}},
		// Last: it revokes nid-b.
		{"N9 a node whose credential is revoked can do nothing", func(t *testing.T) {
			c.cli.ok("adm", "revoke-node", "nid-b")
			since := cmd.Stdout.(*syncWriter).Len()
			_, err := nb.WhoAmI(ctx)
			wantCode(t, err, http.StatusUnauthorized, "whoami as revoked nid-b")
			_, _, err = nb.List(ctx, api.Pods, "", client.ListOptions{})
			wantCode(t, err, http.StatusUnauthorized, "list pods as revoked nid-b")
			_, err = nb.Get(ctx, api.Nodes, "", "nid-b")
			wantCode(t, err, http.StatusUnauthorized, "get its Node as revoked nid-b")
			_, err = nb.PullCredentials(ctx, c.ns, "on-b", image)
			wantCode(t, err, http.StatusUnauthorized, "pull credentials as revoked nid-b")
			err = nb.Create(ctx, api.Nodes, &api.Node{ObjectMeta: api.ObjectMeta{Name: "nid-b"}})
			wantCode(t, err, http.StatusUnauthorized, "register its Node again as revoked nid-b")
			// The running agent's heartbeats are refused too, and do not
			// bring the Node back.
			waitFor(t, time.Minute, "the revoked agent's heartbeat is refused", func() (bool, string) {
				log := cmd.Stdout.(*syncWriter).String()[since:]
				return strings.Contains(log, "heartbeat failed") && strings.Contains(log, "revoked"), log
			})
			if _, err := c.admin.Get(ctx, api.Nodes, "", "nid-b"); err == nil {
				t.Errorf("node nid-b is back after its credential was revoked")
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.run)
	}
}

// wantCode fails unless err is an API Status with code.
func wantCode(t *testing.T, err error, code int, what string) {
	t.Helper()
	st, ok := api.StatusFor(err)
	if !ok || st.Code != code {
		t.Errorf("%s: %v, want %d %s", what, err, code, http.StatusText(code))
	}
}

// csrFor is a PEM certificate request for cn with a fresh key.
func csrFor(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestNodeJoinedServesServices: a node that joined with a bootstrap token
// is the cluster's only node, and its service proxy, which reads services
// and endpoints through the API as the node, serves a service.
func TestNodeJoinedServesServices(t *testing.T) {
	c := startCluster(t, "njs", "--no-node")
	ctx := context.Background()
	cmd := exec.Command(binary(t), append(nodeJoinArgs(t, c, c.node), "--data-dir", t.TempDir(), "--node-name", c.node,
		"--container-prefix", c.node, "--service-cidr", c.cidr, "--docker-host", c.d.Host(), "--heartbeat-interval", "2s")...)
	out := &syncWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("slipway node output:\n%s", out.String())
		}
	})
	c.push("web:1", podImage(t, nil, "sh", "-c", "mkdir -p /www && echo served-by-joined-node > /www/index.html && exec httpd -f -p 8080 -h /www"))
	if err := c.admin.Create(ctx, api.Pods, &api.Pod{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: c.ns, Labels: map[string]string{"app": "web"}},
		Spec:       api.PodSpec{Containers: []api.Container{{Name: "web", Image: c.ref("web:1")}}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.admin.Create(ctx, api.Services, &api.Service{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: c.ns},
		Spec:       api.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}}},
	}); err != nil {
		t.Fatal(err)
	}
	pods := c.waitRunning("app=web", 1, 2*time.Minute)
	if pods[0].Spec.NodeName != c.node {
		t.Fatalf("pod web is on %q, want the joined node %s", pods[0].Spec.NodeName, c.node)
	}
	url, _ := c.serviceURL("web")
	waitFor(t, time.Minute, "the joined node's proxy serves "+url, func() (bool, string) {
		body, err := get(url, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(body, "served-by-joined-node"), body
	})
}
