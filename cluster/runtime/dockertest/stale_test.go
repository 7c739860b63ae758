package dockertest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A bridge a killed run left on this run's /24 is deleted before this
// run's is made (the kernel would send the new bridge's traffic to it);
// one whose owner still runs is an error; another tool's is left alone.
// In a network namespace of the test's own.
func TestRemoveStaleBridges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	// The test's thread, and the commands it starts, move to a new
	// network namespace; the thread ends with the test (never unlocked).
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	dead := deadPID(t)
	bridge := func(name, alias string) {
		t.Helper()
		for _, args := range [][]string{{"link", "add", name, "type", "bridge"}, {"addr", "add", "10.9.1.1/24", "dev", name}, {"link", "set", name, "up"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		if alias != "" {
			if err := ipLink("set", name, "alias", alias); err != nil {
				t.Fatal(err)
			}
		}
	}
	exists := func(name string) bool { return ipLink("show", name) == nil }
	o := Options{Bridge: fmt.Sprintf("slpwt%d", os.Getpid()), CIDR: "10.9.1.1/24"}

	byName, byAlias := fmt.Sprintf("slpwt%d", dead), "slpwt1"
	bridge(byName, "")
	bridge(byAlias, fmt.Sprintf("%s%d", ownerAlias, dead))
	bridge("other0", "")
	if err := removeStaleBridges(o); err != nil {
		t.Fatalf("removeStaleBridges with bridges of a dead process = %v, want them removed", err)
	}
	for _, b := range []string{byName, byAlias} {
		if exists(b) {
			t.Errorf("bridge %s of dead process %d still exists", b, dead)
		}
	}
	if !exists("other0") {
		t.Errorf("bridge other0, not one of dockertest's, was removed")
	}

	live := "slpwt2"
	bridge(live, fmt.Sprintf("%s%d", ownerAlias, os.Getpid()))
	if err := removeStaleBridges(o); err == nil || !strings.Contains(err.Error(), live) {
		t.Errorf("removeStaleBridges with a live process's bridge on the /24 = %v, want an error naming %s", err, live)
	}
	if !exists(live) {
		t.Errorf("bridge %s of a live process was removed", live)
	}
}

// deadPID is a process ID that no process has now.
func deadPID(t *testing.T) int {
	t.Helper()
	for pid := 30000; pid > 300; pid-- {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return pid
		}
	}
	t.Fatal("no free process ID")
	return 0
}
