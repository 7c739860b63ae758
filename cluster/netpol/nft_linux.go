package netpol

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TablePrefix starts the name of every nftables table this package
// makes: TablePrefix + the runtime's container prefix. The service proxy
// has tables of its own; nothing here reads or changes them.
const TablePrefix = "slipway-netpol-"

// NFTables writes Rules as two nftables tables named TablePrefix+Name:
//
//   - ip: a forward chain, which sees routed traffic between pods (a
//     cluster IP translated to a pod's by a kernel proxy) and, where the
//     kernel passes bridged IPv4 to netfilter (br_netfilter with
//     net.bridge.bridge-nf-call-iptables=1), traffic between pods of one
//     bridge. It is stateful: replies of an allowed connection pass by
//     conntrack, and a refused TCP connection is reset, anything else
//     answered "administratively prohibited".
//   - bridge: a forward chain on every bridge, which sees pod-to-pod
//     frames whether br_netfilter is loaded or not, and drops what is not
//     allowed. Where the kernel has no conntrack for bridges
//     (nf_conntrack_bridge), it refuses a TCP connection by its first SYN
//     and lets the rest of TCP by (a connection it refused never starts);
//     other protocols are then left to the ip table if br_netfilter
//     passes bridged traffic there, and filtered per packet if not, so a
//     reply to a permitted UDP datagram from another project is dropped.
//
// The filter only ever drops or rejects: an accept here ends this
// table's chain, and Docker's and the proxy's tables still decide for
// themselves.
type NFTables struct {
	Name string // the runtime's container prefix
}

func (n NFTables) tables() []*nftables.Table {
	return []*nftables.Table{
		{Name: TablePrefix + n.Name, Family: nftables.TableFamilyIPv4},
		{Name: TablePrefix + n.Name, Family: nftables.TableFamilyBridge},
	}
}

// Apply replaces both tables with r's rules, in one transaction: a packet
// sees the old rules or the new, never none.
func (n NFTables) Apply(r *Rules) error {
	if noBridgeCT.Load() {
		return n.apply(r, false)
	}
	err := n.apply(r, true)
	if err != nil {
		// A kernel without conntrack for bridges (nf_conntrack_bridge)
		// refuses "ct" in the bridge family: filter there without it.
		if err2 := n.apply(r, false); err2 == nil {
			noBridgeCT.Store(true)
			return nil
		}
	}
	return err
}

// noBridgeCT records that the kernel refused conntrack in the bridge
// family once, so later Applies do not try again.
var noBridgeCT atomic.Bool

func (n NFTables) apply(r *Rules, bridgeCT bool) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netpol: nftables: %w", err)
	}
	for _, t := range n.tables() {
		// Add, delete, add: the delete cannot fail for a missing table.
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
		if err := build(c, t, r, bridgeCT); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netpol: writing nftables tables %s%s: %w", TablePrefix, n.Name, err)
	}
	return nil
}

// bridgedToIP reports whether the kernel passes bridged IPv4 through the
// ip family's hooks (br_netfilter). It only reads the setting.
func bridgedToIP() bool {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Remove deletes both tables; missing ones are not an error.
func (n NFTables) Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netpol: nftables: %w", err)
	}
	for _, t := range n.tables() {
		c.AddTable(t)
		c.DelTable(t)
	}
	return c.Flush()
}

func ipSet(c *nftables.Conn, t *nftables.Table, name string, ips []netip.Addr) (*nftables.Set, error) {
	s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIPAddr}
	els := make([]nftables.SetElement, 0, len(ips))
	for _, ip := range ips {
		if ip.Is4() {
			els = append(els, nftables.SetElement{Key: ip.AsSlice()})
		}
	}
	if err := c.AddSet(s, els); err != nil {
		return nil, fmt.Errorf("netpol: set %s: %w", name, err)
	}
	return s, nil
}

// Expressions, in the nft syntax they stand for.
var (
	// ip saddr / ip daddr, loaded into register 1.
	saddr = &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	daddr = &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	// meta protocol ip (the bridge family sees every ethertype).
	isIPv4 = []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(unix.ETH_P_IP)},
	}
	// ct state established,related
	established = []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
			Xor:  binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
	}
	// tcp flags & (syn|ack) != syn: any TCP segment but a connection's first.
	notFirstSYN = []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x12}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0x02}},
	}
	accept = &expr.Verdict{Kind: expr.VerdictAccept}
)

func in(load *expr.Payload, s *nftables.Set, invert bool) []expr.Any {
	return []expr.Any{load, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: invert}}
}

func l4(proto string, port uint16) []expr.Any {
	p := byte(unix.IPPROTO_TCP)
	if proto == "UDP" {
		p = unix.IPPROTO_UDP
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
	if port != 0 {
		e = append(e,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)})
	}
	return e
}

func join(parts ...any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case []expr.Any:
			out = append(out, p...)
		case expr.Any:
			out = append(out, p)
		}
	}
	return out
}

// inPrefix is "ip saddr|daddr PREFIX" for load (saddr or daddr).
func inPrefix(load *expr.Payload, p netip.Prefix) []expr.Any {
	mask := net.CIDRMask(p.Bits(), 32)
	return []expr.Any{
		load,
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// build fills table t (just made, empty) with r:
//
//	chain forward {             # hook forward
//	    ip daddr @local jump check     # to or from a pod of this node
//	    ip saddr @local jump check
//	}
//	chain check {
//	    ct state established,related accept
//	    ip saddr SUBNET goto dst       # for each pod subnet
//	    ip saddr @pods goto dst        # pods outside them
//	    accept                         # not from the pod network
//	}
//	chain dst {
//	    ip daddr SUBNET goto filter
//	    ip daddr @pods goto filter
//	    accept                         # not to the pod network
//	}
//	chain filter {
//	    ip saddr @pN ip daddr @pN accept                      # each project
//	    ip saddr @fN ip daddr @tN [tcp|udp [dport P]] accept  # each allow
//	    reject (ip) | drop (bridge)
//	}
//
// An address of the pod network that is no known pod is matched by
// neither a project nor an allow, and so is refused both ways. Only
// traffic of this node's own pods is filtered here: another agent on the
// same bridge (another node of the cluster, or another cluster's) filters
// its own, and a table an agent left behind touches only its old pods'
// addresses.
func build(c *nftables.Conn, t *nftables.Table, r *Rules, bridgeCT bool) error {
	bridge := t.Family == nftables.TableFamilyBridge
	pods, err := ipSet(c, t, "pods", r.Pods)
	if err != nil {
		return err
	}
	local, err := ipSet(c, t, "local", r.Local)
	if err != nil {
		return err
	}
	check := c.AddChain(&nftables.Chain{Name: "check", Table: t})
	dst := c.AddChain(&nftables.Chain{Name: "dst", Table: t})
	filter := c.AddChain(&nftables.Chain{Name: "filter", Table: t})
	rule := func(chain *nftables.Chain, e []expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: e})
	}
	prio, pol := nftables.ChainPriorityRef(-5), nftables.ChainPolicyAccept
	if bridge {
		// After br_netfilter (priority 0), which attaches conntrack.
		prio = nftables.ChainPriorityRef(100)
	}
	fwd := c.AddChain(&nftables.Chain{
		Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: prio, Policy: &pol,
	})
	var ipOnly []expr.Any
	if bridge {
		ipOnly = isIPv4
	}
	jump := &expr.Verdict{Kind: expr.VerdictJump, Chain: check.Name}
	rule(fwd, join(ipOnly, in(daddr, local, false), jump))
	rule(fwd, join(ipOnly, in(saddr, local, false), jump))

	if !bridge || bridgeCT {
		rule(check, join(established, accept))
	}
	for _, hop := range []struct {
		from, to *nftables.Chain
		load     *expr.Payload
	}{{check, dst, saddr}, {dst, filter, daddr}} {
		next := &expr.Verdict{Kind: expr.VerdictGoto, Chain: hop.to.Name}
		for _, s := range r.Subnets {
			if s.Addr().Is4() {
				rule(hop.from, join(inPrefix(hop.load, s), next))
			}
		}
		rule(hop.from, join(in(hop.load, pods, false), next))
		rule(hop.from, join(accept))
	}

	for i, g := range r.Projects {
		s, err := ipSet(c, t, "p"+strconv.Itoa(i), g.IPs)
		if err != nil {
			return err
		}
		rule(filter, join(in(saddr, s, false), in(daddr, s, false), accept))
	}
	for i, a := range r.Allows {
		from, err := ipSet(c, t, "f"+strconv.Itoa(i), a.From)
		if err != nil {
			return err
		}
		to, err := ipSet(c, t, "t"+strconv.Itoa(i), a.To)
		if err != nil {
			return err
		}
		var proto []expr.Any
		if a.Proto != "" {
			proto = l4(a.Proto, a.Port)
		}
		rule(filter, join(in(saddr, from, false), in(daddr, to, false), proto, accept))
	}
	if bridge {
		rule(filter, join(notFirstSYN, accept))
		if !bridgeCT && bridgedToIP() {
			// The ip table has already refused, statefully, what it
			// must; without conntrack here, a reply to an allowed UDP
			// datagram would look like a new one.
			rule(filter, join(accept))
		}
		rule(filter, join(&expr.Verdict{Kind: expr.VerdictDrop}))
		return nil
	}
	rule(filter, join(l4("TCP", 0), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}))
	rule(filter, join(&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: 13})) // admin prohibited
	return nil
}
