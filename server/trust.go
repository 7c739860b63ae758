package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/policies"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
)

// DefaultSigningKey is the key builds sign their output with, when the
// project has one.
const DefaultSigningKey = "default"

// trust holds the signing keyring and the policy checker.
type trust struct {
	s       *Server
	keyring *signing.Keyring
	checker *policies.Checker
}

// keyPassword encrypts signing keys at rest; it lives in the data dir,
// shared with the server's peers as the registry keys are.
func keyPassword(dataDir string) ([]byte, error) {
	p := filepath.Join(dataDir, "signing-key-password")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	pw := hex.EncodeToString(buf)
	if err := os.WriteFile(p, []byte(pw+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("server: signing key password: %w", err)
	}
	return []byte(pw), nil
}

func (s *Server) newTrust() (*trust, error) {
	pw, err := keyPassword(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	t := &trust{s: s, keyring: &signing.Keyring{Store: s.Store, Password: pw}}
	t.checker = t.newChecker()
	return t, nil
}

// startTrust runs the signing keyring (the scan and promotion controllers
// run with the other controllers, on the leader).
func (s *Server) startTrust(ctx context.Context) {
	go s.trust.keyring.Run(ctx)
}

// auth is a pull identity for the project an image ref is in: in-process
// as its deployer account where the registry runs in this process (no
// token), else a short-lived token of that account.
func (t *trust) auth(ctx context.Context, ref string) (signing.Option, func(), error) {
	rest, ok := strings.CutPrefix(ref, t.s.RegistryHost+"/")
	if !ok {
		return signing.WithAuth(authn.Anonymous), func() {}, nil
	}
	project, _, _ := strings.Cut(rest, "/")
	if err := t.s.ensurePuller(ctx, project); err != nil {
		return nil, nil, err
	}
	if reg := t.s.Registry; reg != nil {
		return signing.WithTransport(reg.LocalTransport(identity.ServiceAccountInfo(project, PullerServiceAccount))), func() {}, nil
	}
	secret, _, err := t.s.API.Authenticator().IssueServiceAccountToken(ctx, project, PullerServiceAccount, 5*time.Minute)
	if err != nil {
		return nil, nil, err
	}
	done := func() { _, _ = t.s.API.Authenticator().Revoke(context.WithoutCancel(ctx), secret) }
	return signing.WithAuth(&authn.Basic{Username: PullerServiceAccount, Password: secret}), done, nil
}

// pushAuth is a push identity for a project (its builder account). Where
// the registry runs in this process, requests go to it in-process as the
// account, with no token (registry.LocalTransport); otherwise a
// short-lived token of the account is minted and revoked after.
func (t *trust) pushAuth(ctx context.Context, project string) (signing.Option, func(), error) {
	if reg := t.s.Registry; reg != nil {
		return signing.WithTransport(reg.LocalTransport(identity.ServiceAccountInfo(project, builders.BuilderServiceAccount))), func() {}, nil
	}
	secret, _, err := t.s.API.Authenticator().IssueServiceAccountToken(ctx, project, "builder", 5*time.Minute)
	if err != nil {
		return nil, nil, err
	}
	done := func() { _, _ = t.s.API.Authenticator().Revoke(context.WithoutCancel(ctx), secret) }
	return signing.WithAuth(&authn.Basic{Username: "builder", Password: secret}), done, nil
}

// SignImage signs image (REGISTRY/PROJECT/STREAM@DIGEST, in the key's own
// project) with the project's key, and attaches provenance when given.
func (t *trust) SignImage(ctx context.Context, project, key, image string, prov *signing.Provenance) error {
	rest, ok := strings.CutPrefix(image, t.s.RegistryHost+"/")
	if !ok || !strings.HasPrefix(rest, project+"/") {
		return fmt.Errorf("%s is not an image of project %s in the integrated registry; keys sign their own project's images", image, project)
	}
	ref, err := name.ParseReference(image, name.Insecure)
	if err != nil {
		return err
	}
	if _, ok := ref.(name.Digest); !ok {
		return fmt.Errorf("sign by digest: %s is a tag, which can move; name the image as REPOSITORY@sha256:…", image)
	}
	signer, err := t.keyring.Signer(ctx, project, key)
	if err != nil {
		return err
	}
	if err := t.s.ensureBuilderAccount(ctx, project); err != nil {
		return err
	}
	opt, done, err := t.pushAuth(ctx, project)
	if err != nil {
		return err
	}
	defer done()
	if err := signing.Sign(ctx, ref, signer, opt); err != nil {
		return err
	}
	if prov != nil {
		st, err := prov.Statement()
		if err != nil {
			return err
		}
		return signing.Attest(ctx, ref, signer, st, opt)
	}
	return nil
}

// Admit is the node agent's policy check: every image of the pod must
// pass its project's policies, by digest.
func (t *trust) Admit(ctx context.Context, pod *api.Pod) error {
	items, _, err := t.s.Store.List(ctx, api.ImagePolicies, pod.Namespace, store.ListOptions{})
	if err != nil || len(items) == 0 {
		return err
	}
	var pols []*api.ImagePolicy
	for _, o := range items {
		pols = append(pols, o.(*api.ImagePolicy))
	}
	for _, c := range pod.Spec.Containers {
		// The scan is the platform's record of the digest, not an
		// ImageScan of a project (which its users could write), neither
		// the image's project's nor the pod's.
		var sc *api.ImageScan
		if at := strings.LastIndex(c.Image, "@"); at > 0 {
			if sc, err = scan.Lookup(ctx, t.s.Store, c.Image[at+1:]); err != nil {
				return fmt.Errorf("container %s: reading the scan of %s: %w", c.Name, c.Image, err)
			}
		}
		if d := t.checker.Check(ctx, pols, c.Image, sc); !d.Allowed {
			return fmt.Errorf("container %s: image %s breaks the policy of %s: %s", c.Name, c.Image, pod.Namespace, d.Reason())
		}
	}
	return nil
}

// Sign is `slipway sign`: the project's key signs one of its images.
func (t *trust) Sign(ctx context.Context, project, key, image string) error {
	return t.SignImage(ctx, project, key, image, nil)
}

// signBuild signs a build's output with the project's default key, when
// it has one, and attests the build's provenance. What was resolved (the
// commit, the base, the start) comes from the build controller's own
// variables (r), never from b's status: b is the Build as it was when it
// started, before the controller wrote them, and status is not where a
// signed statement may take facts from (M7). The rest is b's spec, the
// parameters the user asked for.
func (t *trust) signBuild(ctx context.Context, b *api.Build, ref string, r builders.Resolved) (bool, error) {
	if _, err := t.s.Store.Get(ctx, api.SigningKeys, b.Namespace, DefaultSigningKey); err != nil {
		return false, nil
	}
	prov := &signing.Provenance{
		BuilderID: t.s.URL, BuildName: b.Namespace + "/" + b.Name, Strategy: b.Spec.Strategy.Type,
		BuildArgs: map[string]string{}, Internal: map[string]any{"registry": t.s.RegistryHost},
	}
	if g := b.Spec.Source.Git; g != nil {
		prov.SourceRepo, prov.SourceCommit = g.URI, r.Revision
	}
	if ds := b.Spec.Strategy.DockerStrategy; ds != nil {
		for _, a := range ds.BuildArgs {
			prov.BuildArgs[a.Name] = a.Value
		}
	}
	if base := r.BaseImage; base != "" {
		if at := strings.LastIndex(base, "@"); at > 0 {
			prov.BaseImages = []signing.Image{{Name: base[:at], Digest: base[at+1:]}}
		}
	}
	prov.StartedOn = r.Started
	prov.FinishedOn = time.Now().UTC()
	if err := t.SignImage(ctx, b.Namespace, DefaultSigningKey, ref, prov); err != nil {
		return false, err
	}
	return true, nil
}

// signRebase signs and attests an image the registry rebased (no build
// ran) in a project with a default key, as signBuild signs a build's: the
// registry fills in what the rebase resolved, this the builder's id.
func (t *trust) signRebase(ctx context.Context, project, image string, prov *signing.Provenance) error {
	prov.BuilderID = t.s.URL
	return t.SignImage(ctx, project, DefaultSigningKey, image, prov)
}

// scanRegistry is the scanner's access to the registry: it reads as the
// image's project's deployer account and writes SBOMs as its builder,
// in-process where the registry runs in this process.
type scanRegistry struct{ t *trust }

func (r scanRegistry) remoteOpts(ctx context.Context, ref string, push bool) ([]remote.Option, func(), error) {
	rest, _ := strings.CutPrefix(ref, r.t.s.RegistryHost+"/")
	project, _, _ := strings.Cut(rest, "/")
	user, ensure := PullerServiceAccount, r.t.s.ensurePuller
	if push {
		user, ensure = builders.BuilderServiceAccount, r.t.s.ensureBuilderAccount
	}
	if err := ensure(ctx, project); err != nil {
		return nil, nil, err
	}
	if reg := r.t.s.Registry; reg != nil {
		// In-process, as the account: no token minted and revoked per
		// scan. Whatever host a URL names (a foreign layer's too), it is
		// this registry that answers, with the account's rights.
		return []remote.Option{remote.WithContext(ctx), remote.WithTransport(reg.LocalTransport(identity.ServiceAccountInfo(project, user)))}, func() {}, nil
	}
	secret, _, err := r.t.s.API.Authenticator().IssueServiceAccountToken(ctx, project, user, 10*time.Minute)
	if err != nil {
		return nil, nil, err
	}
	done := func() { _, _ = r.t.s.API.Authenticator().Revoke(context.WithoutCancel(ctx), secret) }
	// Only ever the registry itself: a foreign layer's URL is never fetched
	// from inside the platform (L7).
	tr := registry.RegistryOnlyTransport(r.t.s.RegistryHost, nil)
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: user, Password: secret}), remote.WithTransport(tr)}, done, nil
}

func (r scanRegistry) Image(ctx context.Context, ref string) (v1.Image, error) {
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	// The layers are read after this returns, so the token is left to
	// expire (10 minutes) rather than revoked.
	opts, _, err := r.remoteOpts(ctx, ref, false)
	if err != nil {
		return nil, err
	}
	return remote.Image(d, opts...)
}

// SBOMMediaType is the media type of stored SBOMs.
const SBOMMediaType = "application/vnd.cyclonedx+json"

func (r scanRegistry) PutSBOM(ctx context.Context, ref string, doc []byte) (string, error) {
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	opts, done, err := r.remoteOpts(ctx, ref, true)
	if err != nil {
		return "", err
	}
	defer done()
	desc, err := remote.Head(d, opts...)
	if err != nil {
		return "", err
	}
	layer := static.NewLayer(doc, SBOMMediaType)
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: layer})
	if err != nil {
		return "", err
	}
	// The config's media type is the artifact type referrers report.
	img = mutate.ConfigMediaType(img, types.MediaType(SBOMMediaType))
	img = mutate.Annotations(img, map[string]string{"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339)}).(v1.Image)
	img = mutate.Subject(img, v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}).(v1.Image)
	sd, err := img.Digest()
	if err != nil {
		return "", err
	}
	if err := remote.Write(d.Context().Digest(sd.String()), img, opts...); err != nil {
		return "", err
	}
	return sd.String(), nil
}

func (r scanRegistry) GetSBOM(ctx context.Context, repo, digest string) ([]byte, error) {
	d, err := name.NewDigest(repo+"@"+digest, name.Insecure)
	if err != nil {
		return nil, err
	}
	opts, done, err := r.remoteOpts(ctx, repo, false)
	if err != nil {
		return nil, err
	}
	defer done()
	img, err := remote.Image(d, opts...)
	if err != nil {
		return nil, err
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		return nil, fmt.Errorf("SBOM %s: want one layer: %v", digest, err)
	}
	rc, err := ls[0].Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 64<<20))
}

func (r scanRegistry) Fetch(ctx context.Context, ref, path string) error {
	d, err := name.NewDigest(ref, name.Insecure)
	if err != nil {
		return err
	}
	opts, done, err := r.remoteOpts(ctx, ref, false)
	if err != nil {
		return err
	}
	defer done()
	img, err := remote.Image(d, opts...)
	if err != nil {
		return err
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		return fmt.Errorf("%s: a database artifact has one layer: %v", ref, err)
	}
	rc, err := ls[0].Compressed() // the blob as stored: the zip itself
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	// Bounded: a database larger than this is a mistake, not a database.
	const maxDB = 4 << 30
	n, err := io.Copy(f, io.LimitReader(rc, maxDB+1))
	if err == nil && n > maxDB {
		err = fmt.Errorf("%s is over %d GiB; import a smaller export, such as one ecosystem's zip", ref, maxDB>>30)
	}
	if err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// NewPolicyChecker returns a policy checker with an empty cache that
// verifies against this server's registry and keys, as promotions and
// the node agent do.
func (s *Server) NewPolicyChecker() *policies.Checker { return s.trust.newChecker() }

func (t *trust) newChecker() *policies.Checker {
	return &policies.Checker{Verifier: signing.RegistryVerifier{Auth: t.auth}, Keys: t.keyring}
}
