package node

import (
	"os"
	"strings"
)

// ipForwardFile is the sysctl net.ipv4.ip_forward.
const ipForwardFile = "/proc/sys/net/ipv4/ip_forward"

// HostWarnings says what on this machine keeps pods from working fully,
// each with what to do about it; nil when nothing does. It only reads: the
// node never changes the machine's sysctls itself (make start does, and
// says so).
//
// Today it checks IPv4 forwarding, which a machine that just booted has
// off: pods then reach this machine and each other, but not other nodes
// or the outside.
func HostWarnings() []string { return hostWarnings(ipForwardFile) }

func hostWarnings(ipForward string) []string {
	var w []string
	if b, err := os.ReadFile(ipForward); err == nil && strings.TrimSpace(string(b)) == "0" {
		w = append(w, "IPv4 forwarding is off (net.ipv4.ip_forward=0): pods on this node reach only this machine, not other nodes or the outside; turn it on with `sysctl -w net.ipv4.ip_forward=1` (make start does)")
	}
	return w
}
