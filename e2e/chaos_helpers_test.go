package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"slipway.dev/slipway/store/etcd"
)

// etcdMemberEnv, when set in the test binary's environment, makes the
// binary run one etcd member (the JSON etcd.Config in the variable) until
// SIGTERM instead of the tests: the chaos test's etcd members are
// processes of their own, which it can kill, stop and start again.
const etcdMemberEnv = "SLIPWAY_E2E_ETCD_MEMBER"

// runEtcdMember is the body of an etcd member process.
func runEtcdMember(spec string) int {
	var cfg etcd.Config
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 2
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	m, err := etcd.Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 1
	}
	fmt.Println("etcd member", cfg.Name, "ready on", m.ClientURL)
	select {
	case <-sigs:
		m.Close()
		return 0
	case err := <-m.Err():
		fmt.Fprintln(os.Stderr, "etcd member:", err)
		return 1
	}
}

// etcdProc is one etcd member running in a process of its own.
type etcdProc struct {
	cfg  etcd.Config
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startEtcdProcs starts an n-member etcd cluster, TLS with client
// certificates from pki, each member a process of this test binary.
func startEtcdProcs(t *testing.T, dir string, pki *etcd.PKI, n int) []*etcdProc {
	t.Helper()
	var initial []string
	ps := make([]*etcdProc, n)
	for i := range ps {
		c := etcd.Config{
			Name: fmt.Sprintf("m%d", i), Dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			ClientAddr: freePort(t), PeerAddr: freePort(t), TLS: &pki.Member,
			Ready: 2 * time.Minute,
		}
		initial = append(initial, c.Name+"=https://"+c.PeerAddr)
		ps[i] = &etcdProc{cfg: c}
	}
	for _, p := range ps {
		p.cfg.InitialCluster = strings.Join(initial, ",")
		p.start(t)
	}
	return ps
}

func (p *etcdProc) url() string { return "https://" + p.cfg.ClientAddr }

// start runs the member (again, on the same data directory and ports).
func (p *etcdProc) start(t *testing.T) {
	t.Helper()
	spec, err := json.Marshal(p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), etcdMemberEnv+"="+string(spec))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd, p.out, p.done = cmd, out, make(chan error, 1)
	done := p.done
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			done <- err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
}

// kill stops the member at once (SIGKILL) and waits until it is gone.
func (p *etcdProc) kill() {
	_ = p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
}

// tcpBalancer is what stands in front of replicas in a real cluster (a
// load balancer, a virtual IP): a TCP proxy that hands each connection to
// the next backend that accepts one. A killed backend refuses, and the
// next one takes the connection.
type tcpBalancer struct {
	ln       net.Listener
	mu       sync.Mutex
	backends []string
	next     int
}

func newTCPBalancer(t *testing.T, backends ...string) *tcpBalancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &tcpBalancer{ln: ln, backends: backends}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *tcpBalancer) addr() string { return b.ln.Addr().String() }

func (b *tcpBalancer) serve(c net.Conn) {
	b.mu.Lock()
	start := b.next
	b.next++
	backends := b.backends
	b.mu.Unlock()
	var up net.Conn
	for i := range backends {
		var err error
		if up, err = net.DialTimeout("tcp", backends[(start+i)%len(backends)], 2*time.Second); err == nil {
			break
		}
	}
	if up == nil {
		c.Close()
		return
	}
	go func() {
		_, _ = io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, up)
	c.Close()
	up.Close()
}

// registryUp reports whether a registry answers /v2/ (401 without
// credentials is an answer).
func registryUp(addr string) bool {
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + addr + "/v2/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized
}

// sharedRegistryStorage is the storage both registry replicas of a test
// use: the flags of `slipway registry` that point at it, an S3 bucket on
// SeaweedFS (startS3), started with the first replica of the data
// directory and the same for every later start.
func sharedRegistryStorage(t *testing.T, dataDir string) []string {
	sharedStorage.Lock()
	defer sharedStorage.Unlock()
	if f, ok := sharedStorage.files[dataDir]; ok {
		return []string{"--registry-storage", f}
	}
	f := startS3(t).storageFile(t, "/registry")
	sharedStorage.files[dataDir] = f
	t.Cleanup(func() {
		sharedStorage.Lock()
		delete(sharedStorage.files, dataDir)
		sharedStorage.Unlock()
	})
	return []string{"--registry-storage", f}
}

var sharedStorage = struct {
	sync.Mutex
	files map[string]string
}{files: map[string]string{}}
