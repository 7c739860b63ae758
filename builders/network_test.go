package builders

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestBuildNetRules: the rules drop, from the build bridge only, traffic to
// any host address, to link-local and denied ranges, and input to the host;
// a dead daemon's rules are recognised from what `iptables -S` prints.
func TestBuildNetRules(t *testing.T) {
	n := &buildNet{Bridge: "slipbkabc123", Subnet: "10.217.9.0/24", chain: "SLIPWAY-BUILD-abc123", root: "/data/buildkit",
		deny: append(append([]string{}, linkLocal...), "10.0.0.0/24")}
	_, jumps, body := n.rules(false)
	var all []string
	for _, r := range append(jumps, body...) {
		all = append(all, strings.Join(r, " "))
	}
	got := strings.Join(all, "\n")
	for _, want := range []string{
		"-t raw PREROUTING -i slipbkabc123 -m comment --comment slipway-build:10.217.9.0/24:/data/buildkit -j SLIPWAY-BUILD-abc123",
		"-t filter INPUT -i slipbkabc123 -m comment --comment slipway-build:10.217.9.0/24:/data/buildkit -j SLIPWAY-BUILD-abc123",
		"-t raw -A SLIPWAY-BUILD-abc123 -m addrtype --dst-type LOCAL -j DROP",
		"-t raw -A SLIPWAY-BUILD-abc123 -d 169.254.0.0/16 -j DROP",
		"-t raw -A SLIPWAY-BUILD-abc123 -d 10.0.0.0/24 -j DROP",
		"-t raw -A SLIPWAY-BUILD-abc123 -d 10.217.9.0/24 -j DROP",
		"-t filter -A SLIPWAY-BUILD-abc123 -j DROP",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rules lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "fe80::/10") {
		t.Errorf("IPv4 rules name an IPv6 range:\n%s", got)
	}
	_, _, body6 := n.rules(true)
	if !strings.Contains(strings.Join(body6[1], " "), "fe80::/10") || strings.Contains(fmt.Sprint(body6), "10.217.9.0/24") {
		t.Errorf("IPv6 rules do not drop link-local: %v", body6)
	}

	line := `-A INPUT -i slipbkabc123 -m comment --comment "slipway-build:10.217.9.0/24:/data/buildkit" -j SLIPWAY-BUILD-abc123`
	m := staleRule.FindStringSubmatch(line)
	if m == nil || m[2] != "slipbkabc123" || m[3] != "10.217.9.0/24" || m[4] != "/data/buildkit" || m[5] != "SLIPWAY-BUILD-abc123" {
		t.Errorf("staleRule(%s) = %q", line, m)
	}
	want := []string{"POSTROUTING", "-s", "10.217.9.2/32", "-m", "comment", "--comment", `name: "buildkit" id: "x"`, "-j", "CNI-0e9a"}
	if got := splitRule(`POSTROUTING -s 10.217.9.2/32 -m comment --comment "name: \"buildkit\" id: \"x\"" -j CNI-0e9a`); !reflect.DeepEqual(got, want) {
		t.Errorf("splitRule = %q, want %q", got, want)
	}
}

// TestNoFallbackToHostNetwork: without the CNI plugins buildkitd does not
// start, and builds are told why and what to install.
func TestNoFallbackToHostNetwork(t *testing.T) {
	d := &Daemon{Binary: "/nonexistent/buildkitd", Root: t.TempDir(), CNIBinDir: t.TempDir()}
	d.Run(t.Context()) // returns at once: nothing to isolate builds with
	_, err := d.Client(t.Context(), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "cannot be isolated") || !strings.Contains(err.Error(), "containernetworking-plugins") {
		t.Errorf("Client() = %v, want an error saying builds are off and to install containernetworking-plugins", err)
	}
}
