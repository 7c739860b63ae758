package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Storage for server-side writes (rebase, copies): distribution's own
// blob and manifest stores over the App's driver, with one change when
// that driver is the file system: PutContent writes and renames without
// syncing, and the caller syncs the file system once for all it wrote
// (syncfs), before it records anything in etcd. Other drivers are used
// as they are, and the sync is a no-op.

// unsyncedDriver is the App's driver with PutContent unsynced on root.
type unsyncedDriver struct {
	storagedriver.StorageDriver
	root string
}

func (d *unsyncedDriver) PutContent(ctx context.Context, path string, content []byte) error {
	return writeUnsynced(filepath.Join(d.root, filepath.FromSlash(path)), content)
}

// unsyncedNamespace returns a namespace for server-side writes and the
// function that makes them durable.
func (r *Registry) unsyncedNamespace(ctx context.Context) (distribution.Namespace, func() error, error) {
	r.unsynced.once.Do(func() {
		if r.driver == nil {
			r.unsynced.err = errors.New("registry: storage is not ready")
			return
		}
		d := r.driver
		if r.fsRoot != "" {
			d = &unsyncedDriver{StorageDriver: r.driver, root: r.fsRoot}
		}
		ns, err := storage.NewRegistry(ctx, d, storage.EnableDelete,
			storage.ManifestURLsAllowRegexp(regexp.MustCompile(`^https://`)))
		// Server-side writes take garbage-collection holds as pushes do
		// (gchold.go), so a collection never sweeps a blob a rebase is
		// linking or has just written.
		r.unsynced.ns, r.unsynced.err = &gcNamespace{Namespace: ns, reg: r}, err
	})
	if r.unsynced.err != nil {
		return nil, nil, r.unsynced.err
	}
	sync := func() error { return nil }
	if r.fsRoot != "" {
		sync = func() error {
			f, err := os.Open(r.fsRoot)
			if err != nil {
				return err
			}
			defer f.Close()
			return unix.Syncfs(int(f.Fd()))
		}
	}
	return r.unsynced.ns, sync, nil
}

type unsyncedStorage struct {
	once sync.Once
	ns   distribution.Namespace
	err  error
}

// mountBlob links blob d of repository src into the repository of blobs,
// unless it is linked there already.
func mountBlob(ctx context.Context, blobs distribution.BlobStore, src reference.Named, d digest.Digest) error {
	if _, err := blobs.Stat(ctx, d); err == nil {
		return nil
	}
	canon, err := reference.WithDigest(src, d)
	if err != nil {
		return err
	}
	_, err = blobs.Create(ctx, storage.WithMountFrom(canon))
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("blob %s could not be linked from %s", d, src.Name())
	}
	return err
}

// rawImage is an image read from storage: its manifest and config bytes,
// as go-containerregistry sees them, with layers known only by their
// descriptors (nothing reads them).
type rawImage struct {
	img      v1.Image
	man      ocispec.Manifest
	manifest []byte
	config   []byte
}

// readImage reads manifest dgst and its config from repository repo, with
// the App's storage as it is (reads need no sync).
func (r *Registry) readImage(ctx context.Context, repo, dgst string) (*rawImage, error) {
	if r.ns == nil {
		return nil, errors.New("registry: storage is not ready")
	}
	named, err := reference.WithName(repo)
	if err != nil {
		return nil, err
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return nil, err
	}
	rp, err := r.ns.Repository(ctx, named)
	if err != nil {
		return nil, err
	}
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("manifest %s is not in %s: %w", dgst, repo, err)
	}
	mt, payload, err := m.Payload()
	if err != nil {
		return nil, err
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(payload, &man); err != nil {
		return nil, err
	}
	if man.Config.Digest == "" || (mt != ocispec.MediaTypeImageManifest && mt != "application/vnd.docker.distribution.manifest.v2+json") {
		return nil, fmt.Errorf("%s@%s is a %s, not an image manifest", repo, dgst, mt)
	}
	// The manifest's size is the pusher's word; the stored blob's is not.
	desc, err := rp.Blobs(ctx).Stat(ctx, man.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("config %s of %s@%s: %w", man.Config.Digest, repo, dgst, err)
	}
	if man.Config.Size > maxConfig || desc.Size > maxConfig {
		return nil, fmt.Errorf("the config of %s@%s is over %d bytes", repo, dgst, maxConfig)
	}
	cfg, err := rp.Blobs(ctx).Get(ctx, man.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("config %s of %s@%s: %w", man.Config.Digest, repo, dgst, err)
	}
	var cf struct {
		RootFS struct {
			DiffIDs []v1.Hash `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(cfg, &cf); err != nil {
		return nil, fmt.Errorf("config of %s@%s: %w", repo, dgst, err)
	}
	if len(cf.RootFS.DiffIDs) != len(man.Layers) {
		return nil, fmt.Errorf("%s@%s has %d layers and %d diff IDs", repo, dgst, len(man.Layers), len(cf.RootFS.DiffIDs))
	}
	core := &rawCore{mediaType: types.MediaType(mt), manifest: payload, config: cfg, layers: map[v1.Hash]ocispec.Descriptor{}, diffIDs: map[v1.Hash]v1.Hash{}}
	for i, l := range man.Layers {
		h, err := v1.NewHash(l.Digest.String())
		if err != nil {
			return nil, err
		}
		core.layers[h], core.diffIDs[h] = l, cf.RootFS.DiffIDs[i]
	}
	img, err := partial.CompressedToImage(core)
	if err != nil {
		return nil, err
	}
	return &rawImage{img: img, man: man, manifest: payload, config: cfg}, nil
}

// baseCache reads each base image once per group.
type baseCache struct {
	r   *Registry
	ctx context.Context
	mu  sync.Mutex
	m   map[string]*rawImage
}

func (c *baseCache) get(repo, dgst string) (*rawImage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if img, ok := c.m[repo+"@"+dgst]; ok {
		return img, nil
	}
	img, err := c.r.readImage(c.ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	c.m[repo+"@"+dgst] = img
	return img, nil
}

// rawCore is partial.CompressedImageCore over bytes in hand.
type rawCore struct {
	mediaType        types.MediaType
	manifest, config []byte
	layers           map[v1.Hash]ocispec.Descriptor
	diffIDs          map[v1.Hash]v1.Hash
}

func (c *rawCore) RawConfigFile() ([]byte, error)      { return c.config, nil }
func (c *rawCore) MediaType() (types.MediaType, error) { return c.mediaType, nil }
func (c *rawCore) RawManifest() ([]byte, error)        { return c.manifest, nil }

func (c *rawCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h.String() == digest.FromBytes(c.config).String() {
		return &rawBlob{h: h, size: int64(len(c.config)), mt: types.MediaType("application/vnd.oci.image.config.v1+json"), data: c.config}, nil
	}
	d, ok := c.layers[h]
	if !ok {
		return nil, fmt.Errorf("layer %s is not in the manifest", h)
	}
	return &rawBlob{h: h, size: d.Size, mt: types.MediaType(d.MediaType), diffID: c.diffIDs[h]}, nil
}

// rawBlob is a layer known by its descriptor; its bytes are never needed
// to rebase, and reading them is an error.
type rawBlob struct {
	h      v1.Hash
	size   int64
	mt     types.MediaType
	data   []byte
	diffID v1.Hash
}

// DiffID is the layer's diff ID from the image's config, as
// go-containerregistry's remote layers answer it.
func (b *rawBlob) DiffID() (v1.Hash, error) {
	if b.diffID.Hex == "" {
		return v1.Hash{}, fmt.Errorf("registry: blob %s has no diff ID", b.h)
	}
	return b.diffID, nil
}

func (b *rawBlob) Digest() (v1.Hash, error)            { return b.h, nil }
func (b *rawBlob) Size() (int64, error)                { return b.size, nil }
func (b *rawBlob) MediaType() (types.MediaType, error) { return b.mt, nil }
func (b *rawBlob) Compressed() (io.ReadCloser, error) {
	if b.data != nil {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	return nil, fmt.Errorf("registry: layer %s is not read by a server-side rebase", b.h)
}
