// Package e2e drives the real slipway binary as a user would: processes,
// signals, kill -9, and the CLI.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"slipway.dev/slipway/client"
)

var (
	registryPorts sync.Map // data dir → registry address
	buildOnce     sync.Once
	binPath       string
	buildErr      error
)

// binary builds cmd/slipway once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "slipway-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "slipway")
		out, err := exec.Command("go", "build", "-o", binPath, "slipway.dev/slipway/cmd/slipway").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is one `slipway start` process.
type proc struct {
	cmd     *exec.Cmd
	dataDir string
	addr    string
	// registry is the registry's host:port; the same across restarts
	// of one data dir.
	registry string
	out      *bytes.Buffer
	done     chan error
}

func startServer(t *testing.T, dataDir, addr string, extra ...string) *proc {
	t.Helper()
	_, started := registryPorts.Load(dataDir)
	for attempt := 0; ; attempt++ {
		p := launchServer(t, dataDir, addr, extra...)
		err := p.awaitReady()
		if err == nil {
			return p
		}
		// freePort closes its listener before the server binds the
		// port, and the server's own embedded etcd may take it in
		// between (seen on a fresh root: "registry listen on
		// 127.0.0.1:34979: bind: address already in use", etcd serving
		// on that port). On a first start the registry's port is not
		// yet part of anything stored: take another once.
		if !started && attempt == 0 && strings.Contains(p.out.String(), "registry listen on") && strings.Contains(p.out.String(), "address already in use") {
			t.Logf("the registry's port was taken before the server bound it; starting again on another")
			registryPorts.Store(dataDir, freePort(t))
			continue
		}
		t.Fatalf("%v\n%s", err, p.out)
	}
}

func launchServer(t *testing.T, dataDir, addr string, extra ...string) *proc {
	t.Helper()
	reg, ok := registryPorts.Load(dataDir)
	if !ok {
		reg, _ = registryPorts.LoadOrStore(dataDir, freePort(t))
	}
	args := append([]string{"start", "--data-dir", dataDir, "--listen", addr, "--registry-listen", reg.(string), "--log-level", "warn"}, extra...)
	cmd := exec.Command(binary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, dataDir: dataDir, addr: addr, registry: reg.(string), out: &out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState != nil {
			return
		}
		// Stopped as a user stops it, so that it takes down what it set
		// up on the machine (buildkitd's network and firewall rules,
		// temporary build directories); killed only if it hangs. Tests
		// that kill -9 on purpose do so themselves.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(30 * time.Second):
			t.Logf("slipway start ignored SIGTERM for 30s; killing it")
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) url() string { return "https://" + p.addr }

func (p *proc) caFile() string { return filepath.Join(p.dataDir, "pki", "ca.crt") }

func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	if err := p.awaitReady(); err != nil {
		t.Fatalf("%v\n%s", err, p.out)
	}
}

// awaitReady waits until the server answers /readyz, or says why it does not.
func (p *proc) awaitReady() error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("slipway start exited early: %v", err)
		default:
		}
		if ca, err := os.ReadFile(p.caFile()); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(ca)
			hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
			if resp, err := hc.Get(p.url() + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return nil
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("slipway start not ready after 60s")
}

func (p *proc) adminPassword(t *testing.T) string {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(p.dataDir, "admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(pw))
}

// admin logs in as admin through the Go client.
func (p *proc) admin(t *testing.T) *client.Client {
	t.Helper()
	ca, err := os.ReadFile(p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(p.url(), client.WithCAData(ca))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Login(context.Background(), "admin", p.adminPassword(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err = client.New(p.url(), client.WithCAData(ca), client.WithToken(resp.Token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
