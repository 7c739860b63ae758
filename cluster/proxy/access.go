package proxy

import (
	"context"
	"net"
	"net/netip"
)

// ClientAccess decides, before each dial, whether client may reach
// endpoint through the proxy over proto ("TCP" or "UDP"): the proxy dials
// from the host, so the node's network policy (cluster/netpol) sees the
// host, not the client pod, and must be asked here instead. An error
// skips the endpoint for that connection or UDP session; with every
// endpoint skipped, a TCP client is reset. Nil allows every client.
type ClientAccess func(client netip.Addr, endpoint netip.AddrPort, proto string) error

type clientKey struct{}

// withClient records the client's address for checkClient.
func withClient(ctx context.Context, addr net.Addr) context.Context {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return context.WithValue(ctx, clientKey{}, ap.Addr().Unmap())
}

// checkClient asks Config.Access about the client withClient recorded.
// A dial with no client recorded is not checked.
func (p *Proxy) checkClient(ctx context.Context, endpoint netip.AddrPort, network string) error {
	client, ok := ctx.Value(clientKey{}).(netip.Addr)
	if p.cfg.Access == nil || !ok {
		return nil
	}
	proto := "TCP"
	if network == "udp" {
		proto = "UDP"
	}
	return p.cfg.Access(client, endpoint, proto)
}
