package proxy_test

import (
	"errors"
	"testing"

	"slipway.dev/slipway/cluster/proxy"
)

func TestAllocateClusterIP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cidr     string
		existing []string
		want     string
		err      error
	}{
		{name: "default range, first address", cidr: "", want: "10.43.0.1"},
		{name: "lowest free", cidr: "10.43.0.0/16", existing: []string{"10.43.0.1", "10.43.0.2", "10.43.0.4"}, want: "10.43.0.3"},
		{name: "order of existing does not matter", cidr: "10.43.0.0/16", existing: []string{"10.43.0.4", "10.43.0.2", "10.43.0.1"}, want: "10.43.0.3"},
		{name: "garbage and out-of-range ignored", cidr: "10.43.0.0/16", existing: []string{"", "None", "bogus", "10.44.0.1", "10.43.0.1"}, want: "10.43.0.2"},
		{name: "crosses an octet", cidr: "10.43.0.0/23", existing: seq("10.43.0.", 1, 255), want: "10.43.1.0"},
		{name: "unmasked cidr is masked", cidr: "10.43.7.9/16", want: "10.43.0.1"},
		{name: "/30 has two hosts", cidr: "192.168.9.0/30", existing: []string{"192.168.9.1"}, want: "192.168.9.2"},
		{name: "/30 full: broadcast is never handed out", cidr: "192.168.9.0/30", existing: []string{"192.168.9.1", "192.168.9.2"}, err: proxy.ErrRangeFull},
		{name: "/32 is its one address", cidr: "10.0.0.5/32", want: "10.0.0.5"},
		{name: "/32 taken", cidr: "10.0.0.5/32", existing: []string{"10.0.0.5"}, err: proxy.ErrRangeFull},
		{name: "IPv6", cidr: "fd00:43::/112", existing: []string{"fd00:43::1"}, want: "fd00:43::2"},
		{name: "IPv6 last address is usable", cidr: "fd00:43::/126", existing: []string{"fd00:43::1", "fd00:43::2"}, want: "fd00:43::3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := proxy.NewAllocator(tc.cidr)
			if err != nil {
				t.Fatalf("NewAllocator(%q): %v", tc.cidr, err)
			}
			got, err := a.AllocateClusterIP(tc.existing)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("AllocateClusterIP(%q) = %q, %v; want %q, %v", tc.existing, got, err, tc.want, tc.err)
			}
			if err == nil && !a.Contains(got) {
				t.Errorf("Contains(%q) = false for an address it allocated", got)
			}
		})
	}
}

func TestAllocatorNeverCollides(t *testing.T) {
	a, err := proxy.NewAllocator("10.43.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	var taken []string
	seen := map[string]bool{}
	for {
		ip, err := a.AllocateClusterIP(taken)
		if errors.Is(err, proxy.ErrRangeFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seen[ip] {
			t.Fatalf("AllocateClusterIP handed out %s twice", ip)
		}
		seen[ip] = true
		taken = append(taken, ip)
	}
	if len(seen) != 254 {
		t.Errorf("a /24 gave %d addresses, want 254 (all but network and broadcast)", len(seen))
	}
	// A freed address is the next one handed out.
	taken = append(taken[:41], taken[42:]...)
	if ip, err := a.AllocateClusterIP(taken); ip != "10.43.0.42" || err != nil {
		t.Errorf("AllocateClusterIP after freeing 10.43.0.42 = %q, %v; want 10.43.0.42", ip, err)
	}
}

func TestAllocatorContains(t *testing.T) {
	a, err := proxy.NewAllocator("10.43.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{
		"10.43.0.1": true, "10.43.255.254": true, "10.43.0.0": false, "10.43.255.255": false,
		"10.44.0.1": false, "": false, "None": false, "::ffff:10.43.0.9": true,
	} {
		if got := a.Contains(ip); got != want {
			t.Errorf("Contains(%q) = %v, want %v", ip, got, want)
		}
	}
	if _, err := proxy.NewAllocator("10.43.0.0"); err == nil {
		t.Error("NewAllocator(no prefix length) = nil error, want one")
	}
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, prefix+itoa(int32(i)))
	}
	return out
}
