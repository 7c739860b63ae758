//go:build !linux

package proxy

import (
	"errors"
	"net/netip"
)

func newNFTKernel(netip.Prefix) (kernel, error) {
	return nil, errors.New("nftables: only on Linux")
}
