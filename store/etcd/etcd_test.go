package etcd_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/store/etcd"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		in      etcd.Config
		want    etcd.Config
		wantErr bool
	}{
		{"no dir", etcd.Config{}, etcd.Config{}, true},
		{
			"defaults",
			etcd.Config{Dir: "/d"},
			etcd.Config{Name: "default", Dir: "/d", ClientAddr: "127.0.0.1:0", PeerAddr: "127.0.0.1:0", MaxRequestBytes: 4 << 20, Ready: 60 * time.Second,
				QuotaBackendBytes: etcd.DefaultQuotaBackendBytes, CompactionRetention: "5m"},
			false,
		},
		{"negative quota", etcd.Config{Dir: "/d", QuotaBackendBytes: -1}, etcd.Config{}, true},
		{"retention neither duration nor revisions", etcd.Config{Dir: "/d", CompactionRetention: "soon"}, etcd.Config{}, true},
		{
			"explicit values kept",
			etcd.Config{Name: "m1", Dir: "/d", ClientAddr: "0.0.0.0:2379", PeerAddr: "0.0.0.0:2380", MaxRequestBytes: 1, Ready: time.Second, InitialCluster: "m1=http://x:2380", QuotaBackendBytes: 1 << 20, CompactionRetention: "100000"},
			etcd.Config{Name: "m1", Dir: "/d", ClientAddr: "0.0.0.0:2379", PeerAddr: "0.0.0.0:2380", MaxRequestBytes: 1, Ready: time.Second, InitialCluster: "m1=http://x:2380", QuotaBackendBytes: 1 << 20, CompactionRetention: "100000"},
			false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.in
			err := c.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, c); diff != "" {
				t.Errorf("Validate() config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFreeAddr(t *testing.T) {
	tests := []struct {
		in       string
		wantSame bool
		wantErr  bool
	}{
		{"127.0.0.1:0", false, false},
		{"127.0.0.1:2379", true, false},
		{"no-port", false, true},
	}
	for _, tt := range tests {
		got, err := etcd.FreeAddr(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("FreeAddr(%q) = %q, %v; want error %v", tt.in, got, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if tt.wantSame {
			if got != tt.in {
				t.Errorf("FreeAddr(%q) = %q, want it unchanged", tt.in, got)
			}
			continue
		}
		host, port, err := net.SplitHostPort(got)
		if err != nil || host != "127.0.0.1" || port == "0" || port == "" {
			t.Errorf("FreeAddr(%q) = %q, want 127.0.0.1 with a concrete port", tt.in, got)
		}
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := etcd.Start(etcd.Config{}); err == nil {
		t.Error("Start(no dir) = nil error, want one")
	}
	if _, err := etcd.Start(etcd.Config{Dir: t.TempDir(), ClientAddr: "bad address"}); err == nil {
		t.Error("Start(bad client address) = nil error, want one")
	}
}

func TestStartServes(t *testing.T) {
	dir := t.TempDir()
	m, err := etcd.Start(etcd.Config{Name: "solo", Dir: dir})
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	defer m.Close()
	if m.Name != "solo" || !strings.HasPrefix(m.ClientURL, "http://127.0.0.1:") || !strings.HasPrefix(m.PeerURL, "http://127.0.0.1:") {
		t.Errorf("Start: member = %+v, want name solo and local URLs", m)
	}
	c, err := etcd.Client(m.ClientURL)
	if err != nil {
		t.Fatalf("Client = %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatalf("Put = %v", err)
	}
	resp, err := c.Get(ctx, "/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get(/k) = %v, %v; want v", resp, err)
	}
	// A value above MaxRequestBytes (4 MiB by default) is refused by etcd.
	if _, err := c.Put(ctx, "/big", strings.Repeat("x", 4<<20+1)); err == nil {
		t.Error("Put(4 MiB + 1) = nil, want an error from the request limit")
	}
}

func TestStartCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three members")
	}
	members, err := etcd.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatalf("StartCluster = %v", err)
	}
	defer func() {
		for _, m := range members {
			m.Close()
		}
	}()
	var urls []string
	for i, m := range members {
		if want := "m" + string(rune('0'+i)); m.Name != want {
			t.Errorf("member %d name = %q, want %q", i, m.Name, want)
		}
		urls = append(urls, m.ClientURL)
	}
	c, err := etcd.Client(urls...)
	if err != nil {
		t.Fatalf("Client = %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	list, err := c.MemberList(ctx)
	if err != nil {
		t.Fatalf("MemberList = %v", err)
	}
	if len(list.Members) != 3 {
		t.Errorf("MemberList = %d members, want 3", len(list.Members))
	}
	put, err := c.Put(ctx, "/k", "v")
	if err != nil {
		t.Fatalf("Put = %v", err)
	}
	// Every member serves the write.
	for _, u := range urls {
		one, err := etcd.Client(u)
		if err != nil {
			t.Fatalf("Client(%s) = %v", u, err)
		}
		resp, err := one.Get(ctx, "/k")
		one.Close()
		if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].ModRevision != put.Header.Revision {
			t.Errorf("Get(/k) via %s = %v, %v; want the put at revision %d", u, resp, err, put.Header.Revision)
		}
	}
}

// TestStartTLS: a member with TLS serves only clients that present a
// certificate from its CA; plain HTTP, TLS without a certificate, and a
// certificate from another CA are refused.
func TestStartTLS(t *testing.T) {
	pki, err := etcd.EnsurePKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := etcd.EnsurePKI(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := etcd.Start(etcd.Config{Name: "tls", Dir: t.TempDir(), TLS: &pki.Member})
	if err != nil {
		t.Fatalf("Start = %v", err)
	}
	defer m.Close()
	if !strings.HasPrefix(m.ClientURL, "https://127.0.0.1:") || !strings.HasPrefix(m.PeerURL, "https://127.0.0.1:") {
		t.Fatalf("member = %+v, want https URLs", m)
	}
	try := func(c *clientv3.Client) error {
		defer c.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := c.Put(ctx, "/k", "v")
		return err
	}
	ok, err := etcd.ClientTLS(pki.Client, m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := try(ok); err != nil {
		t.Fatalf("Put with the client certificate = %v", err)
	}
	hostPort := strings.TrimPrefix(m.ClientURL, "https://")
	clientCfg, _ := pki.Client.ClientConfig()
	noCert := clientCfg.Clone()
	noCert.Certificates = nil
	otherCfg, _ := other.Client.ClientConfig()
	otherCfg.RootCAs = clientCfg.RootCAs // trusts the member, but its certificate is from another CA
	for _, tc := range []struct {
		name string
		cfg  clientv3.Config
	}{
		{"plain http", clientv3.Config{Endpoints: []string{"http://" + hostPort}}},
		{"tls without a certificate", clientv3.Config{Endpoints: []string{m.ClientURL}, TLS: noCert}},
		{"certificate of another CA", clientv3.Config{Endpoints: []string{m.ClientURL}, TLS: otherCfg}},
	} {
		tc.cfg.DialTimeout = 5 * time.Second
		c, err := clientv3.New(tc.cfg)
		if err != nil {
			continue
		}
		if err := try(c); err == nil {
			t.Errorf("%s: Put succeeded, want it refused", tc.name)
		}
	}
	if _, err := etcd.ClientTLS(pki.Client, "http://"+hostPort); err == nil || !strings.Contains(err.Error(), "https://"+hostPort) {
		t.Errorf("ClientTLS(http://) = %v, want an error saying to use https://", err)
	}
	// A second EnsurePKI keeps the certificates: restarts keep working.
	again, err := etcd.EnsurePKI(filepath.Dir(pki.Member.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := etcd.ClientTLS(again.Client, m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := try(c2); err != nil {
		t.Errorf("Put after EnsurePKI again = %v", err)
	}
}
