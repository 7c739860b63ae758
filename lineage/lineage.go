// Package lineage traces an image's lineage: the pods that run it, its
// digest, the build and commit that made it, its base image, its scan
// (SBOM and findings), its OCI referrers (signatures, attestations, SBOMs)
// and its promotions, as a Graph. `slipway trace` prints the graph; the
// web console draws it.
//
// A Tracer holds no rights of its own: it reads the API through a Reader
// and the registry's referrers through a Referrers function, both acting
// as the caller, so a hop the caller may not read becomes a node saying
// so ("not visible to you"), never the data behind it.
package lineage

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
)

// The OCI annotations an image records its source and base with.
const (
	annSource   = "org.opencontainers.image.source"
	annRevision = "org.opencontainers.image.revision"
)

// ErrOtherRegistry is an image named on another registry's host, which a
// trace does not follow.
var ErrOtherRegistry = errors.New("lineage: another registry's image")

type otherRegistryError string

func (e otherRegistryError) Error() string        { return string(e) }
func (e otherRegistryError) Is(target error) bool { return target == ErrOtherRegistry }

// Referrers lists the OCI referrers of project/stream@digest, as the
// caller: RegistryReferrers asks the integrated registry.
type Referrers func(ctx context.Context, project, stream, digest string) ([]v1.Descriptor, error)

// RegistryReferrers asks the registry at host (host[:port]) for referrers
// with token, the caller's own API token, so the registry's per-project
// rights decide.
func RegistryReferrers(host, token string, opts ...remote.Option) Referrers {
	auth := remote.WithAuth(&authn.Basic{Username: "slipway", Password: token})
	// Plain HTTP only to a registry on loopback: elsewhere a fallback
	// from HTTPS would send the caller's token in the clear to whoever
	// can make the TLS connection fail.
	var nameOpts []name.Option
	if loopbackHost(host) {
		nameOpts = append(nameOpts, name.Insecure)
	}
	return func(ctx context.Context, project, stream, digest string) ([]v1.Descriptor, error) {
		d, err := name.NewDigest(host+"/"+project+"/"+stream+"@"+digest, nameOpts...)
		if err != nil {
			return nil, err
		}
		idx, err := remote.Referrers(d, append([]remote.Option{auth, remote.WithContext(ctx)}, opts...)...)
		if err != nil {
			return nil, err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		return m.Manifests, nil
	}
}

// Tracer builds one Graph, reading everything with the caller's own
// credentials: the API through a Reader, the registry's referrers through
// Referrers. It is not safe for concurrent use.
type Tracer struct {
	api       Reader
	registry  string // host[:port] of the integrated registry
	referrers Referrers
	g         Graph
	images    map[string]bool // image ids already traced
	projects  []string        // the projects the caller may see, once listed
	promos    map[string][]api.Object
}

// Reader is the part of the client a trace uses.
type Reader interface {
	Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error)
	List(ctx context.Context, r *api.Resource, ns string, opts client.ListOptions) ([]api.Object, api.ListMeta, error)
}

// New returns a tracer reading the API through r and referrers through
// referrers (nil: none are shown). registry is the integrated registry's
// host[:port]: only references to it are followed into projects.
func New(r Reader, registry string, referrers Referrers) *Tracer {
	return &Tracer{api: r, registry: registry, referrers: referrers, images: map[string]bool{}, promos: map[string][]api.Object{}}
}

// Graph is what the tracer has found so far.
func (t *Tracer) Graph() *Graph { return &t.g }

// digestRE is a bare image digest, as a target of Trace.
var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Trace traces target, named in project ns: pod/NAME, dc/NAME, or an
// image (STREAM:TAG, STREAM@DIGEST, HOST/PROJECT/STREAM@DIGEST on the
// integrated registry, or a bare sha256 digest that one of ns's image
// streams holds). It returns the target's node id. An error means the
// target itself could not be read (Forbidden(err) when the caller may
// not), or that it names another registry's image (ErrOtherRegistry); a
// hop beyond it that the caller may not read is a node in the graph.
func (t *Tracer) Trace(ctx context.Context, ns, target string) (string, error) {
	kind, nm, found := strings.Cut(target, "/")
	switch {
	case !found:
	case kind == "pod" || kind == "pods" || kind == "po":
		return "pod:" + ns + "/" + nm, t.Pod(ctx, ns, nm)
	case kind == "dc" || kind == "deploymentconfig" || kind == "deploymentconfigs":
		return "deploymentconfig:" + ns + "/" + nm, t.DeploymentConfig(ctx, ns, nm)
	}
	if err := t.OtherRegistry(target); err != nil {
		return "", err
	}
	var project, stream, digest string
	var err error
	if digestRE.MatchString(target) {
		project, digest = ns, target
		stream, err = t.streamOf(ctx, ns, digest)
	} else {
		project, stream, digest, err = ResolveImage(ctx, t.api, t.registry, ns, target)
	}
	if err != nil {
		return "", err
	}
	id := t.Image(ctx, project, stream, digest)
	if n := t.g.Node(id); n.NotVisible {
		return id, fmt.Errorf("%s is %s", target, NotVisibleMessage)
	}
	return id, nil
}

// streamOf is the first of ns's image streams (by name) whose tag history
// holds digest.
func (t *Tracer) streamOf(ctx context.Context, ns, digest string) (string, error) {
	items, _, err := t.api.List(ctx, api.ImageStreams, ns, client.ListOptions{})
	if err != nil {
		return "", err
	}
	for _, o := range items {
		for _, tag := range o.(*api.ImageStream).Status.Tags {
			for _, ev := range tag.Items {
				if ev.Image == digest {
					return o.GetObjectMeta().Name, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no image stream of %s holds %s; name it as STREAM@DIGEST", ns, digest)
}

// ResolveImage turns STREAM:TAG (":latest" when no tag is named),
// STREAM@DIGEST or REGISTRY/PROJECT/STREAM... (with registry the
// integrated registry's host; "" when unknown) named in project ns into
// the image's project, stream and digest.
func ResolveImage(ctx context.Context, r Reader, registry, ns, arg string) (project, stream, digest string, err error) {
	project = ns
	rest := arg
	if registry != "" {
		if r, ok := strings.CutPrefix(arg, registry+"/"); ok {
			p, s, _ := strings.Cut(r, "/")
			project, rest = p, s
		}
	}
	if s, d, ok := strings.Cut(rest, "@"); ok {
		return project, s, d, nil
	}
	s, tag, ok := strings.Cut(rest, ":")
	if !ok {
		tag = "latest"
	}
	o, err := r.Get(ctx, api.ImageStreams, project, s)
	if err != nil {
		return "", "", "", err
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return "", "", "", fmt.Errorf("%s/%s:%s has no image", project, s, tag)
	}
	return project, s, ev.Image, nil
}

// Pods adds the pods of project ns that run digest, with the revisions
// and configs that made them, each leading to the image's node (which
// Image adds). The pods' list refused is a hidden node.
func (t *Tracer) Pods(ctx context.Context, ns, digest string) {
	pods, _, err := t.api.List(ctx, api.Pods, ns, client.ListOptions{})
	if err != nil {
		t.g.link(t.hidden("Pod", ns, "*", err), "image:"+digest, "runs")
		return
	}
	for _, o := range pods {
		p := o.(*api.Pod)
		runs := false
		for _, c := range p.Spec.Containers {
			runs = runs || strings.HasSuffix(c.Image, "@"+digest)
		}
		for _, cs := range p.Status.ContainerStatuses {
			runs = runs || strings.HasSuffix(cs.ImageID, "@"+digest)
		}
		if runs {
			t.podNode(ctx, p, true)
		}
	}
}

// message is the API's own message for a Status error, else the error.
func message(err error) string {
	if st, ok := api.StatusFor(err); ok {
		return st.Message
	}
	return err.Error()
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// Forbidden says whether err is the API refusing the caller.
func Forbidden(err error) bool {
	st, ok := api.StatusFor(err)
	return ok && (st.Code == 403 || st.Code == 401)
}

// hidden adds a node for a hop the caller may not read, or that failed.
func (t *Tracer) hidden(kind, ns, nm string, err error) string {
	n := Node{Kind: kind, Namespace: ns, Name: nm, NotVisible: true, Detail: NotVisibleMessage}
	if !Forbidden(err) {
		n.NotVisible, n.Detail = false, "unreadable: "+message(err)
		if api.IsNotFound(err) {
			n.Detail = "not found"
		}
	}
	return t.g.add(n)
}

// DeploymentConfig traces a deployment config through its running pods, or, without
// pods, its latest revision's images.
func (t *Tracer) DeploymentConfig(ctx context.Context, ns, nm string) error {
	o, err := t.api.Get(ctx, api.DeploymentConfigs, ns, nm)
	if err != nil {
		return err
	}
	dc := o.(*api.DeploymentConfig)
	id := t.g.add(Node{Kind: "DeploymentConfig", Namespace: ns, Name: nm, Detail: fmt.Sprintf("latest revision %d", dc.Status.LatestVersion)})
	pods, _, err := t.api.List(ctx, api.Pods, ns, client.ListOptions{LabelSelector: api.DeploymentConfigLabel + "=" + nm})
	if err != nil {
		t.g.link(id, t.hidden("Pod", ns, "*", err), "runs")
		return nil
	}
	if len(pods) > 0 {
		for _, p := range pods {
			t.g.link(id, t.podNode(ctx, p.(*api.Pod), false), "runs")
		}
		return nil
	}
	rcName := fmt.Sprintf("%s-%d", nm, dc.Status.LatestVersion)
	ro, err := t.api.Get(ctx, api.ReplicationControllers, ns, rcName)
	if err != nil {
		t.g.link(id, t.hidden("ReplicationController", ns, rcName, err), "revision")
		return nil
	}
	rc := ro.(*api.ReplicationController)
	rid := t.g.add(Node{Kind: "ReplicationController", Namespace: ns, Name: rcName, Detail: "no pods"})
	t.g.link(id, rid, "revision")
	if rc.Spec.Template != nil {
		for _, c := range rc.Spec.Template.Spec.Containers {
			t.g.link(rid, t.imageRef(ctx, ns, c.Image), "runs "+c.Name)
		}
	}
	return nil
}

// Pod traces one pod: what made it and what it runs.
func (t *Tracer) Pod(ctx context.Context, ns, nm string) error {
	o, err := t.api.Get(ctx, api.Pods, ns, nm)
	if err != nil {
		return err
	}
	t.podNode(ctx, o.(*api.Pod), true)
	return nil
}

// podNode adds p, its images and, when owners is set, the revision and
// config that made it.
func (t *Tracer) podNode(ctx context.Context, p *api.Pod, owners bool) string {
	id := t.g.add(Node{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, Detail: orNone(p.Status.Phase) + " on " + orNone(p.Spec.NodeName)})
	for _, c := range p.Spec.Containers {
		ref := c.Image
		for _, cs := range p.Status.ContainerStatuses {
			// The node reports the digest it ran, when the spec named a tag.
			if cs.Name == c.Name && !strings.Contains(ref, "@") && strings.Contains(cs.ImageID, "@sha256:") {
				ref = cs.ImageID
			}
		}
		t.g.link(id, t.imageRef(ctx, p.Namespace, ref), "runs "+c.Name)
	}
	if !owners {
		return id
	}
	if rc := p.Labels[api.DeploymentLabel]; rc != "" {
		rid := t.g.add(Node{Kind: "ReplicationController", Namespace: p.Namespace, Name: rc})
		t.g.link(rid, id, "made")
		if dc := p.Labels[api.DeploymentConfigLabel]; dc != "" {
			did := t.g.add(Node{Kind: "DeploymentConfig", Namespace: p.Namespace, Name: dc})
			t.g.link(did, rid, "revision")
		}
	}
	return id
}

// splitRef parses an image reference of the integrated registry,
// HOST/PROJECT/STREAM@DIGEST with HOST the registry's own (t.registry),
// into its project, stream and digest. A reference to any other host is
// another registry's image, even when its path names a project here
// (evil.example.com/vic/app@sha256:…): ok is false, and it must not be
// looked up as vic's, whose records say nothing of what that host serves.
func (t *Tracer) splitRef(ref string) (project, stream, digest string, ok bool) {
	repo, d, found := strings.Cut(ref, "@")
	if !found || t.registry == "" {
		return "", "", "", false
	}
	rest, inRegistry := strings.CutPrefix(repo, t.registry+"/")
	if !inRegistry {
		return "", "", "", false
	}
	project, stream, found = strings.Cut(rest, "/")
	if !found || project == "" || stream == "" {
		return "", "", "", false
	}
	return project, stream, d, true
}

// external says what a reference splitRef refused is.
func (t *Tracer) external(ref string) string {
	if !strings.Contains(ref, "@") {
		return "not by digest in the integrated registry; not followed"
	}
	return "another registry's image (not " + t.registry + "); not followed"
}

// OtherRegistry refuses an IMAGE argument that names another registry's
// host: resolving it in the current project would trace an image of the
// same path here instead.
func (t *Tracer) OtherRegistry(arg string) error {
	h, _, ok := strings.Cut(arg, "/")
	if !ok || h == t.registry || !strings.ContainsAny(h, ".:") && h != "localhost" {
		return nil
	}
	return otherRegistryError(fmt.Sprintf("%s is another registry's image: trace follows the images of the integrated registry (%s) only; name one as STREAM:TAG, STREAM@DIGEST or %s/PROJECT/STREAM@DIGEST", arg, t.registry, t.registry))
}

// imageRef adds the image a pod or template names.
func (t *Tracer) imageRef(ctx context.Context, ns, ref string) string {
	project, stream, digest, ok := t.splitRef(ref)
	if !ok {
		return t.g.add(Node{Kind: "Image", Name: ref, Detail: t.external(ref)})
	}
	return t.Image(ctx, project, stream, digest)
}

// Image traces one image by digest: its record (source, commit, base), the
// build that produced it, its scan, its referrers and its promotions.
func (t *Tracer) Image(ctx context.Context, project, stream, digest string) string {
	id := "image:" + digest
	if t.images[id] {
		return id
	}
	t.images[id] = true
	n := Node{ID: id, Kind: "Image", Namespace: project, Name: project + "/" + stream, Digest: digest}
	o, err := t.api.Get(ctx, api.Images, project, digest)
	if err != nil {
		n.Detail = NotVisibleMessage
		n.NotVisible = Forbidden(err)
		if !n.NotVisible {
			n.Detail = "unreadable: " + message(err)
		}
		return t.g.add(n)
	}
	img := o.(*api.Image)
	n.Detail = img.MediaType
	t.g.add(n)

	promoted, sources := t.promotions(ctx, id, project, digest)
	t.build(ctx, id, append([]string{project}, sources...), digest)
	ann := img.ManifestAnnotations
	if rev := ann[annRevision]; rev != "" {
		cid := t.g.add(Node{Kind: "Commit", Name: rev, Detail: ann[annSource], ID: "commit:" + rev})
		t.g.link(id, cid, "source")
	}
	if bd := ann[builders.BaseDigestAnnotation]; bd != "" {
		bn := ann[builders.BaseNameAnnotation]
		if p, s, _, ok := t.splitRef(bn + "@" + bd); ok {
			t.g.link(id, t.Image(ctx, p, s, bd), "based on")
		} else {
			t.g.link(id, t.g.add(Node{ID: "image:" + bn + "@" + bd, Kind: "Image", Name: bn, Digest: bd, Detail: t.external(bn + "@" + bd)}), "based on")
		}
	}
	t.scan(ctx, id, project, digest)
	t.refs(ctx, id, project, stream, digest)
	for _, p := range promoted {
		t.g.link(id, p, "promoted by")
	}
	return id
}

// build finds the build whose output is digest: in the image's project
// or, for a promoted image, in the project it was promoted from.
func (t *Tracer) build(ctx context.Context, id string, projects []string, digest string) {
	for i, project := range projects {
		if i > 0 && slices.Contains(projects[:i], project) {
			continue
		}
		if t.buildIn(ctx, id, project, digest) {
			return
		}
	}
}

// buildIn adds the build of project whose output is digest, if any.
func (t *Tracer) buildIn(ctx context.Context, id, project, digest string) bool {
	items, _, err := t.api.List(ctx, api.Builds, project, client.ListOptions{})
	if err != nil {
		t.g.link(id, t.hidden("Build", project, "*", err), "built by")
		return false
	}
	found := false
	for _, o := range items {
		b := o.(*api.Build)
		if b.Status.OutputDigest != digest {
			continue
		}
		found = true
		bid := t.g.add(Node{Kind: "Build", Namespace: project, Name: b.Name, Detail: b.Status.Phase})
		t.g.link(id, bid, "built by")
		if b.Status.Revision != "" {
			src := ""
			if b.Spec.Source.Git != nil {
				src = b.Spec.Source.Git.URI
			}
			t.g.link(bid, t.g.add(Node{Kind: "Commit", Name: b.Status.Revision, Detail: src, ID: "commit:" + b.Status.Revision}), "built commit")
		}
		if bc := b.Labels[builders.BuildConfigLabel]; bc != "" {
			t.g.link(bid, t.g.add(Node{Kind: "BuildConfig", Namespace: project, Name: bc}), "of")
		}
	}
	return found
}

// scan adds the image's SBOM summary and findings.
func (t *Tracer) scan(ctx context.Context, id, project, digest string) {
	o, err := t.api.Get(ctx, api.ImageScans, project, digest)
	if err != nil {
		if !api.IsNotFound(err) {
			t.g.link(id, t.hidden("Scan", project, digest, err), "scanned")
		}
		return
	}
	st := o.(*api.ImageScan).Status
	detail := fmt.Sprintf("%s, %d packages", orNone(st.Phase), st.Packages)
	switch {
	case st.DBVersion == "":
		detail += ", findings unknown (no vulnerability database)"
	default:
		detail += fmt.Sprintf(", %d findings (database %s)", len(st.Findings), st.DBVersion)
	}
	sid := t.g.add(Node{ID: "scan:" + digest, Kind: "Scan", Namespace: project, Name: "sbom", Digest: st.SBOMDigest, Detail: detail})
	t.g.link(id, sid, "scanned")
	for _, f := range st.Findings {
		d := fmt.Sprintf("%s %s %s", f.Severity, f.Package, f.Version)
		if f.FixedIn != "" {
			d += ", fixed in " + f.FixedIn
		}
		if f.Ignored != "" {
			d += ", ignored: " + f.Ignored
		}
		t.g.link(sid, t.g.add(Node{ID: "finding:" + digest + ":" + f.ID + ":" + f.Package, Kind: "Finding", Name: f.ID, Detail: d}), "finding")
	}
}

// refs adds the image's OCI referrers: signatures, attestations, SBOMs.
func (t *Tracer) refs(ctx context.Context, id, project, stream, digest string) {
	if t.referrers == nil {
		return
	}
	descs, err := t.referrers(ctx, project, stream, digest)
	if err != nil {
		n := Node{ID: "referrers:" + digest, Kind: "Referrer", Name: project + "/" + stream + "@" + digest}
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == 401 || te.StatusCode == 403) {
			n.NotVisible, n.Detail = true, NotVisibleMessage
		} else {
			n.Detail = "unreadable: " + err.Error()
		}
		t.g.link(id, t.g.add(n), "referred by")
		return
	}
	for _, d := range descs {
		kind, label := "Referrer", "referred by"
		at := d.ArtifactType
		switch {
		case strings.Contains(at, "cosign.artifact.sig") || strings.Contains(at, "signature"):
			kind, label = "Signature", "signed by"
		case strings.Contains(at, "in-toto") || strings.Contains(at, "dsse"):
			kind, label = "Attestation", "attested by"
		case strings.Contains(at, "cyclonedx") || strings.Contains(at, "spdx"):
			kind, label = "SBOM", "described by"
		}
		t.g.link(id, t.g.add(Node{Kind: kind, Namespace: project, Name: project + "/" + stream, Digest: d.Digest.String(), Detail: at}), label)
	}
}

// promotions finds the promotions that moved the image, and the projects
// it was promoted from. A promotion lives
// in its pipeline's project, which need not be the image's, and a
// promoted image has the same digest in every stage, so the promotions of
// every project the caller may see are looked at.
func (t *Tracer) promotions(ctx context.Context, id, project, digest string) (nodes, sources []string) {
	if t.projects == nil {
		t.projects = []string{}
		if items, _, err := t.api.List(ctx, api.Projects, "", client.ListOptions{}); err == nil {
			for _, o := range items {
				t.projects = append(t.projects, o.GetObjectMeta().Name)
			}
		}
	}
	projects := t.projects
	if !slices.Contains(projects, project) {
		projects = append([]string{project}, projects...)
	}
	var items []api.Object
	for _, ns := range projects {
		got, ok := t.promos[ns]
		if !ok {
			var err error
			if got, _, err = t.api.List(ctx, api.Promotions, ns, client.ListOptions{}); err != nil {
				if ns == project && Forbidden(err) {
					t.g.link(id, t.hidden("Promotion", project, "*", err), "promoted by")
				}
				got = nil
			}
			t.promos[ns] = got
		}
		items = append(items, got...)
	}
	for _, o := range items {
		p := o.(*api.Promotion)
		if p.Spec.Image != digest && !strings.HasSuffix(p.Status.Source, "@"+digest) {
			continue
		}
		d := fmt.Sprintf("%s to %s", orNone(p.Status.Phase), p.Spec.To)
		if p.Status.Revision > 0 {
			d += fmt.Sprintf(" (revision %d)", p.Status.Revision)
		}
		nodes = append(nodes, t.g.add(Node{Kind: "Promotion", Namespace: p.Namespace, Name: p.Name, Detail: d}))
		if sp, _, _, ok := t.splitRef(p.Status.Source); ok && sp != project {
			sources = append(sources, sp)
		}
	}
	return nodes, sources
}

// Vuln lists every running pod the caller may see whose image has the
// finding id (or an alias of it), with the build config whose rebuild
// would replace the image, its base, and whether the base's stream has a
// newer image without the finding.
func (t *Tracer) Vuln(ctx context.Context, projects []string, id string) {
	type scanned struct {
		f  *api.Finding
		ok bool
	}
	seen := map[string]scanned{}
	has := func(project, digest string) (*api.Finding, bool, error) {
		if s, ok := seen[project+"@"+digest]; ok {
			return s.f, s.ok, nil
		}
		o, err := t.api.Get(ctx, api.ImageScans, project, digest)
		if err != nil {
			return nil, false, err
		}
		var hit *api.Finding
		for _, f := range o.(*api.ImageScan).Status.Findings {
			if f.ID == id || slices.Contains(f.Aliases, id) {
				hit = &f
				break
			}
		}
		seen[project+"@"+digest] = scanned{hit, true}
		return hit, true, nil
	}
	for _, ns := range projects {
		pods, _, err := t.api.List(ctx, api.Pods, ns, client.ListOptions{})
		if err != nil {
			continue // a project listed but whose pods the caller may not read
		}
		for _, o := range pods {
			p := o.(*api.Pod)
			if p.Status.Phase != "Running" {
				continue
			}
			for _, c := range p.Spec.Containers {
				project, stream, digest, ok := t.splitRef(c.Image)
				if !ok {
					continue
				}
				f, _, err := has(project, digest)
				if err != nil || f == nil {
					continue
				}
				pid := t.g.add(Node{Kind: "Pod", Namespace: p.Namespace, Name: p.Name, Detail: "runs " + c.Name})
				iid := t.g.add(Node{ID: "image:" + digest, Kind: "Image", Namespace: project, Name: project + "/" + stream, Digest: digest})
				t.g.link(pid, iid, "runs "+c.Name)
				fd := fmt.Sprintf("%s %s %s", f.Severity, f.Package, f.Version)
				if f.FixedIn != "" {
					fd += ", fixed in " + f.FixedIn
				}
				t.g.link(iid, t.g.add(Node{ID: "finding:" + digest + ":" + f.ID, Kind: "Finding", Name: f.ID, Detail: fd}), "finding")
				t.fix(ctx, iid, project, digest, has)
			}
		}
	}
}

// fix adds the build config that produced digest and its base, and says
// whether the base's stream has an image without the finding.
func (t *Tracer) fix(ctx context.Context, iid, project, digest string, has func(project, digest string) (*api.Finding, bool, error)) {
	// A promoted image was built in the project it came from.
	_, sources := t.promotions(ctx, iid, project, digest)
	bc, bcProject := "", ""
	for _, ns := range append([]string{project}, sources...) {
		items, _, err := t.api.List(ctx, api.Builds, ns, client.ListOptions{})
		if err != nil {
			t.g.link(iid, t.hidden("BuildConfig", ns, "*", err), "rebuild")
			continue
		}
		for _, o := range items {
			if b := o.(*api.Build); b.Status.OutputDigest == digest && b.Labels[builders.BuildConfigLabel] != "" {
				bc, bcProject = b.Labels[builders.BuildConfigLabel], ns
			}
		}
		if bc != "" {
			break
		}
	}
	if bc == "" {
		t.g.link(iid, t.g.add(Node{Kind: "BuildConfig", Namespace: project, Name: "<none>", Detail: "no build you may see produced this image"}), "rebuild")
		return
	}
	bid := t.g.add(Node{Kind: "BuildConfig", Namespace: bcProject, Name: bc, Detail: "slipway start-build " + bc + " -n " + bcProject})
	t.g.link(iid, bid, "rebuild")
	o, err := t.api.Get(ctx, api.Images, project, digest)
	if err != nil {
		return
	}
	ann := o.(*api.Image).ManifestAnnotations
	bp, bs, bd, ok := t.splitRef(ann[builders.BaseNameAnnotation] + "@" + ann[builders.BaseDigestAnnotation])
	if !ok {
		return
	}
	detail := "no newer image in its stream"
	if so, err := t.api.Get(ctx, api.ImageStreams, bp, bs); err != nil {
		detail = "its stream is " + NotVisibleMessage
	} else {
		for _, tag := range so.(*api.ImageStream).Status.Tags {
			ev, ok := imagestreams.Latest(so.(*api.ImageStream), tag.Tag)
			if !ok || ev.Image == bd {
				continue
			}
			f, _, err := has(bp, ev.Image)
			switch {
			case err != nil:
				detail = fmt.Sprintf("%s:%s is %s, scan not readable", bs, tag.Tag, ev.Image)
			case f == nil:
				detail = fmt.Sprintf("fixed base exists: %s:%s is %s without the finding", bs, tag.Tag, ev.Image)
			default:
				detail = fmt.Sprintf("%s:%s is %s, still with the finding", bs, tag.Tag, ev.Image)
			}
			if f == nil && err == nil {
				break
			}
		}
	}
	t.g.link(bid, t.g.add(Node{ID: "image:" + bd, Kind: "Image", Namespace: bp, Name: bp + "/" + bs, Digest: bd, Detail: detail}), "based on")
}

// loopbackHost says whether host (host[:port]) is localhost or a loopback
// address.
func loopbackHost(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}
