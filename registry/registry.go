// Package registry embeds the distribution v3 registry and puts Slipway in
// front of it: platform tokens and the Docker token flow, RBAC per project,
// name checks with the spec's error codes, referrers, and image-stream
// recording on every manifest PUT.
//
// Distribution already scopes blobs to repositories: a blob is served from
// repository R only when R links it (from an upload, a mount or a manifest),
// so project B cannot read A's blobs by digest. Mounts from a repository
// the caller may not pull fall back to a normal upload.
//
// Manifest GETs and HEADs are authorized as every request is (registry
// tokens that verified are remembered until they expire), then answered
// from a cache of manifest bytes when the answer is certain to be
// distribution's own; fastpath.go says when, and how staleness is bounded
// across replicas.
package registry

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
	"github.com/sirupsen/logrus"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
)

// Authenticator resolves platform tokens.
type Authenticator interface {
	AuthenticateToken(ctx context.Context, token string) (identity.Info, error)
}

// Authorizer answers RBAC questions.
type Authorizer interface {
	Authorize(u identity.Info, a rbac.Attributes) (bool, string)
}

// Config configures the registry.
type Config struct {
	Store *store.Store
	Authn Authenticator
	Authz Authorizer
	// Project looks a project up, from a cache. Required.
	Project func(ctx context.Context, name string) (*api.Project, error)
	// Dir holds the token signing keys, the HTTP secret and, unless
	// Storage says otherwise, the blobs. Required.
	Dir string
	// Storage is a distribution storage configuration, such as
	// {"s3": {...}}. Default: filesystem under Dir/storage.
	Storage configuration.Storage
	// Host is host:port as clients reach the registry; it goes into
	// image references. Default 127.0.0.1:5000.
	Host string
	// Service is the token audience. Default "slipway-registry".
	Service string
	// TokenTTL is the lifetime of registry tokens. Default 5 minutes.
	TokenTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Faults makes named steps of a push fail, for tests. Nil in
	// production.
	Faults *FaultInjector
	// Import says which external registries `import-image` may reach.
	Import ImportPolicy
	// Mirrors are upstream registries served read-through under their
	// name (mirror.go); each upstream host must be on Import's allow-list.
	// Default none.
	Mirrors []Mirror
	// SignRebase signs an image a server-side rebase made, in a project
	// whose builds are signed, and attests prov (BuilderID is the
	// caller's to fill), before the image's tag moves (rebase.go). Nil:
	// such a project's rebases run as builds, which sign.
	SignRebase func(ctx context.Context, project, image string, prov *signing.Provenance) error
}

// FaultInjector fails named steps of a manifest push: before-manifest-put,
// before-image-record, before-tag-move and after-tag-move. Tests use it to
// show that a failure at any step leaves no tag without its record and
// loses nothing that was acknowledged.
type FaultInjector struct {
	mu   sync.Mutex
	fail map[string]int
}

// Fail makes the next n passes through point fail.
func (f *FaultInjector) Fail(point string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == nil {
		f.fail = map[string]int{}
	}
	f.fail[point] = n
}

// hit reports whether this pass through point fails. Requests by the
// platform's own service accounts (the scanner storing SBOMs, builds,
// promotions) never do: the faults are for a test's own pushes.
func (f *FaultInjector) hit(ctx context.Context, point string) bool {
	if f == nil || strings.HasPrefix(identity.FromContext(ctx).Name, "system:serviceaccount:") {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[point] > 0 {
		f.fail[point]--
		return true
	}
	return false
}

// Validate fills defaults and checks what is required.
func (c *Config) Validate() error {
	switch {
	case c.Store == nil, c.Authn == nil, c.Authz == nil, c.Project == nil:
		return errors.New("registry: Store, Authn, Authz and Project are required")
	case c.Dir == "":
		return errors.New("registry: a directory is required")
	}
	if c.Host == "" {
		c.Host = "127.0.0.1:5000"
	}
	if c.Service == "" {
		c.Service = "slipway-registry"
	}
	if c.TokenTTL == 0 {
		c.TokenTTL = 5 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := ValidateMirrors(c.Mirrors, c.Import); err != nil {
		return err
	}
	if c.Import.Interval == 0 {
		c.Import.Interval = 15 * time.Minute
	}
	if c.Storage == nil {
		c.Storage = configuration.Storage{"filesystem": configuration.Parameters{"rootdirectory": filepath.Join(c.Dir, "storage")}}
	}
	return nil
}

// Registry is the registry's HTTP handler.
type Registry struct {
	cfg      Config
	inFlight atomic.Int64 // requests from the network being served (WaitQuiet)
	app      *handlers.App
	keys     *keySet
	recorder *imagestreams.Recorder
	refs     *referrers
	ns       distribution.Namespace      // the App's storage, for server-side links
	driver   storagedriver.StorageDriver // the same storage, for removing a deleted project's repositories
	// streams caches ImageStreams: tag reads come from here, and each
	// push waits until it shows its own tag move.
	streams *store.Informer
	// pipelines say which tags only a promotion may move.
	pipelines *store.Informer
	// manifests caches manifest bytes for the GET fast path (fastpath.go).
	manifests *manifestCache
	// fsRoot is the filesystem storage's root directory, "" for other
	// storage; the fast path stats revision links there directly.
	fsRoot string

	mu  sync.Mutex
	due map[string]bool // scheduled imports whose time has come

	// mirrors are the pull-through mirrors by name (mirror.go).
	mirrors map[string]*mirror

	rebase   rebaser         // server-side rebase (rebase.go)
	unsynced unsyncedStorage // storage for server-side writes (rebasestore.go)
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// New builds the registry. It does not listen; serve it with net/http.
func New(ctx context.Context, cfg Config) (r *Registry, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	r = &Registry{cfg: cfg, recorder: &imagestreams.Recorder{Store: cfg.Store, Registry: cfg.Host}, refs: &referrers{store: cfg.Store},
		streams: store.NewInformer(cfg.Store, api.ImageStreams), pipelines: store.NewInformer(cfg.Store, api.Pipelines),
		manifests: newManifestCache(maxManifestCache), mirrors: map[string]*mirror{}}
	// A push moves its tag from the cached stream (one write, no read).
	r.recorder.Cached = r.streams.Get
	for _, m := range cfg.Mirrors {
		if r.mirrors[m.Name], err = newMirror(m, cfg.Import, cfg.Now); err != nil {
			return nil, err
		}
	}
	if r.keys, err = loadKeys(filepath.Join(cfg.Dir, "token-keys")); err != nil {
		return nil, fmt.Errorf("registry: token keys: %w", err)
	}
	secret, err := loadSecret(filepath.Join(cfg.Dir, "http-secret"))
	if err != nil {
		return nil, err
	}
	registerMiddleware()
	captureNamespace()
	// distribution logs every 404 at error level through the global
	// logrus logger; the edge logs what matters through slog instead.
	logrus.SetLevel(logrus.FatalLevel)
	dc := &configuration.Configuration{}
	dc.Storage = configuration.Storage{}
	for k, v := range cfg.Storage {
		if k == "filesystem" {
			// Same layout, uploads in progress unsynced (fsdriver.go).
			registerFastFSDriver()
			k = fastFSDriverName
		}
		dc.Storage[k] = v
	}
	dc.Storage["delete"] = configuration.Parameters{"enabled": true}
	dc.Storage["redirect"] = configuration.Parameters{"disable": true}
	// No blob descriptor cache: distribution's in-memory one answers for a
	// repository's links after their files are gone, so a deleted
	// project's manifests stayed pullable by digest from every registry
	// process that had served them (M2).
	// Uploads abandoned (or cut off by a crash) for a week are purged daily.
	dc.Storage["maintenance"] = configuration.Parameters{"uploadpurging": map[any]any{"enabled": true, "age": "168h", "interval": "24h", "dryrun": false}}
	dc.HTTP.Secret = secret
	dc.HTTP.RelativeURLs = true
	dc.HTTP.Headers = http.Header{"X-Content-Type-Options": {"nosniff"}}
	// Non-distributable layers point at foreign URLs, which readers of
	// the image fetch from inside the platform; checkForeign (foreign.go)
	// decides which, before distribution sees them.
	dc.Validation.Manifests.URLs.Allow = []string{`^https://`}
	// Index children are checked by the middleware, which also finds
	// children pushed by sha512 digest.
	dc.Validation.Manifests.Indexes.Platforms = "none"
	dc.Middleware = map[string][]configuration.Middleware{
		"registry":   {{Name: captureName, Options: configuration.Parameters{"registry": r}}},
		"repository": {{Name: middlewareName, Options: configuration.Parameters{"registry": r}}},
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("registry: configuration refused by distribution: %v", p)
		}
	}()
	r.app = handlers.NewApp(ctx, dc)
	if err := r.checkStorage(ctx); err != nil {
		return nil, err
	}
	if p, ok := cfg.Storage["filesystem"]; ok {
		if root, ok := p["rootdirectory"].(string); ok && filepath.IsAbs(root) {
			r.fsRoot = root
		}
	}
	return r, nil
}

// RotateKey makes a new token signing key.
func (r *Registry) RotateKey() (string, error) { return r.keys.Rotate() }

func loadSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	buf := make([]byte, 32)
	if _, err := io.ReadFull(rand.Reader, buf); err != nil {
		return "", err
	}
	s := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

// checkStorage lists the storage's root once, so that a storage the
// registry cannot use (a bucket that does not exist, refused credentials,
// an endpoint that does not answer) stops the start with the driver's
// reason instead of failing every push later.
func (r *Registry) checkStorage(ctx context.Context) error {
	if r.driver == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, storageCheckTimeout)
	defer cancel()
	_, err := r.driver.List(ctx, "/")
	var empty storagedriver.PathNotFoundError
	if err == nil || errors.As(err, &empty) {
		return nil
	}
	return fmt.Errorf("registry: the %s storage cannot be listed (check --registry-storage: the bucket must exist and the credentials may list it): %w", r.driver.Name(), err)
}

const storageCheckTimeout = 30 * time.Second
