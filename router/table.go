package router

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"slipway.dev/slipway/api"
)

// table is one immutable routing state. The router builds a new table on
// every change of routes or endpoints and swaps it in atomically: a
// request or connection uses the table it started with, so nothing is
// reloaded and no connection is dropped.
type table struct {
	hosts map[string]*host // lower-case host name
}

// host is everything served for one host name.
type host struct {
	passthrough *route   // a passthrough route owns the host's TLS
	routes      []*route // HTTP routes, longest path first
	cert        *tls.Certificate
}

// route is one admitted route, ready to serve.
type route struct {
	key, ns, name string
	path          string
	tls           *api.TLSConfig // nil: plain HTTP
	backends      []*backend
	total         int32 // sum of the weights of backends with endpoints
	transport     http.RoundTripper
	serverName    string // what a reencrypt route expects the pod's certificate to name
	metrics       atomic.Pointer[routeMetrics]
}

// backend is one service of a route with its ready endpoint addresses.
type backend struct {
	service string
	weight  int32
	addrs   []string // ip:port
	next    *atomic.Uint32
}

// pick chooses a backend by weight, then an endpoint round robin.
func (r *route) pick() pick {
	if r.total <= 0 {
		return pick{}
	}
	n := rand.Int32N(r.total)
	for _, b := range r.backends {
		if len(b.addrs) == 0 || b.weight == 0 {
			continue
		}
		if n >= b.weight {
			n -= b.weight
			continue
		}
		return pick{route: r, b: b, i: int(b.next.Add(1)) % len(b.addrs)}
	}
	return pick{}
}

// pick is one request's or connection's choice: a route's backend and
// one of its endpoints. Its other endpoints are the failover, in order.
type pick struct {
	route *route
	b     *backend
	i     int
}

func (p pick) addr() string {
	if p.b == nil {
		return ""
	}
	return p.b.addrs[p.i]
}

// others are the backend's endpoints after the chosen one, wrapping.
func (p pick) others() []string {
	if p.b == nil {
		return nil
	}
	return append(append([]string(nil), p.b.addrs[p.i+1:]...), p.b.addrs[:p.i]...)
}

// match finds the route for a request's host and path.
func (t *table) match(hostName, path string) *route {
	h := t.hosts[hostName]
	if h == nil {
		return nil
	}
	for _, r := range h.routes {
		if pathMatches(r.path, path) {
			return r
		}
	}
	return nil
}

// pathMatches is prefix matching on whole segments: /api matches /api and
// /api/x, not /apix.
func pathMatches(prefix, path string) bool {
	if prefix == "" || prefix == "/" || path == prefix {
		return true
	}
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(path, prefix)
	}
	return strings.HasPrefix(path, prefix+"/")
}

// builder makes tables; it keeps what is worth keeping across tables
// (round-robin counters, reencrypt transports with their connections,
// parsed certificates).
type builder struct {
	plain      http.RoundTripper
	reencrypt  func(pool *x509.CertPool, serverName string) http.RoundTripper
	counters   map[string]*atomic.Uint32
	transports map[string]http.RoundTripper // dest CA PEM + server name
	certs      map[string]*tls.Certificate  // cert + key PEM
}

func (b *builder) build(routes []*api.Route, verdicts map[string]Verdict, endpoints func(ns, name string) *api.Endpoints) *table {
	t := &table{hosts: map[string]*host{}}
	counters := map[string]*atomic.Uint32{}
	transports := map[string]http.RoundTripper{}
	certs := map[string]*tls.Certificate{}
	for _, ar := range routes {
		if !verdicts[routeKey(ar)].Admitted {
			continue
		}
		hn := strings.ToLower(ar.Spec.Host)
		h := t.hosts[hn]
		if h == nil {
			h = &host{}
			t.hosts[hn] = h
		}
		r := &route{key: routeKey(ar), ns: ar.Namespace, name: ar.Name, path: ar.Spec.Path, tls: ar.Spec.TLS, transport: b.plain}
		refs := append([]api.RouteTargetReference{ar.Spec.To}, ar.Spec.AlternateBackends...)
		for _, ref := range refs {
			be := &backend{service: ref.Name, weight: api.RouteWeight(ref)}
			ck := r.key + " " + ref.Name
			if be.next = b.counters[ck]; be.next == nil {
				be.next = new(atomic.Uint32)
			}
			counters[ck] = be.next
			if ep := endpoints(ar.Namespace, ref.Name); ep != nil {
				be.addrs = addresses(ep, ar.Spec.Port)
			}
			if len(be.addrs) > 0 {
				r.total += be.weight
			}
			r.backends = append(r.backends, be)
		}
		if tc := ar.Spec.TLS; tc != nil {
			if tc.Certificate != "" && tc.Key != "" {
				pair := tc.Certificate + "\n" + tc.CACertificate + "\x00" + tc.Key
				c := b.certs[pair]
				if c == nil {
					kp, err := tls.X509KeyPair([]byte(tc.Certificate+"\n"+tc.CACertificate), []byte(tc.Key))
					if err != nil {
						slog.Warn("router: route's certificate does not load; serving the default certificate", "route", r.key, "err", err)
					} else {
						c = &kp
					}
				}
				if c != nil {
					certs[pair] = c
					if h.cert == nil || ar.Spec.Path == "" {
						h.cert = c
					}
				}
			}
			if tc.Termination == api.TLSTerminationReencrypt {
				r.serverName = ar.Spec.To.Name + "." + ar.Namespace + ".svc"
				tk := tc.DestinationCACertificate + "\x00" + r.serverName
				tr := b.transports[tk]
				if tr == nil {
					pool := x509.NewCertPool()
					pool.AppendCertsFromPEM([]byte(tc.DestinationCACertificate))
					tr = b.reencrypt(pool, r.serverName)
				}
				transports[tk] = tr
				r.transport = tr
			}
			if tc.Termination == api.TLSTerminationPassthrough {
				h.passthrough = r
				continue
			}
		}
		h.routes = append(h.routes, r)
	}
	for _, h := range t.hosts {
		sort.SliceStable(h.routes, func(i, j int) bool { return len(h.routes[i].path) > len(h.routes[j].path) })
	}
	// Transports no route uses any more let their idle connections go.
	for k, tr := range b.transports {
		if _, ok := transports[k]; !ok {
			if c, ok := tr.(interface{ CloseIdleConnections() }); ok {
				c.CloseIdleConnections()
			}
		}
	}
	b.counters, b.transports, b.certs = counters, transports, certs
	return t
}

// addresses lists ip:port for the route's port: a service port named by
// port.targetPort (by name, port or target port number), else the first.
func addresses(ep *api.Endpoints, port *api.RoutePort) []string {
	var out []string
	for _, sub := range ep.Subsets {
		var target int32
		for i, p := range sub.Ports {
			tp := p.TargetPort
			if tp == 0 {
				tp = p.Port
			}
			if port == nil || port.TargetPort == "" {
				if i == 0 {
					target = tp
				}
				continue
			}
			if n, err := strconv.Atoi(port.TargetPort); err == nil {
				if int32(n) == tp || int32(n) == p.Port {
					target = tp
					break
				}
			} else if p.Name == port.TargetPort {
				target = tp
				break
			}
		}
		if target == 0 {
			continue
		}
		for _, a := range sub.Addresses {
			out = append(out, net.JoinHostPort(a.IP, strconv.Itoa(int(target))))
		}
	}
	return out
}
