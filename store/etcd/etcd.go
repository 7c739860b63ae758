// Package etcd starts etcd members inside the Slipway process, for the
// all-in-one server and for tests that need a real etcd (one member or a
// cluster of several).
package etcd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
)

// Member is one running embedded etcd member.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	etcd      *embed.Etcd
}

// Config describes one member.
type Config struct {
	Name string // default "default"
	Dir  string // data directory; required
	// ClientAddr and PeerAddr are host:port; port 0 picks a free port.
	// Default 127.0.0.1:0 each.
	ClientAddr, PeerAddr string
	// InitialCluster is "name=peerURL,..." for a cluster; empty for a
	// single member.
	InitialCluster string
	// MaxRequestBytes bounds one write. Default 4 MiB, above the API's
	// 3 MiB body limit so that the API, not etcd, answers oversized bodies.
	MaxRequestBytes uint
	// QuotaBackendBytes is the size of the database past which etcd
	// raises NOSPACE and refuses every write until an operator frees
	// space, defragments and disarms the alarm. Default
	// DefaultQuotaBackendBytes.
	QuotaBackendBytes int64
	// CompactionRetention is how much history etcd keeps: a duration
	// ("5m": periodic compaction) or a number of revisions ("100000").
	// Watches resume only from revisions still kept (older ones answer
	// 410 and clients relist). Default DefaultCompactionRetention.
	CompactionRetention string
	// Ready bounds the wait for the member to serve. Default 60s.
	Ready time.Duration
	// TLS, when set, serves clients and peers over TLS only and requires
	// a client certificate signed by TLS.CAFile from both: nothing
	// without one (a build step, a pod, another local user) may talk to
	// the member. Member's URLs are then https. Without it, plain HTTP, as
	// tests use.
	TLS *TLSFiles
}

// Defaults of Config.
const (
	// DefaultQuotaBackendBytes is 4 GiB: twice etcd's own default, half
	// its recommended maximum. Compaction frees pages for reuse but only
	// a defrag shrinks the file, so the quota is the most the file grows.
	DefaultQuotaBackendBytes = 4 << 30
	// DefaultCompactionRetention keeps five minutes of history, as
	// Kubernetes' API server does: enough for watches to resume across a
	// restart, and a write flood's old revisions are freed within
	// minutes rather than after 100000 more revisions.
	DefaultCompactionRetention = "5m"
)

// Validate fills defaults and checks what is required.
func (c *Config) Validate() error {
	if c.Dir == "" {
		return errors.New("etcd: a data directory is required")
	}
	if c.QuotaBackendBytes == 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.QuotaBackendBytes < 0 {
		return fmt.Errorf("etcd: the backend quota must be positive, not %d bytes", c.QuotaBackendBytes)
	}
	if c.CompactionRetention == "" {
		c.CompactionRetention = DefaultCompactionRetention
	}
	if _, err := c.compactionMode(); err != nil {
		return err
	}
	if c.Name == "" {
		c.Name = "default"
	}
	if c.ClientAddr == "" {
		c.ClientAddr = "127.0.0.1:0"
	}
	if c.PeerAddr == "" {
		c.PeerAddr = "127.0.0.1:0"
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = 4 << 20
	}
	if c.Ready == 0 {
		c.Ready = 60 * time.Second
	}
	return nil
}

// compactionMode is etcd's mode for CompactionRetention: revision for a
// number, periodic for a duration.
func (c *Config) compactionMode() (string, error) {
	if n, err := strconv.ParseInt(c.CompactionRetention, 10, 64); err == nil && n > 0 {
		return embed.CompactorModeRevision, nil
	}
	if d, err := time.ParseDuration(c.CompactionRetention); err == nil && d > 0 {
		return embed.CompactorModePeriodic, nil
	}
	return "", fmt.Errorf("etcd: compaction retention %q is neither a duration (5m) nor a number of revisions (100000)", c.CompactionRetention)
}

// FreeAddr resolves a host:0 address to a concrete free port. etcd needs
// its peer URL before it starts listening, so port 0 cannot be passed
// through.
func FreeAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("etcd: address %q: %w", addr, err)
	}
	if port != "0" {
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("etcd: no free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Start starts a member and waits until it serves. On any error it cleans
// up what it started.
func Start(c Config) (*Member, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var err error
	if c.ClientAddr, err = FreeAddr(c.ClientAddr); err != nil {
		return nil, err
	}
	if c.PeerAddr, err = FreeAddr(c.PeerAddr); err != nil {
		return nil, err
	}
	scheme := "http"
	cfg := embed.NewConfig()
	if c.TLS != nil {
		if err := c.TLS.Check(); err != nil {
			return nil, err
		}
		scheme = "https"
		info := transport.TLSInfo{CertFile: c.TLS.CertFile, KeyFile: c.TLS.KeyFile, TrustedCAFile: c.TLS.CAFile, ClientCertAuth: true}
		cfg.ClientTLSInfo, cfg.PeerTLSInfo = info, info
	}
	// The JSON gateway is one more way in that Slipway does not use.
	cfg.EnableGRPCGateway = false
	cu := url.URL{Scheme: scheme, Host: c.ClientAddr}
	pu := url.URL{Scheme: scheme, Host: c.PeerAddr}
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = c.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = c.Name + "=" + pu.String()
	}
	cfg.MaxRequestBytes = c.MaxRequestBytes
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	cfg.QuotaBackendBytes = c.QuotaBackendBytes
	cfg.AutoCompactionMode, _ = c.compactionMode()
	cfg.AutoCompactionRetention = c.CompactionRetention
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: start member %s in %s: %w", c.Name, c.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: member %s failed: %w", c.Name, err)
	case <-time.After(c.Ready):
		e.Close()
		return nil, fmt.Errorf("etcd: member %s not ready after %s; is the data directory from another cluster?", c.Name, c.Ready)
	}
	return &Member{Name: c.Name, ClientURL: cu.String(), PeerURL: pu.String(), etcd: e}, nil
}

// InProcessClient returns a client that talks to this member without the
// network: no gRPC encoding, no TCP. The all-in-one server uses it.
func (m *Member) InProcessClient() *clientv3.Client { return v3client.New(m.etcd.Server) }

// Close stops the member.
func (m *Member) Close() { m.etcd.Close() }

// Err reports a fatal error of the running member.
func (m *Member) Err() <-chan error { return m.etcd.Err() }

// Client returns a client for the given endpoints, over plain HTTP.
func Client(endpoints ...string) (*clientv3.Client, error) {
	return ClientTLS(TLSFiles{}, endpoints...)
}

// ClientTLS returns a client for the given endpoints that presents the
// certificate in files; with no files, plain HTTP. With files, every
// endpoint must be https: the etcd client silently drops TLS for http://.
func ClientTLS(files TLSFiles, endpoints ...string) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:          endpoints,
		DialTimeout:        10 * time.Second,
		MaxCallSendMsgSize: 8 << 20,
		MaxCallRecvMsgSize: 64 << 20,
		Logger:             nil,
	}
	if !files.IsZero() {
		for _, ep := range endpoints {
			if !strings.HasPrefix(ep, "https://") {
				return nil, fmt.Errorf("etcd: endpoint %q: with client certificates (--etcd-certfile, or the data directory's pki/etcd) the endpoint must be https://%s", ep, strings.TrimPrefix(ep, "http://"))
			}
		}
		var err error
		if cfg.TLS, err = files.ClientConfig(); err != nil {
			return nil, err
		}
	}
	c, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: connect to %s: %w", strings.Join(endpoints, ","), err)
	}
	return c, nil
}

// StartCluster starts n members in subdirectories of dir, as one cluster.
// On error the members already started are stopped.
func StartCluster(dir string, n int) ([]*Member, error) {
	cfgs := make([]Config, n)
	var initial []string
	for i := range cfgs {
		c := Config{Name: fmt.Sprintf("m%d", i), Dir: fmt.Sprintf("%s/m%d", dir, i)}
		_ = c.Validate()
		var err error
		if c.ClientAddr, err = FreeAddr(c.ClientAddr); err != nil {
			return nil, err
		}
		if c.PeerAddr, err = FreeAddr(c.PeerAddr); err != nil {
			return nil, err
		}
		initial = append(initial, c.Name+"=http://"+c.PeerAddr)
		cfgs[i] = c
	}
	type result struct {
		i   int
		m   *Member
		err error
	}
	ch := make(chan result, n)
	for i := range cfgs {
		cfgs[i].InitialCluster = strings.Join(initial, ",")
		go func(i int) {
			m, err := Start(cfgs[i])
			ch <- result{i, m, err}
		}(i)
	}
	members := make([]*Member, n)
	var errs []error
	for range n {
		r := <-ch
		members[r.i], errs = r.m, append(errs, r.err)
	}
	if err := errors.Join(errs...); err != nil {
		for _, m := range members {
			if m != nil {
				m.Close()
			}
		}
		return nil, err
	}
	return members, nil
}
