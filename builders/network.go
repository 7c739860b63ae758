package builders

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// buildNet is the network build steps run on: BuildKit's bridge provider
// (a network namespace per step, a bridge of this daemon's own, NAT out)
// and firewall rules that keep the steps off the host.
type buildNet struct {
	Bridge string `json:"bridge"`
	Subnet string `json:"subnet"`
	cniDir string
	// configFile is buildkitd's --config.
	configFile string
	chain      string
	root       string // the daemon's root, named in the rules' comment
	deny       []string
	ipv6       bool
}

// cniPlugins are what BuildKit's bridge provider runs.
var cniPlugins = []string{"bridge", "host-local", "loopback", "firewall"}

// linkLocal holds cloud metadata (169.254.169.254) and other link-local
// services; fe80::/10 likewise for IPv6.
var linkLocal = []string{"169.254.0.0/16", "fe80::/10"}

// setupNetwork picks (or reloads) the daemon's bridge and subnet, writes
// buildkitd's configuration and installs the firewall rules.
func (d *Daemon) setupNetwork() (*buildNet, error) {
	n := &buildNet{cniDir: d.CNIBinDir, configFile: filepath.Join(d.Root, "buildkitd.toml"), root: d.Root}
	if n.cniDir == "" {
		for _, dir := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
			if _, err := os.Stat(filepath.Join(dir, "bridge")); err == nil {
				n.cniDir = dir
				break
			}
		}
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(filepath.Join(n.cniDir, p)); err != nil {
			return nil, fmt.Errorf("the CNI plugin %q is missing from %q (install the CNI plugins: Debian's containernetworking-plugins puts them in /usr/lib/cni)", p, n.cniDir)
		}
	}
	for _, tool := range []string{"iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not on PATH; it is needed to keep build steps off the host (install iptables)", tool)
		}
	}
	if _, err := os.Stat("/proc/net/if_inet6"); err == nil {
		n.ipv6 = true
		if _, err := exec.LookPath("ip6tables"); err != nil {
			return nil, errors.New("ip6tables is not on PATH, and IPv6 is on: build steps could reach the host over IPv6 link-local addresses (install iptables, which has ip6tables)")
		}
	}
	for _, c := range d.DenyCIDRs {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return nil, fmt.Errorf("build network: deny range %q: %w", c, err)
		}
	}
	n.deny = append(append([]string{}, linkLocal...), d.DenyCIDRs...)
	stateFile := filepath.Join(d.Root, "network.json")
	if data, err := os.ReadFile(stateFile); err == nil {
		_ = json.Unmarshal(data, n)
	}
	if n.Bridge == "" || n.Subnet == "" {
		var err error
		if n.Bridge, n.Subnet, err = pickBridge(d.Root); err != nil {
			return nil, err
		}
		data, _ := json.Marshal(n)
		if err := os.WriteFile(stateFile, data, 0o600); err != nil {
			return nil, err
		}
	}
	n.chain = "SLIPWAY-BUILD-" + strings.TrimPrefix(n.Bridge, "slipbk")
	runc, err := d.shim() // RUN steps without CAP_NET_RAW (runcshim.go)
	if err != nil {
		return nil, err
	}
	config := fmt.Sprintf(`# Written by Slipway at every start; edits are lost.
[worker.oci]
  networkMode = "bridge"
  cniBinaryPath = %q
  bridgeName = %q
  bridgeSubnet = %q
  binary = %q
`, n.cniDir, n.Bridge, n.Subnet, runc)
	if err := os.WriteFile(n.configFile, []byte(config), 0o600); err != nil {
		return nil, err
	}
	for _, tool := range n.families() {
		removeStaleRules(tool)
	}
	if v, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables"); err != nil || strings.TrimSpace(string(v)) != "1" {
		slog.Warn("build steps can reach each other on the build bridge: load br_netfilter and set net.bridge.bridge-nf-call-iptables=1 so that the firewall sees bridged traffic")
	}
	if err := n.install(); err != nil {
		n.teardown()
		return nil, err
	}
	return n, nil
}

var staleRule = regexp.MustCompile(`^-A (PREROUTING|INPUT) -i (\S+) .*--comment "?slipway-build:([0-9a-f.:/]+/\d+):([^" ]+)"? -j (SLIPWAY-BUILD-[0-9a-f]+)$`)

// removeStaleRules removes what daemons whose root is gone left behind: a
// server killed without cleaning up (kill -9) leaves its firewall rules,
// and BuildKit its bridge, address leases and NAT rules. A live server's
// root exists, so its network stays.
func removeStaleRules(tool string) {
	for _, t := range [][2]string{{"raw", "PREROUTING"}, {"filter", "INPUT"}} {
		out, err := exec.Command(tool, "-w", "-t", t[0], "-S", t[1]).Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			line = strings.TrimSpace(line)
			m := staleRule.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if _, err := os.Stat(m[4]); !errors.Is(err, os.ErrNotExist) {
				continue
			}
			_ = ipt(tool, append([]string{"-t", t[0], "-D"}, splitRule(strings.TrimPrefix(line, "-A "))...)...)
			_ = ipt(tool, "-t", t[0], "-F", m[5])
			_ = ipt(tool, "-t", t[0], "-X", m[5])
			if tool == "iptables" && t[0] == "raw" {
				removeStaleBridge(m[2], m[3])
			}
		}
	}
}

// removeStaleBridge removes a dead daemon's bridge, the leases of its
// subnet, and the CNI plugins' rules for it.
func removeStaleBridge(bridge, subnet string) {
	_, cidr, err := net.ParseCIDR(subnet)
	if err != nil || !strings.HasPrefix(bridge, "slipbk") {
		return
	}
	_ = exec.Command("ip", "link", "del", bridge).Run()
	leases := "/var/lib/cni/networks/buildkit"
	if ents, err := os.ReadDir(leases); err == nil {
		for _, e := range ents {
			if ip := net.ParseIP(e.Name()); ip != nil && cidr.Contains(ip) {
				_ = os.Remove(filepath.Join(leases, e.Name()))
			}
		}
	}
	mine := func(args []string) bool {
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "-i", "-o":
				if args[i+1] == bridge {
					return true
				}
			case "-s", "-d":
				if ip, _, err := net.ParseCIDR(args[i+1]); err == nil && cidr.Contains(ip) {
					return true
				}
			}
		}
		return false
	}
	for _, table := range []string{"nat", "filter"} {
		out, err := exec.Command("iptables", "-w", "-t", table, "-S").Output()
		if err != nil {
			continue
		}
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			rest, ok := strings.CutPrefix(strings.TrimSpace(line), "-A ")
			if !ok {
				continue
			}
			args := splitRule(rest)
			if !mine(args) {
				continue
			}
			_ = ipt("iptables", append([]string{"-t", table, "-D"}, args...)...)
			// The per-container chains CNI's bridge plugin makes for NAT.
			for i := 0; i+1 < len(args); i++ {
				if args[i] == "-j" && strings.HasPrefix(args[i+1], "CNI-") && len(args[i+1]) > 20 {
					chains = append(chains, args[i+1])
				}
			}
		}
		for _, c := range chains {
			_ = ipt("iptables", "-t", table, "-F", c)
			_ = ipt("iptables", "-t", table, "-X", c)
		}
	}
}

// splitRule splits a rule as `iptables -S` prints it: words, with
// "double quoted" words that may hold \" escapes.
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			inQuote, have = !inQuote, true
		case c == ' ' && !inQuote:
			if have || cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
		}
	}
	if have || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// pickBridge names the bridge after the daemon's root, so that several
// servers on one machine (tests) have one each, and picks a /24 in
// 10.217.0.0/16 that no interface or route of the host uses.
func pickBridge(root string) (name, subnet string, err error) {
	sum := sha256.Sum256([]byte(root))
	name = fmt.Sprintf("slipbk%x", sum[:3])
	used := func(c *net.IPNet) bool {
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (c.Contains(ipn.IP) || ipn.Contains(c.IP)) {
				return true
			}
		}
		out, _ := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
		for _, f := range strings.Fields(string(out)) {
			if _, r, err := net.ParseCIDR(f); err == nil && (c.Contains(r.IP) || r.Contains(c.IP)) && !strings.HasPrefix(f, "0.0.0.0/") {
				return true
			}
		}
		return false
	}
	start := int(binary.BigEndian.Uint16(sum[3:5]))
	for i := range 256 {
		s := fmt.Sprintf("10.217.%d.0/24", (start+i)%256)
		_, c, _ := net.ParseCIDR(s)
		if !used(c) {
			return name, s, nil
		}
	}
	return "", "", errors.New("build network: every /24 in 10.217.0.0/16 is in use on this host")
}

// rules are the firewall rules for one family, as iptables arguments.
// In raw PREROUTING, before any NAT and before the CNI firewall plugin's
// ACCEPT rules in FORWARD: anything from the bridge to an address of the
// host, or to a denied range, is dropped. INPUT from the bridge is
// dropped too, for what NAT would send to the host.
func (n *buildNet) rules(v6 bool) (chains [][2]string, jumps, body [][]string) {
	chains = [][2]string{{"raw", n.chain}, {"filter", n.chain}}
	owner := []string{"-m", "comment", "--comment", "slipway-build:" + n.Subnet + ":" + n.root}
	jumps = [][]string{
		append(append([]string{"-t", "raw", "PREROUTING", "-i", n.Bridge}, owner...), "-j", n.chain),
		append(append([]string{"-t", "filter", "INPUT", "-i", n.Bridge}, owner...), "-j", n.chain),
	}
	body = [][]string{{"-t", "raw", "-A", n.chain, "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DROP"}}
	if !v6 {
		// Steps of other builds, other projects' included, share the
		// bridge: with br_netfilter, frames bridged between them pass
		// here too, and are dropped.
		body = append(body, []string{"-t", "raw", "-A", n.chain, "-d", n.Subnet, "-j", "DROP"})
	}
	for _, c := range n.deny {
		ip, _, _ := net.ParseCIDR(c)
		if (ip.To4() == nil) == v6 {
			body = append(body, []string{"-t", "raw", "-A", n.chain, "-d", c, "-j", "DROP"})
		}
	}
	body = append(body, []string{"-t", "filter", "-A", n.chain, "-j", "DROP"})
	return chains, jumps, body
}

func (n *buildNet) families() []string {
	if n.ipv6 {
		return []string{"iptables", "ip6tables"}
	}
	return []string{"iptables"}
}

// install (re)creates the chains and puts the jumps first in their chains.
func (n *buildNet) install() error {
	for _, tool := range n.families() {
		chains, jumps, body := n.rules(tool == "ip6tables")
		for _, c := range chains {
			if ipt(tool, "-t", c[0], "-N", c[1]) != nil {
				if err := ipt(tool, "-t", c[0], "-F", c[1]); err != nil {
					return err
				}
			}
		}
		for _, r := range body {
			if err := ipt(tool, r...); err != nil {
				return err
			}
		}
		for _, j := range jumps {
			check := append([]string{j[0], j[1], "-C"}, j[2:]...)
			if ipt(tool, check...) == nil {
				// Already there; make sure it is first.
				del := append([]string{j[0], j[1], "-D"}, j[2:]...)
				_ = ipt(tool, del...)
			}
			ins := append([]string{j[0], j[1], "-I"}, append([]string{j[2], "1"}, j[3:]...)...)
			if err := ipt(tool, ins...); err != nil {
				return err
			}
		}
	}
	return nil
}

// teardown removes the rules when the daemon stops for good.
func (n *buildNet) teardown() {
	for _, tool := range n.families() {
		chains, jumps, _ := n.rules(tool == "ip6tables")
		for _, j := range jumps {
			del := append([]string{j[0], j[1], "-D"}, j[2:]...)
			for ipt(tool, del...) == nil {
			}
		}
		for _, c := range chains {
			_ = ipt(tool, "-t", c[0], "-F", c[1])
			_ = ipt(tool, "-t", c[0], "-X", c[1])
		}
	}
}

func ipt(tool string, args ...string) error {
	out, err := exec.Command(tool, append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s %s: %v: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		slog.Debug("builders: firewall", "err", err)
	}
	return err
}
