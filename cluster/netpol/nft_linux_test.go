package netpol

import (
	"fmt"
	"net/netip"
	"os"
	"testing"

	"github.com/google/nftables"

	"slipway.dev/slipway/api"
)

// TestNFTablesApplyReplacesAndRemoves writes real tables into the kernel:
// a second Apply replaces the first's sets (a pod that went away leaves no
// element), and Remove deletes both tables.
func TestNFTablesApplyReplacesAndRemoves(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("nftables needs root")
	}
	n := NFTables{Name: fmt.Sprintf("unit%d", os.Getpid())}
	t.Cleanup(func() { _ = n.Remove() })
	ip := netip.MustParseAddr
	pods := []Pod{
		{Namespace: "a", Name: "x", IP: ip("10.251.0.2"), Local: true},
		{Namespace: "b", Name: "y", IP: ip("10.251.0.3"), Labels: map[string]string{"app": "db"}, Local: true},
	}
	pol := &api.NetworkPolicy{ObjectMeta: api.ObjectMeta{Namespace: "b", Name: "from-a"}, Spec: api.NetworkPolicySpec{
		Ingress: []api.NetworkPolicyIngressRule{{
			From:  []api.NetworkPolicyPeer{{NamespaceSelector: &api.LabelSelector{MatchLabels: map[string]string{api.ProjectNameLabel: "a"}}}},
			Ports: []api.NetworkPolicyPort{{Port: 80}},
		}},
	}}
	r := Compile(pods, nil, []*api.NetworkPolicy{pol})
	r.Subnets = []netip.Prefix{netip.MustParsePrefix("10.251.0.0/24")}
	if err := n.Apply(r); err != nil {
		t.Fatal(err)
	}
	if got := elements(t, n, nftables.TableFamilyIPv4, "pods"); got != "[10.251.0.2 10.251.0.3]" {
		t.Fatalf("pods set = %s, want both pods", got)
	}
	if got := elements(t, n, nftables.TableFamilyBridge, "t0"); got != "[10.251.0.3]" {
		t.Fatalf("bridge table's allow set t0 = %s, want the policy's pod", got)
	}
	if err := n.Apply(Compile(pods[:1], nil, nil)); err != nil {
		t.Fatal(err)
	}
	if got := elements(t, n, nftables.TableFamilyIPv4, "pods"); got != "[10.251.0.2]" {
		t.Fatalf("after the pod went: pods set = %s, want only the one left", got)
	}
	if got := elements(t, n, nftables.TableFamilyBridge, "local"); got != "[10.251.0.2]" {
		t.Fatalf("after the pod went: the bridge table's local set = %s, want only the one left", got)
	}
	if err := n.Remove(); err != nil {
		t.Fatal(err)
	}
	c, _ := nftables.New()
	if tb, err := c.ListTableOfFamily(TablePrefix+n.Name, nftables.TableFamilyIPv4); err == nil {
		t.Fatalf("table %s still there after Remove", tb.Name)
	}
}

func elements(t *testing.T, n NFTables, fam nftables.TableFamily, set string) string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.GetSetByName(&nftables.Table{Name: TablePrefix + n.Name, Family: fam}, set)
	if err != nil {
		t.Fatalf("set %s: %v", set, err)
	}
	els, err := c.GetSetElements(s)
	if err != nil {
		t.Fatal(err)
	}
	var ips []netip.Addr
	for _, e := range els {
		a, _ := netip.AddrFromSlice(e.Key)
		ips = append(ips, a)
	}
	slicesSort(ips)
	return fmt.Sprint(ips)
}

func slicesSort(ips []netip.Addr) {
	for i := range ips {
		for j := i + 1; j < len(ips); j++ {
			if ips[j].Less(ips[i]) {
				ips[i], ips[j] = ips[j], ips[i]
			}
		}
	}
}
