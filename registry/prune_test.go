package registry_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/store"
)

// pruneKey is what a prune item is compared by (its reason has ages in
// it, which move between two calls).
func pruneKeys(items []registry.PruneItem) []string {
	var out []string
	for _, it := range items {
		out = append(out, fmt.Sprintf("%s %s/%s:%s#%d %s", it.Kind, it.Project, it.Stream, it.Tag, it.Position, it.Image))
	}
	slices.Sort(out)
	return out
}

// Nothing in use is pruned: a row per kind of reference. Each row has its
// own stream with four pushes to :t; the first is entry 4, beyond
// --keep-tag-revisions=3, and old enough; only the row's reference can
// keep it. The control rows show the same setup without a holder is
// pruned. The dry run lists exactly what the real prune then removes.
func TestPruneKeepsWhatIsInUse(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "pr", false)
	h.project(t, "alice", "other", false)
	ctx := ctxT(t)
	st := h.env.Server.Store
	regHost := h.env.Registry
	now := time.Now()
	old := now.Add(-2 * time.Hour)

	type row struct {
		name string
		hold func(t *testing.T, stream, x string) // makes the reference to x
		kept bool
	}
	create := func(t *testing.T, res *api.Resource, o api.Object) {
		t.Helper()
		if err := st.Create(ctx, res, o); err != nil {
			t.Fatalf("create %s: %v", res.Name, err)
		}
	}
	podSpec := func(stream, x string) api.PodSpec {
		return api.PodSpec{Containers: []api.Container{{Name: "c", Image: regHost + "/pr/" + stream + "@" + x}}}
	}
	rows := []row{
		{name: "pod", kept: true, hold: func(t *testing.T, s, x string) {
			create(t, api.Pods, &api.Pod{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"}, Spec: podSpec(s, x)})
		}},
		{name: "rc", kept: true, hold: func(t *testing.T, s, x string) {
			create(t, api.ReplicationControllers, &api.ReplicationController{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"},
				Spec: api.ReplicationControllerSpec{Replicas: 0, Selector: map[string]string{"app": s}, Template: &api.PodTemplateSpec{ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": s}}, Spec: podSpec(s, x)}}})
		}},
		{name: "dc", kept: true, hold: func(t *testing.T, s, x string) {
			create(t, api.DeploymentConfigs, &api.DeploymentConfig{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"},
				Spec: api.DeploymentConfigSpec{Replicas: 0, Paused: true, Selector: map[string]string{"app": s}, Template: &api.PodTemplateSpec{ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": s}}, Spec: podSpec(s, x)}}})
		}},
		{name: "build-running", kept: true, hold: func(t *testing.T, s, x string) {
			create(t, api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"}, Status: api.BuildStatus{Phase: api.BuildRunning, BaseImage: regHost + "/pr/" + s + "@" + x}})
		}},
		{name: "build-recent", kept: true, hold: func(t *testing.T, s, x string) {
			create(t, api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"}, Status: api.BuildStatus{Phase: api.BuildComplete, CompletionTimestamp: &now, OutputDigest: x}})
		}},
		{name: "build-old", kept: false, hold: func(t *testing.T, s, x string) {
			create(t, api.Builds, &api.Build{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"}, Status: api.BuildStatus{Phase: api.BuildComplete, CompletionTimestamp: &old, OutputDigest: x}})
		}},
		{name: "promotion-pending", kept: true, hold: func(t *testing.T, s, x string) {
			create(t, api.Pipelines, &api.Pipeline{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr", Annotations: map[string]string{api.PipelineOwnerAnnotation: "alice"}}, Spec: api.PipelineSpec{Stream: s, Stages: []api.PipelineStage{
				{Name: "dev", Project: "pr", Tag: "t"}, {Name: "prod", Project: "pr", Tag: "prod", MinSoak: api.Duration{Duration: 24 * time.Hour}}}}})
			create(t, api.Promotions, &api.Promotion{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "pr"}, Spec: api.PromotionSpec{Pipeline: s, To: "prod", Image: x}})
			waitFor(t, "the promotion to be pending (soaking)", func() bool {
				o, err := st.Get(ctx, api.Promotions, "pr", s)
				return err == nil && o.(*api.Promotion).Status.Phase == api.PromotionPending
			})
		}},
		{name: "pipeline-stage", kept: true, hold: func(t *testing.T, s, x string) {
			// x is the current image of a stage in another project.
			if err := h.env.Server.Registry.Link(ctx, "pr/"+s, "other/"+s, x); err != nil {
				t.Fatal(err)
			}
			if r := h.putManifestFrom(t, "pr/"+s, x, "other/"+s, "live"); r.code != http.StatusCreated {
				t.Fatalf("tag other/%s:live: %v", s, r)
			}
			create(t, api.Pipelines, &api.Pipeline{ObjectMeta: api.ObjectMeta{Name: s, Namespace: "other"}, Spec: api.PipelineSpec{Stream: s, Stages: []api.PipelineStage{{Name: "live", Project: "other", Tag: "live"}}}})
		}},
		{name: "nothing", kept: false, hold: func(*testing.T, string, string) {}},
	}
	xs := map[string]string{}
	for _, rw := range rows {
		s := "row-" + rw.name
		var first string
		for i := range 4 {
			d := h.pushOK(t, "alice", "pr/"+s+":t", randomImage(t))
			if i == 0 {
				first = d
			}
		}
		xs[rw.name] = first
		rw.hold(t, s, first)
	}
	// A signature of a kept image stays; one of a pruned image goes.
	keptHead := h.history(t, "pr", "row-nothing", "t")[0].Image
	sigKept := h.pushReferrer(t, "pr/sigs", keptHead)
	sigGone := h.pushReferrer(t, "pr/sigs", xs["nothing"])
	// An index's children stay with the index.
	idx, err := random.Index(128, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(h.ref(t, "pr/idx:t"), idx, remote.WithAuth(ggcrAuth(t, h, "alice")), remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	// The scanner stores each image's SBOM as a referrer once its scan is
	// done. One stored after the prune below, of an image it removed, is an
	// orphan that a second prune rightly removes: wait for every scan first.
	waitFor(t, "every image in pr to be scanned", func() bool {
		objs, _, err := st.List(ctx, api.Images, "pr", store.ListOptions{})
		if err != nil {
			return false
		}
		for _, o := range objs {
			img := o.(*api.Image)
			if !scan.Scannable(img) || img.DockerImageReference == "" {
				continue
			}
			s, err := st.Get(ctx, api.ImageScans, "pr", img.Name)
			if err != nil || s.(*api.ImageScan).Status.Phase != scan.PhaseScanned {
				return false
			}
		}
		return true
	})
	time.Sleep(20 * time.Millisecond) // everything is older than the cut-off below

	reg := h.env.Server.Registry
	opts := registry.PruneOptions{Project: "pr", KeepTagRevisions: 3, KeepYoungerThan: 10 * time.Millisecond}
	dry, err := reg.PruneImages(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Confirm = true
	real, err := reg.PruneImages(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if d, r := pruneKeys(dry.Removed), pruneKeys(real.Removed); !slices.Equal(d, r) {
		t.Fatalf("the dry run listed\n%s\nthe real prune removed\n%s", strings.Join(d, "\n"), strings.Join(r, "\n"))
	}
	gone := map[string]bool{}
	for _, it := range real.Removed {
		if it.Kind == "Image" {
			gone[it.Image] = true
		}
	}
	for _, rw := range rows {
		x := xs[rw.name]
		_, imgErr := h.image(t, "pr", x)
		pulled := h.getManifest(t, "alice", "pr/row-"+rw.name, x).code == http.StatusOK
		var inHistory bool
		for _, ev := range h.history(t, "pr", "row-"+rw.name, "t") {
			inHistory = inHistory || ev.Image == x
		}
		if rw.kept && (gone[x] || imgErr != nil || !pulled || !inHistory) {
			t.Errorf("%s: the image it references was pruned (listed %v, image record err %v, pulls %v, in history %v); want it kept", rw.name, gone[x], imgErr, pulled, inHistory)
		}
		if !rw.kept && (!gone[x] || imgErr == nil || pulled || inHistory) {
			t.Errorf("%s: the unreferenced entry 4 was not pruned (listed %v, image record err %v, pulls %v, in history %v)", rw.name, gone[x], imgErr, pulled, inHistory)
		}
		// Entries 1-3 stay whatever happens.
		if n := len(h.history(t, "pr", "row-"+rw.name, "t")); n < 3 {
			t.Errorf("%s: %d history entries left, want at least the 3 newest", rw.name, n)
		}
	}
	if gone[sigKept] {
		t.Errorf("the signature of a kept image was pruned")
	}
	if !gone[sigGone] {
		t.Errorf("the signature of a pruned image was kept")
	}
	for _, m := range im.Manifests {
		if gone[m.Digest.String()] {
			t.Errorf("child %s of the tagged index was pruned", m.Digest)
		}
	}
	// A second prune finds nothing more.
	again, err := reg.PruneImages(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Removed) != 0 {
		t.Errorf("a second prune removed %v, want nothing", pruneKeys(again.Removed))
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", hangGuard, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// putManifestFrom tags, in dst, the manifest dgst read from src.
func (h *harness) putManifestFrom(t *testing.T, src, dgst, dst, tag string) resp {
	t.Helper()
	g := h.getManifest(t, "alice", src, dgst)
	if g.code != http.StatusOK {
		t.Fatalf("GET %s@%s: %v", src, dgst, g)
	}
	return h.putManifest(t, "alice", dst, tag, g.header.Get("Content-Type"), g.body)
}

// pushReferrer pushes, by digest, a signature-like artifact whose subject
// is subject, and returns its digest.
func (h *harness) pushReferrer(t *testing.T, repo, subject string) string {
	t.Helper()
	empty := h.uploadBlobOK(t, "alice", repo, []byte("{}"))
	layer := []byte("signature of " + subject)
	ld := h.uploadBlobOK(t, "alice", repo, layer)
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},`+
		`"layers":[{"mediaType":"application/octet-stream","digest":%q,"size":%d}],`+
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}}`, empty, ld, len(layer), subject)
	d := sha256Of([]byte(m))
	if r := h.putManifest(t, "alice", repo, d, "application/vnd.oci.image.manifest.v1+json", []byte(m)); r.code != http.StatusCreated {
		t.Fatalf("push referrer of %s: %v", subject, r)
	}
	return d
}
