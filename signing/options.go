package signing

import (
	"context"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
)

// Option configures Sign, Attest, Verify and VerifyAttestation. Each option
// says which of them it changes; the others ignore it.
type Option func(*options)

type options struct {
	auth        authn.Authenticator
	transport   http.RoundTripper
	annotations map[string]any
	source      Source
}

// Source is where Verify and VerifyAttestation look for signatures.
type Source int

const (
	// FromTag reads cosign's tag layout, REPO:sha256-<hex>.sig and .att:
	// what `cosign verify` and `cosign verify-attestation` read. The
	// default.
	FromTag Source = iota
	// FromReferrers reads the OCI 1.1 referrers of the image (artifactType
	// application/vnd.dev.cosign.artifact.sig.v1+json for signatures,
	// application/vnd.in-toto+json for attestations); every referrer is
	// checked, not only the newest.
	FromReferrers
)

func (s Source) String() string {
	if s == FromReferrers {
		return "referrers"
	}
	return "tag"
}

// WithAuth sets the registry credentials (for Slipway's registry: any user
// name and a Slipway token as the password). Default: anonymous; the
// docker config of the process is never read. nil means anonymous.
func WithAuth(a authn.Authenticator) Option {
	return func(o *options) {
		if a == nil {
			a = authn.Anonymous
		}
		o.auth = a
	}
}

// WithTransport sets the HTTP transport to the registry. Default:
// go-containerregistry's remote.DefaultTransport.
func WithTransport(t http.RoundTripper) Option { return func(o *options) { o.transport = t } }

// WithAnnotations adds claims to a signature's signed payload, in its
// "optional" section, as `cosign sign -a key=value` does. Sign only.
// Default: none, so signing the same digest twice with one key is a no-op.
func WithAnnotations(a map[string]string) Option {
	return func(o *options) {
		if len(a) == 0 {
			return
		}
		o.annotations = make(map[string]any, len(a))
		for k, v := range a {
			o.annotations[k] = v
		}
	}
}

// WithSource chooses where Verify and VerifyAttestation read signatures.
// Default: FromTag.
func WithSource(s Source) Option { return func(o *options) { o.source = s } }

func makeOptions(opts []Option) *options {
	o := &options{auth: authn.Anonymous}
	for _, f := range opts {
		f(o)
	}
	return o
}

func (o *options) remote(ctx context.Context) []remote.Option {
	r := []remote.Option{remote.WithContext(ctx), remote.WithAuth(o.auth)}
	if o.transport != nil {
		r = append(r, remote.WithTransport(o.transport))
	}
	return r
}

// oci replaces cosign's default options, which read the docker config.
func (o *options) oci(ctx context.Context) []ociremote.Option {
	return []ociremote.Option{ociremote.WithRemoteOptions(o.remote(ctx)...)}
}
