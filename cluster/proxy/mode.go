package proxy

import (
	"fmt"
	"strings"
)

// Mode is how a Proxy forwards service traffic.
type Mode string

const (
	// ModeAuto uses nftables when the kernel takes the proxy's table (it
	// needs CAP_NET_ADMIN and nf_tables with NAT), else userspace; the
	// choice and its reason are logged.
	ModeAuto Mode = "auto"
	// ModeNFTables programs DNAT rules into the kernel (table
	// TableFor the range): no process on the data path. Run fails if the kernel
	// refuses the table.
	ModeNFTables Mode = "nftables"
	// ModeUserspace listens on each cluster IP and relays connections
	// and datagrams itself.
	ModeUserspace Mode = "userspace"
)

// Modes lists the values ParseMode accepts.
var Modes = []Mode{ModeAuto, ModeNFTables, ModeUserspace}

// ParseMode reads a --proxy-mode value; empty is ModeAuto.
func ParseMode(s string) (Mode, error) {
	if s == "" {
		return ModeAuto, nil
	}
	for _, m := range Modes {
		if strings.EqualFold(s, string(m)) {
			return m, nil
		}
	}
	return "", fmt.Errorf("proxy mode %q: want one of auto, nftables, userspace", s)
}

// String is the flag value.
func (m Mode) String() string { return string(m) }
