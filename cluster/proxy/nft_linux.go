package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	mnl "github.com/mdlayher/netlink"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nftKernel programs the nftables mode into the kernel over netlink.
type nftKernel struct {
	cidr  netip.Prefix
	table string // TableFor(cidr)
}

func newNFTKernel(cidr netip.Prefix) (kernel, error) {
	k := &nftKernel{cidr: cidr, table: TableFor(cidr)}
	return k, k.probe()
}

// probe checks that the kernel takes a table with a NAT chain, in a batch
// that deletes it again: EPERM without CAP_NET_ADMIN, an error on a kernel
// without nf_tables or its NAT support.
func (k *nftKernel) probe() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: NFTTable + "-probe", Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.AddChain(&nftables.Chain{Name: "probe", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: the kernel refused a NAT table: %w", err)
	}
	return nil
}

// bigBuffers lets one batch carry a large table: the kernel takes a
// batch in one sendmsg, whose size the send buffer bounds (about 200 KiB
// by default: some 300 services), and answers every message with an ack
// the receive buffer must hold until read. nft(8) raises both the same
// way; the FORCE options pass the sysctl caps, with CAP_NET_ADMIN, which
// writing nftables needs anyway. They are limits, not allocations.
func bigBuffers(c *mnl.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, nftSocketBuffer); e != nil {
				serr = fmt.Errorf("nftables: socket buffer: %w", e)
			}
		}
	})
	return errors.Join(err, serr)
}

// nftSocketBuffer bounds one sync's batch and its acks: 64 MiB is some
// 25,000 service ports of 3 endpoints.
const nftSocketBuffer = 64 << 20

// apply replaces the whole table with one that serves ports, in one
// netlink batch: the kernel commits it as a single transaction, so a
// packet sees either the old rules or the new ones, never a flushed
// table. The first apply of a run also replaces whatever an earlier run
// left.
func (k *nftKernel) apply(ports []kernelPort) error {
	c, err := nftables.New(nftables.WithSockOptions(bigBuffers))
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: k.table, Family: nftables.TableFamilyIPv4}
	// add + delete: drops the table if it exists, without failing if it
	// does not; the new one follows in the same transaction.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio})
	}
	services := c.AddChain(&nftables.Chain{Name: "services", Table: t})
	rejects := c.AddChain(&nftables.Chain{Name: "no-endpoints", Table: t})
	for _, ch := range []*nftables.Chain{
		base("nat-prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		base("nat-output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: services.Name}}})
	}
	post := base("nat-postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: masqueradeMarked()})
	for _, ch := range []*nftables.Chain{
		base("filter-input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
		base("filter-forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter),
		base("filter-output", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter),
	} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: rejects.Name}}})
	}

	for _, p := range ports {
		vip, err := netip.ParseAddr(p.key.ip)
		if err != nil || !vip.Is4() {
			continue // the table is family ip
		}
		proto := byte(unix.IPPROTO_TCP)
		if p.key.proto == "UDP" {
			proto = unix.IPPROTO_UDP
		}
		match := matchService(vip, proto, uint16(p.key.port))
		var eps []netip.AddrPort
		for _, ep := range p.endpoints {
			if ep.Addr().Unmap().Is4() {
				eps = append(eps, netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port()))
			}
		}
		if len(eps) == 0 {
			c.AddRule(&nftables.Rule{Table: t, Chain: rejects, Exprs: append(match, reject(proto))})
			continue
		}
		svc := c.AddChain(&nftables.Chain{Name: chainName(p.key), Table: t})
		c.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: append(match, &expr.Verdict{Kind: expr.VerdictGoto, Chain: svc.Name})})
		// Endpoint i of n is taken with probability 1/(n-i) when the
		// ones before it were not: uniform over all n.
		for i, ep := range eps {
			epc := c.AddChain(&nftables.Chain{Name: svc.Name + "-" + strconv.Itoa(i), Table: t})
			var pick []expr.Any
			if left := len(eps) - i; left > 1 {
				pick = []expr.Any{
					&expr.Numgen{Register: 1, Modulus: uint32(left), Type: unix.NFT_NG_RANDOM},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
				}
			}
			c.AddRule(&nftables.Rule{Table: t, Chain: svc, Exprs: append(pick, &expr.Verdict{Kind: expr.VerdictGoto, Chain: epc.Name})})
			// Hairpin: the endpoint reaching itself through the service
			// must see the reply come from elsewhere.
			c.AddRule(&nftables.Rule{Table: t, Chain: epc, Exprs: append(matchSource(ep.Addr(), 32), setMark()...)})
			// The host dialing a cluster IP gets it as source address,
			// which means nothing off the host.
			c.AddRule(&nftables.Rule{Table: t, Chain: epc, Exprs: append(matchSource(k.cidr.Addr(), k.cidr.Bits()), setMark()...)})
			c.AddRule(&nftables.Rule{Table: t, Chain: epc, Exprs: dnat(ep)})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: replace table %s: %w", k.table, err)
	}
	return nil
}

// remove deletes the table; a table that is not there is no error.
func (k *nftKernel) remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: k.table, Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table %s: %w", k.table, err)
	}
	return nil
}

// chainName is a service port's chain, readable in `nft list table ip
// slipway-proxy`: "svc-10.43.0.7-80-tcp".
func chainName(k listenKey) string {
	return "svc-" + k.ip + "-" + strconv.Itoa(k.port) + "-" + strings.ToLower(k.proto)
}

// matchService matches ip daddr vip, meta l4proto proto, th dport port.
func matchService(vip netip.Addr, proto byte, port uint16) []expr.Any {
	a := vip.As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// matchSource matches ip saddr in addr/bits.
func matchSource(addr netip.Addr, bits int) []expr.Any {
	a := addr.As4()
	mask := net.CIDRMask(bits, 32)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: net.IP(a[:]).Mask(mask).To4()},
	}
}

// setMark is meta mark set mark | MasqueradeMark.
func setMark() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(MasqueradeMark)),
			Xor:  binaryutil.NativeEndian.PutUint32(MasqueradeMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// masqueradeMarked is: meta mark & MasqueradeMark != 0, clear the bit,
// masquerade.
func masqueradeMarked() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(MasqueradeMark),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(MasqueradeMark)),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		&expr.Masq{},
	}
}

// dnat is dnat to ep.
func dnat(ep netip.AddrPort) []expr.Any {
	a := ep.Addr().As4()
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: a[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(ep.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// reject answers at once: a TCP reset, or ICMP port unreachable.
func reject(proto byte) expr.Any {
	if proto == unix.IPPROTO_TCP {
		return &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}
	}
	return &expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 3} // port unreachable
}

// forgetUDP deletes the conntrack entries of UDP flows to vip:port that
// were sent to an endpoint not in keep: without it a client that keeps
// sending (DNS, say) stays bound to a removed endpoint for as long as it
// talks, because only the first packet of a flow meets the rules.
func (k *nftKernel) forgetUDP(vip netip.Addr, port uint16, keep []netip.AddrPort) (uint, error) {
	f := udpFlows{vip: vip, port: port, keep: map[netip.AddrPort]bool{}}
	for _, ep := range keep {
		f.keep[ep] = true
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return n, fmt.Errorf("conntrack: delete UDP flows to %s: %w", netip.AddrPortFrom(vip, port), err)
	}
	return n, nil
}

// udpFlows matches UDP conntrack entries to vip:port whose reply comes
// from an address not in keep.
type udpFlows struct {
	vip  netip.Addr
	port uint16
	keep map[netip.AddrPort]bool
}

func (f udpFlows) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP || flow.Forward.DstPort != f.port {
		return false
	}
	dst, ok := netip.AddrFromSlice(flow.Forward.DstIP)
	if !ok || dst.Unmap() != f.vip {
		return false
	}
	src, _ := netip.AddrFromSlice(flow.Reverse.SrcIP)
	return !f.keep[netip.AddrPortFrom(src.Unmap(), flow.Reverse.SrcPort)]
}
