package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/spf13/cobra"

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

// notVisible is what a hop the caller may not read says instead of its data.
const notVisible = "not visible to you"

// Graph is what `slipway trace -o json` prints: nodes and the edges between
// them, in the order the trace found them. The structure is stable: fields
// are only ever added.
//
// A node's kind is one of Pod, ReplicationController, DeploymentConfig,
// Image, Build, BuildConfig, Commit, Scan, Finding, Signature, Attestation,
// SBOM, Referrer, Promotion. Its id is unique in the graph. A hop the caller
// may not read is a node with notVisible set and no data beyond its name.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is one object on the path from a pod to its image's origins.
type Node struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Detail     string `json:"detail,omitempty"`
	NotVisible bool   `json:"notVisible,omitempty"`
}

// Edge says how From leads to To ("runs", "built by", "based on", ...).
type Edge struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Label string `json:"label"`
}

// add puts n in the graph once and returns its id.
func (g *Graph) add(n Node) string {
	if n.ID == "" {
		n.ID = strings.ToLower(n.Kind) + ":" + n.Namespace + "/" + n.Name
		if n.Digest != "" {
			n.ID = strings.ToLower(n.Kind) + ":" + n.Digest
		}
	}
	for _, m := range g.Nodes {
		if m.ID == n.ID {
			return n.ID
		}
	}
	g.Nodes = append(g.Nodes, n)
	return n.ID
}

func (g *Graph) link(from, to, label string) {
	for _, e := range g.Edges {
		if e.From == from && e.To == to {
			return
		}
	}
	g.Edges = append(g.Edges, Edge{From: from, To: to, Label: label})
}

func (g *Graph) node(id string) Node {
	for _, n := range g.Nodes {
		if n.ID == id {
			return n
		}
	}
	return Node{ID: id}
}

// title is the node's project, name and digest, each once.
func (n Node) title() string {
	s := n.Name
	if n.Namespace != "" && !strings.HasPrefix(s, n.Namespace+"/") {
		s = n.Namespace + "/" + s
	}
	if n.Digest != "" && !strings.Contains(s, n.Digest) {
		s += "@" + n.Digest
	}
	return s
}

// tracer reads everything with the caller's own credentials: the API
// through reader, the registry's referrers through referrers.
type tracer struct {
	api       traceReader
	registry  string // host[:port] of the integrated registry
	referrers func(ctx context.Context, project, stream, digest string) ([]v1.Descriptor, error)
	g         Graph
	images    map[string]bool // image ids already traced
	projects  []string        // the projects the caller may see, once listed
	promos    map[string][]api.Object
}

// traceReader is the part of the client a trace uses.
type traceReader interface {
	Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error)
	List(ctx context.Context, r *api.Resource, ns string, opts client.ListOptions) ([]api.Object, api.ListMeta, error)
}

func newTracer(r traceReader, registry string, referrers func(ctx context.Context, project, stream, digest string) ([]v1.Descriptor, error)) *tracer {
	return &tracer{api: r, registry: registry, referrers: referrers, images: map[string]bool{}, promos: map[string][]api.Object{}}
}

// forbidden says whether err is the API refusing the caller.
func forbidden(err error) bool {
	st, ok := api.StatusFor(err)
	return ok && (st.Code == 403 || st.Code == 401)
}

// hidden adds a node for a hop the caller may not read, or that failed.
func (t *tracer) hidden(kind, ns, nm string, err error) string {
	n := Node{Kind: kind, Namespace: ns, Name: nm, NotVisible: true, Detail: notVisible}
	if !forbidden(err) {
		n.NotVisible, n.Detail = false, "unreadable: "+Friendly(err)
		if api.IsNotFound(err) {
			n.Detail = "not found"
		}
	}
	return t.g.add(n)
}

// dc traces a deployment config through its running pods, or, without
// pods, its latest revision's images.
func (t *tracer) dc(ctx context.Context, ns, nm string) error {
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

// pod traces one pod: what made it and what it runs.
func (t *tracer) pod(ctx context.Context, ns, nm string) error {
	o, err := t.api.Get(ctx, api.Pods, ns, nm)
	if err != nil {
		return err
	}
	t.podNode(ctx, o.(*api.Pod), true)
	return nil
}

// podNode adds p, its images and, when owners is set, the revision and
// config that made it.
func (t *tracer) podNode(ctx context.Context, p *api.Pod, owners bool) string {
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
func (t *tracer) splitRef(ref string) (project, stream, digest string, ok bool) {
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
func (t *tracer) external(ref string) string {
	if !strings.Contains(ref, "@") {
		return "not by digest in the integrated registry; not followed"
	}
	return "another registry's image (not " + t.registry + "); not followed"
}

// otherRegistry refuses an IMAGE argument that names another registry's
// host: resolving it in the current project would trace an image of the
// same path here instead.
func (t *tracer) otherRegistry(arg string) error {
	h, _, ok := strings.Cut(arg, "/")
	if !ok || h == t.registry || !strings.ContainsAny(h, ".:") && h != "localhost" {
		return nil
	}
	return usagef("%s is another registry's image: trace follows the images of the integrated registry (%s) only; name one as STREAM:TAG, STREAM@DIGEST or %s/PROJECT/STREAM@DIGEST", arg, t.registry, t.registry)
}

// imageRef adds the image a pod or template names.
func (t *tracer) imageRef(ctx context.Context, ns, ref string) string {
	project, stream, digest, ok := t.splitRef(ref)
	if !ok {
		return t.g.add(Node{Kind: "Image", Name: ref, Detail: t.external(ref)})
	}
	return t.image(ctx, project, stream, digest)
}

// image traces one image by digest: its record (source, commit, base), the
// build that produced it, its scan, its referrers and its promotions.
func (t *tracer) image(ctx context.Context, project, stream, digest string) string {
	id := "image:" + digest
	if t.images[id] {
		return id
	}
	t.images[id] = true
	n := Node{ID: id, Kind: "Image", Namespace: project, Name: project + "/" + stream, Digest: digest}
	o, err := t.api.Get(ctx, api.Images, project, digest)
	if err != nil {
		n.Detail = notVisible
		n.NotVisible = forbidden(err)
		if !n.NotVisible {
			n.Detail = "unreadable: " + Friendly(err)
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
			t.g.link(id, t.image(ctx, p, s, bd), "based on")
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
func (t *tracer) build(ctx context.Context, id string, projects []string, digest string) {
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
func (t *tracer) buildIn(ctx context.Context, id, project, digest string) bool {
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
func (t *tracer) scan(ctx context.Context, id, project, digest string) {
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
func (t *tracer) refs(ctx context.Context, id, project, stream, digest string) {
	if t.referrers == nil {
		return
	}
	descs, err := t.referrers(ctx, project, stream, digest)
	if err != nil {
		n := Node{ID: "referrers:" + digest, Kind: "Referrer", Name: project + "/" + stream + "@" + digest}
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == 401 || te.StatusCode == 403) {
			n.NotVisible, n.Detail = true, notVisible
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
func (t *tracer) promotions(ctx context.Context, id, project, digest string) (nodes, sources []string) {
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
				if ns == project && forbidden(err) {
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

// vuln lists every running pod the caller may see whose image has the
// finding id (or an alias of it), with the build config whose rebuild
// would replace the image, its base, and whether the base's stream has a
// newer image without the finding.
func (t *tracer) vuln(ctx context.Context, projects []string, id string) {
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
func (t *tracer) fix(ctx context.Context, iid, project, digest string, has func(project, digest string) (*api.Finding, bool, error)) {
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
		detail = "its stream is " + notVisible
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

// writeTree prints the graph as an indented tree from each node nothing
// points to; a node reached twice is printed once and then referred to.
func writeTree(w io.Writer, g *Graph) {
	into := map[string]bool{}
	out := map[string][]Edge{}
	for _, e := range g.Edges {
		into[e.To] = true
		out[e.From] = append(out[e.From], e)
	}
	printed := map[string]bool{}
	var walk func(id, label, indent string)
	walk = func(id, label, indent string) {
		n := g.node(id)
		line := indent
		if label != "" {
			line += label + " → "
		}
		line += strings.ToLower(n.Kind) + " " + n.title()
		if n.Detail != "" {
			line += "  (" + n.Detail + ")"
		}
		if printed[id] && len(out[id]) > 0 {
			fmt.Fprintln(w, line+"  [see above]")
			return
		}
		fmt.Fprintln(w, line)
		printed[id] = true
		for _, e := range out[id] {
			walk(e.To, e.Label, indent+"  ")
		}
	}
	for _, n := range g.Nodes {
		if !into[n.ID] && !printed[n.ID] {
			walk(n.ID, "", "")
		}
	}
}

// writeDot prints the graph for Graphviz.
func writeDot(w io.Writer, g *Graph) {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	fmt.Fprintln(w, "digraph trace {")
	fmt.Fprintln(w, "  rankdir=LR;\n  node [shape=box, fontsize=10];")
	for _, n := range g.Nodes {
		label := n.Kind + "\n" + n.title()
		if n.Detail != "" {
			label += "\n" + n.Detail
		}
		style := ""
		if n.NotVisible {
			style = ", style=dashed"
		}
		fmt.Fprintf(w, "  %s [label=%s%s];\n", q(n.ID), q(label), style)
	}
	for _, e := range g.Edges {
		fmt.Fprintf(w, "  %s -> %s [label=%s];\n", q(e.From), q(e.To), q(e.Label))
	}
	fmt.Fprintln(w, "}")
}

func writeGraph(w io.Writer, g *Graph, output string) error {
	switch output {
	case "":
		writeTree(w, g)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if g.Nodes == nil {
			g.Nodes = []Node{}
		}
		if g.Edges == nil {
			g.Edges = []Edge{}
		}
		return enc.Encode(g)
	case "dot":
		writeDot(w, g)
	default:
		return usagef("-o %q: use json or dot (or nothing, for a tree)", output)
	}
	return nil
}

func traceCmd() *cobra.Command {
	var output, vuln string
	c := &cobra.Command{
		Use:   "trace IMAGE|pod/NAME|dc/NAME | --vuln ID",
		Short: "Show where a running image came from: pod → digest → build → commit → base → scan → signatures → promotions",
		Long: `Trace an image's lineage: the pods that run it, its digest, the build and
commit that made it, its base image, its SBOM and findings, its signatures
and attestations, and its promotions. Everything is read with your own
credentials; a hop you may not read is shown as "not visible to you".

--vuln ID lists the running pods you may see whose image has the finding
(an OSV, CVE or GHSA id), with the build config whose rebuild replaces the
image and whether its base's stream has an image without the finding.

-o json prints {"nodes": [{id, kind, name, namespace, digest, detail,
notVisible}], "edges": [{from, to, label}]}; -o dot prints Graphviz.`,
		Example: `  slipway trace pod/web-3-x7k2q
  slipway trace dc/web -o dot | dot -Tsvg > web.svg
  slipway trace web:latest -o json
  slipway trace --vuln CVE-2024-45491`,
		Args: func(c *cobra.Command, args []string) error {
			if vuln == "" && len(args) != 1 || vuln != "" && len(args) != 0 {
				return usagef("name one image, pod/NAME or dc/NAME, or --vuln ID alone\nSee '%s --help' for usage.", c.CommandPath())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "dot" {
				return usagef("-o %q: use json or dot (or nothing, for a tree)", output)
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			host, err := cl.RegistryHost(ctx)
			if err != nil {
				return err
			}
			auth := remote.WithAuth(&authn.Basic{Username: "slipway", Password: cl.Token()})
			t := newTracer(cl, host, func(ctx context.Context, project, stream, digest string) ([]v1.Descriptor, error) {
				d, err := name.NewDigest(host+"/"+project+"/"+stream+"@"+digest, name.Insecure)
				if err != nil {
					return nil, err
				}
				idx, err := remote.Referrers(d, auth, remote.WithContext(ctx))
				if err != nil {
					return nil, err
				}
				m, err := idx.IndexManifest()
				if err != nil {
					return nil, err
				}
				return m.Manifests, nil
			})
			if vuln != "" {
				projects := []string{ns}
				if items, _, err := cl.List(ctx, api.Projects, "", client.ListOptions{}); err == nil {
					projects = projects[:0]
					for _, o := range items {
						projects = append(projects, o.(*api.Project).Name)
					}
					sort.Strings(projects)
				}
				t.vuln(ctx, projects, vuln)
				if len(t.g.Nodes) == 0 && output == "" {
					fmt.Fprintf(c.OutOrStdout(), "No running pod you may see runs an image with %s.\n", vuln)
					return nil
				}
				return writeGraph(c.OutOrStdout(), &t.g, output)
			}
			arg := args[0]
			switch {
			case strings.HasPrefix(arg, "pod/") || strings.HasPrefix(arg, "pods/") || strings.HasPrefix(arg, "po/"):
				err = t.pod(ctx, ns, arg[strings.Index(arg, "/")+1:])
			case strings.HasPrefix(arg, "dc/") || strings.HasPrefix(arg, "deploymentconfig/") || strings.HasPrefix(arg, "deploymentconfigs/"):
				err = t.dc(ctx, ns, arg[strings.Index(arg, "/")+1:])
			default:
				if err := t.otherRegistry(arg); err != nil {
					return err
				}
				var project, stream, digest string
				if project, stream, digest, err = resolveImage(ctx, cl, ns, arg); err == nil {
					if n := t.g.node(t.image(ctx, project, stream, digest)); n.NotVisible {
						return fmt.Errorf("%s is %s", arg, notVisible)
					}
				}
			}
			if err != nil {
				if forbidden(err) {
					return fmt.Errorf("%s is %s: %s", arg, notVisible, Friendly(err))
				}
				return err
			}
			return writeGraph(c.OutOrStdout(), &t.g, output)
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "json or dot (default: a tree)")
	c.Flags().StringVar(&vuln, "vuln", "", "list the running pods whose image has this finding (CVE, GHSA or OSV id)")
	return c
}
