package builders

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Every image a build names (FROM, COPY --from, RUN --mount=from, the S2I
// builder image, the previous image of an incremental build) is looked up
// at the integrated registry as the build's own project before BuildKit
// may use it, so a build gets only images its project may pull, cached or
// not (H2).
//
// BuildKit alone does not do this. It keeps every manifest, config and
// layer it has pulled in one content store shared by all builds, and it
// serves a by-digest reference from there without asking the registry:
// pull.Puller.resolve calls tryLocalResolve before the resolver, and
// imageutil.Config reads a cached manifest before the resolver, whenever
// the content carries a containerd.io/distribution.source.<host> label
// naming the repository (buildkit v0.34.2 util/pull/pull.go:66,81-112 and
// util/imageutil/config.go:90-110). The manifest and config are then
// "fetched" by remotes.FetchHandler, which skips content the store already
// has, and the layers are snapshots already unpacked: the registry never
// sees the request, so it never checks the build's credentials. The
// resolve mode does not change that: ResolveModeForcePull is read only by
// resolver.Resolver.Resolve, where it stops the fallback to the worker's
// image store (util/resolver/pool.go:254-274), and Resolve is never reached
// for a cached digest. So forced pull re-authorizes a tag (a tag is always
// resolved at the registry, with the session's credentials) but not a
// digest. Builds still ask for it, the way BuildKit intends
// (image-resolve-mode=pull, llb.ResolveModeForcePull), so that no image is
// ever taken from the image store when the registry refuses it; the check
// below is what covers digests. The label is keyed by the host name
// without the port, so REGISTRY-HOST:any-port/vic/base@D matches the
// victim's cached base as well: such references are refused outright.
//
// BuildKit only ever holds credentials for the integrated registry
// (the build's session answers for no other host), so what it cached from
// any other registry was pulled anonymously, and references there are not
// checked.

// imageAccess answers whether a build's project may pull an image, by
// asking the registry as the project's builder account.
type imageAccess struct {
	registry string // host:port of the integrated registry
	project  string
	auth     authn.Authenticator
	// transport carries the look-ups; nil is http.DefaultTransport.
	transport http.RoundTripper

	mu     sync.Mutex
	seen   map[string]error // reference → the answer, for this build
	denied error            // the first refusal, for the build's status
}

func newImageAccess(registry, project, secret string) *imageAccess {
	return &imageAccess{registry: registry, project: project, auth: &authn.Basic{Username: BuilderServiceAccount, Password: secret}}
}

// errImageDenied is an image the build's project may not pull.
var errImageDenied = errors.New("builders: pull denied")

// check returns nil if the build may use ref: it is on another registry,
// or the integrated registry answers the project's builder for it.
func (a *imageAccess) check(ctx context.Context, ref string) error {
	a.mu.Lock()
	err, ok := a.seen[ref]
	a.mu.Unlock()
	if ok {
		return err
	}
	err = a.lookup(ctx, ref)
	if ctx.Err() == nil {
		a.mu.Lock()
		if a.seen == nil {
			a.seen = map[string]error{}
		}
		a.seen[ref] = err
		if a.denied == nil && errors.Is(err, errImageDenied) {
			a.denied = err
		}
		a.mu.Unlock()
	}
	return err
}

// refusal is the first image the build was refused, or nil. BuildKit
// passes the error on as text, so the build reads it from here.
func (a *imageAccess) refusal() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.denied
}

func (a *imageAccess) lookup(ctx context.Context, ref string) error {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	domain := reference.Domain(named)
	if !strings.EqualFold(hostOf(domain), hostOf(a.registry)) {
		return nil
	}
	if !strings.EqualFold(domain, a.registry) {
		return fmt.Errorf("%w: %s names the integrated registry's host with another port; name its images %s/PROJECT/STREAM", errImageDenied, ref, a.registry)
	}
	r, err := name.ParseReference(reference.TagNameOnly(named).String(), name.Insecure)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	tr := a.transport
	if tr == nil {
		tr = http.DefaultTransport
	}
	_, err = remote.Head(r, remote.WithContext(ctx), remote.WithAuth(a.auth), remote.WithTransport(tr))
	if err == nil {
		return nil
	}
	path := reference.Path(named)
	from, _, _ := strings.Cut(path, "/")
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden || te.StatusCode == http.StatusNotFound) {
		return fmt.Errorf("%w: project %s may not pull %s, or it does not exist (the registry answered %d); if it exists, an admin of %s can grant the pull with `slipway policy add-role-to-user image-puller system:serviceaccount:%s:%s -n %s`",
			errImageDenied, a.project, ref, te.StatusCode, from, a.project, BuilderServiceAccount, from)
	}
	return fmt.Errorf("looking up %s at the registry as project %s: %w", ref, a.project, err)
}

// hostOf is a registry address without its port.
func hostOf(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}
