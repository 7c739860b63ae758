package proxy

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxDatagram is the largest UDP payload over IPv4 or IPv6 without jumbograms.
const maxDatagram = 65535

// udpPort relays the datagrams of one UDP service port. Each client
// address gets a session: a socket connected to one endpoint, chosen when
// the session starts, whose replies are sent back to the client from the
// service address. A session ends after idle (no datagram either way), or
// when its endpoint answers with ICMP port unreachable; the client's next
// datagram then starts a session on another endpoint.
type udpPort struct {
	p    *Proxy
	conn *net.UDPConn
	lb   *balancer
	idle time.Duration

	mu       sync.Mutex
	closed   bool
	sessions map[netip.AddrPort]*udpSession
}

type udpSession struct {
	backend *net.UDPConn
	ep      string
	last    atomic.Int64 // UnixNano of the last datagram either way
}

func (u *udpPort) serve() {
	defer u.p.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error on an unconnected socket
		}
		u.forward(client, buf[:n])
	}
}

// forward sends one client datagram on the client's session, starting one
// if needed. A session found dead on write (its endpoint refused, or it
// just timed out) is replaced once.
func (u *udpPort) forward(client netip.AddrPort, pkt []byte) {
	for range 2 {
		s, err := u.session(client)
		if err != nil {
			slog.Debug("proxy: datagram dropped", "service", u.lb.name, "client", client, "err", err)
			return
		}
		s.last.Store(time.Now().UnixNano())
		if _, err := s.backend.Write(pkt); err == nil {
			return
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			u.lb.fail(s.ep)
		}
		u.end(client, s)
	}
}

func (u *udpPort) session(client netip.AddrPort) (*udpSession, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return nil, net.ErrClosed
	}
	if s, ok := u.sessions[client]; ok {
		return s, nil
	}
	// Dialing UDP only sets the socket's peer; it fails only on bad
	// addresses, so failover happens when the endpoint refuses a datagram.
	c, ep, err := u.lb.dial(withClient(u.p.ctx, net.UDPAddrFromAddrPort(client)), "udp")
	if err != nil {
		return nil, err
	}
	s := &udpSession{backend: c.(*net.UDPConn), ep: ep}
	s.last.Store(time.Now().UnixNano())
	u.sessions[client] = s
	u.p.wg.Add(1)
	go u.replies(client, s)
	return s, nil
}

// end removes s if it is still the client's session, and closes it.
func (u *udpPort) end(client netip.AddrPort, s *udpSession) {
	u.mu.Lock()
	if u.sessions[client] == s {
		delete(u.sessions, client)
	}
	u.mu.Unlock()
	s.backend.Close()
}

// replies relays the endpoint's datagrams to the client until the session
// is idle, refused or closed.
func (u *udpPort) replies(client netip.AddrPort, s *udpSession) {
	defer u.p.wg.Done()
	defer u.end(client, s)
	buf := make([]byte, maxDatagram)
	for {
		s.backend.SetReadDeadline(time.Unix(0, s.last.Load()).Add(u.idle))
		n, err := s.backend.Read(buf)
		switch {
		case err == nil:
			s.last.Store(time.Now().UnixNano())
			if _, err := u.conn.WriteToUDPAddrPort(buf[:n], client); err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
		case errors.Is(err, syscall.ECONNREFUSED):
			slog.Debug("proxy: endpoint refused a datagram", "service", u.lb.name, "endpoint", s.ep)
			u.lb.fail(s.ep)
			return
		case isTimeout(err):
			if time.Since(time.Unix(0, s.last.Load())) >= u.idle {
				return
			}
		default:
			return
		}
	}
}

// close stops the port: the socket and every session.
func (u *udpPort) close() {
	u.mu.Lock()
	u.closed = true
	sessions := u.sessions
	u.sessions = map[netip.AddrPort]*udpSession{}
	u.mu.Unlock()
	u.conn.Close()
	for _, s := range sessions {
		s.backend.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
