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
	"sync"
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
// What: a tag, once checked with the upstream (a HEAD), is served from the
// cache for the mirror's TagTTL without asking again, then checked again;
// when the upstream cannot be reached (or refuses the mirror's
// credentials) the cached tag is served, and asked about again after
// another TagTTL. A manifest by digest, a blob or a referrer is fetched
// once, on first request, and kept in registry storage: content by
// digest never changes, so it is never checked again. Manifest bytes are
// stored as the upstream served them, so digests (and signatures over
// them, cosign's sha256-DIGEST.sig tags and OCI referrers) are the
// upstream's.
//
// How long: garbage collection sees the mirror's manifests as roots like
// any repository's, so cached content stays while the mirror links it.
// Every serve of a manifest records its last use (mirrorexpire.go); a
// manifest unused for the mirror's Expire is unlinked, with the tags that
// point at it, and the next collection frees whatever no one else (a
// project's copy, another cached manifest) references.
//
// Credentials: the upstream is asked anonymously unless the admin gives
// the mirror a credentials file (mirrorauth.go); users never see them,
// and they go only to the upstream's host and the token service it names
// (never to a redirect's target, such as a blob CDN).
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
	// TagTTL is how long a tag checked with the upstream is served
	// without asking it again. Zero means DefaultMirrorTagTTL; negative
	// means ask on every pull.
	TagTTL time.Duration
	// Expire is how long a cached manifest may go unpulled before the
	// mirror drops it (its tags with it) and leaves its blobs to garbage
	// collection. Zero means DefaultMirrorExpire; negative means never.
	Expire time.Duration
	// CredentialsFile holds USERNAME:PASSWORD (one line) for the
	// upstream. It is read at every fetch, so it may be replaced in place
	// to rotate the password. Default "": the upstream is asked
	// anonymously.
	CredentialsFile string
}

// Mirror defaults. The tag TTL bounds how stale a moved tag may be served
// (and spares the upstream a HEAD per pull: Docker Hub counts them); a
// week's expiry is distribution's proxy TTL and Harbor's proxy-cache
// retention.
const (
	DefaultMirrorTagTTL = 5 * time.Minute
	DefaultMirrorExpire = 7 * 24 * time.Hour
)

// tagTTL and expire are the effective TagTTL and Expire; 0 means never.
func (m Mirror) tagTTL() time.Duration { return effective(m.TagTTL, DefaultMirrorTagTTL) }
func (m Mirror) expire() time.Duration { return effective(m.Expire, DefaultMirrorExpire) }

func effective(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// ParseMirror reads NAME=URL[,OPTION=VALUE...], the form of `slipway start
// --mirror`. Options: credentials=FILE (USERNAME:PASSWORD for the
// upstream), ttl=DURATION (0: check tags on every pull) and
// expire=DURATION (0: keep cached content forever).
func ParseMirror(s string) (Mirror, error) {
	n, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Mirror{}, fmt.Errorf("registry: mirror %q is not NAME=URL, such as docker.io=https://registry-1.docker.io", s)
	}
	opts := strings.Split(rest, ",")
	m := Mirror{Name: n, URL: opts[0]}
	for _, o := range opts[1:] {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "credentials":
			if v == "" {
				return Mirror{}, fmt.Errorf("registry: mirror %s: credentials= needs a FILE holding USERNAME:PASSWORD", n)
			}
			m.CredentialsFile = v
		case "ttl", "expire":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return Mirror{}, fmt.Errorf("registry: mirror %s: %s=%q is not a duration such as 5m or 168h (0: %s)", n, k, v, map[string]string{"ttl": "check tags on every pull", "expire": "never expire"}[k])
			}
			if d == 0 {
				d = -1
			}
			if k == "ttl" {
				m.TagTTL = d
			} else {
				m.Expire = d
			}
		default:
			return Mirror{}, fmt.Errorf("registry: mirror %s: unknown option %q; the options are credentials=FILE, ttl=DURATION and expire=DURATION", n, o)
		}
	}
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
		if m.CredentialsFile != "" {
			if _, err := readCredentials(m.CredentialsFile); err != nil {
				return fmt.Errorf("registry: mirror %s: %w", m.Name, err)
			}
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

	mu      sync.Mutex
	now     func() time.Time
	checked map[string]time.Time // REPO:TAG (or REPO@referrers:DIGEST) → when last asked of the upstream
	used    map[string]time.Time // REPO@DIGEST → when its last use was last written (mirrorexpire.go)
}

func newMirror(m Mirror, p ImportPolicy, now func() time.Time) (*mirror, error) {
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
	var tr http.RoundTripper = newGuardedTransport(p, false)
	var auth authn.Authenticator = authn.Anonymous
	if m.CredentialsFile != "" {
		tr = newCredentialScope(tr, reg.RegistryStr(), u.Scheme == "http")
		auth = credentialsFile(m.CredentialsFile)
	}
	return &mirror{Mirror: m, registry: reg, opts: []remote.Option{remote.WithTransport(tr), remote.WithAuth(auth)},
		now: now, checked: map[string]time.Time{}, used: map[string]time.Time{}}, nil
}

// clock is the mirror's time (a test may set it).
func (m *mirror) clock() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now()
}

// fresh reports whether key was asked of the upstream within the TTL.
func (m *mirror) fresh(key string) bool {
	ttl := m.tagTTL()
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.checked[key]
	return ok && ttl > 0 && m.now().Sub(at) < ttl
}

// asked records that key was asked of the upstream now.
func (m *mirror) asked(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checked[key] = m.now()
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

// mirrorManifests is mirrorRepo and its manifest service.
func (r *Registry) mirrorManifests(ctx context.Context, repo string) (distribution.Repository, distribution.ManifestService, error) {
	dr, err := r.mirrorRepo(ctx, repo)
	if err != nil {
		return nil, nil, err
	}
	ms, err := dr.Manifests(ctx)
	return dr, ms, err
}

// upstreamErr says why the upstream did not answer: a 404 as the spec's
// unknown code, a refusal of the mirror's credentials (or of anonymous
// access) and the guard's refusal as DENIED, anything else as UNAVAILABLE
// with nothing cached to fall back on.
func upstreamErr(m *mirror, what, code string, err error) *ociError {
	var te *transport.Error
	switch {
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound:
		return ociErr(http.StatusNotFound, code, "%s is not in the upstream %s of mirror %s", what, m.URL, m.Name)
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) && m.CredentialsFile != "":
		return ociErr(http.StatusBadGateway, "DENIED", "mirror %s: the upstream %s refused the mirror's credentials for %s (%d %s); an admin must fix the mirror's credentials file", m.Name, m.URL, what, te.StatusCode, http.StatusText(te.StatusCode))
	case errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden):
		return ociErr(http.StatusBadGateway, "DENIED", "mirror %s: the upstream %s refused anonymous access to %s (%d %s): it may be private, or not exist; an admin can give the mirror credentials with --mirror %s=%s,credentials=FILE", m.Name, m.URL, what, te.StatusCode, http.StatusText(te.StatusCode), m.Name, m.URL)
	case errors.Is(err, errMirrorCredentials):
		slog.Error("registry: mirror cannot use its credentials file", "mirror", m.Name, "file", m.CredentialsFile, "err", err)
		return ociErr(http.StatusBadGateway, "UNAVAILABLE", "mirror %s cannot read its upstream credentials; an admin must fix the mirror's credentials file (the registry's log says why)", m.Name)
	case errors.Is(err, errImportDenied):
		return ociErr(http.StatusForbidden, "DENIED", "mirror %s may not reach its upstream: %v", m.Name, err)
	}
	return ociErr(http.StatusServiceUnavailable, "UNAVAILABLE", "mirror %s cannot reach its upstream %s and has no cached copy of %s: %v; try again later", m.Name, m.URL, what, err)
}

// mirrorManifest makes sure the manifest repo:ref names is in storage,
// and that a tag points where the upstream's did at most a TagTTL ago
// (or, when the upstream cannot say, where it pointed when last asked).
// The manifest served is recorded as used.
func (r *Registry) mirrorManifest(ctx context.Context, m *mirror, repo, ref string) error {
	dr, ms, err := r.mirrorManifests(ctx, repo)
	if err != nil {
		return err
	}
	up := m.upstreamRepo(repo)
	if d, err := digest.Parse(ref); err == nil {
		ok, err := ms.Exists(ctx, d)
		if err != nil {
			return err
		}
		if !ok {
			_, err, _ = m.flight.Do(repo+"@"+ref, func() (any, error) { return nil, r.mirrorFetch(ctx, m, dr, up.Digest(ref)) })
			if err != nil {
				return err
			}
		}
		r.mirrorUsed(ctx, m, repo, d)
		return nil
	}
	key := repo + ":" + ref
	// cached is the manifest the local tag points at, if it is stored.
	cached := func() (digest.Digest, bool) {
		cur, err := dr.Tags(ctx).Get(ctx, ref)
		if err != nil {
			return "", false
		}
		ok, _ := ms.Exists(ctx, cur.Digest)
		return cur.Digest, ok
	}
	if m.fresh(key) {
		if d, ok := cached(); ok {
			r.mirrorUsed(ctx, m, repo, d)
			return nil
		}
	}
	v, err, _ := m.flight.Do(key, func() (any, error) {
		desc, err := remote.Head(up.Tag(ref), m.remote(ctx)...)
		if err != nil {
			var te *transport.Error
			if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
				return nil, upstreamErr(m, repo+":"+ref, "MANIFEST_UNKNOWN", err)
			}
			if d, ok := cached(); ok {
				slog.Warn("registry: mirror serves a cached tag: the upstream did not answer", "mirror", m.Name, "repository", repo, "tag", ref, "err", err)
				m.asked(key) // asked again after another TTL, not on every pull of an outage
				return d, nil
			}
			return nil, upstreamErr(m, repo+":"+ref, "MANIFEST_UNKNOWN", err)
		}
		d := digest.Digest(desc.Digest.String())
		if ok, _ := ms.Exists(ctx, d); !ok {
			if err := r.mirrorFetch(ctx, m, dr, up.Digest(d.String())); err != nil {
				return nil, err
			}
		}
		if cur, err := dr.Tags(ctx).Get(ctx, ref); err != nil || cur.Digest != d {
			if err := dr.Tags(ctx).Tag(ctx, ref, v1.Descriptor{Digest: d, MediaType: string(desc.MediaType), Size: desc.Size}); err != nil {
				return nil, err
			}
		}
		m.asked(key)
		return d, nil
	})
	if err != nil {
		return err
	}
	r.mirrorUsed(ctx, m, repo, v.(digest.Digest))
	return nil
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
// the local list, served next, has them. The list is asked for again
// after the mirror's TagTTL; an upstream that does not answer leaves it
// as it was cached.
func (r *Registry) mirrorReferrers(ctx context.Context, m *mirror, repo string, subject digest.Digest) {
	key := repo + "@referrers:" + subject.String()
	if m.fresh(key) {
		return
	}
	defer m.asked(key)
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
