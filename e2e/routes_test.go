package e2e

import (
	"archive/tar"
	"bufio"
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
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// testCA signs certificates for the route tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "route test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (c *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// issue returns PEM certificate and key for name.
func (c *testCA) issue(t *testing.T, name string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

// routerClient is an HTTPS client that reaches every host name at the
// router's address (as DNS would), trusting roots, one connection per
// request.
func routerClient(addr string, roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
	}}
}

func fetch(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return strings.TrimSpace(string(b)), nil
}

// podServerSource serves "pod HOSTNAME over http|tls" on 8080 (plain)
// and 8443 (TLS, with /tls/tls.crt and key), and echoes a line back after
// an "Upgrade: echo" handshake.
const podServerSource = `package main

import (
	"bufio"
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	name, _ := os.Hostname()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			w.Header().Set("Upgrade", "echo")
			w.Header().Set("Connection", "Upgrade")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			line, _ := bufio.NewReader(brw).ReadString('\n')
			fmt.Fprintf(c, "pod %s echoes %s", name, line)
			return
		}
		proto := "http"
		if r.TLS != nil {
			proto = "tls"
		}
		fmt.Fprintf(w, "pod %s over %s", name, proto)
	})
	go func() { log.Fatal(http.ListenAndServe(":8080", h)) }()
	log.Fatal(http.ListenAndServeTLS(":8443", "/tls/tls.crt", "/tls/tls.key", h))
}
`

// podServerImage is busybox with podServerSource at /podserver and the
// certificate and key at /tls.
func podServerImage(t *testing.T, certPEM, keyPEM string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(podServerSource), 0o600)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module podserver\n\ngo 1.22\n"), 0o600)
	cmd := exec.Command("go", "build", "-o", "podserver", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the pod server: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(filepath.Join(dir, "podserver"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "podserver", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	tw.WriteHeader(&tar.Header{Name: "tls/", Typeflag: tar.TypeDir, Mode: 0o755})
	for n, s := range map[string]string{"tls/tls.crt": certPEM, "tls/tls.key": keyPEM} {
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(s))})
		tw.Write([]byte(s))
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
	cf.Config.Cmd = []string{"/podserver"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRoutes is issue 14's router on the real engine, through
// `slipway start --router-http-listen --router-https-listen`:
//   - an edge TLS route serves a 3-replica app with no failed request
//     (one new TLS connection each) across a rollout and 100 route
//     updates made meanwhile;
//   - a route for the same host from another project is not admitted,
//     and says which project's route owns the host since when;
//   - a passthrough route reaches a TLS pod by SNI, with the pod's own
//     certificate;
//   - an HTTP Upgrade passes through an HTTP route both ways;
//   - the server's /metrics counts requests per route.
func TestRoutes(t *testing.T) {
	httpAddr, httpsAddr := freePort(t), freePort(t)
	c := startCluster(t, "routes", "--router-http-listen", httpAddr, "--router-https-listen", httpsAddr)
	ca := newTestCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.issue(t, "www.shop.test")
	crt, key := filepath.Join(dir, "www.crt"), filepath.Join(dir, "www.key")
	os.WriteFile(crt, []byte(certPEM), 0o600)
	os.WriteFile(key, []byte(keyPEM), 0o600)

	c.push("web:latest", httpdImage(t, "v1", 8080))
	c.apply(webConfig("web", 3, ""))
	c.cli.ok("rollout", "status", "dc/web", "--timeout", "2m")
	out := c.cli.ok("create", "route", "edge", "web", "--service", "web", "--hostname", "www.shop.test", "--cert", crt, "--key", key)
	if strings.Contains(out, "warning") {
		t.Errorf("create route edge web: %q, want no warning", out)
	}
	hc := routerClient(httpsAddr, ca.pool())
	waitFor(t, 30*time.Second, "https://www.shop.test/ answers v1 through the router", func() (bool, string) {
		body, err := fetch(hc, "https://www.shop.test/")
		return body == "v1", fmt.Sprint(body, err)
	})
	table := c.cli.ok("get", "routes")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "ADMITTED") || len(strings.Fields(lines[1])) < 6 ||
		!slices.Equal(strings.Fields(lines[1])[:6], []string{"web", "www.shop.test", "<none>", "web", "edge", "True"}) {
		t.Errorf("get routes =\n%s\nwant a header with ADMITTED and web www.shop.test <none> web edge True", table)
	}

	// The client loop: a new TLS connection every 20ms.
	ctx, stopLoop := context.WithCancel(context.Background())
	var samples []sample
	var loop sync.WaitGroup
	loop.Go(func() {
		for ctx.Err() == nil {
			body, err := fetch(hc, "https://www.shop.test/")
			samples = append(samples, sample{at: time.Now(), body: body, err: err})
			time.Sleep(20 * time.Millisecond)
		}
	})
	// 100 route updates meanwhile: a canary backend on and off.
	updates := make(chan error, 1)
	go func() {
		for i := range 100 {
			patch := `{"spec":{"alternateBackends":null}}`
			if i%2 == 0 {
				patch = `{"spec":{"alternateBackends":[{"kind":"Service","name":"web","weight":50}]}}`
			}
			if _, err := c.admin.Patch(context.Background(), api.Routes, c.ns, "web", []byte(patch)); err != nil {
				updates <- fmt.Errorf("route update %d: %w", i, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		updates <- nil
	}()
	c.push("web:latest", httpdImage(t, "v2", 8080))
	c.waitRevision("web", 2, api.DeploymentComplete, 2*time.Minute)
	if err := <-updates; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "https://www.shop.test/ answers v2", func() (bool, string) {
		body, err := fetch(hc, "https://www.shop.test/")
		return body == "v2", fmt.Sprint(body, err)
	})
	time.Sleep(time.Second) // a few more requests on v2 alone
	stopLoop()
	loop.Wait()
	var failed []string
	v1s, v2s := 0, 0
	for _, s := range samples {
		switch {
		case s.err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", s.at.Format("15:04:05.000"), s.err))
		case s.body == "v1":
			v1s++
		case s.body == "v2":
			v2s++
		default:
			failed = append(failed, fmt.Sprintf("%s: answered %q", s.at.Format("15:04:05.000"), s.body))
		}
	}
	t.Logf("%d requests through the edge route during the rollout and 100 route updates: %d v1, %d v2, %d failed", len(samples), v1s, v2s, len(failed))
	if len(failed) > 0 {
		t.Errorf("%d of %d requests through the router failed, want none:\n%s", len(failed), len(samples), strings.Join(failed[:min(10, len(failed))], "\n"))
	}
	if v1s == 0 || v2s == 0 {
		t.Errorf("the client saw %d v1 and %d v2 answers, want both", v1s, v2s)
	}

	// Another project asks for the same host: not admitted, owner named.
	if err := c.admin.Create(context.Background(), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "rival"}}); err != nil {
		t.Fatal(err)
	}
	rivalSvc := &api.Service{ObjectMeta: api.ObjectMeta{Name: "web", Namespace: "rival"},
		Spec: api.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []api.ServicePort{{Port: 80, TargetPort: 8080}}}}
	if err := c.admin.Create(context.Background(), api.Services, rivalSvc); err != nil {
		t.Fatal(err)
	}
	out = c.cli.ok("-n", "rival", "expose", "svc/web", "--hostname", "www.shop.test")
	if !strings.Contains(out, "HostAlreadyClaimed: host www.shop.test is claimed by shop/web since ") {
		t.Errorf("expose in project rival = %q, want a warning that shop/web owns www.shop.test", out)
	}
	var rival api.Route
	if err := json.Unmarshal([]byte(c.cli.ok("-n", "rival", "get", "route", "web", "-o", "json")), &rival); err != nil {
		t.Fatal(err)
	}
	if len(rival.Status.Ingress) != 1 || len(rival.Status.Ingress[0].Conditions) != 1 ||
		rival.Status.Ingress[0].Conditions[0].Status != "False" || rival.Status.Ingress[0].Conditions[0].Reason != api.ReasonHostAlreadyClaimed {
		t.Errorf("rival/web status = %+v, want Admitted False HostAlreadyClaimed", rival.Status)
	}
	if body, err := fetch(hc, "https://www.shop.test/"); body != "v2" {
		t.Errorf("after the rival's route, www.shop.test answered %q, %v; want shop's v2", body, err)
	}

	// Passthrough by SNI to a TLS pod, and an upgrade through HTTP.
	podCA := newTestCA(t)
	pc, pk := podCA.issue(t, "secure.shop.test")
	c.push("secure:latest", podServerImage(t, pc, pk))
	c.apply(`kind: DeploymentConfig
metadata: {name: secure}
spec:
  replicas: 1
  selector: {app: secure}
  template:
    metadata: {labels: {app: secure}}
    spec:
      containers:
      - name: pod
        image: secure:latest
        readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}
  triggers:
  - type: ConfigChange
  - type: ImageChange
    imageChangeParams: {automatic: true, containerNames: [pod], from: {kind: ImageStreamTag, name: "secure:latest"}}
---
kind: Service
metadata: {name: secure}
spec:
  selector: {app: secure}
  ports: [{name: https, port: 443, targetPort: 8443}, {name: http, port: 80, targetPort: 8080}]
`)
	c.cli.ok("rollout", "status", "dc/secure", "--timeout", "2m")
	c.cli.ok("create", "route", "passthrough", "secure", "--service", "secure", "--hostname", "secure.shop.test", "--port", "https")
	c.cli.ok("expose", "svc/secure", "--name", "ws", "--hostname", "ws.shop.test", "--port", "http")
	phc := routerClient(httpsAddr, podCA.pool())
	waitFor(t, 30*time.Second, "https://secure.shop.test/ answers from the pod, with the pod's certificate", func() (bool, string) {
		body, err := fetch(phc, "https://secure.shop.test/")
		return strings.HasPrefix(body, "pod ") && strings.HasSuffix(body, " over tls"), fmt.Sprint(body, err)
	})
	var upgraded string
	waitFor(t, 30*time.Second, "an Upgrade to ws.shop.test passes both ways", func() (bool, string) {
		conn, err := net.DialTimeout("tcp", httpAddr, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: ws.shop.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return false, err.Error()
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(resp.Body)
			return false, fmt.Sprintf("%s %s", resp.Status, b)
		}
		fmt.Fprintf(conn, "hello\n")
		rest, _ := io.ReadAll(br)
		upgraded = string(rest)
		return strings.HasSuffix(upgraded, " echoes hello\n"), upgraded
	})

	// Per-route metrics on the server's /metrics. An upgraded request is
	// counted when its tunnel ends, which can be just after the client
	// read the tunnel's EOF: wait for the counters rather than read once.
	wants := []string{
		`slipway_router_requests_total{code="200",route="shop/web"}`,
		`slipway_router_request_duration_seconds_count{route="shop/web"}`,
		`slipway_router_requests_total{code="101",route="shop/ws"}`,
		`slipway_router_passthrough_connections_total{outcome="spliced",route="shop/secure"}`,
	}
	waitFor(t, 10*time.Second, "/metrics has every route's counters", func() (bool, string) {
		code, metrics := (&trustServer{p: c.p}).getText(t, "/metrics", c.admin.Token())
		var missing []string
		for _, want := range wants {
			if code != http.StatusOK || !strings.Contains(metrics, want) {
				missing = append(missing, want)
			}
		}
		return len(missing) == 0, fmt.Sprintf("/metrics (%d) has no %s", code, strings.Join(missing, ", "))
	})
}

// TestRouterRole: `slipway router` runs on its own through the API as a
// service account with the system:router cluster role, while the
// server's own router is off (--no-router): it admits a route (writes its
// status), serves it, and exposes metrics; it serves an edge TLS route
// with the route's own certificate (the role reads route keys, which
// viewers see redacted); its token cannot read secrets or write routes.
func TestRouterRole(t *testing.T) {
	s := startTrustServer(t, "--no-router")
	s.projects("infra", "shop")
	s.cli.ok("create", "serviceaccount", "router", "-n", "infra")
	f := filepath.Join(t.TempDir(), "crb.yaml")
	os.WriteFile(f, []byte("kind: ClusterRoleBinding\nmetadata: {name: router}\nroleRef: {kind: ClusterRole, name: system:router}\nsubjects: [{kind: ServiceAccount, namespace: infra, name: router}]\n"), 0o600)
	s.cli.ok("apply", "-f", f)
	lines := strings.Split(strings.TrimSpace(s.cli.ok("create", "token", "router", "-n", "infra")), "\n")
	token := lines[len(lines)-1]
	s.apply("shop", "kind: Route\nmetadata: {name: web}\nspec: {host: www.shop.test, to: {kind: Service, name: web}}\n")
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, "secure.shop.test")
	if err := s.admin.Create(context.Background(), api.Routes, &api.Route{ObjectMeta: api.ObjectMeta{Name: "secure", Namespace: "shop"},
		Spec: api.RouteSpec{Host: "secure.shop.test", To: api.RouteTargetReference{Kind: "Service", Name: "web"},
			TLS: &api.TLSConfig{Termination: api.TLSTerminationEdge, Certificate: certPEM, Key: keyPEM}}}); err != nil {
		t.Fatal(err)
	}

	httpAddr, httpsAddr, metricsAddr := freePort(t), freePort(t), freePort(t)
	empty := filepath.Join(t.TempDir(), "config")
	cmd := exec.Command(binary(t), "router", "--server", s.p.url(), "--token", token, "--certificate-authority", s.p.caFile(),
		"--http-listen", httpAddr, "--https-listen", httpsAddr, "--metrics-listen", metricsAddr)
	cmd.Env = append(os.Environ(), "SLIPWAY_CONFIG="+empty)
	out := &syncWriter{w: &bytes.Buffer{}}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("router output:\n%s", out.String())
		}
	})

	waitFor(t, 30*time.Second, "the router admits shop/web", func() (bool, string) {
		o, err := s.admin.Get(context.Background(), api.Routes, "shop", "web")
		if err != nil {
			return false, err.Error()
		}
		st := o.(*api.Route).Status
		return len(st.Ingress) == 1 && len(st.Ingress[0].Conditions) == 1 && st.Ingress[0].Conditions[0].Status == "True", fmt.Sprintf("%+v", st)
	})
	req, _ := http.NewRequest("GET", "http://"+httpAddr+"/", nil)
	req.Host = "www.shop.test"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "route shop/web has no ready endpoints") {
		t.Errorf("GET www.shop.test through the router = %d %q, want 503 saying shop/web has no ready endpoints", resp.StatusCode, body)
	}
	// The edge route, with its own certificate: the router read its key.
	hc := routerClient(httpsAddr, ca.pool())
	waitFor(t, 30*time.Second, "https://secure.shop.test/ through the router, with the route's certificate", func() (bool, string) {
		// The TLS handshake verified the route's certificate; the answer
		// is the router's own (the route has no pods).
		_, err := fetch(hc, "https://secure.shop.test/")
		return err != nil && strings.HasPrefix(err.Error(), "503") && strings.Contains(err.Error(), "route shop/secure has no ready endpoints"), fmt.Sprint(err)
	})
	mresp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if want := `slipway_router_requests_total{code="503",route="shop/web"} 1`; !strings.Contains(string(metrics), want) {
		t.Errorf("the router's /metrics has no %s", want)
	}

	apiCA, _ := os.ReadFile(s.p.caFile())
	rc, err := client.New(s.p.url(), client.WithCAData(apiCA), client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := rc.List(context.Background(), api.Secrets, "shop", client.ListOptions{}); !api.IsReason(err, api.ReasonForbidden) {
		t.Errorf("the router's token lists secrets: %v, want Forbidden", err)
	}
	rt := &api.Route{ObjectMeta: api.ObjectMeta{Name: "evil", Namespace: "shop"}, Spec: api.RouteSpec{Host: "evil.shop.test", To: api.RouteTargetReference{Name: "web"}}}
	if err := rc.Create(context.Background(), api.Routes, rt); !api.IsReason(err, api.ReasonForbidden) {
		t.Errorf("the router's token creates a route: %v, want Forbidden", err)
	}
}
