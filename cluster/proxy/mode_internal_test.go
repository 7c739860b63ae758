package proxy

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"syscall"
	"testing"
)

// noNFTables is a fake kernel probe, for what cannot be arranged on a
// root machine: a process without CAP_NET_ADMIN, whose nftables batch the
// kernel refuses with EPERM. (The real probe is exercised by every
// nftables test.)
func noNFTables(t *testing.T) *int {
	probes := 0
	old := newKernel
	newKernel = func(netip.Prefix) (kernel, error) {
		probes++
		return nil, errors.New("nftables: the kernel refused a NAT table: " + syscall.EPERM.Error())
	}
	t.Cleanup(func() { newKernel = old })
	return &probes
}

func captureLog(t *testing.T) *bytes.Buffer {
	var buf bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &buf
}

var testRange = netip.MustParsePrefix("10.43.0.0/16")

func TestAutoModeFallsBackToUserspaceAndSaysWhy(t *testing.T) {
	probes, log := noNFTables(t), captureLog(t)
	k, err := chooseMode(ModeAuto, testRange)
	if err != nil || k != nil {
		t.Fatalf("chooseMode(auto) without nftables = %v, %v; want the userspace mode (nil kernel), no error", k, err)
	}
	if *probes != 1 {
		t.Errorf("the kernel was probed %d times, want 1", *probes)
	}
	if !strings.Contains(log.String(), "userspace mode: nftables is not usable here") || !strings.Contains(log.String(), "operation not permitted") {
		t.Errorf("log = %q, want the fallback and its reason", log)
	}
}

func TestNFTablesModeWithoutNFTablesIsAnError(t *testing.T) {
	noNFTables(t)
	_, err := chooseMode(ModeNFTables, testRange)
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), "--proxy-mode=auto") {
		t.Fatalf("chooseMode(nftables) without nftables = %v; want an error that says what to do", err)
	}
}

func TestUserspaceModeNeverProbes(t *testing.T) {
	probes, log := noNFTables(t), captureLog(t)
	for _, m := range []Mode{"", ModeUserspace} {
		if k, err := chooseMode(m, testRange); k != nil || err != nil {
			t.Errorf("chooseMode(%q) = %v, %v; want userspace", m, k, err)
		}
	}
	if *probes != 0 {
		t.Errorf("the kernel was probed %d times in the userspace mode, want 0 (the host's firewall is not touched)", *probes)
	}
	if !strings.Contains(log.String(), "proxy: userspace mode") {
		t.Errorf("log = %q, want the mode logged", log)
	}
	if _, err := chooseMode("kernel", testRange); err == nil {
		t.Error(`chooseMode("kernel") = nil error, want one`)
	}
	if _, err := ParseMode("iptables"); err == nil || !strings.Contains(err.Error(), "auto, nftables, userspace") {
		t.Errorf(`ParseMode("iptables") = %v, want an error listing the modes`, err)
	}
}

func TestIPv6RangeStaysUserspace(t *testing.T) {
	probes, log := noNFTables(t), captureLog(t)
	v6 := netip.MustParsePrefix("fd00:43::/112")
	if k, err := chooseMode(ModeAuto, v6); k != nil || err != nil {
		t.Errorf("chooseMode(auto, %s) = %v, %v; want userspace", v6, k, err)
	}
	if !strings.Contains(log.String(), "not IPv4") {
		t.Errorf("log = %q, want the reason", log)
	}
	if _, err := chooseMode(ModeNFTables, v6); err == nil || !strings.Contains(err.Error(), "not IPv4") {
		t.Errorf("chooseMode(nftables, %s) = %v, want an error naming the range", v6, err)
	}
	if *probes != 0 {
		t.Errorf("kernel probed %d times for an IPv6 range, want 0", *probes)
	}
}
