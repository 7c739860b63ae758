package builders

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
)

// The rebase strategy: for images whose upper layers do not depend on the
// base (static binaries, buildpack-style apps), a new base is swapped in
// under the existing app layers, as `crane rebase` and `pack rebase` do. No
// build runs; the registry mounts every blob, so only a config and a
// manifest are written.

// Annotations that say which base an image was built on.
const (
	BaseNameAnnotation   = "org.opencontainers.image.base.name"
	BaseDigestAnnotation = "org.opencontainers.image.base.digest"
)

// errNoRebase means the rebase path does not apply, and a full build
// should run instead; the message says why.
var errNoRebase = errors.New("builders: rebase not possible")

// ErrNoRebase is errNoRebase, for the registry's server-side rebase.
var ErrNoRebase = errNoRebase

// RebaseImage is what a rebase build pushes: Rebase, then the build's
// labels (io.openshift.build.name and .namespace) in the config and the
// new base's name and digest in the manifest's annotations. The build
// controller and the registry's server-side rebase both make their images
// here, so the two give the same bytes for the same inputs.
func RebaseImage(orig, oldBase, newBase v1.Image, build, namespace, newName, newDigest string) (v1.Image, error) {
	img, err := Rebase(orig, oldBase, newBase)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels["io.openshift.build.name"] = build
	cfg.Config.Labels["io.openshift.build.namespace"] = namespace
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, err
	}
	m, err := orig.Manifest()
	if err != nil {
		return nil, err
	}
	ann := map[string]string{}
	for k, v := range m.Annotations {
		ann[k] = v
	}
	ann[BaseNameAnnotation], ann[BaseDigestAnnotation] = newName, newDigest
	return mutate.Annotations(img, ann).(v1.Image), nil
}

// Rebase returns orig with oldBase's layers replaced by newBase's. orig must
// start with exactly oldBase's layers. The config keeps orig's settings
// (command, env, labels) with newBase's platform; history keeps newBase's
// entries and orig's entries above the old base, and is dropped when
// either image's history does not match its layers.
//
// mutate.Rebase is not used: it trusts history to find the layers above
// the base, and images with partial or no history come out with base
// layers where app layers should be.
func Rebase(orig, oldBase, newBase v1.Image) (v1.Image, error) {
	origLayers, err := orig.Layers()
	if err != nil {
		return nil, fmt.Errorf("builders: layers of the image: %w", err)
	}
	oldLayers, err := oldBase.Layers()
	if err != nil {
		return nil, fmt.Errorf("builders: layers of the old base: %w", err)
	}
	newLayers, err := newBase.Layers()
	if err != nil {
		return nil, fmt.Errorf("builders: layers of the new base: %w", err)
	}
	if len(oldLayers) > len(origLayers) {
		return nil, fmt.Errorf("%w: the image has %d layers, fewer than its old base's %d", errNoRebase, len(origLayers), len(oldLayers))
	}
	for i, l := range oldLayers {
		a, err := l.Digest()
		if err != nil {
			return nil, err
		}
		b, err := origLayers[i].Digest()
		if err != nil {
			return nil, err
		}
		if a != b {
			return nil, fmt.Errorf("%w: layer %d of the image (%s) is not the old base's (%s)", errNoRebase, i, b, a)
		}
	}
	origCfg, err := orig.ConfigFile()
	if err != nil {
		return nil, err
	}
	oldCfg, err := oldBase.ConfigFile()
	if err != nil {
		return nil, err
	}
	newCfg, err := newBase.ConfigFile()
	if err != nil {
		return nil, err
	}
	mt, err := orig.MediaType()
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, mt)
	if m, err := orig.Manifest(); err == nil && m.Config.MediaType != "" {
		img = mutate.ConfigMediaType(img, m.Config.MediaType)
	}
	top := origLayers[len(oldLayers):]
	var adds []mutate.Addendum
	for _, l := range append(append([]v1.Layer(nil), newLayers...), top...) {
		adds = append(adds, mutate.Addendum{Layer: l})
	}
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Config = *origCfg.Config.DeepCopy()
	cfg.Created = origCfg.Created
	cfg.Author = origCfg.Author
	cfg.Architecture, cfg.OS, cfg.OSVersion, cfg.Variant = newCfg.Architecture, newCfg.OS, newCfg.OSVersion, newCfg.Variant
	cfg.History = nil
	if newHist, ok := historyFor(newCfg.History, len(newLayers)); ok {
		if _, ok := historyFor(oldCfg.History, len(oldLayers)); ok {
			if above, ok := historyAbove(origCfg.History, len(origLayers), len(oldLayers), len(oldCfg.History)); ok {
				cfg.History = append(append([]v1.History(nil), newHist...), above...)
			}
		}
	}
	return mutate.ConfigFile(img, cfg)
}

// historyFor returns h when its non-empty entries match n layers.
func historyFor(h []v1.History, n int) ([]v1.History, bool) {
	count := 0
	for _, e := range h {
		if !e.EmptyLayer {
			count++
		}
	}
	return h, count == n && len(h) > 0
}

// historyAbove returns the entries of h above the first base entries: the
// entries after both baseEntries entries and baseLayers non-empty ones.
func historyAbove(h []v1.History, layers, baseLayers, baseEntries int) ([]v1.History, bool) {
	if _, ok := historyFor(h, layers); !ok || len(h) < baseEntries {
		return nil, false
	}
	count := 0
	for i, e := range h {
		if count == baseLayers && i >= baseEntries {
			return h[i:], true
		}
		if !e.EmptyLayer {
			count++
		}
	}
	return nil, count == baseLayers
}

// rebase makes the build's output by swapping the new base under the image
// the output tag holds now. It returns errNoRebase (wrapped, with the
// reason) when that image does not say which base it was built on, or is
// not built on it; the caller then runs a full build.
func (c *Controller) rebase(ctx context.Context, b *api.Build, baseRef, stream, tag, secret string, logs io.Writer) (ref, dgst, rebasedFrom string, err error) {
	o, err := c.Store.Get(ctx, api.ImageStreams, b.Namespace, stream)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: the output stream %s has no image yet", errNoRebase, stream)
	}
	cur, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return "", "", "", fmt.Errorf("%w: the output tag %s:%s has no image yet", errNoRebase, stream, tag)
	}
	obj, err := c.Store.Get(ctx, api.Images, b.Namespace, cur.Image)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: no record of the output image %s", errNoRebase, cur.Image)
	}
	rec := obj.(*api.Image)
	oldName, oldDigest := rec.ManifestAnnotations[BaseNameAnnotation], rec.ManifestAnnotations[BaseDigestAnnotation]
	if oldName == "" || oldDigest == "" {
		return "", "", "", fmt.Errorf("%w: the output image %s has no %s and %s annotations", errNoRebase, cur.Image, BaseNameAnnotation, BaseDigestAnnotation)
	}
	newName, newDigest, _ := strings.Cut(baseRef, "@")
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: BuilderServiceAccount, Password: secret})}
	fetch := func(ref string) (v1.Image, error) {
		r, err := name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, err
		}
		if r.Context().RegistryStr() != c.Registry {
			return nil, fmt.Errorf("%w: %s is not in the integrated registry", errNoRebase, ref)
		}
		return remote.Image(r, opts...)
	}
	origRef := c.Registry + "/" + b.Namespace + "/" + stream + "@" + cur.Image
	orig, err := fetch(origRef)
	if err != nil {
		return "", "", "", fmt.Errorf("reading the image to rebase %s: %w", origRef, err)
	}
	oldBase, err := fetch(oldName + "@" + oldDigest)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: reading the old base %s@%s: %v", errNoRebase, oldName, oldDigest, err)
	}
	newBase, err := fetch(baseRef)
	if err != nil {
		return "", "", "", fmt.Errorf("reading the new base %s: %w", baseRef, err)
	}
	if oldDigest == newDigest {
		fmt.Fprintf(logs, "The output %s is already on base %s; nothing to rebase\n", cur.Image, newDigest)
		return origRef, cur.Image, cur.Image, nil
	}
	fmt.Fprintf(logs, "Rebasing %s from %s to %s\n", cur.Image, oldDigest, newDigest)
	start := time.Now()
	img, err := RebaseImage(orig, oldBase, newBase, b.Name, b.Namespace, newName, newDigest)
	if err != nil {
		return "", "", "", err
	}
	target, err := name.NewTag(c.Registry+"/"+b.Namespace+"/"+stream+":"+tag, name.Insecure)
	if err != nil {
		return "", "", "", err
	}
	if err := remote.Write(target, img, opts...); err != nil {
		return "", "", "", fmt.Errorf("pushing the rebased image: %w", err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", "", "", err
	}
	fmt.Fprintf(logs, "Pushed %s (rebased from %s, no build run) in %s\n", d, cur.Image, time.Since(start).Round(time.Millisecond))
	return c.Registry + "/" + b.Namespace + "/" + stream + "@" + d.String(), d.String(), cur.Image, nil
}

// Rebaser is the registry's in-process rebase of one build's output
// (registry.RebaseBuild). An error with a NotRebasable() method says the
// rebase does not apply and a full build runs.
type Rebaser interface {
	RebaseBuild(ctx context.Context, who identity.Info, project, stream, tag, baseRef, build string) (digest, from string, err error)
}

// rebaseInRegistry is rebase through c.Rebaser, as the project's builder.
func (c *Controller) rebaseInRegistry(ctx context.Context, b *api.Build, baseRef, stream, tag string, logs io.Writer) (ref, dgst, rebasedFrom string, err error) {
	who := identity.Info{Name: api.ServiceAccountUser(b.Namespace, BuilderServiceAccount),
		Groups: []string{identity.GroupAuthenticated, identity.GroupServiceAccounts, identity.GroupServiceAccounts + ":" + b.Namespace}}
	start := time.Now()
	dgst, from, err := c.Rebaser.RebaseBuild(ctx, who, b.Namespace, stream, tag, baseRef, b.Name)
	var nr interface{ NotRebasable() string }
	if errors.As(err, &nr) {
		return "", "", "", fmt.Errorf("%w: %s", errNoRebase, nr.NotRebasable())
	}
	if err != nil {
		return "", "", "", err
	}
	ref = c.Registry + "/" + b.Namespace + "/" + stream + "@" + dgst
	if dgst == from {
		fmt.Fprintf(logs, "The output %s is already on base %s; nothing to rebase\n", from, baseRef)
		return ref, dgst, from, nil
	}
	fmt.Fprintf(logs, "Rebasing %s onto %s in the registry\n", from, baseRef)
	fmt.Fprintf(logs, "Pushed %s (rebased from %s, no build run) in %s\n", dgst, from, time.Since(start).Round(time.Millisecond))
	return ref, dgst, from, nil
}
