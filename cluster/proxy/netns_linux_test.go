package proxy_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
)

// netnsEnv marks a test process re-executed in a network namespace of
// its own by runInNetns.
const netnsEnv = "SLIPWAY_PROXY_TEST_NETNS"

// setupTestNetns runs first in TestMain: in a re-executed process it
// brings up the loopback interface of the fresh namespace, so the store's
// etcd and the backends can listen on 127.0.0.1.
func setupTestNetns() {
	if os.Getenv(netnsEnv) == "" {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "netns: lo up:", err)
		os.Exit(1)
	}
}

// runInNetns reports whether the calling test should run its body here:
// true in the re-executed process, which is alone in a fresh network
// namespace (its interfaces, routes, nftables and conntrack are its own;
// the host's are never touched). In the parent it re-executes the test
// binary for just this test in a new namespace, relays its output, fails
// the test if the child did, and returns false. It skips without root.
func runInNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace and nftables")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.HasPrefix(l, `{"level":`) { // etcd's
			lines = append(lines, l)
		}
	}
	t.Logf("in a fresh network namespace:\n%s", strings.Join(lines, "\n"))
	if err != nil {
		t.Fatalf("test in its network namespace: %v", err)
	}
	return false
}
