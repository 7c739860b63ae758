package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// cli runs the slipway binary with its own config file.
type cli struct {
	t      *testing.T
	config string
}

func (c cli) run(stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(binary(c.t), args...)
	cmd.Env = append(os.Environ(), "SLIPWAY_CONFIG="+c.config)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (c cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run("", args...)
	if err != nil {
		c.t.Fatalf("slipway %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (c cli) fails(wantInStderr string, args ...string) {
	c.t.Helper()
	out, errOut, err := c.run("", args...)
	if err == nil {
		c.t.Fatalf("slipway %s succeeded, want a non-zero exit\nstdout: %s", strings.Join(args, " "), out)
	}
	if !strings.Contains(errOut, wantInStderr) {
		c.t.Errorf("slipway %s: stderr = %q, want it to contain %q", strings.Join(args, " "), errOut, wantInStderr)
	}
}

func TestCLI(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr)
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	pw := p.adminPassword(t)

	// Without trust, login asks to confirm the CA's fingerprint; "n" refuses.
	_, errOut, err := c.run("n\n", "login", p.url(), "-u", "admin", "-p", pw)
	if err == nil || !strings.Contains(errOut, "SHA-256 fingerprint") {
		t.Fatalf("login refusing the CA: err=%v stderr=%q, want failure showing the fingerprint", err, errOut)
	}
	// "y" trusts it and saves it.
	if _, errOut, err := c.run("y\n", "login", p.url(), "-u", "admin", "-p", pw); err != nil {
		t.Fatalf("login confirming the CA: %v\n%s", err, errOut)
	}
	if got := strings.TrimSpace(c.ok("whoami")); got != "admin" {
		t.Errorf("whoami = %q, want admin", got)
	}
	// --certificate-authority works too, and the config is private.
	c.ok("login", p.url(), "-u", "admin", "-p", pw, "--certificate-authority", p.caFile())
	if fi, err := os.Stat(c.config); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	c.fails("wrong user name or password", "login", p.url(), "-u", "admin", "-p", "nope", "--certificate-authority", p.caFile())

	c.ok("new-project", "web", "--display-name", "Web")
	if got := c.ok("project"); !strings.Contains(got, `"web"`) {
		t.Errorf("project = %q, want it to name web", got)
	}
	c.ok("create", "serviceaccount", "robot")
	tokOut := c.ok("create", "token", "robot")
	lines := strings.Split(strings.TrimSpace(tokOut), "\n")
	tok := lines[len(lines)-1]
	if !strings.HasPrefix(tok, "sha256~") {
		t.Fatalf("create token: last line = %q, want a sha256~ token", tok)
	}
	if got := strings.TrimSpace(c.ok("whoami", "--token", tok)); got != "system:serviceaccount:web:robot" {
		t.Errorf("whoami with the SA token = %q", got)
	}

	// apply: multi-document YAML, then re-apply changes and unchanged.
	manifest := filepath.Join(t.TempDir(), "m.yaml")
	os.WriteFile(manifest, []byte(`apiVersion: slipway.dev/v1
kind: ServiceAccount
metadata:
  name: one
  labels: {team: a}
---
kind: ServiceAccount
metadata:
  name: two
  labels: {team: b}
`), 0o600)
	if got := c.ok("apply", "-f", manifest); !strings.Contains(got, "serviceaccount/one created") || !strings.Contains(got, "serviceaccount/two created") {
		t.Errorf("apply = %q", got)
	}
	if got := c.ok("apply", "-f", manifest); strings.Count(got, "unchanged") != 2 {
		t.Errorf("second apply = %q, want two unchanged", got)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("kind: ServiceAccount\nmetadata:\n  name: three\n---\nkind: ServiceAccount\nmetadata: {name: x}\nbogus: 1\n"), 0o600)
	c.fails("unknown field", "apply", "-f", bad)
	c.fails("not found", "get", "sa", "three") // the bad file changed nothing

	// get in every format.
	var list struct {
		Kind  string `json:"kind"`
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("get", "sa", "-l", "team=a", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if list.Kind != "ServiceAccountList" || len(list.Items) != 1 || list.Items[0].Metadata.Name != "one" {
		t.Errorf("get sa -l team=a -o json = %+v, want one item named one", list)
	}
	var one map[string]any
	if err := yaml.Unmarshal([]byte(c.ok("get", "sa", "two", "-o", "yaml")), &one); err != nil || one["kind"] != "ServiceAccount" {
		t.Errorf("get sa two -o yaml = %v, %v", one, err)
	}
	if got := c.ok("get", "sa", "-o", "name"); !strings.Contains(got, "serviceaccount/one") {
		t.Errorf("get -o name = %q", got)
	}
	if got := c.ok("get", "rolebindings", "-o", "wide"); !strings.Contains(got, "User/admin") {
		t.Errorf("get rolebindings -o wide = %q, want the admin subject", got)
	}
	c.fails("is not a format", "get", "sa", "-o", "xml")
	c.fails("doesn't have a resource type", "get", "nonsense")
	c.fails("not a valid project name", "get", "sa", "-n", "../x")

	// policy: give alice-less world a role, then remove it.
	c.ok("policy", "add-role-to-user", "view", "bob")
	if got := c.ok("get", "rolebinding", "view", "-o", "json"); !strings.Contains(got, `"bob"`) {
		t.Errorf("view binding = %s", got)
	}
	c.ok("policy", "add-role-to-user", "image-puller", "-z", "robot")
	c.ok("policy", "remove-role-from-user", "view", "bob")
	c.fails("not found", "get", "rolebinding", "view")

	if got := c.ok("describe", "project", "web"); !strings.Contains(got, "Active") {
		t.Errorf("describe project = %q", got)
	}
	c.ok("delete", "sa", "one", "two")
	if got := c.ok("completion", "bash"); !strings.Contains(got, "slipway") {
		t.Errorf("completion bash printed %d bytes", len(got))
	}
	for _, cmd := range [][]string{{"get"}, {"login"}, {"apply"}, {"create", "token"}, {"policy", "add-role-to-user"}, {"start"}} {
		if got := c.ok(append(cmd, "--help")...); !strings.Contains(got, "Examples:") {
			t.Errorf("slipway %s --help has no Examples section", strings.Join(cmd, " "))
		}
	}

	c.ok("logout")
	c.fails("not logged in", "whoami", "-t")
	c.fails("log in", "get", "sa", "--token", tok+"x")
}
