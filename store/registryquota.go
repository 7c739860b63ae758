package store

import (
	"context"
	"slices"

	"slipway.dev/slipway/api"
)

// The registry.bytes quota: a project uses the bytes of the distinct blobs
// its Image records reference (each image's manifest, config and layers),
// each blob counted once in the project however many images share it. A
// blob that two projects reference counts in both: usage is reported per
// project, while storage holds the blob once. The registry enforces the
// quota at upload (registry/quota.go); the store only counts.

// ImageBlobs adds to set the blobs img references, digest → size.
func ImageBlobs(img *api.Image, set map[string]int64) {
	set[img.Name] = img.Size
	if img.Config != nil && img.Config.Digest != "" {
		set[img.Config.Digest] = img.Config.Size
	}
	for _, l := range img.Layers {
		set[l.Digest] = l.Size
	}
}

// RegistryBlobs reads the blobs project ns's images reference, digest →
// size.
func (s *Store) RegistryBlobs(ctx context.Context, ns string) (map[string]int64, error) {
	objs, _, err := s.List(ctx, api.Images, ns, ListOptions{})
	if err != nil {
		return nil, err
	}
	set := map[string]int64{}
	for _, o := range objs {
		ImageBlobs(o.(*api.Image), set)
	}
	return set, nil
}

// RegistryBytes is the project's registry.bytes usage.
func (s *Store) RegistryBytes(ctx context.Context, ns string) (int64, error) {
	set, err := s.RegistryBlobs(ctx, ns)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, v := range set {
		n += v
	}
	return n, nil
}

// RegistryQuotas returns project ns's quotas that name registry.bytes
// (hard or soft), from the store's cached policy: a project without one
// costs no read after the first.
func (s *Store) RegistryQuotas(ctx context.Context, ns string) ([]*api.ResourceQuota, error) {
	pol, err := s.policy(ctx, ns)
	if err != nil {
		return nil, err
	}
	var out []*api.ResourceQuota
	for _, q := range pol.quotas {
		if slices.Contains(q.QuotaNames(), api.QuotaRegistryBytes) {
			out = append(out, q)
		}
	}
	return out, nil
}
