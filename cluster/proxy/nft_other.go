//go:build !linux

package proxy

import (
	"errors"
	"net/netip"
)

func newKernel(netip.Prefix) (kernel, error) {
	return nil, errors.New("nftables: only on Linux")
}
