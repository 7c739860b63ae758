//go:build !linux

package netpol

import "errors"

// NFTables needs Linux; elsewhere it refuses, so pods are not isolated.
type NFTables struct{ Name string }

// TablePrefix starts the name of every nftables table this package makes.
const TablePrefix = "slipway-netpol-"

// Apply fails: nftables is Linux's.
func (NFTables) Apply(*Rules) error { return errors.New("netpol: nftables needs Linux") }

// Remove has nothing to remove.
func (NFTables) Remove() error { return nil }
