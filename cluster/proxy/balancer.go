package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"
)

// ErrNoEndpoints is returned when a service port has no endpoints to dial.
var ErrNoEndpoints = errors.New("proxy: service has no endpoints")

// balancer spreads the connections of one service port over its endpoints,
// round robin, and fails over: a dial that fails moves on to the next
// endpoint, and the failed one is quarantined, tried only after every
// healthy one, until quarantine ends or a dial to it succeeds.
type balancer struct {
	name       string // "ns/svc:port", for errors and logs
	timeout    time.Duration
	quarantine time.Duration
	allow      func(ctx context.Context, network, service, endpoint string) error // checked before each dial; nil allows all

	mu        sync.Mutex
	endpoints []string             // host:port, sorted
	next      int                  // round-robin cursor into endpoints
	failed    map[string]time.Time // endpoint → end of its quarantine
}

func newBalancer(name string, timeout, quarantine time.Duration, allow func(ctx context.Context, network, service, endpoint string) error) *balancer {
	return &balancer{name: name, timeout: timeout, quarantine: quarantine, allow: allow, failed: map[string]time.Time{}}
}

// set replaces the endpoints. Connections already made are not touched.
func (b *balancer) set(eps []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Equal(eps, b.endpoints) {
		return
	}
	b.endpoints = eps
	for ep := range b.failed {
		if !slices.Contains(eps, ep) {
			delete(b.failed, ep)
		}
	}
	if b.next >= len(eps) {
		b.next = 0
	}
}

// order is the sequence of endpoints one connection tries: healthy ones
// from the cursor on, then quarantined ones as a last resort. The cursor
// moves past the first choice, so a quarantined endpoint's share goes to
// the healthy ones evenly instead of all to its successor.
func (b *balancer) order(now time.Time) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.endpoints)
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	var later []string
	first := -1
	for i := range n {
		j := (b.next + i) % n
		ep := b.endpoints[j]
		if until, ok := b.failed[ep]; ok && now.Before(until) {
			later = append(later, ep)
			continue
		}
		if first < 0 {
			first = j
		}
		out = append(out, ep)
	}
	if first < 0 {
		first = b.next % n
	}
	b.next = (first + 1) % n
	return append(out, later...)
}

func (b *balancer) fail(ep string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if slices.Contains(b.endpoints, ep) {
		b.failed[ep] = time.Now().Add(b.quarantine)
	}
}

func (b *balancer) recovered(ep string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.failed, ep)
}

// dial connects to the next endpoint that answers, trying each at most
// once with the dial timeout. It returns the endpoint it reached. An
// endpoint allow refuses is skipped, and not quarantined: refusal is not
// a fault of its health, and is asked again at every dial.
func (b *balancer) dial(ctx context.Context, network string) (net.Conn, string, error) {
	eps := b.order(time.Now())
	if len(eps) == 0 {
		return nil, "", fmt.Errorf("%s: %w", b.name, ErrNoEndpoints)
	}
	d := net.Dialer{Timeout: b.timeout}
	var errs []error
	for _, ep := range eps {
		if b.allow != nil {
			if err := b.allow(ctx, network, b.name, ep); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		c, err := d.DialContext(ctx, network, ep)
		if err == nil {
			b.recovered(ep)
			return c, ep, nil
		}
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("proxy: %s: %w", b.name, ctx.Err())
		}
		b.fail(ep)
		errs = append(errs, err)
	}
	return nil, "", fmt.Errorf("proxy: %s: every endpoint failed: %w", b.name, errors.Join(errs...))
}
