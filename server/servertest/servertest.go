// Package servertest starts a real all-in-one Slipway (embedded etcd, API
// over HTTPS) inside a test, with a few htpasswd users ready to log in.
package servertest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"slipway.dev/slipway/client"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/server"
)

// Users are in the htpasswd file of every test server; each one's password
// is Password(name).
var Users = []string{"alice", "bob", "carol", "dave"}

// Password is the password of a test user.
func Password(user string) string { return "pw-" + user }

// Env is a running test server.
type Env struct {
	Server *server.Server
	URL    string
	// Registry is host:port of the integrated registry (plain HTTP).
	Registry string
	CA       []byte
	DataDir  string
	// Admin is logged in as the cluster admin.
	Admin *client.Client
}

// Option changes the server's Config before it starts.
type Option func(*server.Config)

// WithFaults lets a test fail named steps of registry pushes.
func WithFaults(f *registry.FaultInjector) Option {
	return func(c *server.Config) { c.RegistryFaults = f }
}

// WithImport sets where import-image may reach.
func WithImport(p registry.ImportPolicy) Option {
	return func(c *server.Config) { c.Import = p }
}

// WithMirrors sets the registry's pull-through mirrors.
func WithMirrors(ms ...registry.Mirror) Option {
	return func(c *server.Config) { c.Mirrors = ms }
}

// WithEtcd uses an external etcd instead of the embedded one.
func WithEtcd(endpoints ...string) Option {
	return func(c *server.Config) { c.EtcdEndpoints = endpoints }
}

// Start starts a server that is stopped when the test ends.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	dir := t.TempDir()
	ht := filepath.Join(dir, "users.htpasswd")
	var lines []string
	for _, u := range Users {
		h, err := bcrypt.GenerateFromPassword([]byte(Password(u)), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	if err := os.WriteFile(ht, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", HTPasswd: ht, Out: io.Discard}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	t.Cleanup(srv.Close)
	ca, err := os.ReadFile(srv.PKI.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Server: srv, URL: srv.URL, Registry: srv.RegistryHost, CA: ca, DataDir: cfg.DataDir}
	if e.Admin, err = srv.AdminClient(context.Background()); err != nil {
		t.Fatalf("admin login: %v", err)
	}
	return e
}

// Client returns a client that trusts the server's CA and sends token.
func (e *Env) Client(t testing.TB, token string) *client.Client {
	t.Helper()
	c, err := client.New(e.URL, client.WithCAData(e.CA), client.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Login logs a user in and returns a client with the user's token.
func (e *Env) Login(t testing.TB, user, password string) *client.Client {
	t.Helper()
	resp, err := e.Client(t, "").Login(context.Background(), user, password)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return e.Client(t, resp.Token)
}

// User logs in one of Users.
func (e *Env) User(t testing.TB, name string) *client.Client {
	t.Helper()
	for _, u := range Users {
		if u == name {
			return e.Login(t, name, Password(name))
		}
	}
	panic(fmt.Sprintf("servertest: %q is not one of %v", name, Users))
}
