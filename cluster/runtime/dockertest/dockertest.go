// Package dockertest starts a private Docker engine for tests: its own
// data root, exec root (with its own containerd), pid file, socket and
// config, so it never touches the machine's daemon. With a Bridge, the
// test makes that Linux bridge and the engine uses it as its default
// network, so containers get addresses the host reaches directly;
// --iptables=false, --ip-masq=false and --ip-forward=false leave the
// host's firewall and sysctls alone. Without one the engine has no
// network (--bridge=none): builds, pulls and pushes still work.
package dockertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DepsHint says how to install what the engine needs.
const DepsHint = "run `make test-deps` (hack/install-deps.sh test) to install docker.io, runc, skopeo and busybox-static"

// Options choose the engine's network.
type Options struct {
	// Bridge is the name of a Linux bridge to make, such as "slpwe2e0";
	// empty means no network.
	Bridge string
	// CIDR is the bridge's address, such as "10.215.0.1/24".
	CIDR string
}

// PerProcess returns Options for a bridge of this test process's own:
// its name is prefix and the process ID, and its /24 is
// NET.(pid mod 250).0/24 with the bridge at .1, for NET a /16 such as
// "10.214". Two packages, or two runs of one package, then never share
// (or delete) each other's bridge.
func PerProcess(prefix, net string) Options {
	pid := os.Getpid()
	return Options{
		Bridge: fmt.Sprintf("%s%d", prefix, pid%100000),
		CIDR:   fmt.Sprintf("%s.%d.1/24", net, pid%250),
	}
}

// Gateway is the bridge's own address ("10.214.7.1"); Subnet is the
// prefix of its pods' addresses ("10.214.7.").
func (o Options) Gateway() string { return strings.TrimSuffix(o.CIDR, "/24") }

// Subnet is the prefix every address on the bridge starts with.
func (o Options) Subnet() string { return strings.TrimSuffix(o.Gateway(), "1") }

// Daemon is a running private dockerd.
type Daemon struct {
	Dir  string // everything it owns
	Sock string // its API socket
	opts Options
	cmd  *exec.Cmd
	done chan error
	log  string
}

// Host is the engine's address for DOCKER_HOST and clients.
func (d *Daemon) Host() string { return "unix://" + d.Sock }

func ipLink(args ...string) error {
	out, err := exec.Command("ip", append([]string{"link"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip link %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Start starts a daemon and waits until it answers.
func Start(o Options) (*Daemon, error) {
	tools := []string{"dockerd", "docker", "containerd", "runc"}
	if o.Bridge != "" {
		tools = append(tools, "ip")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed: %s", tool, DepsHint)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("dockertest: a private dockerd needs root: run the tests as root")
	}
	if o.Bridge != "" {
		_ = ipLink("del", o.Bridge) // left by a killed run, with its old address
		if err := removeStaleBridges(o); err != nil {
			return nil, err
		}
		if err := ipLink("add", o.Bridge, "type", "bridge"); err != nil {
			return nil, err
		}
		// The owner, for removeStaleBridges of later runs.
		_ = ipLink("set", o.Bridge, "alias", fmt.Sprintf("%s%d", ownerAlias, os.Getpid()))
		if out, err := exec.Command("ip", "addr", "add", o.CIDR, "dev", o.Bridge).CombinedOutput(); err != nil {
			_ = ipLink("del", o.Bridge)
			return nil, fmt.Errorf("ip addr add %s: %v: %s", o.CIDR, err, out)
		}
		if err := ipLink("set", o.Bridge, "up"); err != nil {
			_ = ipLink("del", o.Bridge)
			return nil, err
		}
	}
	if o.Bridge != "" {
		// With br_netfilter loaded, bridged traffic crosses the FORWARD
		// chain, whose policy another Docker engine may have set to DROP:
		// let pods on this bridge reach each other.
		forward(o.Bridge, "-I")
	}
	d, err := run(o)
	if err != nil && o.Bridge != "" {
		forward(o.Bridge, "-D")
		_ = ipLink("del", o.Bridge)
	}
	return d, err
}

// ownerAlias starts the alias of every bridge Start makes; the owning
// test process's ID follows.
const ownerAlias = "dockertest pid "

// removeStaleBridges deletes the bridges that a killed run left on o's
// /24 (same name prefix, owner gone). Such a bridge keeps its route, and
// the kernel sends the new bridge's traffic to it (a route through a
// bridge with no ports stays in use): the host then reaches no pod. A
// bridge on the /24 whose owner still runs is an error, not deleted.
func removeStaleBridges(o Options) error {
	_, ipnet, err := net.ParseCIDR(o.CIDR)
	if err != nil {
		return fmt.Errorf("dockertest: bridge address %q: %v", o.CIDR, err)
	}
	out, err := exec.Command("ip", "-o", "-4", "addr", "show", "to", ipnet.String()).Output()
	if err != nil {
		return fmt.Errorf("dockertest: ip addr show to %s: %v", ipnet, err)
	}
	prefix := strings.TrimRight(o.Bridge, "0123456789")
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := f[1]
		digits := strings.TrimPrefix(name, prefix)
		if name == o.Bridge || prefix == "" || digits == name || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
			continue // not one of ours
		}
		// The owner: from the alias, or (bridges made before the alias)
		// from the name.
		owner := digits
		if link, err := exec.Command("ip", "-o", "link", "show", "dev", name).Output(); err == nil {
			if _, alias, ok := strings.Cut(strings.TrimSpace(string(link)), "alias "+ownerAlias); ok {
				owner = alias
			}
		}
		if _, err := os.Stat(filepath.Join("/proc", owner)); err == nil {
			return fmt.Errorf("dockertest: bridge %s of process %s holds %s already; this run's bridge %s would not be reached", name, owner, ipnet, o.Bridge)
		}
		forward(name, "-D")
		if err := ipLink("del", name); err != nil {
			return fmt.Errorf("dockertest: removing bridge %s, left on %s by a killed run: %w", name, ipnet, err)
		}
	}
	return nil
}

// forward inserts (-I) or deletes (-D) the rule that accepts traffic
// between two ports of bridge. Without iptables there is nothing to do.
func forward(bridge, op string) {
	if _, err := exec.LookPath("iptables"); err != nil {
		return
	}
	_ = exec.Command("iptables", op, "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT").Run()
}

func run(o Options) (*Daemon, error) {
	dir, err := os.MkdirTemp("", "slipway-dockerd")
	if err != nil {
		return nil, err
	}
	d := &Daemon{Dir: dir, Sock: filepath.Join(dir, "docker.sock"), opts: o, done: make(chan error, 1), log: filepath.Join(dir, "dockerd.log")}
	// An empty config file, so that /etc/docker/daemon.json cannot clash
	// with the flags.
	cfg := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(cfg, []byte("{}\n"), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--config-file", cfg,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--host", d.Host(),
		"--iptables=false", "--ip6tables=false",
	}
	if o.Bridge != "" {
		args = append(args, "--bridge="+o.Bridge, "--ip-masq=false", "--ip-forward=false")
	} else {
		args = append(args, "--bridge=none")
	}
	d.cmd = exec.Command("dockerd", args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If the test binary dies without its cleanup (a timeout panic, a
	// kill), the kernel stops dockerd. Pdeathsig fires when the forking
	// thread exits, so that thread stays locked to this goroutine for as
	// long as dockerd runs.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := d.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		d.done <- d.cmd.Wait()
		logf.Close()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting dockerd: %w", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-d.done:
			d.done <- err
			return nil, fmt.Errorf("dockerd exited at start: %v\n%s", err, d.LogTail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := exec.CommandContext(ctx, "docker", "-H", d.Host(), "version", "--format", "{{.Server.Version}}").Run()
		cancel()
		if err == nil {
			return d, nil
		}
		if time.Now().After(deadline) {
			_ = d.Stop()
			return nil, fmt.Errorf("dockerd did not answer `docker version` within 90s\n%s", d.LogTail())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// LogTail is the end of the daemon's log, for failure messages.
func (d *Daemon) LogTail() string {
	b, _ := os.ReadFile(d.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// Stop shuts the daemon down and leaves nothing behind: it removes every
// container first (so the engine unmounts their layers, shm and network
// namespaces itself), stops the daemon gracefully (it stops its
// containerd), kills it if it takes too long, ends any shim still running
// from its directory, detaches whatever is still mounted under its
// directory, and removes its files, its bridge and its FORWARD rule.
func (d *Daemon) Stop() error {
	var errs []error
	if err := d.removeContainers(); err != nil {
		errs = append(errs, err)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-d.done:
	case <-time.After(60 * time.Second):
		_ = d.cmd.Process.Kill()
		err = fmt.Errorf("dockerd ignored SIGTERM for 60s; killed: %v", <-d.done)
	}
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && !ee.Exited()) {
		errs = append(errs, err)
	}
	d.killStrays()
	errs = append(errs, d.unmountAll(), removeAll(d.Dir))
	if d.opts.Bridge != "" {
		forward(d.opts.Bridge, "-D")
		errs = append(errs, ipLink("del", d.opts.Bridge))
	}
	return errors.Join(errs...)
}

// removeContainers force-removes every container of the daemon, with
// their anonymous volumes.
func (d *Daemon) removeContainers() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "-H", d.Host(), "ps", "-aq").Output()
	if err != nil {
		return fmt.Errorf("listing the containers before stopping: %v", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "docker", append([]string{"-H", d.Host(), "rm", "-f", "-v"}, ids...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("removing %d containers before stopping: %v: %s", len(ids), err, out)
	}
	return nil
}

// killStrays kills processes still running from the daemon's directory
// (a containerd or shim that outlived a killed dockerd).
func (d *Daemon) killStrays() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), d.Dir+"/") {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountAll detaches every mount point under the daemon's directory,
// deepest first.
func (d *Daemon) unmountAll() error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == d.Dir || strings.HasPrefix(mp, d.Dir+"/") {
			points = append(points, mp)
		}
	}
	// Longest first: children before their parents.
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	var errs []error
	for _, mp := range points {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeAll removes dir, retrying for a while: a detached mount can take
// a moment to let go of its files.
func removeAll(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("removing the daemon's directory: %w", err)
}
