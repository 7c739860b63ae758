package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/store"
)

// Image pruning: tag history beyond N revisions and older than a cut-off
// goes, then every Image no history entry, no platform object and no kept
// image (an index's children, a referrer's subject) holds. Removing an
// Image removes its manifest revisions from the project's repositories,
// which is what lets the next garbage collection free the blobs.
//
// In use means: any digest written in a pod, a replication controller, a
// deployment config, a build that is running or finished within the
// cut-off, a pending promotion, an image stream's spec, or the current
// image of a pipeline stage's tag, in any project.

// Retention annotations on a Project: the periodic pass prunes projects
// that carry either, with the same code as `slipway adm prune images
// --confirm`.
const (
	RetentionKeepTagRevisionsAnnotation = "slipway.dev/retention-keep-tag-revisions"
	RetentionKeepYoungerThanAnnotation  = "slipway.dev/retention-keep-younger-than"
)

// recentBuild is how long a finished build keeps the images it names (at
// least; longer when --keep-younger-than is).
const recentBuild = time.Hour

// Prune defaults, as in `oc adm prune images`.
const (
	DefaultKeepTagRevisions = 3
	DefaultKeepYoungerThan  = 60 * time.Minute
)

// PruneOptions configures one prune.
type PruneOptions struct {
	// Project limits the prune to one project; "" is every project.
	Project string
	// KeepTagRevisions keeps this many newest entries of every tag's
	// history; at least 1 (a tag's current image is never pruned).
	KeepTagRevisions int
	// KeepYoungerThan keeps history entries and images younger than this.
	KeepYoungerThan time.Duration
	// Confirm acts; without it the prune only reports.
	Confirm bool
}

// PruneItem is one thing a prune removes, or keeps against the rules,
// and why.
type PruneItem struct {
	Kind     string `json:"kind"` // HistoryEntry or Image
	Project  string `json:"project"`
	Stream   string `json:"stream,omitempty"`
	Tag      string `json:"tag,omitempty"`
	Position int    `json:"position,omitempty"` // 1 is the tag's current image
	Image    string `json:"image"`
	Reason   string `json:"reason"`
	created  time.Time
}

// PruneReport is what `slipway adm prune images` prints.
type PruneReport struct {
	DryRun           bool        `json:"dryRun"`
	KeepTagRevisions int         `json:"keepTagRevisions"`
	KeepYoungerThan  string      `json:"keepYoungerThan"`
	Removed          []PruneItem `json:"removed"`
	// Kept lists what the revision and age rules would remove but a
	// reference keeps.
	Kept []PruneItem `json:"kept"`
}

var errNoProject = errors.New("no such project")

var digestRE = regexp.MustCompile(`sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}`)

// imageUser is one object that uses an image.
type imageUser struct{ kind, namespace, name string }

// imageUsers maps each digest the platform uses to who uses it.
type imageUsers map[string][]imageUser

func (u imageUsers) addJSON(holder imageUser, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	for _, d := range digestRE.FindAllString(string(b), -1) {
		if n := len(u[d]); n == 0 || u[d][n-1] != holder {
			u[d] = append(u[d], holder)
		}
	}
}

// describe names the users of d as seen from project: objects of other
// projects are not named to a project's admin.
func (u imageUsers) describe(d, project string) string {
	var out []string
	others := 0
	for _, h := range u[d] {
		if h.namespace != project {
			others++
			continue
		}
		out = append(out, h.kind+" "+h.name)
	}
	if others > 0 {
		out = append(out, fmt.Sprintf("%d object(s) in other projects", others))
	}
	return strings.Join(out, ", ")
}

func (r *Registry) listAll(ctx context.Context, res *api.Resource) ([]api.Object, error) {
	items, _, err := r.cfg.Store.List(ctx, res, "", store.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("registry: listing %s to know what is in use: %w", res.Name, err)
	}
	return items, nil
}

// usedImages reads every reference the platform holds to an image.
func (r *Registry) usedImages(ctx context.Context, now time.Time, recent time.Duration) (imageUsers, error) {
	u := imageUsers{}
	name := func(kind string, o api.Object) imageUser {
		m := o.GetObjectMeta()
		return imageUser{kind, m.Namespace, m.Name}
	}
	for _, c := range []struct {
		res  *api.Resource
		kind string
	}{{api.Pods, "pod"}, {api.ReplicationControllers, "replication controller"}, {api.DeploymentConfigs, "deployment config"}} {
		items, err := r.listAll(ctx, c.res)
		if err != nil {
			return nil, err
		}
		for _, o := range items {
			u.addJSON(name(c.kind, o), o)
		}
	}
	builds, err := r.listAll(ctx, api.Builds)
	if err != nil {
		return nil, err
	}
	for _, o := range builds {
		b := o.(*api.Build)
		done := b.Status.CompletionTimestamp
		if !api.IsFinished(b.Status.Phase) || done == nil || now.Sub(*done) < recent {
			u.addJSON(name("build ("+strings.ToLower(b.Status.Phase)+")", o), o)
		}
	}
	proms, err := r.listAll(ctx, api.Promotions)
	if err != nil {
		return nil, err
	}
	for _, o := range proms {
		if p := o.(*api.Promotion); p.Status.Phase == "" || p.Status.Phase == api.PromotionPending {
			u.addJSON(name("pending promotion", o), o)
		}
	}
	streams, err := r.listAll(ctx, api.ImageStreams)
	if err != nil {
		return nil, err
	}
	byName := map[string]*api.ImageStream{}
	for _, o := range streams {
		is := o.(*api.ImageStream)
		byName[is.Namespace+"/"+is.Name] = is
		u.addJSON(name("spec of image stream", o), is.Spec)
	}
	pipelines, err := r.listAll(ctx, api.Pipelines)
	if err != nil {
		return nil, err
	}
	for _, o := range pipelines {
		pl := o.(*api.Pipeline)
		for _, st := range pl.Spec.Stages {
			project := st.Project
			if project == "" {
				project = pl.Namespace
			}
			if is := byName[project+"/"+pl.Spec.Stream]; is != nil {
				if ev, ok := imagestreams.Latest(is, st.Tag); ok {
					h := imageUser{"pipeline", pl.Namespace, fmt.Sprintf("%s (stage %s)", pl.Name, st.Name)}
					u[ev.Image] = append(u[ev.Image], h)
				}
			}
		}
	}
	return u, nil
}

// planPrune decides, for one project, what goes.
func (r *Registry) planPrune(ctx context.Context, project string, opts PruneOptions, users imageUsers, now time.Time, rep *PruneReport) error {
	streams, _, err := r.cfg.Store.List(ctx, api.ImageStreams, project, store.ListOptions{})
	if err != nil {
		return err
	}
	images, _, err := r.cfg.Store.List(ctx, api.Images, project, store.ListOptions{})
	if err != nil {
		return err
	}
	old := func(t time.Time) bool { return now.Sub(t) >= opts.KeepYoungerThan }
	kept := map[string]string{} // digest → why
	for _, o := range streams {
		is := o.(*api.ImageStream)
		for _, tg := range is.Status.Tags {
			for i, ev := range tg.Items {
				item := PruneItem{Kind: "HistoryEntry", Project: project, Stream: is.Name, Tag: tg.Tag, Position: i + 1, Image: ev.Image, created: ev.Created}
				switch {
				case i < opts.KeepTagRevisions:
					kept[ev.Image] = fmt.Sprintf("entry %d of %s:%s", i+1, is.Name, tg.Tag)
				case !old(ev.Created):
					kept[ev.Image] = fmt.Sprintf("entry %d of %s:%s is younger than %s", i+1, is.Name, tg.Tag, opts.KeepYoungerThan)
				case len(users[ev.Image]) > 0:
					kept[ev.Image] = "in use by " + users.describe(ev.Image, project)
					item.Reason = fmt.Sprintf("beyond %d revisions and older than %s, but in use by %s", opts.KeepTagRevisions, opts.KeepYoungerThan, users.describe(ev.Image, project))
					rep.Kept = append(rep.Kept, item)
				default:
					item.Reason = fmt.Sprintf("entry %d of %d of tag %s: beyond --keep-tag-revisions=%d, created %s ago (older than %s), not in use", i+1, len(tg.Items), tg.Tag, opts.KeepTagRevisions, now.Sub(ev.Created).Round(time.Second), opts.KeepYoungerThan)
					rep.Removed = append(rep.Removed, item)
				}
			}
		}
	}
	byRules := map[string]bool{} // kept by the revision and age rules alone
	for _, o := range images {
		img := o.(*api.Image)
		byRules[img.Name] = kept[img.Name] != "" || img.CreationTimestamp != nil && !old(*img.CreationTimestamp)
	}
	byDigest := map[string]*api.Image{}
	for _, o := range images {
		img := o.(*api.Image)
		byDigest[img.Name] = img
		switch {
		case kept[img.Name] != "":
		case len(users[img.Name]) > 0:
			kept[img.Name] = "in use by " + users.describe(img.Name, project)
		case img.CreationTimestamp != nil && !old(*img.CreationTimestamp):
			kept[img.Name] = "younger than " + opts.KeepYoungerThan.String()
		}
	}
	// What a kept image needs is kept: an index's children, and the
	// referrers (signatures, SBOMs, provenance) of a kept subject.
	for changed := true; changed; {
		changed = false
		for _, img := range byDigest {
			if kept[img.Name] == "" {
				if s := img.Subject; s != "" && kept[s] != "" {
					kept[img.Name], changed = "a referrer ("+referrerKind(img)+") of kept image "+s, true
				}
				continue
			}
			for _, m := range img.Manifests {
				if kept[m.Digest] == "" {
					kept[m.Digest], changed = "a child of kept index "+img.Name, true
				}
			}
		}
	}
	var gone, spared []string
	for d := range byDigest {
		switch {
		case kept[d] == "":
			gone = append(gone, d)
		case !byRules[d]:
			spared = append(spared, d)
		}
	}
	sort.Strings(gone)
	sort.Strings(spared)
	for _, d := range spared {
		rep.Kept = append(rep.Kept, PruneItem{Kind: "Image", Project: project, Image: d, Reason: "no kept history entry holds it, but it is kept: " + kept[d]})
	}
	for _, d := range gone {
		img := byDigest[d]
		why := "no kept history entry holds it and nothing uses it"
		if img.CreationTimestamp != nil {
			why += fmt.Sprintf("; created %s ago", now.Sub(*img.CreationTimestamp).Round(time.Second))
		}
		if img.Subject != "" {
			why = fmt.Sprintf("a referrer (%s) of %s, which is not kept", referrerKind(img), img.Subject)
		}
		rep.Removed = append(rep.Removed, PruneItem{Kind: "Image", Project: project, Image: d, Reason: why})
	}
	return nil
}

// referrerKind names what a referrer is, for reasons.
func referrerKind(img *api.Image) string {
	at := img.ArtifactType
	switch {
	case strings.Contains(at, "sig"), strings.Contains(at, "cosign"):
		return "signature"
	case strings.Contains(at, "spdx"), strings.Contains(at, "cyclonedx"), strings.Contains(at, "sbom"):
		return "SBOM"
	case strings.Contains(at, "provenance"), strings.Contains(at, "in-toto"):
		return "attestation"
	case at != "":
		return at
	}
	return "referrer"
}

// PruneImages plans and, with Confirm, carries out a prune. The report of
// a dry run lists exactly what the same call with Confirm removes, given
// that nothing changed in between.
func (r *Registry) PruneImages(ctx context.Context, opts PruneOptions) (*PruneReport, error) {
	if opts.KeepTagRevisions == 0 {
		opts.KeepTagRevisions = DefaultKeepTagRevisions
	}
	if opts.KeepTagRevisions < 1 {
		return nil, fmt.Errorf("--keep-tag-revisions must be at least 1 (a tag's current image is never pruned; untag to remove a tag), not %d", opts.KeepTagRevisions)
	}
	if opts.KeepYoungerThan == 0 {
		opts.KeepYoungerThan = DefaultKeepYoungerThan
	}
	if opts.KeepYoungerThan < 0 {
		return nil, fmt.Errorf("--keep-younger-than must not be negative, not %s", opts.KeepYoungerThan)
	}
	now := r.cfg.Now()
	users, err := r.usedImages(ctx, now, max(opts.KeepYoungerThan, recentBuild))
	if err != nil {
		return nil, err
	}
	projects := []string{opts.Project}
	if opts.Project == "" {
		items, err := r.listAll(ctx, api.Projects)
		if err != nil {
			return nil, err
		}
		projects = projects[:0]
		for _, o := range items {
			projects = append(projects, o.GetObjectMeta().Name)
		}
	} else if _, err := r.cfg.Project(ctx, opts.Project); err != nil {
		return nil, fmt.Errorf("project %q: %w: %v", opts.Project, errNoProject, err)
	}
	rep := &PruneReport{DryRun: !opts.Confirm, KeepTagRevisions: opts.KeepTagRevisions, KeepYoungerThan: opts.KeepYoungerThan.String(), Removed: []PruneItem{}, Kept: []PruneItem{}}
	for _, p := range projects {
		if err := r.planPrune(ctx, p, opts, users, now, rep); err != nil {
			return nil, err
		}
	}
	if !opts.Confirm {
		return rep, nil
	}
	return rep, r.carryOut(ctx, rep)
}

// carryOut removes the planned history entries, then the planned images:
// their manifest revisions in every repository of the project, then the
// Image records.
func (r *Registry) carryOut(ctx context.Context, rep *PruneReport) error {
	type key struct{ project, stream string }
	entries := map[key][]PruneItem{}
	var images []PruneItem
	for _, it := range rep.Removed {
		if it.Kind == "HistoryEntry" {
			k := key{it.Project, it.Stream}
			entries[k] = append(entries[k], it)
		} else {
			images = append(images, it)
		}
	}
	for k, items := range entries {
		_, err := r.cfg.Store.GuaranteedUpdate(ctx, api.ImageStreams, k.project, k.stream, store.UpdateOptions{Status: true}, func(o api.Object) error {
			is := o.(*api.ImageStream)
			for ti := range is.Status.Tags {
				tg := &is.Status.Tags[ti]
				var keep []api.TagEvent
				for i, ev := range tg.Items {
					drop := false
					for _, it := range items {
						// Never the current image, whatever moved since.
						if i > 0 && it.Tag == tg.Tag && it.Image == ev.Image && it.created.Equal(ev.Created) {
							drop = true
						}
					}
					if !drop {
						keep = append(keep, ev)
					}
				}
				tg.Items = keep
			}
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("registry: pruning the history of %s/%s: %w", k.project, k.stream, err)
		}
	}
	// An image tagged again since the plan is spared: re-read the
	// streams once the history is written.
	held := map[string]bool{}
	revisions := map[string]map[string][]string{}
	for _, p := range uniqueProjects(images) {
		if r.driver == nil {
			return errors.New("registry: storage is not ready yet; try again")
		}
		revs, err := r.projectRevisions(ctx, p)
		if err != nil {
			return err
		}
		revisions[p] = revs
		streams, _, err := r.cfg.Store.List(ctx, api.ImageStreams, p, store.ListOptions{})
		if err != nil {
			return err
		}
		for _, o := range streams {
			for _, tg := range o.(*api.ImageStream).Status.Tags {
				for _, ev := range tg.Items {
					held[p+"@"+ev.Image] = true
				}
			}
		}
	}
	for _, it := range images {
		if held[it.Project+"@"+it.Image] {
			slog.Info("registry: prune spares an image tagged again meanwhile", "project", it.Project, "image", it.Image)
			continue
		}
		if err := r.deleteManifest(ctx, it.Project, it.Image, revisions[it.Project][it.Image]); err != nil {
			return err
		}
		if _, err := r.cfg.Store.Delete(ctx, api.Images, it.Project, it.Image, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("registry: deleting image %s in %s: %w", it.Image, it.Project, err)
		}
	}
	return nil
}

func uniqueProjects(items []PruneItem) []string {
	seen := map[string]bool{}
	var out []string
	for _, it := range items {
		if !seen[it.Project] {
			seen[it.Project] = true
			out = append(out, it.Project)
		}
	}
	return out
}

// projectRevisions maps each manifest digest linked in a repository of
// project to those repositories, in one walk.
func (r *Registry) projectRevisions(ctx context.Context, project string) (map[string][]string, error) {
	out := map[string][]string{}
	root := repositoriesRoot + project
	err := r.driver.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		p := fi.Path()
		if fi.IsDir() {
			switch base := p[strings.LastIndex(p, "/")+1:]; {
			case base == "_uploads", base == "_layers", strings.HasSuffix(p, "/_manifests/tags"):
				return storagedriver.ErrSkipDir
			}
			return nil
		}
		i := strings.Index(p, "/_manifests/revisions/")
		if i < 0 || !strings.HasSuffix(p, "/link") {
			return nil
		}
		parts := strings.Split(p[i+len("/_manifests/revisions/"):], "/")
		if len(parts) != 3 {
			return nil
		}
		d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
		out[d.String()] = append(out[d.String()], strings.TrimPrefix(p[:i], repositoriesRoot))
		return nil
	})
	var missing storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &missing) {
		return nil, fmt.Errorf("registry: walking the repositories of %s: %w", project, err)
	}
	return out, nil
}

// deleteManifest removes manifest dgst from repos (of project), through
// the same path as a client's DELETE (the manifest cache and the
// referrers index follow).
func (r *Registry) deleteManifest(ctx context.Context, project, dgst string, repos []string) error {
	if r.ns == nil || r.driver == nil {
		return errors.New("registry: storage is not ready yet; try again")
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return err
	}
	for _, repo := range repos {
		named, err := reference.WithName(repo)
		if err != nil {
			return err
		}
		dr, err := r.ns.Repository(ctx, named)
		if err != nil {
			return err
		}
		_, stream, _ := strings.Cut(repo, "/")
		ms, err := (&repository{Repository: dr, reg: r, project: project, stream: stream}).Manifests(ctx)
		if err != nil {
			return err
		}
		if err := ms.Delete(ctx, d); err != nil && !errors.As(err, new(distribution.ErrManifestUnknownRevision)) {
			return fmt.Errorf("registry: deleting manifest %s of %s: %w", dgst, repo, err)
		}
	}
	return nil
}

// RetentionOnce prunes, with --confirm, every project whose retention
// annotations ask for it. Bad annotation values are logged and skip the
// project.
func (r *Registry) RetentionOnce(ctx context.Context) error {
	projects, err := r.listAll(ctx, api.Projects)
	if err != nil {
		return err
	}
	for _, o := range projects {
		p := o.(*api.Project)
		opts, ok, err := RetentionOptions(p)
		if err != nil {
			slog.Warn("registry: the project's retention rules are not valid; fix the annotation", "project", p.Name, "err", err)
			continue
		}
		if !ok || p.Status.Phase == api.ProjectTerminating {
			continue
		}
		rep, err := r.PruneImages(ctx, opts)
		if err != nil {
			slog.Warn("registry: retention prune failed; it runs again at the next interval", "project", p.Name, "err", err)
			continue
		}
		if len(rep.Removed) > 0 {
			slog.Info("registry: retention pruned", "project", p.Name, "removed", len(rep.Removed))
		}
	}
	return nil
}

// RetentionOptions reads a project's retention annotations; ok is false
// when it has none.
func RetentionOptions(p *api.Project) (opts PruneOptions, ok bool, err error) {
	opts = PruneOptions{Project: p.Name, Confirm: true}
	if v, has := p.Annotations[RetentionKeepTagRevisionsAnnotation]; has {
		ok = true
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return opts, false, fmt.Errorf("%s: %q is not a whole number of at least 1", RetentionKeepTagRevisionsAnnotation, v)
		}
		opts.KeepTagRevisions = n
	}
	if v, has := p.Annotations[RetentionKeepYoungerThanAnnotation]; has {
		ok = true
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return opts, false, fmt.Errorf("%s: %q is not a positive duration such as 24h", RetentionKeepYoungerThanAnnotation, v)
		}
		opts.KeepYoungerThan = d
	}
	return opts, ok, nil
}

// RunRetention runs RetentionOnce, then ExpireMirrors when the registry
// has mirrors, every interval until ctx ends.
func (r *Registry) RunRetention(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.RetentionOnce(ctx); err != nil && ctx.Err() == nil {
			slog.Warn("registry: retention pass failed", "err", err)
		}
		if len(r.mirrors) == 0 {
			continue
		}
		rep, err := r.ExpireMirrors(ctx)
		if err != nil && ctx.Err() == nil {
			slog.Warn("registry: mirror expiry pass failed; it runs again at the next interval", "err", err)
		}
		if rep != nil && len(rep.Manifests) > 0 {
			slog.Info("registry: mirrors dropped unused manifests", "manifests", len(rep.Manifests), "tags", len(rep.Tags))
		}
	}
}
