package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/store"
)

// Imports copy images from external registries into a project. Every
// outgoing request — to the registry, to its token realm, and to every
// redirect — must name an allowed host, and every connection must go to an
// address that is not loopback, link-local, private or otherwise internal,
// unless an allowed CIDR says so. The address check happens at connect time,
// after DNS, so a name that resolves to an internal address is refused too.

// ImportPolicy says where imports may come from.
type ImportPolicy struct {
	// Registries are the hosts imports may contact: "quay.io",
	// "registry.example.com:5000", or "*.example.com". Empty allows none.
	Registries []string
	// CIDRs are internal address ranges that may be dialled anyway, such
	// as 127.0.0.0/8 for a registry on this machine.
	CIDRs []netip.Prefix
	// Interval is how often scheduled imports run. Default 15 minutes.
	Interval time.Duration
}

var errImportDenied = errors.New("registry: import destination not allowed")

func (p ImportPolicy) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	for _, a := range p.Registries {
		switch {
		case a == hostport, a == host:
			return true
		case strings.HasPrefix(a, "*.") && strings.HasSuffix(host, a[1:]):
			return true
		}
	}
	return false
}

func (p ImportPolicy) addrAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, c := range p.CIDRs {
		if c.Contains(ip) {
			return true
		}
	}
	return !internalAddr(ip)
}

// internalRanges are special-purpose ranges (RFC 6890 and successors) that
// netip's predicates do not cover but that never hold a public registry.
var internalRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"; Linux dials 0.x as local
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT, often cloud metadata
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking, used inside networks
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
}

// internalAddr reports whether ip is loopback, private, link-local,
// multicast, unspecified or special-purpose, looking inside the IPv6 forms
// that carry an IPv4 address: NAT64 (64:ff9b::/96 and the local-use
// 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32, whose client
// address is stored inverted) and IPv4-compatible (::a.b.c.d).
func internalAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range internalRanges {
		if p.Contains(ip) {
			return true
		}
	}
	if !ip.Is6() {
		return false
	}
	b := ip.As16()
	var v4 [4]byte
	switch {
	case netip.MustParsePrefix("64:ff9b::/96").Contains(ip), netip.MustParsePrefix("64:ff9b:1::/48").Contains(ip):
		copy(v4[:], b[12:])
	case netip.MustParsePrefix("2002::/16").Contains(ip):
		copy(v4[:], b[2:6])
	case netip.MustParsePrefix("2001::/32").Contains(ip):
		for i := range v4 {
			v4[i] = b[12+i] ^ 0xff
		}
	case netip.MustParsePrefix("::/96").Contains(ip):
		copy(v4[:], b[12:])
	default:
		return false
	}
	return internalAddr(netip.AddrFrom4(v4))
}

// guardedTransport enforces the policy on every request and connection.
type guardedTransport struct {
	policy ImportPolicy
	base   *http.Transport
}

func newGuardedTransport(p ImportPolicy, insecure bool) *guardedTransport {
	d := &net.Dialer{Timeout: 15 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: cannot parse %s", errImportDenied, address)
		}
		if !p.addrAllowed(ap.Addr()) {
			return fmt.Errorf("%w: %s is an internal address; an admin must allow its range", errImportDenied, ap.Addr())
		}
		return nil
	}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		MaxIdleConnsPerHost:   8,
	}
	if insecure {
		tr.TLSClientConfig = insecureTLS()
	}
	return &guardedTransport{policy: p, base: tr}
}

func (g *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !g.policy.hostAllowed(req.URL.Host) {
		return nil, fmt.Errorf("%w: %s is not on the import allow-list; an admin can add it with --import-allow", errImportDenied, req.URL.Host)
	}
	return g.base.RoundTrip(req)
}

// GuardedTransport is the transport imports use, for other fetchers of
// outside content (git sources of builds): every host must be allowed, and
// every address dialled must not be internal unless allowed.
func GuardedTransport(p ImportPolicy, insecure bool) http.RoundTripper {
	return newGuardedTransport(p, insecure)
}

// importTag brings the image REF names into is:tag and moves the tag.
func (r *Registry) importTag(ctx context.Context, is *api.ImageStream, t api.TagReference) error {
	opts := []name.Option{}
	if t.ImportPolicy.Insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(t.From.Name, opts...)
	if err != nil {
		return r.tagCondition(ctx, is, t.Name, "InvalidImageName", fmt.Sprintf("%q is not an image reference: %v", t.From.Name, err))
	}
	tr := newGuardedTransport(r.cfg.Import, t.ImportPolicy.Insecure)
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr), remote.WithAuth(authn.Anonymous)}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return r.tagCondition(ctx, is, t.Name, "ImportFailed", importMessage(ref, err))
	}
	dgst := desc.Digest.String()
	if cur, ok := imagestreams.Latest(is, t.Name); ok && cur.Image == dgst {
		r.setCondition(ctx, is, t.Name, "True", "UpToDate", t.From.Name+" has not changed")
		return nil
	}
	if err := r.storeRemote(ctx, is.Namespace+"/"+is.Name, ref, desc, ropts, 0); err != nil {
		return r.tagCondition(ctx, is, t.Name, "ImportFailed", importMessage(ref, err))
	}
	by := t.Annotations[TaggedByAnnotation]
	if _, err = r.recorder.MoveTag(ctx, is.Namespace, is.Name, t.Name, dgst, by, func() error { return nil }); err != nil {
		return err
	}
	r.setCondition(ctx, is, t.Name, "True", "Imported", "imported "+t.From.Name)
	return nil
}

func importMessage(ref name.Reference, err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, errImportDenied):
		return msg
	case strings.Contains(msg, "http: server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("%s serves plain HTTP only; import with --insecure if you trust the network", ref.Context().RegistryStr())
	}
	return fmt.Sprintf("importing %s: %s", ref, msg)
}

// storeRemote writes a remote manifest, its blobs and (for an index) its
// children into repository repo, and records the Image.
func (r *Registry) storeRemote(ctx context.Context, repo string, ref name.Reference, desc *remote.Descriptor, ropts []remote.Option, depth int) error {
	if depth > 4 {
		return errors.New("index nesting is too deep")
	}
	if r.ns == nil {
		return errors.New("registry storage is not ready")
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return err
	}
	dr, err := r.ns.Repository(ctx, named)
	if err != nil {
		return err
	}
	var config []byte
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		for _, m := range im.Manifests {
			child, err := remote.Get(ref.Context().Digest(m.Digest.String()), ropts...)
			if err != nil {
				return err
			}
			if err := r.storeRemote(ctx, repo, ref, child, ropts, depth+1); err != nil {
				return err
			}
		}
	} else {
		img, err := desc.Image()
		if err != nil {
			return err
		}
		if config, err = img.RawConfigFile(); err != nil {
			return err
		}
		cd, err := img.ConfigName()
		if err != nil {
			return err
		}
		mf, err := img.Manifest()
		if err != nil {
			return err
		}
		// The project's registry.bytes quota, as for a push of it, before
		// a byte is stored.
		rec, err := imagestreams.ImageFromManifest(desc.Digest.String(), string(desc.MediaType), desc.Manifest, config)
		if err != nil {
			return err
		}
		set := map[string]int64{}
		store.ImageBlobs(rec, set)
		project, stream, _ := strings.Cut(repo, "/")
		if err := r.checkProjectBytes(ctx, project, stream, set, nil); err != nil {
			if why, ok := quotaDenied(err); ok {
				return errors.New(why)
			}
			return err
		}
		if err := putBlob(ctx, dr, cd, int64(len(config)), string(mf.Config.MediaType), io.NopCloser(strings.NewReader(string(config)))); err != nil {
			return err
		}
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		refs := make([]v1.Descriptor, 0, len(mf.Layers))
		for _, l := range mf.Layers {
			refs = append(refs, v1.Descriptor{Digest: digest.Digest(l.Digest.String()), MediaType: string(l.MediaType), URLs: l.URLs})
		}
		if err := checkForeign(refs); err != nil {
			return err
		}
		for i, l := range layers {
			if len(mf.Layers[i].URLs) > 0 {
				continue // non-distributable: not ours to copy
			}
			d, err := l.Digest()
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			err = putBlob(ctx, dr, d, mf.Layers[i].Size, string(mf.Layers[i].MediaType), rc)
			if err != nil {
				return err
			}
		}
	}
	man, _, err := distribution.UnmarshalManifest(string(desc.MediaType), desc.Manifest)
	if err != nil {
		return err
	}
	ms, err := dr.Manifests(ctx)
	if err != nil {
		return err
	}
	img, err := imagestreams.ImageFromManifest(desc.Digest.String(), string(desc.MediaType), desc.Manifest, config)
	if err != nil {
		return err
	}
	imagestreams.BoundImageMetadata(img)
	got, err := ms.Put(ctx, man)
	if err != nil {
		return err
	}
	if got.String() != desc.Digest.String() {
		return fmt.Errorf("stored manifest has digest %s, the source says %s", got, desc.Digest)
	}
	project, stream, _ := strings.Cut(repo, "/")
	img.DockerImageReference = r.recorder.Reference(project, stream, got.String())
	return r.recorder.RecordImage(ctx, project, img)
}

// putBlob streams one blob into a repository unless it is already linked
// there; distribution verifies the digest on commit.
func putBlob(ctx context.Context, repo distribution.Repository, h ggcrv1.Hash, size int64, mediaType string, rc io.ReadCloser) error {
	defer rc.Close()
	d := digest.Digest(h.String())
	bs := repo.Blobs(ctx)
	if _, err := bs.Stat(ctx, d); err == nil {
		return nil
	}
	w, err := bs.Create(ctx)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, rc); err != nil {
		_ = w.Cancel(ctx)
		return err
	}
	_, err = w.Commit(ctx, v1.Descriptor{Digest: d, Size: size, MediaType: mediaType})
	return err
}

// expandImportAll adds a spec tag for every tag of an external repository
// that the stream does not have yet; each is then imported on its own.
func (r *Registry) expandImportAll(ctx context.Context, is *api.ImageStream, src string) error {
	insecure := is.Annotations[ImportAllAnnotation+"-insecure"] == "true"
	opts := []name.Option{}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(src, opts...)
	if err != nil {
		return r.tagCondition(ctx, is, "(all)", "InvalidImageName", fmt.Sprintf("%q is not a repository: %v", src, err))
	}
	tags, err := remote.List(repo, remote.WithContext(ctx), remote.WithTransport(newGuardedTransport(r.cfg.Import, insecure)))
	if err != nil {
		return r.tagCondition(ctx, is, "(all)", "ImportFailed", importMessage(repo.Tag("latest"), err))
	}
	have := map[string]bool{}
	for _, t := range is.Spec.Tags {
		have[t.Name] = true
	}
	var add []api.TagReference
	for _, t := range tags {
		if !have[t] && len(api.ValidateTagName(t)) == 0 {
			add = append(add, api.TagReference{Name: t, From: &api.ObjectReference{Kind: "DockerImage", Name: src + ":" + t},
				ImportPolicy: api.TagImportPolicy{Insecure: insecure}, Annotations: map[string]string{TaggedByAnnotation: is.Annotations[TaggedByAnnotation]}})
		}
	}
	if len(add) == 0 {
		return nil
	}
	_, err = r.cfg.Store.GuaranteedUpdate(ctx, api.ImageStreams, is.Namespace, is.Name, store.UpdateOptions{}, func(o api.Object) error {
		s := o.(*api.ImageStream)
		names := map[string]bool{}
		for _, t := range s.Spec.Tags {
			names[t.Name] = true
		}
		for _, t := range add {
			if !names[t.Name] {
				s.Spec.Tags = append(s.Spec.Tags, t)
			}
		}
		return nil
	})
	return err
}
