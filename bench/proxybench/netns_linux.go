package main

import (
	"context"
	"log"
	"net"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// podNet is a network namespace joined to the benchmark's own namespace
// (the node) by a veth pair, as a container on a node is: PREFIX.2/24,
// default route via the node's PREFIX.1. Its packets meet the node's
// prerouting and forward hooks, as pods' packets do, not output.
type podNet struct {
	ns netns.NsHandle
	ip string
}

// newPodNet makes the pod's namespace and its link, named after name.
func newPodNet(name, prefix string) *podNet {
	// The benchmark's namespace is its own: this forwards only there.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		log.Fatal(err)
	}
	node := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "0"}, PeerName: name + "1"}
	if err := netlink.LinkAdd(node); err != nil {
		log.Fatalf("veth %s: %v", name, err)
	}
	must(addrUp(node.Name, prefix+".1/24"))
	p := &podNet{ns: newNetns(), ip: prefix + ".2"}
	peer, err := netlink.LinkByName(name + "1")
	if err == nil {
		err = netlink.LinkSetNsFd(peer, int(p.ns))
	}
	must(err)
	p.do(func() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		must(err)
		must(addrUp(name+"1", p.ip+"/24"))
		l, _ := netlink.LinkByName(name + "1")
		must(netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(prefix + ".1")}))
	})
	return p
}

// newNetns makes a network namespace without entering it.
func newNetns() (ns netns.NsHandle) {
	away(func() (err error) { ns, err = netns.New(); return err }, func() {})
	return ns
}

func addrUp(link, cidr string) error {
	l, err := netlink.LinkByName(link)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// do runs fn on a thread in the pod's namespace: sockets fn opens belong
// to the pod for their whole life, whichever thread uses them later.
func (p *podNet) do(fn func()) {
	away(func() error { return netns.Set(p.ns) }, fn)
}

// away runs enter, which moves this thread into another namespace, then
// fn, on one locked thread, and brings the thread home after.
func away(enter func() error, fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	home, err := netns.Get()
	must(err)
	defer home.Close()
	must(enter())
	defer func() { must(netns.Set(home)) }()
	fn()
}

// dial connects from inside the pod.
func (p *podNet) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	p.do(func() {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
	})
	return c, err
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
