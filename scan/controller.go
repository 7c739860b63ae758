package scan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Registry is what the scanner needs from the integrated registry.
type Registry interface {
	// Image reads an image by digest reference.
	Image(ctx context.Context, ref string) (v1.Image, error)
	// PutSBOM stores a CycloneDX document as a referrer of ref and
	// returns its manifest digest.
	PutSBOM(ctx context.Context, ref string, doc []byte) (string, error)
	// GetSBOM reads it back (repo is REGISTRY/PROJECT/STREAM).
	GetSBOM(ctx context.Context, repo, digest string) ([]byte, error)
	// Fetch copies the single layer of an artifact (the database) to a
	// file.
	Fetch(ctx context.Context, ref, path string) error
}

// DatabaseName is the cluster's one VulnerabilityDatabase.
const DatabaseName = "default"

// Controller scans every image recorded in the registry, and matches the
// stored SBOMs again whenever the vulnerability database changes; layers
// are read once per image, never again.
type Controller struct {
	Store    *store.Store
	Registry Registry
	// RegistryHost is the integrated registry's host: only images in it
	// are scanned.
	RegistryHost string
	// Yield, when set, is called before each scan that reads layers: it
	// waits a bounded time for the registry to serve nothing else, so
	// that scans fill the idle moments instead of slowing pushes down.
	Yield func(ctx context.Context)

	// work is held by a scan and by the removal of a record, so that a
	// record is never removed under a scan that has just written it.
	work sync.Mutex

	mu        sync.RWMutex
	db        *DB
	dbVersion string
	images    *store.Informer
	scans     *store.Informer
	queue     *store.WorkQueue
}

// Run scans until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.images = store.NewInformer(c.Store, api.Images)
	c.scans = store.NewInformer(c.Store, api.ImageScans)
	dbs := store.NewInformer(c.Store, api.VulnerabilityDatabases)
	c.queue = store.NewWorkQueue()
	c.images.AddHandler(func(ev store.Event) {
		if ev.Type == api.Added {
			m := ev.Object.GetObjectMeta()
			c.queue.Add(m.Namespace + "/" + m.Name)
		}
	})
	dbq := store.NewWorkQueue()
	dbs.AddHandler(func(ev store.Event) {
		if ev.Type != api.Deleted {
			dbq.Add("/" + DatabaseName)
		}
	})
	go c.scans.Run(ctx)
	go c.images.Run(ctx)
	go dbs.Run(ctx)
	if store.WaitSynced(ctx, c.scans, c.images, dbs) != nil {
		return
	}
	go dbq.Process(ctx, dbs, "scan: database", func(o api.Object) error { return c.loadDB(ctx, o.(*api.VulnerabilityDatabase)) })
	c.queue.Process(ctx, c.images, "scan: image", func(o api.Object) error { return c.scanImage(ctx, o.(*api.Image)) })
}

// Scannable says whether the scanner scans img: an image manifest with a config, not a referrer artifact
// (signatures, attestations, SBOMs).
func Scannable(img *api.Image) bool {
	if img.Config == nil || img.Subject != "" || img.ArtifactType != "" || len(img.Layers) == 0 {
		return false
	}
	// Only filesystem layers: cosign's .sig/.att manifests and other
	// artifacts carry JSON or zip layers.
	for _, l := range img.Layers {
		if !strings.Contains(l.MediaType, "tar") && !strings.Contains(l.MediaType, "rootfs") {
			return false
		}
	}
	return true
}

func (c *Controller) scanImage(ctx context.Context, img *api.Image) error {
	if !Scannable(img) || img.DockerImageReference == "" {
		return nil
	}
	if !c.ownRef(img) {
		// Image records are written by the registry, but a project's
		// admin can write one too: its reference must name the record's
		// own digest in the record's own project, or the scanner would
		// read another project's image, or another image, for it.
		slog.Warn("scan: an image record names another image; not scanned", "project", img.Namespace, "image", img.Name, "reference", img.DockerImageReference)
		return nil
	}
	c.work.Lock()
	defer c.work.Unlock()
	// The scan of a digest is the platform's record (ScanRecord), which
	// only this controller writes: a project's ImageScan is its copy, and
	// nothing a project's users write is ever read back as a scan. The
	// same digest pushed or promoted into another project takes the
	// record and reads no layer.
	rec, err := c.record(ctx, img.Name)
	if err != nil {
		return err
	}
	if rec == nil || rec.Status.Phase != PhaseScanned {
		if c.Yield != nil {
			c.Yield(ctx) // only a scan that reads layers waits
		}
		if rec, err = c.scanLayers(ctx, img); err != nil {
			return err
		}
	}
	return c.copyScan(ctx, img.Namespace, img.Name, rec.Status)
}

// ownRef says img's reference is REGISTRY/PROJECT/STREAM@DIGEST with the
// integrated registry, the record's own project and the record's digest.
func (c *Controller) ownRef(img *api.Image) bool {
	rest, ok := strings.CutPrefix(img.DockerImageReference, c.RegistryHost+"/"+img.Namespace+"/")
	if c.RegistryHost == "" || !ok {
		return false
	}
	stream, digest, ok := strings.Cut(rest, "@")
	return ok && stream != "" && digest == img.Name && !strings.ContainsAny(stream, "@:")
}

// Scan phases.
const (
	PhaseScanned = "Scanned"
	PhaseFailed  = "Failed"
)

// NoDatabaseMessage is the scan message while no vulnerability database is
// loaded: the packages are known, the findings are not.
const NoDatabaseMessage = "findings unknown: no vulnerability database is loaded; a cluster admin imports one with `slipway vulndb import FILE.zip`"

// record reads the platform's record of digest; nil if there is none.
func (c *Controller) record(ctx context.Context, digest string) (*api.ScanRecord, error) {
	o, err := c.Store.Get(ctx, api.ScanRecords, "", digest)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return o.(*api.ScanRecord), nil
}

// Lookup returns the platform's scan of an image digest as an ImageScan
// (for policies.Checker), or nil when the digest has no scan yet. It reads
// the scanner's own record, never a project's ImageScan, which is a copy:
// admission and promotion use it so that no project's data, and no other
// project's, can stand in for a scan.
func Lookup(ctx context.Context, st *store.Store, digest string) (*api.ImageScan, error) {
	o, err := st.Get(ctx, api.ScanRecords, "", digest)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: digest}, Status: o.(*api.ScanRecord).Status}, nil
}

// scanLayers reads the image's layers, stores its SBOM as a referrer of
// it, matches it and writes the record.
func (c *Controller) scanLayers(ctx context.Context, img *api.Image) (*api.ScanRecord, error) {
	ref := img.DockerImageReference
	repo := ref[:strings.LastIndex(ref, "@")]
	start := time.Now()
	image, err := c.Registry.Image(ctx, ref)
	var sbom *SBOM
	if err == nil {
		sbom, err = NewSBOM(ctx, image)
	}
	if err != nil {
		// A hostile or unreadable image is a finding in itself: the
		// policy treats Failed as unscanned and refuses it.
		slog.Warn("scan: image failed", "image", ref, "err", err)
		return c.setRecord(ctx, img.Name, func(r *api.ScanRecord) {
			r.Repository, r.Status = "", api.ImageScanStatus{Phase: PhaseFailed, Message: err.Error()}
		})
	}
	sd, err := c.Registry.PutSBOM(ctx, ref, sbom.JSON())
	if err != nil {
		return nil, fmt.Errorf("scan: storing the SBOM of %s: %w", ref, err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	slog.Info("scan: image scanned", "image", ref, "packages", len(sbom.Packages), "took", time.Since(start).Round(time.Millisecond))
	return c.setRecord(ctx, img.Name, func(r *api.ScanRecord) {
		r.Repository = repo
		s := &r.Status
		s.Phase, s.Message, s.SBOMDigest, s.Packages, s.ScannedAt = PhaseScanned, "", sd, len(sbom.Packages), &now
		// The database is read as the record is written, so a database
		// loaded while the layers were read is not missed.
		c.mu.RLock()
		db, version := c.db, c.version()
		c.mu.RUnlock()
		applyMatch(s, db, version, sbom, now)
	})
}

// version is the loaded database's version (its artifact digest); c.mu is
// held.
func (c *Controller) version() string {
	return c.dbVersion[strings.LastIndex(c.dbVersion, "@")+1:]
}

// setRecord creates or updates the record of digest.
func (c *Controller) setRecord(ctx context.Context, digest string, fn func(*api.ScanRecord)) (*api.ScanRecord, error) {
	r := &api.ScanRecord{ObjectMeta: api.ObjectMeta{Name: digest}}
	fn(r)
	err := c.Store.Create(ctx, api.ScanRecords, r)
	if err == nil {
		return r, nil
	}
	if !errors.Is(err, store.ErrExists) {
		return nil, err
	}
	o, err := c.Store.GuaranteedUpdate(ctx, api.ScanRecords, "", digest, store.UpdateOptions{}, func(o api.Object) error {
		fn(o.(*api.ScanRecord))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o.(*api.ScanRecord), nil
}

// copyScan makes the project's ImageScan of digest show st, the record.
func (c *Controller) copyScan(ctx context.Context, ns, digest string, st api.ImageScanStatus) error {
	if o, ok := c.scans.Get(ns, digest); ok && reflect.DeepEqual(o.(*api.ImageScan).Status, st) {
		return nil
	}
	if err := c.Store.Create(ctx, api.ImageScans, &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: digest, Namespace: ns}}); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	return c.setScan(ctx, ns, digest, func(s *api.ImageScanStatus) { *s = st })
}

func applyMatch(s *api.ImageScanStatus, db *DB, version string, sbom *SBOM, now time.Time) {
	s.Findings, s.Counts = nil, map[string]int{}
	if db == nil {
		// Unknown, not clean: policies refuse a scan without a database.
		s.DBVersion, s.Message = "", NoDatabaseMessage
		return
	}
	for _, f := range db.Match(sbom) {
		s.Findings = append(s.Findings, api.Finding{ID: f.ID, Aliases: f.Aliases, Package: f.Package, Version: f.Version, FixedIn: f.FixedIn, Severity: string(f.Severity), Summary: f.Summary})
		s.Counts[string(f.Severity)]++
	}
	sort.SliceStable(s.Findings, func(i, j int) bool {
		return api.SeverityRank(s.Findings[i].Severity) > api.SeverityRank(s.Findings[j].Severity)
	})
	s.DBVersion, s.MatchedAt = version, &now
}

func (c *Controller) setScan(ctx context.Context, ns, name string, fn func(*api.ImageScanStatus)) error {
	_, err := c.Store.GuaranteedUpdate(ctx, api.ImageScans, ns, name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		fn(&o.(*api.ImageScan).Status)
		return nil
	})
	return err
}

// loadDB loads a new database and matches every stored SBOM again.
func (c *Controller) loadDB(ctx context.Context, v *api.VulnerabilityDatabase) error {
	src := v.Annotations[DatabaseSourceAnnotation]
	if src == "" {
		return nil
	}
	if c.RegistryHost != "" && !strings.HasPrefix(src, c.RegistryHost+"/"+api.VulnDBProject+"/") {
		// Only cluster admins can make the vulndb project (its name is
		// reserved); another project's users could replace or delete
		// what they hold.
		return fmt.Errorf("scan: the database %s is not in project %s of the integrated registry; import it with `slipway vulndb import FILE.zip`", src, api.VulnDBProject)
	}
	c.mu.RLock()
	same := c.dbVersion == src
	c.mu.RUnlock()
	if same {
		return nil
	}
	f, err := os.CreateTemp("", "slipway-vulndb-*.zip")
	if err != nil {
		return err
	}
	f.Close()
	defer os.Remove(f.Name())
	if err := c.Registry.Fetch(ctx, src, f.Name()); err != nil {
		return fmt.Errorf("scan: fetching the database %s: %w", src, err)
	}
	db, err := LoadDB(f.Name())
	if err != nil {
		return err
	}
	version := src[strings.LastIndex(src, "@")+1:]
	c.mu.Lock()
	c.db, c.dbVersion = db, src
	c.mu.Unlock()
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := c.Store.GuaranteedUpdate(ctx, api.VulnerabilityDatabases, "", DatabaseName, store.UpdateOptions{Status: true}, func(o api.Object) error {
		s := &o.(*api.VulnerabilityDatabase).Status
		s.Version, s.Advisories, s.ImportedAt = version, db.Len(), &now
		return nil
	}); err != nil {
		return err
	}
	// Match every record's SBOM again: the SBOM referrer is read, never a
	// layer. Listed from the store, not a cache, so a record written just
	// before the database was swapped in is not missed.
	start := time.Now()
	recs, _, err := c.Store.List(ctx, api.ScanRecords, "", store.ListOptions{})
	if err != nil {
		return err
	}
	imgs, _, err := c.Store.List(ctx, api.Images, "", store.ListOptions{})
	if err != nil {
		return err
	}
	live := map[string][]string{}
	for _, o := range imgs {
		m := o.GetObjectMeta()
		live[m.Name] = append(live[m.Name], m.Namespace+"/"+m.Name)
	}
	n := 0
	for _, o := range recs {
		rec := o.(*api.ScanRecord)
		if len(live[rec.Name]) == 0 {
			// No project holds the digest any more.
			if err := c.dropRecord(ctx, rec.Name); err != nil {
				return err
			}
			continue
		}
		if IsDerived(&rec.Status) {
			// A rebase derived it, with no SBOM to match again: scan the
			// image's layers.
			if _, err := c.Store.Delete(ctx, api.ScanRecords, "", rec.Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			for _, k := range live[rec.Name] {
				c.queue.Add(k)
			}
			continue
		}
		if rec.Status.Phase != PhaseScanned || rec.Status.SBOMDigest == "" || rec.Repository == "" {
			continue
		}
		sbom, repo, err := c.storedSBOM(ctx, rec)
		if err != nil {
			// Every copy of the SBOM is gone (its projects were deleted,
			// say): the findings stay those of the last database, and
			// say so.
			slog.Warn("scan: reading a stored SBOM", "image", rec.Repository+"@"+rec.Name, "err", err)
			msg := fmt.Sprintf("not matched with database %s: the SBOM could not be read (%v); push the image again to scan it", version, err)
			updated, err := c.setRecord(ctx, rec.Name, func(r *api.ScanRecord) { r.Status.Message = msg })
			if err != nil {
				return err
			}
			c.copyAll(ctx, rec.Name, updated.Status, nil, now)
			continue
		}
		before := map[string]bool{}
		for _, f := range rec.Status.Findings {
			before[f.ID+"|"+f.Package] = true
		}
		var added []string
		updated, err := c.setRecord(ctx, rec.Name, func(r *api.ScanRecord) {
			r.Repository = repo
			r.Status.Message = ""
			applyMatch(&r.Status, db, version, sbom, now)
			added = nil
			for _, f := range r.Status.Findings {
				if !before[f.ID+"|"+f.Package] {
					added = append(added, fmt.Sprintf("%s %s in %s %s", f.Severity, f.ID, f.Package, f.Version))
				}
			}
		})
		if err != nil {
			return err
		}
		c.copyAll(ctx, rec.Name, updated.Status, added, now)
		n++
	}
	slog.Info("scan: database loaded; stored SBOMs matched again", "version", version, "advisories", db.Len(), "sboms", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// dropRecord removes the record of a digest no Image holds. An Image made
// since the list was read is in the cache by the time it is scanned, and
// one made after this check is scanned afresh.
func (c *Controller) dropRecord(ctx context.Context, digest string) error {
	c.work.Lock()
	defer c.work.Unlock()
	for _, o := range c.images.List("") {
		if o.GetObjectMeta().Name == digest {
			return nil
		}
	}
	if _, err := c.Store.Delete(ctx, api.ScanRecords, "", digest, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// storedSBOM reads the SBOM the record names: from the repository the
// scanner wrote it to, or else from another project holding the digest (a
// promotion copies the SBOM referrer with the image). Read by digest, so
// the document is the one the scanner made.
func (c *Controller) storedSBOM(ctx context.Context, rec *api.ScanRecord) (*SBOM, string, error) {
	repos := []string{rec.Repository}
	for _, o := range c.images.List("") {
		if img := o.(*api.Image); img.Name == rec.Name && c.ownRef(img) {
			if r := img.DockerImageReference[:strings.LastIndex(img.DockerImageReference, "@")]; !slices.Contains(repos, r) {
				repos = append(repos, r)
			}
		}
	}
	var first error
	for _, repo := range repos {
		doc, err := c.Registry.GetSBOM(ctx, repo, rec.Status.SBOMDigest)
		if err == nil {
			var sbom *SBOM
			if sbom, err = ParseSBOM(doc); err == nil {
				return sbom, repo, nil
			}
		}
		if first == nil {
			first = err
		}
	}
	return nil, "", first
}

// copyAll copies a record to every project that holds the digest, and
// tells each of them about new findings.
func (c *Controller) copyAll(ctx context.Context, digest string, st api.ImageScanStatus, added []string, now time.Time) {
	for _, o := range c.images.List("") {
		img := o.(*api.Image)
		if img.Name != digest || !Scannable(img) || !c.ownRef(img) {
			continue
		}
		if err := c.copyScan(ctx, img.Namespace, digest, st); err != nil {
			slog.Warn("scan: copying a scan", "project", img.Namespace, "image", digest, "err", err)
			continue
		}
		if len(added) > 0 {
			c.event(ctx, img.Namespace, digest, img.DockerImageReference, added, now)
		}
	}
}

// DatabaseSourceAnnotation on the VulnerabilityDatabase is the artifact
// (REGISTRY/PROJECT/STREAM@DIGEST) holding the OSV export, as a zip.
const DatabaseSourceAnnotation = "slipway.dev/source"

// event records new findings of a stored image in project ns, naming the
// tags that hold it and the deployments that run it there: only ns's own,
// as the event is ns's to read.
func (c *Controller) event(ctx context.Context, ns, digest, ref string, added []string, now time.Time) {
	var tags, deployments []string
	if items, _, err := c.Store.List(ctx, api.ImageStreams, ns, store.ListOptions{}); err == nil {
		for _, o := range items {
			is := o.(*api.ImageStream)
			for _, t := range is.Status.Tags {
				if len(t.Items) > 0 && t.Items[0].Image == digest {
					tags = append(tags, is.Name+":"+t.Tag)
				}
			}
		}
	}
	if items, _, err := c.Store.List(ctx, api.ReplicationControllers, ns, store.ListOptions{}); err == nil {
		for _, o := range items {
			rc := o.(*api.ReplicationController)
			if rc.Namespace != ns || rc.Spec.Replicas == 0 || rc.Spec.Template == nil {
				continue
			}
			for _, ct := range rc.Spec.Template.Spec.Containers {
				if strings.HasSuffix(ct.Image, "@"+digest) {
					name := rc.Namespace + "/" + rc.Name
					if dc := rc.Annotations[api.DeploymentConfigAnnotation]; dc != "" {
						name = rc.Namespace + "/dc/" + dc
					}
					deployments = append(deployments, name)
				}
			}
		}
	}
	msg := fmt.Sprintf("%d new finding(s) in %s: %s", len(added), ref, strings.Join(added, ", "))
	if len(tags) > 0 {
		msg += "; tags: " + strings.Join(tags, ", ")
	}
	if len(deployments) > 0 {
		msg += "; running in: " + strings.Join(deployments, ", ")
	}
	ev := &api.Event{
		ObjectMeta:     api.ObjectMeta{Name: fmt.Sprintf("newfindings-%s-%d", strings.ReplaceAll(digest, ":", "-")[:20], time.Now().UnixNano()), Namespace: ns},
		InvolvedObject: api.ObjectReference{Kind: "ImageScan", Name: digest, Namespace: ns},
		Reason:         "NewFindings", Type: "Warning", Message: msg, Time: now,
	}
	if err := c.Store.Create(ctx, api.Events, ev); err != nil {
		slog.Warn("scan: recording an event", "err", err)
	}
	slog.Warn("scan: new findings", "project", ns, "message", msg)
}
