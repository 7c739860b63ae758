package main

import (
	"log"
	"os"
	"os/exec"
	"syscall"

	"github.com/vishvananda/netlink"
)

const netnsEnv = "SLIPWAY_PROXYBENCH_NETNS"

// inNetns reports whether this is the re-executed process, and brings up
// its namespace's loopback interface.
func inNetns() bool {
	if os.Getenv(netnsEnv) == "" {
		return false
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		log.Fatalf("lo up in the benchmark's network namespace: %v", err)
	}
	return true
}

// reexecInNetns runs this command again with the same arguments in a new
// network namespace and returns its exit code.
func reexecInNetns() int {
	if os.Geteuid() != 0 {
		log.Fatal("-mode nftables needs root (a network namespace and nftables)")
	}
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		log.Fatal(err)
	}
	return 0
}
