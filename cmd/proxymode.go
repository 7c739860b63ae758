package cmd

import "slipway.dev/slipway/cluster/proxy"

// proxyModeFlag is --proxy-mode: a value other than auto, nftables or
// userspace is refused when the flags are parsed, before anything starts.
type proxyModeFlag struct{ v *string }

func (f proxyModeFlag) String() string {
	if f.v == nil {
		return ""
	}
	return *f.v
}

func (f proxyModeFlag) Set(s string) error {
	m, err := proxy.ParseMode(s)
	if err != nil {
		return err
	}
	*f.v = string(m)
	return nil
}

func (proxyModeFlag) Type() string { return "auto|nftables|userspace" }
