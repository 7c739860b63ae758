package registry

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Foreign layers. The OCI spec lets a non-distributable layer name URLs
// where its content lives instead of the registry. Whoever reads such an
// image fetches them: the scanner inside the server, Docker on every node,
// BuildKit. So a pusher could aim the platform at internal addresses. The
// registry accepts URLs only on non-distributable layers, only https, and
// only to names and addresses that can be public; the platform's own
// readers go further and never fetch them (RegistryOnlyTransport). A name
// that resolves inside is not caught here (DNS can change after the push);
// that is what the transport is for.

var nonDistributable = map[string]bool{
	v1.MediaTypeImageLayerNonDistributable:                      true, //nolint:staticcheck // deprecated, still in use
	v1.MediaTypeImageLayerNonDistributableGzip:                  true, //nolint:staticcheck
	v1.MediaTypeImageLayerNonDistributableZstd:                  true, //nolint:staticcheck
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": true,
	"application/vnd.docker.image.rootfs.foreign.diff.tar":      true,
}

// internalSuffixes are DNS names that only ever resolve inside a network.
var internalSuffixes = []string{".localhost", ".local", ".internal", ".lan", ".home.arpa", ".intranet", ".corp", ".svc", ".cluster.local"}

// checkForeign refuses references whose URLs the platform must not be
// pointed at.
func checkForeign(refs []v1.Descriptor) error {
	for _, d := range refs {
		if len(d.URLs) == 0 {
			continue
		}
		if !nonDistributable[d.MediaType] {
			return errcode.ErrorCodeManifestInvalid.WithMessage(fmt.Sprintf("layer %s (%s) lists URLs; only non-distributable layers may, and this registry serves every other layer itself: push it without urls", d.Digest, trunc(d.MediaType)))
		}
		for _, u := range d.URLs {
			if err := publicURL(u); err != nil {
				return errcode.ErrorCodeManifestInvalid.WithMessage(fmt.Sprintf("layer %s: foreign URL %q refused: %v; push the layer's content instead (for Docker, allow-nondistributable-artifacts for this registry)", d.Digest, trunc(u), err))
			}
		}
	}
	return nil
}

// publicURL accepts https URLs to a public-looking host on the default
// port, without credentials.
func publicURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("it does not parse")
	case u.Scheme != "https":
		return fmt.Errorf("only https URLs are accepted")
	case u.User != nil:
		return fmt.Errorf("it carries credentials")
	case u.Port() != "" && u.Port() != "443":
		return fmt.Errorf("only the default https port is accepted")
	case u.Opaque != "" || u.Fragment != "":
		return fmt.Errorf("it is not a plain URL")
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		if internalAddr(ip) {
			return fmt.Errorf("%s is an internal address", ip)
		}
		return nil
	}
	labels := strings.Split(host, ".")
	tld := labels[len(labels)-1]
	if len(labels) < 2 || host == "localhost" || strings.Trim(tld, "0123456789") == "" || strings.HasPrefix(tld, "0x") {
		// One label, or a last label of digits or 0x hex: names that
		// resolve on a local network, or that inet_aton reads as an IPv4
		// address (0x7f.1, 127.1, 2130706433).
		return fmt.Errorf("%q is not a public host name", host)
	}
	for _, s := range internalSuffixes {
		if strings.HasSuffix(host, s) {
			return fmt.Errorf("%q is an internal host name", host)
		}
	}
	for _, l := range labels {
		if l == "" || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return fmt.Errorf("%q is not a host name", host)
		}
	}
	return nil
}

// sharedBase is one clone of the default transport, so that wrapping it
// per request does not open a connection pool each time.
var sharedBase = sync.OnceValue(func() http.RoundTripper { return http.DefaultTransport.(*http.Transport).Clone() })

// RegistryOnlyTransport wraps base (nil: a clone of the default) so that
// requests go only to host, this registry: the platform's readers of
// images (the scanner) then fail on a foreign layer instead of fetching its
// URL from inside the platform.
func RegistryOnlyTransport(host string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = sharedBase()
	}
	return registryOnly{host: host, base: base}
}

type registryOnly struct {
	host string
	base http.RoundTripper
}

func (r registryOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if !sameHost(req.URL.Host, r.host) {
		return nil, fmt.Errorf("registry: %s is not this registry (%s); foreign layers are not fetched", req.URL.Host, r.host)
	}
	return r.base.RoundTrip(req)
}

func sameHost(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil {
		return strings.EqualFold(a, b)
	}
	return strings.EqualFold(ha, hb) && pa == pb
}
