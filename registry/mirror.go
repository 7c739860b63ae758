package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"slipway.dev/slipway/identity"
)

// Pull-through mirrors. A mirror is a repository namespace: the first
// component of 127.0.0.1:5000/docker.io/library/x names a configured
// upstream (docker.io), the rest its repository there (library/x). Project
// names are DNS labels and have no dots; a mirror's name must have one, so
// the two never meet.
//
// Who: any signed-in user (or service account) may pull through a mirror
// and so make it fetch; anonymous requests are challenged, because nothing
// on the platform is public unless someone made it so. Nobody may push,
// tag or delete there (DENIED): the content is the upstream's.
//
// What: a manifest by tag is asked of the upstream each time (a HEAD) and
// served from the cache when the upstream cannot be reached; a manifest
// by digest, a blob or a referrer is fetched once, on first request, and
// kept in registry storage, where garbage collection sees the mirror's
// manifests as roots like any repository's. Manifest bytes are stored as
// the upstream served them, so digests (and signatures over them, cosign's
// sha256-DIGEST.sig tags and OCI referrers) are the upstream's.
//
// Why not distribution's registry/proxy: it dials through
// http.DefaultTransport, with no way to pass another, so its requests
// would bypass the import guard; and it serves a whole registry under the
// upstream's names, where Slipway serves projects with a mirror beside
// them. Every upstream request here goes through the same guarded
// transport as import-image (importer.go): the host must be on the
// allow-list and the address must not be internal unless a CIDR allows it.

// Mirror is one upstream registry served through the integrated registry.
type Mirror struct {
	// Name is the first component of the mirror's repositories: a
	// registry host name, which must contain a dot, such as "docker.io".
	Name string
	// URL is the upstream, http:// or https:// and a host, without a
	// path: "https://registry-1.docker.io".
	URL string
}

// ParseMirror reads NAME=URL, the form of `slipway start --mirror`.
func ParseMirror(s string) (Mirror, error) {
	n, u, ok := strings.Cut(s, "=")
	if !ok {
		return Mirror{}, fmt.Errorf("registry: mirror %q is not NAME=URL, such as docker.io=https://registry-1.docker.io", s)
	}
	m := Mirror{Name: n, URL: u}
	_, err := m.upstream()
	return m, err
}

// upstream checks the mirror and returns its upstream URL.
func (m Mirror) upstream() (*url.URL, error) {
	if !nameComponent.MatchString(m.Name) || !strings.Contains(m.Name, ".") || len(m.Name) > 63 {
		return nil, fmt.Errorf("registry: mirror name %q must be a registry host name with a dot, such as docker.io (lower-case letters, digits, '.', '-'); project names have no dots, so it never shadows a project", m.Name)
	}
	u, err := url.Parse(m.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("registry: mirror %s: upstream %q must be https://HOST[:PORT] (or http:// for a plain-HTTP registry), without a path or credentials", m.Name, m.URL)
	}
	return u, nil
}

// ValidateMirrors checks mirrors against the import policy: names are
// well formed and distinct, and every upstream host is on the allow-list,
// since the mirror dials it through the import guard.
func ValidateMirrors(ms []Mirror, p ImportPolicy) error {
	seen := map[string]bool{}
	for _, m := range ms {
		u, err := m.upstream()
		if err != nil {
			return err
		}
		if seen[m.Name] {
			return fmt.Errorf("registry: mirror %s is configured twice", m.Name)
		}
		seen[m.Name] = true
		if !p.hostAllowed(u.Host) {
			return fmt.Errorf("registry: mirror %s: the upstream host %s is not on the import allow-list; add --import-allow %s (and the host of its token realm, if it has one; an internal address also needs --import-allow-cidr)", m.Name, u.Host, u.Host)
		}
	}
	return nil
}

// mirror is a configured Mirror, ready to fetch.
type mirror struct {
	Mirror
	registry name.Registry
	opts     []remote.Option
	flight   singleflight.Group // one fetch per manifest or blob at a time
}

func newMirror(m Mirror, p ImportPolicy) (*mirror, error) {
	u, err := m.upstream()
	if err != nil {
		return nil, err
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nopts...)
	if err != nil {
		return nil, fmt.Errorf("registry: mirror %s: %w", m.Name, err)
	}
	tr := newGuardedTransport(p, false)
	return &mirror{Mirror: m, registry: reg, opts: []remote.Option{remote.WithTransport(tr), remote.WithAuth(authn.Anonymous)}}, nil
}

// mirrorFor returns the mirror that serves repository repo, if any.
func (r *Registry) mirrorFor(repo string) (*mirror, bool) {
	first, _, _ := strings.Cut(repo, "/")
	m, ok := r.mirrors[first]
	return m, ok
}

// upstreamRepo is repo's name at the upstream. Docker Hub keeps official
// images under library/, which clients add for it: docker.io/alpine is
// library/alpine there.
func (m *mirror) upstreamRepo(repo string) name.Repository {
	_, rest, _ := strings.Cut(repo, "/")
	if m.Name == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	return m.registry.Repo(rest)
}

func (m *mirror) remote(ctx context.Context) []remote.Option {
	return append([]remote.Option{remote.WithContext(ctx)}, m.opts...)
}

// serveMirror answers a request for a mirror's repository: signed-in
// readers only, reads only; what is not cached is fetched first, then
// distribution serves it from storage.
func (r *Registry) serveMirror(w http.ResponseWriter, req *http.Request, rt route, m *mirror, who identity.Info, tok *claims) {
	if who.IsAnonymous() {
		r.challenge(w, req, rt, "", fmt.Sprintf("authentication required: the mirror %s serves signed-in users only; log in with a Slipway token", m.Name))
		return
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		ociErr(http.StatusForbidden, "DENIED", "%s is in the pull-through mirror of %s, which is read-only: push to a project's repository (PROJECT/NAME) instead", rt.name, m.URL).write(w)
		return
	}
	if tok != nil && !tok.allows("repository", rt.name, "pull") {
		r.deny(w, req, rt, who, fmt.Sprintf("requested access to the resource is denied: this registry token does not grant pull of %s; ask /v2/token for it", rt.name))
		return
	}
	if strings.HasPrefix(rt.reference, "sha512:") {
		ociErr(http.StatusBadRequest, "UNSUPPORTED", "the mirror %s serves sha256 digests only", m.Name).write(w)
		return
	}
	// A fetch is shared by every request for the same object, so it
	// outlives the request that started it (bounded by fetchTimeout).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), fetchTimeout)
	defer cancel()
	var err error
	switch rt.kind {
	case "manifests":
		err = r.mirrorManifest(ctx, m, rt.name, rt.reference)
	case "blobs":
		err = r.mirrorBlob(ctx, m, rt.name, digest.Digest(rt.reference))
	case "referrers":
		r.mirrorReferrers(ctx, m, rt.name, digest.Digest(rt.reference))
		r.serveReferrers(w, req, rt)
		return
	}
	var oe *ociError
	if errors.As(err, &oe) {
		oe.write(w)
		return
	}
	if err != nil {
		ociErr(http.StatusInternalServerError, "UNKNOWN", "mirror %s: storing %s: %v", m.Name, rt.name, err).write(w)
		return
	}
	ctx = identity.WithInfo(req.Context(), who)
	ctx = context.WithValue(ctx, responseKey, w)
	r.serveApp(w, req.WithContext(ctx), rt)
}

// fetchTimeout bounds one fetch from an upstream; maxMirrorReferrers
// bounds how many referrers of one subject are fetched.
const (
	fetchTimeout       = 30 * time.Minute
	maxMirrorReferrers = 100
)

func (r *Registry) mirrorRepo(ctx context.Context, repo string) (distribution.Repository, error) {
	if r.ns == nil {
		return nil, errors.New("registry storage is not ready")
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, err
	}
	return r.ns.Repository(ctx, named)
}

// upstreamErr says why the upstream did not answer: a 404 as the spec's
// unknown code, the guard's refusal as DENIED, anything else as
// UNAVAILABLE with nothing cached to fall back on.
func upstreamErr(m *mirror, what, code string, err error) *ociError {
	var te *transport.Error
	switch {
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
		return ociErr(http.StatusNotFound, code, "%s is not in the upstream %s of mirror %s", what, m.URL, m.Name)
	case errors.Is(err, errImportDenied):
		return ociErr(http.StatusForbidden, "DENIED", "mirror %s may not reach its upstream: %v", m.Name, err)
	}
	return ociErr(http.StatusServiceUnavailable, "UNAVAILABLE", "mirror %s cannot reach its upstream %s and has no cached copy of %s: %v; try again later", m.Name, m.URL, what, err)
}

// mirrorManifest makes sure the manifest repo:ref names is in storage,
// and that a tag points where the upstream's does now (or, when the
// upstream cannot say, where it pointed when last asked).
func (r *Registry) mirrorManifest(ctx context.Context, m *mirror, repo, ref string) error {
	dr, err := r.mirrorRepo(ctx, repo)
	if err != nil {
		return err
	}
	ms, err := dr.Manifests(ctx)
	if err != nil {
		return err
	}
	up := m.upstreamRepo(repo)
	if d, err := digest.Parse(ref); err == nil {
		if ok, err := ms.Exists(ctx, d); err != nil || ok {
			return err
		}
		_, err, _ = m.flight.Do(repo+"@"+ref, func() (any, error) { return nil, r.mirrorFetch(ctx, m, dr, up.Digest(ref)) })
		return err
	}
	_, err, _ = m.flight.Do(repo+":"+ref, func() (any, error) {
		desc, err := remote.Head(up.Tag(ref), m.remote(ctx)...)
		if err != nil {
			var te *transport.Error
			if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
				return nil, upstreamErr(m, repo+":"+ref, "MANIFEST_UNKNOWN", err)
			}
			if _, lerr := dr.Tags(ctx).Get(ctx, ref); lerr == nil {
				slog.Warn("registry: mirror serves a cached tag: the upstream did not answer", "mirror", m.Name, "repository", repo, "tag", ref, "err", err)
				return nil, nil
			}
			return nil, upstreamErr(m, repo+":"+ref, "MANIFEST_UNKNOWN", err)
		}
		d := digest.Digest(desc.Digest.String())
		if cur, err := dr.Tags(ctx).Get(ctx, ref); err == nil && cur.Digest == d {
			if ok, _ := ms.Exists(ctx, d); ok {
				return nil, nil
			}
		}
		if ok, _ := ms.Exists(ctx, d); !ok {
			if err := r.mirrorFetch(ctx, m, dr, up.Digest(d.String())); err != nil {
				return nil, err
			}
		}
		return nil, dr.Tags(ctx).Tag(ctx, ref, v1.Descriptor{Digest: d, MediaType: string(desc.MediaType), Size: desc.Size})
	})
	return err
}

// mirrorFetch stores the upstream manifest ref names, byte for byte. Its
// blobs follow when they are asked for. A manifest with a subject is
// recorded as that subject's referrer.
func (r *Registry) mirrorFetch(ctx context.Context, m *mirror, dr distribution.Repository, ref name.Digest) error {
	desc, err := remote.Get(ref, m.remote(ctx)...)
	if err != nil {
		return upstreamErr(m, dr.Named().Name()+"@"+ref.DigestStr(), "MANIFEST_UNKNOWN", err)
	}
	if len(desc.Manifest) > 4<<20 {
		return ociErr(http.StatusBadGateway, "MANIFEST_INVALID", "mirror %s: the upstream's manifest %s is over 4 MiB", m.Name, ref.DigestStr())
	}
	if desc.Digest.String() != ref.DigestStr() {
		return ociErr(http.StatusBadGateway, "MANIFEST_INVALID", "mirror %s: the upstream served %s for %s", m.Name, desc.Digest, ref.DigestStr())
	}
	man, _, err := distribution.UnmarshalManifest(string(desc.MediaType), desc.Manifest)
	if err != nil {
		return ociErr(http.StatusBadGateway, "MANIFEST_INVALID", "mirror %s: the upstream's manifest %s (%s) cannot be stored: %v", m.Name, ref.DigestStr(), desc.MediaType, err)
	}
	if err := checkForeign(man.References()); err != nil {
		return err
	}
	ms, err := dr.Manifests(ctx, storage.SkipLayerVerification())
	if err != nil {
		return err
	}
	got, err := ms.Put(ctx, man)
	if err != nil {
		return err
	}
	if got.String() != ref.DigestStr() {
		return fmt.Errorf("stored manifest has digest %s, the upstream says %s", got, ref.DigestStr())
	}
	var sub struct {
		Subject     *v1.Descriptor    `json:"subject"`
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(desc.Manifest, &sub) == nil && sub.Subject != nil {
		d := v1.Descriptor{MediaType: string(desc.MediaType), Digest: got, Size: int64(len(desc.Manifest)), ArtifactType: artifactType(desc.Manifest), Annotations: sub.Annotations}
		if err := r.refs.add(ctx, dr.Named().Name(), sub.Subject.Digest.String(), d); err != nil {
			return err
		}
	}
	return nil
}

// mirrorBlob makes sure blob d is in repo, fetching it whole from the
// upstream first if it is not; distribution verifies its digest.
func (r *Registry) mirrorBlob(ctx context.Context, m *mirror, repo string, d digest.Digest) error {
	dr, err := r.mirrorRepo(ctx, repo)
	if err != nil {
		return err
	}
	if _, err := dr.Blobs(ctx).Stat(ctx, d); err == nil {
		return nil
	}
	_, err, _ = m.flight.Do(repo+"@blob:"+d.String(), func() (any, error) {
		ref := m.upstreamRepo(repo).Digest(d.String())
		l, err := remote.Layer(ref, m.remote(ctx)...)
		if err != nil {
			return nil, upstreamErr(m, repo+"@"+d.String(), "BLOB_UNKNOWN", err)
		}
		size, err := l.Size()
		if err != nil {
			return nil, upstreamErr(m, repo+"@"+d.String(), "BLOB_UNKNOWN", err)
		}
		h, err := l.Digest()
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, upstreamErr(m, repo+"@"+d.String(), "BLOB_UNKNOWN", err)
		}
		if err := putBlob(ctx, dr, h, size, "application/octet-stream", rc); err != nil {
			return nil, upstreamErr(m, repo+"@"+d.String(), "BLOB_UNKNOWN", err)
		}
		return nil, nil
	})
	return err
}

// mirrorReferrers stores what the upstream lists as subject's referrers
// (its referrers API, or the sha256-DIGEST tag that stands in for it), so
// the local list, served next, has them. An upstream that does not answer
// leaves the list as it was cached.
func (r *Registry) mirrorReferrers(ctx context.Context, m *mirror, repo string, subject digest.Digest) {
	idx, err := remote.Referrers(m.upstreamRepo(repo).Digest(subject.String()), m.remote(ctx)...)
	var im *struct{ Manifests []v1.Descriptor }
	if err == nil {
		var raw []byte
		if raw, err = idx.RawManifest(); err == nil {
			im = &struct{ Manifests []v1.Descriptor }{}
			err = json.Unmarshal(raw, im)
		}
	}
	if err != nil {
		slog.Warn("registry: mirror serves cached referrers: the upstream did not answer", "mirror", m.Name, "repository", repo, "subject", subject, "err", err)
		return
	}
	if len(im.Manifests) > maxMirrorReferrers {
		slog.Warn("registry: mirror fetches only the first referrers", "mirror", m.Name, "repository", repo, "subject", subject, "listed", len(im.Manifests), "fetched", maxMirrorReferrers)
		im.Manifests = im.Manifests[:maxMirrorReferrers]
	}
	for _, d := range im.Manifests {
		if err := r.mirrorManifest(ctx, m, repo, d.Digest.String()); err != nil {
			slog.Warn("registry: mirror could not fetch a referrer", "mirror", m.Name, "repository", repo, "referrer", d.Digest, "err", err)
		}
	}
}

// MirrorImage returns the reference that pulls image through the mirror
// of its registry, reg/NAME/REPO[:TAG][@DIGEST], when names (the mirrors'
// names) holds that registry: "nginx" and "docker.io/library/nginx" are
// both Docker Hub's, "docker.io". Images of other registries, and of reg
// itself, are not mirrored (false). Nodes use it so that a pod naming an
// outside image pulls it from the integrated registry, with its project's
// credentials, and never sends those to the outside registry.
func MirrorImage(reg string, names []string, image string) (string, bool) {
	if len(names) == 0 {
		return "", false
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", false
	}
	domain := reference.Domain(named)
	if domain == reg || !slices.Contains(names, domain) {
		return "", false
	}
	return reg + "/" + reference.TagNameOnly(named).String(), true
}
