package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// The registry.bytes quota (api.QuotaRegistryBytes) is enforced here, on
// pushes through the registry API, at the two points where bytes become
// part of a project:
//
//   - a blob upload's commit (and a cross-repository mount into the
//     project): refused when the project's usage (the distinct blobs its
//     images reference, store.RegistryBlobs) plus this blob would exceed a
//     hard limit; the upload is then cancelled and nothing is linked. A
//     mount over the limit is not performed: the client uploads instead,
//     and that commit is refused.
//   - a manifest put: refused when usage plus every blob of the manifest
//     (itself, config, layers) not yet referenced in the project would
//     exceed it, before the manifest is stored or a tag moves.
//
// Blobs uploaded but not yet referenced by an image are not counted, so
// the manifest check is the one that bounds what a project keeps; such
// blobs are left to garbage collection. The checks count and then write
// without a fence: concurrent pushes to one project can each pass and
// together overshoot the hard limit by at most the new bytes of the
// manifests being put at that moment. Blobs already referenced in the
// project add nothing, so re-pushes and tag moves pass even over the
// limit. A soft limit lets the push through with a log line and a
// Warning header.
//
// The registry's server-side writes into a project are checked the same
// way before they write anything: a promotion copy (CopyImage) against
// the target project for the image and everything it brings along, a spec
// tag that follows another project's image, an import from another
// registry (each image of an index on its own), and a server-side rebase
// (RebaseBuildConfig, RebaseBuild) for the rebased image; the images of
// one rebase group are counted together.

// Blobs wraps the repository's blob store with the quota checks.
func (r *repository) Blobs(ctx context.Context) distribution.BlobStore {
	return &quotaBlobs{BlobStore: r.Repository.Blobs(ctx), repo: r}
}

type quotaBlobs struct {
	distribution.BlobStore
	repo *repository
}

func (b *quotaBlobs) Create(ctx context.Context, options ...distribution.BlobCreateOption) (distribution.BlobWriter, error) {
	var opts distribution.CreateOptions
	for _, o := range options {
		if err := o.Apply(&opts); err != nil {
			return nil, err
		}
	}
	if opts.Mount.ShouldMount && opts.Mount.From != nil {
		dgst := opts.Mount.From.Digest()
		if desc, err := b.repo.reg.ns.BlobStatter().Stat(ctx, dgst); err == nil {
			if err := b.repo.checkBytes(ctx, map[string]int64{dgst.String(): desc.Size}); err != nil {
				// Not mounted: the client uploads, and that commit is refused.
				options = nil
			}
		}
	}
	w, err := b.BlobStore.Create(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &quotaWriter{BlobWriter: w, repo: b.repo}, nil
}

func (b *quotaBlobs) Resume(ctx context.Context, id string) (distribution.BlobWriter, error) {
	w, err := b.BlobStore.Resume(ctx, id)
	if err != nil {
		return nil, err
	}
	return &quotaWriter{BlobWriter: w, repo: b.repo}, nil
}

type quotaWriter struct {
	distribution.BlobWriter
	repo *repository
}

// Commit refuses, as DENIED, an upload that would take the project over
// its hard registry.bytes limit; distribution then cancels the upload.
func (w *quotaWriter) Commit(ctx context.Context, provisional v1.Descriptor) (v1.Descriptor, error) {
	size := w.Size()
	if provisional.Size > 0 {
		size = provisional.Size
	}
	if err := w.repo.checkBytes(ctx, map[string]int64{provisional.Digest.String(): size}); err != nil {
		return v1.Descriptor{}, err
	}
	return w.BlobWriter.Commit(ctx, provisional)
}

// checkImageBytes is the manifest put's check: img's blobs against the
// project's registry.bytes limits.
// Under such a limit a manifest must state its blobs' true sizes (the
// image record, and so the usage, is built from them), which
// distribution itself does not check.
func (r *repository) checkImageBytes(ctx context.Context, img *api.Image) error {
	quotas, err := r.reg.cfg.Store.RegistryQuotas(ctx, r.project)
	if err != nil {
		return errcode.ErrorCodeUnavailable.WithMessage("reading the project's quota: " + err.Error() + "; try again")
	}
	if len(quotas) == 0 {
		return nil
	}
	set := map[string]int64{}
	store.ImageBlobs(img, set)
	for d, n := range set {
		// A negative size would lower the project's usage for good once
		// recorded (distribution does not check sizes of layers with URLs).
		if n < 0 {
			return errcode.ErrorCodeManifestInvalid.WithMessage(fmt.Sprintf("the manifest gives blob %s the size %d; sizes are byte counts, 0 or more", d, n))
		}
		if d == img.Name {
			continue
		}
		dg, err := digest.Parse(d)
		if err != nil {
			continue // distribution refuses it
		}
		desc, err := r.reg.ns.BlobStatter().Stat(ctx, dg)
		if err == nil && desc.Size != n {
			return errcode.ErrorCodeManifestInvalid.WithMessage(fmt.Sprintf("the manifest gives blob %s size %d, but the blob has %d bytes", d, n, desc.Size))
		}
	}
	return r.checkBytes(ctx, set)
}

// checkBytes refuses, as DENIED with what to do, adding the blobs (digest
// → size) to the project when that takes it over a hard registry.bytes
// limit, and warns over a soft one. Blobs the project already references
// add nothing.
func (r *repository) checkBytes(ctx context.Context, blobs map[string]int64) error {
	return r.reg.checkProjectBytes(ctx, r.project, r.stream, blobs, nil)
}

// bytesTally carries, across the checks of one operation that adds
// several images at once (a rebase group, a promotion copy), what each
// project references plus what the checks before let in, so the images
// together stay under the limit each alone would pass.
type bytesTally struct{ have map[string]map[string]int64 }

// checkProjectBytes is checkBytes for project (stream names the
// repository in the log line), counting what tally let in before; with a
// tally, blobs let in are added to it.
func (r *Registry) checkProjectBytes(ctx context.Context, project, stream string, blobs map[string]int64, tally *bytesTally) error {
	st := r.cfg.Store
	quotas, err := st.RegistryQuotas(ctx, project)
	if err != nil {
		return errcode.ErrorCodeUnavailable.WithMessage("reading the project's quota: " + err.Error() + "; try again")
	}
	if len(quotas) == 0 || len(blobs) == 0 {
		return nil
	}
	var have map[string]int64
	if tally != nil {
		have = tally.have[project]
	}
	if have == nil {
		if have, err = st.RegistryBlobs(ctx, project); err != nil {
			return errcode.ErrorCodeUnavailable.WithMessage("counting the project's registry bytes: " + err.Error() + "; try again")
		}
		if tally != nil {
			if tally.have == nil {
				tally.have = map[string]map[string]int64{}
			}
			tally.have[project] = have
		}
	}
	var used, adding int64
	for _, n := range have {
		used += n
	}
	for d, n := range blobs {
		if _, ok := have[d]; !ok {
			adding += n
		}
	}
	if adding == 0 {
		return nil
	}
	f := humanBytes
	for _, q := range quotas {
		if hv, ok := q.Spec.Hard[api.QuotaRegistryBytes]; ok {
			hard, _ := api.ParseQuota(api.QuotaRegistryBytes, hv)
			if used+adding > hard {
				return errcode.ErrorCodeDenied.WithMessage(fmt.Sprintf("exceeded quota %s: %s used %s, pushing %s, hard %s (project %s); free some (slipway adm prune images) or ask a cluster admin to raise the quota", q.Name, api.QuotaRegistryBytes, f(used), f(adding), hv, project))
			}
		}
	}
	for _, q := range quotas {
		if sv, ok := q.Spec.Soft[api.QuotaRegistryBytes]; ok {
			soft, _ := api.ParseQuota(api.QuotaRegistryBytes, sv)
			if used+adding > soft {
				msg := fmt.Sprintf("over the soft limit of quota %s: %s used %s, pushing %s, soft %s (project %s)", q.Name, api.QuotaRegistryBytes, f(used), f(adding), sv, project)
				slog.Warn("registry: "+msg, "repository", project+"/"+stream)
				if w, ok := ctx.Value(responseKey).(http.ResponseWriter); ok {
					w.Header().Add("Warning", "299 - "+strconv.Quote(msg))
				}
			}
		}
	}
	if tally != nil {
		for d, n := range blobs {
			have[d] = n
		}
	}
	return nil
}

// checkCopyBytes is checkProjectBytes for images dgsts of project from,
// as recorded there, linked into project to: what a promotion copy or a
// spec tag following another project brings. Images without a record in
// from add nothing here (their link fails).
func (r *Registry) checkCopyBytes(ctx context.Context, from, to, stream string, dgsts ...string) error {
	if from == to {
		return nil
	}
	set := map[string]int64{}
	for _, d := range dgsts {
		if o, err := r.cfg.Store.Get(ctx, api.Images, from, d); err == nil {
			store.ImageBlobs(o.(*api.Image), set)
		}
	}
	return r.checkProjectBytes(ctx, to, stream, set, nil)
}

// quotaDenied is the reason of a DENIED from checkProjectBytes, for the
// server-side operations that report it in their own error type.
func quotaDenied(err error) (string, bool) {
	var e errcode.Error
	if errors.As(err, &e) && e.Code == errcode.ErrorCodeDenied {
		return e.Message, true
	}
	return "", false
}

// humanBytes writes n for a person: bytes below 1Ki, else Ki or Mi or Gi
// with two decimals.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGi", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fMi", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2fKi", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
