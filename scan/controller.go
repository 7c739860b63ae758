package scan

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	go dbq.Process(ctx, dbs, "scan: database", func(o api.Object) error { return c.loadDB(ctx, o.(*api.VulnerabilityDatabase)) })
	c.queue.Process(ctx, c.images, "scan: image", func(o api.Object) error { return c.scanImage(ctx, o.(*api.Image)) })
}

// scannable: an image manifest with a config, not a referrer artifact
// (signatures, attestations, SBOMs).
func scannable(img *api.Image) bool {
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
	if !scannable(img) || img.DockerImageReference == "" {
		return nil
	}
	if o, ok := c.scans.Get(img.Namespace, img.Name); ok && o.(*api.ImageScan).Status.SBOMDigest != "" {
		return nil
	}
	if err := c.Store.Create(ctx, api.ImageScans, &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: img.Name, Namespace: img.Namespace}}); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	// The same digest scanned in another project (a promotion copies the
	// image and its SBOM referrer): take that scan, read no layer.
	for _, o := range c.scans.List("") {
		if other := o.(*api.ImageScan); other.Name == img.Name && other.Namespace != img.Namespace && other.Status.Phase == "Scanned" && other.Status.SBOMDigest != "" {
			st := other.Status
			return c.setScan(ctx, img.Namespace, img.Name, func(s *api.ImageScanStatus) { *s = st })
		}
	}
	ref := img.DockerImageReference
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
		return c.setScan(ctx, img.Namespace, img.Name, func(s *api.ImageScanStatus) { s.Phase, s.Message = "Failed", err.Error() })
	}
	sd, err := c.Registry.PutSBOM(ctx, ref, sbom.JSON())
	if err != nil {
		return fmt.Errorf("scan: storing the SBOM of %s: %w", ref, err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	c.mu.RLock()
	db, version := c.db, c.dbVersion[strings.LastIndex(c.dbVersion, "@")+1:]
	c.mu.RUnlock()
	slog.Info("scan: image scanned", "image", ref, "packages", len(sbom.Packages), "took", time.Since(start).Round(time.Millisecond))
	return c.setScan(ctx, img.Namespace, img.Name, func(s *api.ImageScanStatus) {
		s.Phase, s.Message, s.SBOMDigest, s.Packages, s.ScannedAt = "Scanned", "", sd, len(sbom.Packages), &now
		applyMatch(s, db, version, sbom, now)
	})
}

func applyMatch(s *api.ImageScanStatus, db *DB, version string, sbom *SBOM, now time.Time) {
	s.Findings, s.Counts = nil, map[string]int{}
	if db == nil {
		s.DBVersion = ""
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
	// Match every stored SBOM again: the SBOM referrer is read, never a
	// layer.
	start := time.Now()
	n := 0
	for _, o := range c.scans.List("") {
		sc := o.(*api.ImageScan)
		if sc.Status.SBOMDigest == "" {
			continue
		}
		rec, ok := c.images.Get(sc.Namespace, sc.Name)
		if !ok {
			continue
		}
		ref := rec.(*api.Image).DockerImageReference
		repo := ref[:strings.LastIndex(ref, "@")]
		doc, err := c.Registry.GetSBOM(ctx, repo, sc.Status.SBOMDigest)
		if err != nil {
			slog.Warn("scan: reading a stored SBOM", "image", ref, "err", err)
			continue
		}
		sbom, err := ParseSBOM(doc)
		if err != nil {
			slog.Warn("scan: a stored SBOM does not parse", "image", ref, "err", err)
			continue
		}
		before := map[string]bool{}
		for _, f := range sc.Status.Findings {
			before[f.ID+"|"+f.Package] = true
		}
		var added []string
		if err := c.setScan(ctx, sc.Namespace, sc.Name, func(s *api.ImageScanStatus) {
			applyMatch(s, db, version, sbom, now)
			added = nil
			for _, f := range s.Findings {
				if !before[f.ID+"|"+f.Package] {
					added = append(added, fmt.Sprintf("%s %s in %s %s", f.Severity, f.ID, f.Package, f.Version))
				}
			}
		}); err != nil {
			return err
		}
		if len(added) > 0 {
			c.event(ctx, sc.Namespace, sc.Name, ref, added, now)
		}
		n++
	}
	slog.Info("scan: database loaded; stored SBOMs matched again", "version", version, "advisories", db.Len(), "sboms", n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// DatabaseSourceAnnotation on the VulnerabilityDatabase is the artifact
// (REGISTRY/PROJECT/STREAM@DIGEST) holding the OSV export, as a zip.
const DatabaseSourceAnnotation = "slipway.dev/source"

// event records new findings of a stored image, naming the tags that hold
// it and the deployments that run it.
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
	if items, _, err := c.Store.List(ctx, api.ReplicationControllers, "", store.ListOptions{}); err == nil {
		for _, o := range items {
			rc := o.(*api.ReplicationController)
			if rc.Spec.Replicas == 0 || rc.Spec.Template == nil {
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
