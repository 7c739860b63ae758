package lineage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
)

// objects answers Get and List from objects built in the test; a resource
// in deny answers 403 for every project, as the API does for a caller
// without the right.
type objects struct {
	items []api.Object
	deny  map[*api.Resource]bool
}

func (o *objects) of(r *api.Resource) []api.Object {
	var out []api.Object
	for _, x := range o.items {
		if reflect.TypeOf(x) == reflect.TypeOf(r.New()) {
			out = append(out, x)
		}
	}
	return out
}

func (o *objects) Get(_ context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	if o.deny[r] {
		return nil, api.NewStatus(403, api.ReasonForbidden, "%s %q is forbidden", r.Name, name)
	}
	for _, x := range o.of(r) {
		if m := x.GetObjectMeta(); m.Namespace == ns && m.Name == name {
			return x, nil
		}
	}
	return nil, api.NewStatus(404, api.ReasonNotFound, "%s %q not found", r.Name, name)
}

func (o *objects) List(_ context.Context, r *api.Resource, ns string, opts client.ListOptions) ([]api.Object, api.ListMeta, error) {
	if o.deny[r] {
		return nil, api.ListMeta{}, api.NewStatus(403, api.ReasonForbidden, "%s is forbidden", r.Name)
	}
	var out []api.Object
	for _, x := range o.of(r) {
		m := x.GetObjectMeta()
		if ns != "" && m.Namespace != ns {
			continue
		}
		if k, v, ok := strings.Cut(opts.LabelSelector, "="); ok && m.Labels[k] != v {
			continue
		}
		out = append(out, x)
	}
	return out, api.ListMeta{}, nil
}

// registryHost is the integrated registry's host in these traces.
const registryHost = "127.0.0.1:5000"

const (
	appDigest  = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	baseDigest = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	newBase    = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
	sigDigest  = "sha256:4444444444444444444444444444444444444444444444444444444444444444"
	sbomDigest = "sha256:5555555555555555555555555555555555555555555555555555555555555555"
	commitSHA  = "0123456789abcdef0123456789abcdef01234567"
)

func shop() *objects {
	meta := func(ns, name string, labels map[string]string) api.ObjectMeta {
		return api.ObjectMeta{Namespace: ns, Name: name, Labels: labels}
	}
	return &objects{items: []api.Object{
		&api.Pod{ObjectMeta: meta("shop", "web-1-abcde", map[string]string{api.DeploymentLabel: "web-1", api.DeploymentConfigLabel: "web"}),
			Spec:   api.PodSpec{NodeName: "n1", Containers: []api.Container{{Name: "web", Image: "127.0.0.1:5000/shop/web@" + appDigest}}},
			Status: api.PodStatus{Phase: "Running"}},
		&api.Image{ObjectMeta: meta("shop", appDigest, nil), MediaType: "application/vnd.oci.image.manifest.v1+json", ManifestAnnotations: map[string]string{
			annSource: "https://git.example/app.git", annRevision: commitSHA,
			builders.BaseNameAnnotation: "127.0.0.1:5000/base/debian", builders.BaseDigestAnnotation: baseDigest,
		}},
		&api.Image{ObjectMeta: meta("base", baseDigest, nil), MediaType: "application/vnd.oci.image.manifest.v1+json"},
		&api.Build{ObjectMeta: meta("shop", "web-3", map[string]string{builders.BuildConfigLabel: "web"}),
			Spec:   api.BuildSpec{Source: api.BuildSource{Git: &api.GitBuildSource{URI: "https://git.example/app.git"}}},
			Status: api.BuildStatus{Phase: api.BuildComplete, OutputDigest: appDigest, Revision: commitSHA}},
		&api.Build{ObjectMeta: meta("shop", "web-2", map[string]string{builders.BuildConfigLabel: "web"}), Status: api.BuildStatus{Phase: api.BuildFailed}},
		&api.ImageScan{ObjectMeta: meta("shop", appDigest, nil), Status: api.ImageScanStatus{Phase: "Scanned", SBOMDigest: sbomDigest, Packages: 12, DBVersion: "v1",
			Findings: []api.Finding{{ID: "DSA-1-1", Aliases: []string{"CVE-2024-0001"}, Package: "openssl", Version: "3.0.1", FixedIn: "3.0.2", Severity: "HIGH"}}}},
		&api.ImageScan{ObjectMeta: meta("base", newBase, nil), Status: api.ImageScanStatus{Phase: "Scanned", DBVersion: "v1"}},
		&api.ImageStream{ObjectMeta: meta("base", "debian", nil), Status: api.ImageStreamStatus{Tags: []api.NamedTagEventList{{Tag: "12", Items: []api.TagEvent{
			{Image: newBase, Generation: 2, Created: time.Unix(2, 0)}, {Image: baseDigest, Generation: 1, Created: time.Unix(1, 0)}}}}}},
		&api.Project{ObjectMeta: meta("", "shop", nil)},
		&api.Project{ObjectMeta: meta("", "pipelines", nil)},
		&api.Promotion{ObjectMeta: meta("pipelines", "shop-prod-2", nil), Spec: api.PromotionSpec{Pipeline: "shop", To: "prod", Image: appDigest},
			Status: api.PromotionStatus{Phase: api.PromotionPending}},
		&api.Promotion{ObjectMeta: meta("pipelines", "other-prod-1", nil), Spec: api.PromotionSpec{Pipeline: "other", To: "prod", Image: newBase}},
		&api.Promotion{ObjectMeta: meta("shop", "shop-qa-1", nil), Spec: api.PromotionSpec{Pipeline: "shop", To: "qa"},
			Status: api.PromotionStatus{Phase: api.PromotionComplete, Source: "127.0.0.1:5000/shop/web@" + appDigest, Revision: 1}},
	}}
}

func referrersOf(_ context.Context, project, stream, digest string) ([]v1.Descriptor, error) {
	if digest != appDigest {
		return nil, nil
	}
	return []v1.Descriptor{
		{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("4", 64)}, ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json"},
		{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("5", 64)}, ArtifactType: "application/vnd.cyclonedx+json"},
	}, nil
}

func TestTracePod(t *testing.T) {
	tr := New(shop(), registryHost, referrersOf)
	if err := tr.Pod(context.Background(), "shop", "web-1-abcde"); err != nil {
		t.Fatal(err)
	}
	var edges []string
	for _, e := range tr.g.Edges {
		edges = append(edges, e.From+" -"+e.Label+"-> "+e.To)
	}
	want := []string{
		"image:" + appDigest + " -built by-> build:shop/web-3",
		"build:shop/web-3 -built commit-> commit:" + commitSHA,
		"build:shop/web-3 -of-> buildconfig:shop/web",
		"image:" + appDigest + " -source-> commit:" + commitSHA,
		"image:" + appDigest + " -based on-> image:" + baseDigest,
		"image:" + appDigest + " -scanned-> scan:" + appDigest,
		"scan:" + appDigest + " -finding-> finding:" + appDigest + ":DSA-1-1:openssl",
		"image:" + appDigest + " -signed by-> signature:" + sigDigest,
		"image:" + appDigest + " -described by-> sbom:" + sbomDigest,
		"image:" + appDigest + " -promoted by-> promotion:shop/shop-qa-1",
		"image:" + appDigest + " -promoted by-> promotion:pipelines/shop-prod-2",
		"pod:shop/web-1-abcde -runs web-> image:" + appDigest,
		"replicationcontroller:shop/web-1 -made-> pod:shop/web-1-abcde",
		"deploymentconfig:shop/web -revision-> replicationcontroller:shop/web-1",
	}
	if diff := cmp.Diff(want, edges); diff != "" {
		t.Errorf("trace pod/web-1-abcde edges (-want +got):\n%s", diff)
	}
	if n := tr.g.Node("image:" + baseDigest); n.Namespace != "base" || n.NotVisible {
		t.Errorf("base image node = %+v, want a visible image in project base", n)
	}
}

// TestTracePromotedImage: the copy of an image in a later stage leads to
// the build in the project it was promoted from.
func TestTracePromotedImage(t *testing.T) {
	o := shop()
	rec := *o.of(api.Images)[0].(*api.Image)
	rec.Namespace = "live"
	o.items = append(o.items, &rec)
	tr := New(o, registryHost, nil)
	tr.Image(context.Background(), "live", "web", appDigest)
	var edges []string
	for _, e := range tr.g.Edges {
		edges = append(edges, e.From+" -"+e.Label+"-> "+e.To)
	}
	want := []string{
		"image:" + appDigest + " -built by-> build:shop/web-3",
		"build:shop/web-3 -built commit-> commit:" + commitSHA,
		"build:shop/web-3 -of-> buildconfig:shop/web",
		"image:" + appDigest + " -source-> commit:" + commitSHA,
		"image:" + appDigest + " -based on-> image:" + baseDigest,
		"image:" + appDigest + " -promoted by-> promotion:shop/shop-qa-1",
		"image:" + appDigest + " -promoted by-> promotion:pipelines/shop-prod-2",
	}
	if diff := cmp.Diff(want, edges); diff != "" {
		t.Errorf("trace live/web@%s edges (-want +got):\n%s", appDigest, diff)
	}
}

// TestTraceNotVisible: a hop the caller may not read is a node saying so,
// and the rest of the trace goes on.
func TestTraceNotVisible(t *testing.T) {
	o := shop()
	o.deny = map[*api.Resource]bool{api.Builds: true, api.Images: true}
	tr := New(o, registryHost, referrersOf)
	if err := tr.Pod(context.Background(), "shop", "web-1-abcde"); err != nil {
		t.Fatal(err)
	}
	img := tr.g.Node("image:" + appDigest)
	if !img.NotVisible || img.Detail != NotVisibleMessage {
		t.Errorf("image node = %+v, want not visible", img)
	}
	for _, n := range tr.g.Nodes {
		if n.Kind == "Commit" || n.Kind == "Build" {
			t.Errorf("a %s node %q came from a hop the caller may not read", n.Kind, n.Name)
		}
	}
	// The root itself refused is an error, not an empty trace.
	o.deny[api.Pods] = true
	if err := New(o, registryHost, referrersOf).Pod(context.Background(), "shop", "web-1-abcde"); !Forbidden(err) {
		t.Errorf("trace of a pod the caller may not read = %v, want 403", err)
	}
}

func TestTraceVuln(t *testing.T) {
	for _, id := range []string{"DSA-1-1", "CVE-2024-0001"} {
		tr := New(shop(), registryHost, nil)
		tr.Vuln(context.Background(), []string{"base", "shop"}, id)
		var edges []string
		for _, e := range tr.g.Edges {
			edges = append(edges, e.From+" -"+e.Label+"-> "+e.To)
		}
		want := []string{
			"pod:shop/web-1-abcde -runs web-> image:" + appDigest,
			"image:" + appDigest + " -finding-> finding:" + appDigest + ":DSA-1-1",
			"image:" + appDigest + " -rebuild-> buildconfig:shop/web",
			"buildconfig:shop/web -based on-> image:" + baseDigest,
		}
		if diff := cmp.Diff(want, edges); diff != "" {
			t.Errorf("trace --vuln %s edges (-want +got):\n%s", id, diff)
		}
		if d := tr.g.Node("image:" + baseDigest).Detail; !strings.Contains(d, "fixed base exists") || !strings.Contains(d, newBase) {
			t.Errorf("trace --vuln %s: base detail = %q, want the fixed base %s", id, d, newBase)
		}
	}
	// The copy promoted to live is rebuilt by shop's config.
	o := shop()
	rec := *o.of(api.Images)[0].(*api.Image)
	rec.Namespace = "live"
	sc := *o.of(api.ImageScans)[0].(*api.ImageScan)
	sc.Namespace = "live"
	o.items = append(o.items, &rec, &sc, &api.Pod{ObjectMeta: api.ObjectMeta{Namespace: "live", Name: "web-7-xyz"},
		Spec:   api.PodSpec{Containers: []api.Container{{Name: "web", Image: "127.0.0.1:5000/live/web@" + appDigest}}},
		Status: api.PodStatus{Phase: "Running"}})
	tr := New(o, registryHost, nil)
	tr.Vuln(context.Background(), []string{"live"}, "DSA-1-1")
	var edges []string
	for _, e := range tr.g.Edges {
		edges = append(edges, e.From+" -"+e.Label+"-> "+e.To)
	}
	if !slices.Contains(edges, "image:"+appDigest+" -rebuild-> buildconfig:shop/web") {
		t.Errorf("trace --vuln of live's copy: edges %q, want the rebuild of shop/web", edges)
	}

	tr = New(shop(), registryHost, nil)
	tr.Vuln(context.Background(), []string{"shop"}, "CVE-1999-0000")
	if len(tr.g.Nodes) != 0 {
		t.Errorf("trace --vuln of an absent id = %v, want nothing", tr.g.Nodes)
	}
}

// TestTraceOutput: the JSON form round-trips; dot and the tree name every
// hop.
func TestTraceOutput(t *testing.T) {
	tr := New(shop(), registryHost, referrersOf)
	if err := tr.Pod(context.Background(), "shop", "web-1-abcde"); err != nil {
		t.Fatal(err)
	}
	var js bytes.Buffer
	if err := json.NewEncoder(&js).Encode(&tr.g); err != nil {
		t.Fatal(err)
	}
	var back Graph
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("-o json does not parse: %v\n%s", err, js.String())
	}
	if diff := cmp.Diff(tr.g, back); diff != "" {
		t.Errorf("-o json round trip (-want +got):\n%s", diff)
	}
	for _, key := range []string{`"nodes"`, `"edges"`, `"kind"`, `"digest"`, `"from"`, `"to"`, `"label"`} {
		if !strings.Contains(js.String(), key) {
			t.Errorf("-o json lacks %s", key)
		}
	}

	var dot bytes.Buffer
	WriteDot(&dot, &tr.g)
	if !strings.HasPrefix(dot.String(), "digraph") || strings.Count(dot.String(), " -> ") != len(tr.g.Edges) {
		t.Errorf("-o dot = %s\nwant a digraph with %d edges", dot.String(), len(tr.g.Edges))
	}

	var tree bytes.Buffer
	WriteTree(&tree, &tr.g)
	t.Logf("tree:\n%s", tree.String())
	lines := strings.Split(strings.TrimSpace(tree.String()), "\n")
	if !strings.HasPrefix(lines[0], "deploymentconfig shop/web") {
		t.Errorf("tree starts %q, want the deployment config at the root", lines[0])
	}
	for _, s := range []string{commitSHA, appDigest, baseDigest, sigDigest, "promotion shop/shop-qa-1", "finding DSA-1-1"} {
		if !strings.Contains(tree.String(), s) {
			t.Errorf("tree lacks %s:\n%s", s, tree.String())
		}
	}
}

// TestTraceExternalRegistry: only references to the integrated
// registry's host are images of its projects. A pod, a base annotation or
// a promotion naming another host with the same path (evil.example.com/
// base/debian) is another registry's image, shown as such: never the
// integrated registry's project base, whose records the caller could
// read, presented as what the pod runs.
func TestTraceExternalRegistry(t *testing.T) {
	o := shop()
	o.items = append(o.items,
		&api.Pod{ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "ext"},
			Spec:   api.PodSpec{NodeName: "n1", Containers: []api.Container{{Name: "web", Image: "evil.example.com/base/debian@" + baseDigest}}},
			Status: api.PodStatus{Phase: "Running"}},
		&api.Image{ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: newBase}, ManifestAnnotations: map[string]string{
			builders.BaseNameAnnotation: "localhost/base/debian", builders.BaseDigestAnnotation: baseDigest}},
	)
	tr := New(o, registryHost, nil)
	if err := tr.Pod(context.Background(), "shop", "ext"); err != nil {
		t.Fatal(err)
	}
	tr.Image(context.Background(), "shop", "web", newBase)
	for _, n := range tr.g.Nodes {
		if n.Kind == "Image" && n.Digest == baseDigest && (n.Namespace != "" || !strings.Contains(n.Detail, "another registry")) {
			t.Errorf("image node %+v: want another registry's image (evil.example.com, localhost), not project %q's record", n, n.Namespace)
		}
	}
	var ids []string
	for _, n := range tr.g.Nodes {
		ids = append(ids, n.ID)
	}
	if slices.ContainsFunc(tr.g.Edges, func(e Edge) bool { return e.Label == "scanned" && strings.Contains(e.To, baseDigest) }) {
		t.Errorf("the trace followed an external reference into a scan: %v", ids)
	}
	// Named on the command line, such a reference is refused, not
	// resolved in the current project.
	for arg, external := range map[string]bool{
		"evil.example.com/base/debian@" + baseDigest: true, "localhost/base/debian:12": true, "evil.example.com:5000/base/debian:12": true,
		registryHost + "/base/debian@" + baseDigest: false, "debian:12": false, "debian@" + baseDigest: false,
	} {
		if err := tr.OtherRegistry(arg); (err != nil) != external {
			t.Errorf("trace %s: %v, want refused as another registry's image: %v", arg, err, external)
		}
	}
	// --vuln attributes no finding to a pod running another registry's image.
	o.items = append(o.items, &api.ImageScan{ObjectMeta: api.ObjectMeta{Namespace: "base", Name: baseDigest},
		Status: api.ImageScanStatus{Phase: "Scanned", Findings: []api.Finding{{ID: "CVE-2024-0002", Package: "zlib", Severity: "LOW"}}}})
	tv := New(o, registryHost, nil)
	tv.Vuln(context.Background(), []string{"base", "shop"}, "CVE-2024-0002")
	if len(tv.g.Nodes) != 0 {
		t.Errorf("--vuln CVE-2024-0002 found %v: base's scan attributed to pod shop/ext, which runs evil.example.com's image", tv.g.Nodes)
	}
}

// TestTraceTarget: Trace names its root by the forms `slipway trace`
// and the console take, and Pods adds who runs an image traced by digest.
func TestTraceTarget(t *testing.T) {
	o := shop()
	o.items = append(o.items, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "web"},
		Status: api.ImageStreamStatus{Tags: []api.NamedTagEventList{{Tag: "latest", Items: []api.TagEvent{{Image: appDigest, Generation: 1}}}}}},
		&api.DeploymentConfig{ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "web"}, Status: api.DeploymentConfigStatus{LatestVersion: 1}})
	ctx := context.Background()
	for target, want := range map[string]string{
		"pod/web-1-abcde": "pod:shop/web-1-abcde", "dc/web": "deploymentconfig:shop/web",
		"web:latest": "image:" + appDigest, "web": "image:" + appDigest, "web@" + appDigest: "image:" + appDigest,
		appDigest: "image:" + appDigest, registryHost + "/shop/web@" + appDigest: "image:" + appDigest,
	} {
		tr := New(o, registryHost, referrersOf)
		id, err := tr.Trace(ctx, "shop", target)
		if err != nil || id != want {
			t.Errorf("Trace(%s) = %q, %v; want %q", target, id, err, want)
		}
		if tr.Graph().Node(want).Kind == "" {
			t.Errorf("Trace(%s): the graph has no node %s", target, want)
		}
	}
	tr := New(o, registryHost, referrersOf)
	if _, err := tr.Trace(ctx, "shop", "evil.example.com/shop/web:latest"); !errors.Is(err, ErrOtherRegistry) {
		t.Errorf("Trace of another registry's image = %v, want ErrOtherRegistry", err)
	}
	if _, err := tr.Trace(ctx, "shop", baseDigest); err == nil {
		t.Errorf("Trace of a digest no stream of shop holds = nil error")
	}
	o.deny = map[*api.Resource]bool{api.Images: true}
	if _, err := New(o, registryHost, nil).Trace(ctx, "shop", "web:latest"); err == nil || !strings.Contains(err.Error(), NotVisibleMessage) {
		t.Errorf("Trace of an image the caller may not read = %v, want not visible", err)
	}

	o.deny = nil
	tr = New(o, registryHost, referrersOf)
	tr.Pods(ctx, "shop", appDigest)
	tr.Image(ctx, "shop", "web", appDigest)
	var edges []string
	for _, e := range tr.Graph().Edges {
		edges = append(edges, e.From+" -"+e.Label+"-> "+e.To)
	}
	for _, want := range []string{"pod:shop/web-1-abcde -runs web-> image:" + appDigest, "deploymentconfig:shop/web -revision-> replicationcontroller:shop/web-1",
		"image:" + appDigest + " -signed by-> signature:" + sigDigest} {
		if !slices.Contains(edges, want) {
			t.Errorf("Pods then Image: edges %q lack %q", edges, want)
		}
	}
	o.deny = map[*api.Resource]bool{api.Pods: true}
	tr = New(o, registryHost, nil)
	tr.Pods(ctx, "shop", appDigest)
	if n := tr.Graph().Node("pod:shop/*"); !n.NotVisible {
		t.Errorf("Pods of a project whose pods the caller may not list: %+v, want a hidden node", tr.Graph().Nodes)
	}
}
