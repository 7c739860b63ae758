package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Storage for server-side writes (rebase): the caller takes one
// garbage-collection hold (gchold.go) for everything a group makes
// reachable, writes, syncs the file system once (syncfs), and only then
// records anything in etcd.
//
// On the file system storage the group's files are written directly in
// distribution's layout (rebaseFS), without a sync each. Other drivers get
// distribution's own blob and manifest stores (unsyncedNamespace), and the
// sync is a no-op.

// unsyncedNamespace returns distribution's stores over the App's driver,
// without holds of their own: the caller holds the group's digests.
func (r *Registry) unsyncedNamespace(ctx context.Context) (distribution.Namespace, error) {
	r.unsynced.once.Do(func() {
		if r.driver == nil {
			r.unsynced.err = errors.New("registry: storage is not ready")
			return
		}
		r.unsynced.ns, r.unsynced.err = storage.NewRegistry(ctx, r.driver, storage.EnableDelete,
			storage.ManifestURLsAllowRegexp(regexp.MustCompile(`^https://`)))
	})
	return r.unsynced.ns, r.unsynced.err
}

// syncStorage makes what was written unsynced on the file system storage
// durable: one syncfs for all of it.
func (r *Registry) syncStorage() error {
	if r.fsRoot == "" {
		return nil
	}
	f, err := os.Open(r.fsRoot)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

type unsyncedStorage struct {
	once sync.Once
	ns   distribution.Namespace
	err  error
}

// rebaseFS writes a group's blobs and links on the file system storage in
// distribution's layout, as its blob and manifest stores would, with
// fewer file system operations: each file through a temporary file renamed
// into place (writeUnsynced), a link or blob that is there already left as
// it is, and what several images share (the new base's layers) checked
// once. Checks are those of distribution's manifest put: every layer the
// manifest names must be linked in the repository, and a layer linked
// from the base (a cross-repository mount) must be linked there and its
// bytes stored.
type rebaseFS struct {
	root string
	mu   sync.Mutex
	src  map[string]error // "REPO@DIGEST" of a mount source → nil when it may be linked from
}

func (f *rebaseFS) path(p string) string { return filepath.Join(f.root, filepath.FromSlash(p)) }

func (f *rebaseFS) isFile(p string) bool {
	fi, err := os.Stat(f.path(p))
	return err == nil && fi.Mode().IsRegular()
}

// put writes content at p unless the file there holds it already
// (content is named by its digest, or is one: the same bytes), through a
// temporary file renamed into place, so that a kill at any moment leaves
// no short file at p: distribution would take a short blob file for the
// blob. A file with other bytes, such as one left short or zeroed by a
// machine crash before a group's sync, is written again. A directory made
// here holds no file yet: nothing to read.
func (f *rebaseFS) put(p string, content []byte) error {
	full := f.path(p)
	dir := filepath.Dir(full)
	switch err := os.Mkdir(dir, 0o777); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		if f.holds(p, content) {
			return nil
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
	default:
		return err
	}
	return writeRenamed(full, content)
}

// holds says whether the file at p holds exactly content.
func (f *rebaseFS) holds(p string, content []byte) bool {
	b, err := f.read(p, int64(len(content)))
	return err == nil && bytes.Equal(b, content)
}

// maxManifestRead bounds a manifest read, as distribution bounds a put.
const maxManifestRead = 4 << 20

// read reads the file at p, of at most limit bytes.
func (f *rebaseFS) read(p string, limit int64) ([]byte, error) {
	fh, err := os.Open(f.path(p))
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is over %d bytes", p, limit)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(fh, b); err != nil {
		return nil, err
	}
	return b, nil
}

// readImage reads, as distribution's manifest and blob stores would,
// manifest d of repo and its config: each must be linked in repo, and
// their bytes must have their digests. It reports ok false, having
// checked nothing, for a manifest without a mediaType (distribution tells
// what it is).
func (f *rebaseFS) readImage(repo string, d digest.Digest) (payload, cfg []byte, mt string, man ocispec.Manifest, ok bool, err error) {
	if !f.isFile(revisionLink(repo, d.String())) {
		return nil, nil, "", man, true, fmt.Errorf("manifest %s is not in %s", d, repo)
	}
	if payload, err = f.read(blobDataPath(d), maxManifestRead); err != nil {
		return nil, nil, "", man, true, fmt.Errorf("manifest %s of %s: %w", d, repo, err)
	}
	if digest.FromBytes(payload) != d {
		return nil, nil, "", man, true, fmt.Errorf("manifest %s of %s: the stored bytes have another digest", d, repo)
	}
	if err := json.Unmarshal(payload, &man); err != nil {
		return nil, nil, "", man, true, err
	}
	if man.MediaType == "" {
		return nil, nil, "", man, false, nil
	}
	if man.Config.Digest == "" || man.Config.Digest.Validate() != nil {
		return payload, nil, man.MediaType, man, true, nil // refused by the caller
	}
	if !f.isFile(layerLink(repo, man.Config.Digest)) {
		return nil, nil, "", man, true, fmt.Errorf("config %s of %s@%s: not linked there", man.Config.Digest, repo, d)
	}
	if cfg, err = f.read(blobDataPath(man.Config.Digest), maxConfig); err != nil {
		return nil, nil, "", man, true, fmt.Errorf("config %s of %s@%s: %w", man.Config.Digest, repo, d, err)
	}
	if digest.FromBytes(cfg) != man.Config.Digest {
		return nil, nil, "", man, true, fmt.Errorf("config %s of %s@%s: the stored bytes have another digest", man.Config.Digest, repo, d)
	}
	return payload, cfg, man.MediaType, man, true, nil
}

// mountable checks once per group that repo links d and d's bytes are
// stored.
func (f *rebaseFS) mountable(repo string, d digest.Digest) error {
	key := repo + "@" + d.String()
	f.mu.Lock()
	err, ok := f.src[key]
	f.mu.Unlock()
	if ok {
		return err
	}
	switch {
	case !f.isFile(layerLink(repo, d)):
		err = fmt.Errorf("blob %s could not be linked from %s: not linked there", d, repo)
	case !f.isFile(blobDataPath(d)):
		err = fmt.Errorf("blob %s could not be linked from %s: its bytes are not stored", d, repo)
	}
	f.mu.Lock()
	f.src[key] = err
	f.mu.Unlock()
	return err
}

// layerLink is where distribution records that repo has blob d.
func layerLink(repo string, d digest.Digest) string {
	return repositoriesRoot + repo + "/_layers/" + d.Algorithm().String() + "/" + d.Encoded() + "/link"
}

// store writes one item's new base layer links, config and manifest.
func (f *rebaseFS) store(it *rebaseItem, man *ocispec.Manifest) error {
	repo := it.req.project + "/" + it.stream
	base := it.baseNS + "/" + it.baseStream
	fresh := map[digest.Digest]bool{}
	for _, d := range it.newLinks {
		fresh[d] = true
		if err := f.mountable(base, d); err != nil {
			return err
		}
		if err := f.put(layerLink(repo, d), []byte(d)); err != nil {
			return err
		}
	}
	for _, l := range man.Layers {
		if !fresh[l.Digest] && len(l.URLs) == 0 && !f.isFile(layerLink(repo, l.Digest)) {
			return fmt.Errorf("registry: layer %s of the rebased image is not linked in %s", l.Digest, repo)
		}
	}
	cd := digest.FromBytes(it.config)
	if man.Config.Digest != cd {
		return fmt.Errorf("registry: the rebased manifest names config %s, the config is %s", man.Config.Digest, cd)
	}
	if err := f.put(blobDataPath(cd), it.config); err != nil {
		return fmt.Errorf("storing the config: %w", err)
	}
	if err := f.put(layerLink(repo, cd), []byte(cd)); err != nil {
		return fmt.Errorf("storing the config: %w", err)
	}
	md := digest.Digest(it.digest)
	if digest.FromBytes(it.manifest) != md {
		return fmt.Errorf("registry: rebased manifest digest %s does not match its bytes", md)
	}
	if err := f.put(blobDataPath(md), it.manifest); err != nil {
		return fmt.Errorf("storing the manifest: %w", err)
	}
	if err := f.put(revisionLink(repo, it.digest), []byte(md)); err != nil {
		return fmt.Errorf("storing the manifest: %w", err)
	}
	return nil
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
	var payload, cfg []byte
	var mt string
	var man ocispec.Manifest
	read := false
	if r.fsRoot != "" {
		f := &rebaseFS{root: r.fsRoot}
		payload, cfg, mt, man, read, err = f.readImage(repo, d)
		if err != nil {
			return nil, err
		}
	}
	if !read {
		if payload, cfg, mt, man, err = r.readImageStored(ctx, named, d); err != nil {
			return nil, err
		}
	}
	if cfg == nil || (mt != ocispec.MediaTypeImageManifest && mt != "application/vnd.docker.distribution.manifest.v2+json") {
		return nil, fmt.Errorf("%s@%s is a %s, not an image manifest", repo, dgst, mt)
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
	return &rawImage{img: &parsedImage{Image: img}, man: man, manifest: payload, config: cfg}, nil
}

// parsedImage parses an image's manifest, config and layers once:
// go-containerregistry's partial images parse them on every call, and a
// group's bases are asked for them by every image it rebases. Callers get
// copies.
type parsedImage struct {
	v1.Image
	once   sync.Once
	man    *v1.Manifest
	cfg    *v1.ConfigFile
	layers []v1.Layer
	err    error
}

func (p *parsedImage) load() error {
	p.once.Do(func() {
		if p.man, p.err = p.Image.Manifest(); p.err != nil {
			return
		}
		if p.cfg, p.err = p.Image.ConfigFile(); p.err != nil {
			return
		}
		p.layers, p.err = p.Image.Layers()
	})
	return p.err
}

func (p *parsedImage) Manifest() (*v1.Manifest, error) {
	if err := p.load(); err != nil {
		return nil, err
	}
	return p.man.DeepCopy(), nil
}

func (p *parsedImage) ConfigFile() (*v1.ConfigFile, error) {
	if err := p.load(); err != nil {
		return nil, err
	}
	return p.cfg.DeepCopy(), nil
}

func (p *parsedImage) Layers() ([]v1.Layer, error) {
	if err := p.load(); err != nil {
		return nil, err
	}
	return slices.Clone(p.layers), nil
}

// readImageStored is readImage through distribution's stores.
func (r *Registry) readImageStored(ctx context.Context, named reference.Named, d digest.Digest) (payload, cfg []byte, mt string, man ocispec.Manifest, err error) {
	repo := named.Name()
	rp, err := r.ns.Repository(ctx, named)
	if err != nil {
		return nil, nil, "", man, err
	}
	ms, err := rp.Manifests(ctx)
	if err != nil {
		return nil, nil, "", man, err
	}
	m, err := ms.Get(ctx, d)
	if err != nil {
		return nil, nil, "", man, fmt.Errorf("manifest %s is not in %s: %w", d, repo, err)
	}
	mt, payload, err = m.Payload()
	if err != nil {
		return nil, nil, "", man, err
	}
	if err := json.Unmarshal(payload, &man); err != nil {
		return nil, nil, "", man, err
	}
	if man.Config.Digest == "" {
		return payload, nil, mt, man, nil
	}
	// The manifest's size is the pusher's word; the stored blob's is not.
	desc, err := rp.Blobs(ctx).Stat(ctx, man.Config.Digest)
	if err != nil {
		return nil, nil, "", man, fmt.Errorf("config %s of %s@%s: %w", man.Config.Digest, repo, d, err)
	}
	if man.Config.Size > maxConfig || desc.Size > maxConfig {
		return nil, nil, "", man, fmt.Errorf("the config of %s@%s is over %d bytes", repo, d, maxConfig)
	}
	if cfg, err = rp.Blobs(ctx).Get(ctx, man.Config.Digest); err != nil {
		return nil, nil, "", man, fmt.Errorf("config %s of %s@%s: %w", man.Config.Digest, repo, d, err)
	}
	return payload, cfg, mt, man, nil
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
