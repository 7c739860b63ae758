package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
)

// rebaseFixture: base/os:1 moved from v1 to v2 (v1 plus a patch layer),
// and team/app:latest built on v1 (v1 plus an app layer, with history and
// the base annotations), followed by BuildConfig team/app with rebase:
// true. alice owns both projects.
type rebaseFixture struct {
	v1img, v2img, app v1.Image
	appDigest, v2     string
}

func withHistory(t *testing.T, base v1.Image, by string) v1.Image {
	t.Helper()
	l, err := random.Layer(300, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: by, Comment: "test"}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func setupRebase(t *testing.T, h *harness, rebase bool) rebaseFixture {
	t.Helper()
	ctx := ctxT(t)
	h.project(t, "alice", "base", false)
	h.project(t, "alice", "team", false)
	var f rebaseFixture
	f.v1img = withHistory(t, withHistory(t, mutateOCI(t), "ADD rootfs /"), "RUN setup")
	h.pushOK(t, "alice", "base/os:1", f.v1img)
	app := withHistory(t, f.v1img, "COPY app /app")
	cf, err := app.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd = []string{"/app/run"}
	cf.Config.Env = []string{"PATH=/bin", "APP=1"}
	if app, err = mutate.ConfigFile(app, cf); err != nil {
		t.Fatal(err)
	}
	f.app = mutate.Annotations(app, map[string]string{
		builders.BaseNameAnnotation:   h.env.Registry + "/base/os",
		builders.BaseDigestAnnotation: digestOf(t, f.v1img),
		"org.example/keep":            "kept",
	}).(v1.Image)
	f.appDigest = h.pushOK(t, "alice", "team/app:latest", f.app)
	f.v2img = withHistory(t, f.v1img, "RUN patch")
	f.v2 = h.pushOK(t, "alice", "base/os:1", f.v2img)
	if err := h.user(t, "alice").Create(ctx, api.BuildConfigs, &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "team"},
		Spec: api.BuildConfigSpec{
			Rebase:   rebase,
			Source:   api.BuildSource{Dockerfile: "FROM base\nCOPY app /app\n"},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "os:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	return f
}

// mutateOCI is an empty OCI image.
func mutateOCI(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.History, cf.RootFS.DiffIDs = nil, nil
	cf.Architecture, cf.OS = "amd64", "linux"
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(mutate.ConfigMediaType(img, "application/vnd.oci.image.config.v1+json"), "application/vnd.oci.image.manifest.v1+json")
}

func remoteImage(t *testing.T, h *harness, u, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(h.ref(t, ref), remote.WithAuth(&authn.Basic{Username: u, Password: h.token(t, u)}), remote.WithContext(ctxT(t)))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

// TestRebaseServerSideIsByteIdenticalToTheBuildsRebase rebases in the
// registry and compares the result, byte for byte, with what a rebase
// build computes from the same three images with go-containerregistry
// (builders.RebaseImage), and its layers, diff IDs, history and config
// with crane's mutate.Rebase.
func TestRebaseServerSideIsByteIdenticalToTheBuildsRebase(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	b, err := h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
	if err != nil {
		t.Fatalf("rebase: %v", err)
	}
	if b.Status.Phase != api.BuildComplete || b.Status.RebasedFrom != f.appDigest || b.Name != "app-1" {
		t.Fatalf("build %s: phase %s, rebasedFrom %s (want Complete, %s)", b.Name, b.Status.Phase, b.Status.RebasedFrom, f.appDigest)
	}
	want, err := builders.RebaseImage(f.app, f.v1img, f.v2img, b.Name, "team", h.env.Registry+"/base/os", f.v2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := b.Status.OutputDigest, digestOf(t, want); got != want {
		t.Errorf("server-side rebase made %s, a rebase build makes %s from the same images", got, want)
	}
	// What a user pulls: the same bytes.
	man, dgst, err := h.pull(t, "alice", "team/app:latest")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(man, rawManifest(t, want)) || dgst != b.Status.OutputDigest {
		t.Errorf("pulled manifest %s differs from the build's:\n%s\n%s", dgst, man, rawManifest(t, want))
	}
	got := remoteImage(t, h, "alice", "team/app:latest")
	gotCfg, _ := got.RawConfigFile()
	wantCfg, _ := want.RawConfigFile()
	if !bytes.Equal(gotCfg, wantCfg) {
		t.Errorf("config differs:\n%s\n%s", gotCfg, wantCfg)
	}
	// Every layer is served from team/app (linked, not copied), and is
	// the new base's followed by the app's own.
	gl, _ := got.Layers()
	v2l, _ := f.v2img.Layers()
	al, _ := f.app.Layers()
	if len(gl) != len(v2l)+1 {
		t.Fatalf("%d layers, want %d", len(gl), len(v2l)+1)
	}
	for i, l := range gl {
		w := al[len(al)-1]
		if i < len(v2l) {
			w = v2l[i]
		}
		gd, _ := l.Digest()
		wd, _ := w.Digest()
		if gd != wd {
			t.Errorf("layer %d is %s, want %s", i, gd, wd)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Errorf("layer %d not served from team/app: %v", i, err)
			continue
		}
		rc.Close()
	}
	// crane's mutate.Rebase, on images whose history is complete: the
	// same layers, diff IDs, history and container config; the build
	// labels and base annotations are what a build adds.
	crane, err := mutate.Rebase(f.app, f.v1img, f.v2img)
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := crane.ConfigFile()
	gc, _ := got.ConfigFile()
	if len(cc.RootFS.DiffIDs) != len(gc.RootFS.DiffIDs) {
		t.Fatalf("diff IDs: %v, crane %v", gc.RootFS.DiffIDs, cc.RootFS.DiffIDs)
	}
	for i := range cc.RootFS.DiffIDs {
		if cc.RootFS.DiffIDs[i] != gc.RootFS.DiffIDs[i] {
			t.Errorf("diff ID %d: %s, crane %s", i, gc.RootFS.DiffIDs[i], cc.RootFS.DiffIDs[i])
		}
	}
	if len(cc.History) != len(gc.History) {
		t.Errorf("history: %d entries, crane %d", len(gc.History), len(cc.History))
	} else {
		for i := range cc.History {
			if cc.History[i].CreatedBy != gc.History[i].CreatedBy || cc.History[i].EmptyLayer != gc.History[i].EmptyLayer {
				t.Errorf("history %d: %+v, crane %+v", i, gc.History[i], cc.History[i])
			}
		}
	}
	labels := gc.Config.Labels
	gc.Config.Labels = nil
	if !equalJSON(t, gc.Config, cc.Config) {
		t.Errorf("container config: %+v, crane %+v", gc.Config, cc.Config)
	}
	if labels["io.openshift.build.name"] != "app-1" || labels["io.openshift.build.namespace"] != "team" {
		t.Errorf("build labels %v", labels)
	}
	gm, _ := got.Manifest()
	if gm.Annotations[builders.BaseDigestAnnotation] != f.v2 || gm.Annotations["org.example/keep"] != "kept" {
		t.Errorf("manifest annotations %v", gm.Annotations)
	}
	// Recorded: the tag moved with the old image in history, the Image
	// and the Build exist, the config's next version is taken.
	is, err := h.stream(t, "team", "app")
	if err != nil {
		t.Fatal(err)
	}
	hist := h.history(t, "team", "app", "latest")
	if len(hist) != 2 || hist[0].Image != b.Status.OutputDigest || hist[1].Image != f.appDigest || hist[0].By != "alice" {
		t.Errorf("history of app:latest: %+v", hist)
	}
	if ev, _ := imagestreams.Latest(is, "latest"); ev.Image != b.Status.OutputDigest {
		t.Errorf("app:latest is %s", ev.Image)
	}
	if _, err := h.image(t, "team", b.Status.OutputDigest); err != nil {
		t.Errorf("image record: %v", err)
	}
	if _, err := h.env.Admin.Get(ctx, api.Builds, "team", "app-1"); err != nil {
		t.Errorf("build record: %v", err)
	}
	o, err := h.env.Admin.Get(ctx, api.BuildConfigs, "team", "app")
	if err != nil || o.(*api.BuildConfig).Status.LastVersion != 1 {
		t.Errorf("build config lastVersion: %v %v", o, err)
	}
	// Again: already on the base, nothing to do and nothing recorded.
	b2, err := h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
	if err != nil || b2.Status.OutputDigest != b.Status.OutputDigest || b2.Name != "" {
		t.Fatalf("second rebase: %+v, %v", b2, err)
	}
	if _, err := h.env.Admin.Get(ctx, api.Builds, "team", "app-2"); err == nil {
		t.Errorf("a rebase with nothing to do recorded a build")
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	return bytes.Equal(mustJSON(t, a), mustJSON(t, b))
}

// TestRebaseServerSideChecksTheRequestersRights: the rebase runs with the
// requester's rights, as a push to the output project and a pull from the
// base's, and a refused one changes nothing.
func TestRebaseServerSideChecksTheRequestersRights(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	// bob can read team but not write it.
	h.grant(t, "team", "view", "bob")
	if _, err := h.user(t, "bob").RebaseBuildConfig(ctx, "team", "app"); !isStatus(err, http.StatusForbidden) {
		t.Errorf("rebase by a viewer: %v, want 403", err)
	}
	// carol edits team but may not pull from base.
	h.grant(t, "team", "edit", "carol")
	_, err := h.user(t, "carol").RebaseBuildConfig(ctx, "team", "app")
	if !isStatus(err, http.StatusForbidden) {
		t.Fatalf("rebase by an editor who may not pull the base: %v, want 403", err)
	}
	t.Logf("refused: %v", err)
	hist := h.history(t, "team", "app", "latest")
	if len(hist) != 1 || hist[0].Image != f.appDigest {
		t.Errorf("a refused rebase moved the tag: %+v", hist)
	}
	if _, err := h.env.Admin.Get(ctx, api.Builds, "team", "app-1"); err == nil {
		t.Errorf("a refused rebase recorded a build")
	}
	h.grant(t, "base", "image-puller", "carol")
	// The registry sees the new binding once its cache has it.
	var b *api.Build
	eventually(t, "carol's rebase with her new right", func() (bool, string) {
		var err error
		b, err = h.user(t, "carol").RebaseBuildConfig(ctx, "team", "app")
		if isStatus(err, http.StatusForbidden) {
			return false, err.Error()
		}
		if err != nil {
			t.Fatalf("rebase by an editor who may pull the base: %v", err)
		}
		return true, ""
	})
	if hist := h.history(t, "team", "app", "latest"); hist[0].Image != b.Status.OutputDigest || hist[0].By != "carol" {
		t.Errorf("history after carol's rebase: %+v", hist)
	}
}

// TestRebaseServerSideRefusesConfigsWithoutRebase: a config that does
// not say rebase: true answers NotRebasable, so the CLI builds it.
func TestRebaseServerSideRefusesConfigsWithoutRebase(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, false)
	_, err := h.user(t, "alice").RebaseBuildConfig(ctxT(t), "team", "app")
	if !client.IsNotRebasable(err) {
		t.Fatalf("rebase of a config without rebase: true: %v, want NotRebasable", err)
	}
	if hist := h.history(t, "team", "app", "latest"); len(hist) != 1 || hist[0].Image != f.appDigest {
		t.Errorf("the tag moved: %+v", hist)
	}
}

func isStatus(err error, code int) bool {
	var st *api.Status
	return errors.As(err, &st) && st.Code == code
}

var _ = context.Background

// TestRebaseServerSideDerivesTheScan: when the image, its old base and its
// new base are scanned, the rebased image's scan is derived from theirs in
// the rebase's own transaction, and the scanner reads none of its layers
// (a scan of the layers would have stored an SBOM and say so).
func TestRebaseServerSideDerivesTheScan(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	scanned := func(ns, d string) func() (bool, string) {
		return func() (bool, string) {
			o, err := h.env.Admin.Get(ctx, api.ImageScans, ns, d)
			if err != nil {
				return false, err.Error()
			}
			return o.(*api.ImageScan).Status.Phase == scan.PhaseScanned, o.(*api.ImageScan).Status.Phase
		}
	}
	eventually(t, "the app scanned", scanned("team", f.appDigest))
	eventually(t, "the old base scanned", scanned("base", digestOf(t, f.v1img)))
	eventually(t, "the new base scanned", scanned("base", f.v2))
	b, err := h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rebased image's scan", scanned("team", b.Status.OutputDigest))
	o, err := h.env.Admin.Get(ctx, api.ImageScans, "team", b.Status.OutputDigest)
	if err != nil {
		t.Fatal(err)
	}
	st := o.(*api.ImageScan).Status
	if !scan.IsDerived(&st) {
		t.Errorf("the rebased image was scanned from its layers, not derived: %+v", st)
	}
	t.Logf("scan: %s", st.Message)
}

// TestRebaseBuildRunsInTheRegistry: a rebase Build (as an ImageChange
// trigger starts one) is rebased in-process by the registry, with the
// project's builder account's rights and no token (its log says where it
// ran), and makes the same
// bytes as the swap computed with go-containerregistry.
func TestRebaseBuildRunsInTheRegistry(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	// The builder account of team may pull the base, as in OpenShift.
	if err := h.env.Admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "team-builders", Namespace: "base"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "builder", Namespace: "team"}},
	}); err != nil {
		t.Fatal(err)
	}
	o, err := h.env.Admin.Get(ctx, api.BuildConfigs, "team", "app")
	if err != nil {
		t.Fatal(err)
	}
	var done *api.Build
	name := ""
	for n := 1; n <= 10; n++ {
		name = fmt.Sprintf("app-%d", n)
		b := &api.Build{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "team", Labels: map[string]string{builders.BuildConfigLabel: "app"}},
			Spec: o.(*api.BuildConfig).Spec.BuildSpec()}
		if err := h.user(t, "alice").Create(ctx, api.Builds, b); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the rebase build to finish", func() (bool, string) {
			o, err := h.env.Admin.Get(ctx, api.Builds, "team", name)
			if err != nil {
				return false, err.Error()
			}
			done = o.(*api.Build)
			return api.IsFinished(done.Status.Phase), done.Status.Phase
		})
		// The registry sees the new binding once its cache has it; a
		// build that ran before was refused the pull.
		if !strings.Contains(done.Status.Message, "may not pull") {
			break
		}
	}
	if done.Status.Phase != api.BuildComplete || done.Status.RebasedFrom != f.appDigest {
		t.Fatalf("build: %+v", done.Status)
	}
	want, err := builders.RebaseImage(f.app, f.v1img, f.v2img, name, "team", h.env.Registry+"/base/os", f.v2)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status.OutputDigest != digestOf(t, want) {
		t.Errorf("build made %s, want %s", done.Status.OutputDigest, digestOf(t, want))
	}
	if !strings.Contains(done.Status.LogTail, "in the registry") {
		t.Errorf("the build did not rebase in the registry:\n%s", done.Status.LogTail)
	}
}

// TestRebaseServerSideSignsForSigningProjects: a project whose builds are
// signed gets its rebases in the registry signed and attested as a rebase
// build's are, before the tag moves: the signature verifies with the
// project's key, in cosign's tag layout and as an OCI referrer, and the
// SLSA provenance names the Build, the new base by digest and the image it
// replaced. When signing fails, nothing moves and no Build is recorded.
func TestRebaseServerSideSignsForSigningProjects(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	alice := h.user(t, "alice")
	if err := alice.Create(ctx, api.SigningKeys, &api.SigningKey{ObjectMeta: api.ObjectMeta{Name: "default", Namespace: "team"}}); err != nil {
		t.Fatal(err)
	}
	var pub []byte
	for deadline := time.Now().Add(30 * time.Second); len(pub) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if o, err := alice.Get(ctx, api.SigningKeys, "team", "default"); err == nil {
			pub = []byte(o.(*api.SigningKey).PublicKey)
		}
	}
	if len(pub) == 0 {
		t.Fatal("the signing key got no key pair")
	}

	// Signing fails (the stored private key is not one): the rebase
	// fails, the tag stays, no Build is recorded.
	st := h.env.Server.Store
	o, err := st.Get(ctx, api.SigningKeySecrets, "team", "default")
	if err != nil {
		t.Fatal(err)
	}
	good := o.(*api.SigningKeySecret).EncryptedPrivateKey
	setKey := func(k string) {
		t.Helper()
		if _, err := st.GuaranteedUpdate(ctx, api.SigningKeySecrets, "team", "default", store.UpdateOptions{}, func(o api.Object) error {
			o.(*api.SigningKeySecret).EncryptedPrivateKey = k
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	setKey("not a key")
	if _, err := alice.RebaseBuildConfig(ctx, "team", "app"); err == nil || client.IsNotRebasable(err) {
		t.Fatalf("rebase with a broken key: %v, want an error that is not NotRebasable", err)
	} else {
		t.Logf("with a broken key: %v", err)
	}
	if hist := h.history(t, "team", "app", "latest"); len(hist) != 1 || hist[0].Image != f.appDigest {
		t.Errorf("the tag moved although signing failed: %+v", hist)
	}
	if builds, _, err := st.List(ctx, api.Builds, "team", store.ListOptions{}); err != nil || len(builds) != 0 {
		t.Errorf("builds recorded although signing failed: %d (%v)", len(builds), err)
	}

	setKey(good)
	// Every revision of the stream from here on: the one that moves the
	// tag must already hold the image's signature and attestation tags.
	_, lm, err := st.List(ctx, api.ImageStreams, "team", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv, _ := strconv.ParseInt(lm.ResourceVersion, 10, 64)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, err := st.Watch(wctx, api.ImageStreams, "team", rv, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := alice.RebaseBuildConfig(ctx, "team", "app")
	if err != nil {
		t.Fatalf("rebase in a signing project: %v", err)
	}
	sigTag := strings.Replace(b.Status.OutputDigest, ":", "-", 1)
	for moved := false; !moved; {
		select {
		case ev := <-events:
			is, ok := ev.Object.(*api.ImageStream)
			if !ok || is.Name != "app" {
				continue
			}
			if cur, ok := imagestreams.Latest(is, "latest"); !ok || cur.Image != b.Status.OutputDigest {
				continue
			}
			moved = true
			for _, suffix := range []string{".sig", ".att"} {
				if _, ok := imagestreams.Latest(is, sigTag+suffix); !ok {
					t.Errorf("app:latest moved to %s in revision %s, where the stream has no %s tag yet", b.Status.OutputDigest, is.ResourceVersion, sigTag+suffix)
				}
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no watch event moved app:latest")
		}
	}
	stopWatch()
	if b.Status.Phase != api.BuildComplete || b.Status.RebasedFrom != f.appDigest || !strings.Contains(b.Status.LogTail, "in the registry") {
		t.Fatalf("build %s: %+v", b.Name, b.Status)
	}
	want, err := builders.RebaseImage(f.app, f.v1img, f.v2img, b.Name, "team", h.env.Registry+"/base/os", f.v2)
	if err != nil {
		t.Fatal(err)
	}
	if b.Status.OutputDigest != digestOf(t, want) {
		t.Errorf("rebased to %s, want %s", b.Status.OutputDigest, digestOf(t, want))
	}
	if hist := h.history(t, "team", "app", "latest"); len(hist) != 2 || hist[0].Image != b.Status.OutputDigest {
		t.Errorf("history: %+v", hist)
	}
	ref, err := name.NewDigest(h.env.Registry+"/team/app@"+b.Status.OutputDigest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	auth := signing.WithAuth(&authn.Basic{Username: "alice", Password: h.token(t, "alice")})
	for _, src := range []signing.Source{signing.FromTag, signing.FromReferrers} {
		res, err := signing.Verify(ctx, ref, [][]byte{pub}, auth, signing.WithSource(src))
		if err != nil {
			t.Fatalf("verify (%s): %v", src, err)
		}
		if res.Digest != b.Status.OutputDigest {
			t.Errorf("verified %s, want %s", res.Digest, b.Status.OutputDigest)
		}
	}
	att, err := signing.VerifyAttestation(ctx, ref, [][]byte{pub}, signing.PredicateSLSAProvenance, auth)
	if err != nil {
		t.Fatalf("verify the provenance: %v", err)
	}
	var stmt struct {
		Predicate struct {
			BuildDefinition struct {
				ExternalParameters   map[string]any   `json:"externalParameters"`
				InternalParameters   map[string]any   `json:"internalParameters"`
				ResolvedDependencies []map[string]any `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
			RunDetails struct {
				Metadata struct {
					InvocationID string `json:"invocationId"`
				} `json:"metadata"`
			} `json:"runDetails"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(att.Statement, &stmt); err != nil {
		t.Fatal(err)
	}
	bd := stmt.Predicate.BuildDefinition
	if got := stmt.Predicate.RunDetails.Metadata.InvocationID; got != "team/"+b.Name {
		t.Errorf("invocationId %q, want team/%s", got, b.Name)
	}
	if deps := fmt.Sprint(bd.ResolvedDependencies); !strings.Contains(deps, strings.TrimPrefix(f.v2, "sha256:")) {
		t.Errorf("resolvedDependencies %s do not name the new base %s", deps, f.v2)
	}
	if rb, _ := bd.InternalParameters["rebase"].(map[string]any); rb["from"] != f.appDigest {
		t.Errorf("internalParameters %v do not name the image rebased (%s)", bd.InternalParameters, f.appDigest)
	}
	t.Logf("provenance: %s", att.Statement)
}

// TestRebaseServerSideRespectsRegistryQuota: a rebase onto a base that
// brings new layers adds their bytes to the output's project, as a push
// of the rebased image would, so the project's hard registry.bytes limit
// refuses it (403 over the API; an error the build fails with in
// RebaseBuild), and nothing moves or is recorded.
func TestRebaseServerSideRespectsRegistryQuota(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	// The base moves again, now with a 1 MiB layer the output does not have.
	big, err := random.Layer(1<<20, "application/vnd.oci.image.layer.v1.tar+gzip")
	if err != nil {
		t.Fatal(err)
	}
	v3, err := mutate.Append(f.v2img, mutate.Addendum{Layer: big, History: v1.History{CreatedBy: "RUN big"}})
	if err != nil {
		t.Fatal(err)
	}
	v3digest := h.pushOK(t, "alice", "base/os:1", v3)
	if err := h.env.Admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{
		ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "team"},
		Spec:       api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: "512Ki"}},
	}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	before, err := h.env.Server.Store.RegistryBytes(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(how string) {
		t.Helper()
		if hist := h.history(t, "team", "app", "latest"); len(hist) != 1 || hist[0].Image != f.appDigest {
			t.Errorf("%s: the refused rebase moved the tag: %+v", how, hist)
		}
		if r := h.do(t, req{method: http.MethodHead, path: "/v2/team/app/blobs/" + digestOfLayer(t, big), user: "alice"}); r.code != http.StatusNotFound {
			t.Errorf("%s: the new base's layer is linked into team/app after the refused rebase (HEAD answered %d)", how, r.code)
		}
		objs, _, err := h.env.Server.Store.List(ctx, api.Images, "team", store.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if img := o.(*api.Image); img.ManifestAnnotations[builders.BaseDigestAnnotation] == v3digest {
				t.Errorf("%s: the refused rebase recorded image %s", how, img.Name)
			}
		}
	}

	_, err = h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
	if !isStatus(err, http.StatusForbidden) || !strings.Contains(err.Error(), "exceeded quota registry: registry.bytes used") || !strings.Contains(err.Error(), "hard 512Ki (project team)") {
		t.Fatalf("rebase onto a base 1 MiB bigger under a 512Ki quota: %v, want 403 exceeded quota", err)
	}
	unchanged("RebaseBuildConfig")
	if _, err := h.env.Admin.Get(ctx, api.Builds, "team", "app-1"); err == nil {
		t.Errorf("a refused rebase recorded a build")
	}

	alice := identity.Info{Name: "alice", Groups: []string{identity.GroupAuthenticated}}
	_, _, err = h.env.Server.Registry.RebaseBuild(ctx, alice, "team", "app", "latest", h.env.Registry+"/base/os@"+v3digest, "app-1")
	var nr interface{ NotRebasable() string }
	if err == nil || errors.As(err, &nr) || !strings.Contains(err.Error(), "exceeded quota registry: registry.bytes used") {
		t.Fatalf("RebaseBuild onto a base 1 MiB bigger under a 512Ki quota: %v, want an exceeded quota error (not NotRebasable: a full build would only be refused at its push)", err)
	}
	unchanged("RebaseBuild")
	if after, err := h.env.Server.Store.RegistryBytes(ctx, "team"); err != nil || after > before+64<<10 {
		t.Errorf("team's registry.bytes went from %d to %d (%v) with every rebase refused", before, after, err)
	}
}

func digestOfLayer(t *testing.T, l v1.Layer) string {
	t.Helper()
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestRebaseGroupCountsItsImagesTogether: rebases that run as one group
// each bring new bytes into the same project; each alone fits under its
// hard registry.bytes limit, both together do not, so exactly one is
// refused (checked one by one against the stored usage, both passed).
func TestRebaseGroupCountsItsImagesTogether(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	grow := func(base v1.Image) v1.Image {
		t.Helper()
		l, err := random.Layer(600<<10, "application/vnd.oci.image.layer.v1.tar+gzip")
		if err != nil {
			t.Fatal(err)
		}
		img, err := mutate.Append(base, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: "RUN grow"}})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	h.pushOK(t, "alice", "base/os:1", grow(f.v2img))
	h.pushOK(t, "alice", "base/os2:1", grow(f.v1img))
	h.pushOK(t, "alice", "team/app2:latest", f.app)
	if err := h.user(t, "alice").Create(ctx, api.BuildConfigs, &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "app2", Namespace: "team"},
		Spec: api.BuildConfigSpec{
			Rebase:   true,
			Source:   api.BuildSource{Dockerfile: "FROM base\nCOPY app /app\n"},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "base", Name: "os2:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "app2:latest"}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	used, err := h.env.Server.Store.RegistryBytes(ctx, "team")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.env.Admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{
		ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "team"},
		Spec:       api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: fmt.Sprint(used + 1<<20)}},
	}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	alice := identity.Info{Name: "alice", Groups: []string{identity.GroupAuthenticated}}
	errs := registry.RebaseAsOneGroup(h.env.Server.Registry, alice, "team", "app", "app2")
	refused := 0
	for i, err := range errs {
		switch {
		case err == nil:
		case strings.Contains(err.Error(), "exceeded quota registry: registry.bytes used"):
			refused++
		default:
			t.Errorf("rebase %d of the group: %v", i, err)
		}
	}
	if refused != 1 {
		t.Errorf("rebases of one group, each adding 600 KiB under a limit 1 MiB above the usage: errors %v, want exactly one refused", errs)
	}
}

// TestRebaseServerSideStorageChecksAsAManifestPut: the server-side rebase
// writes its files in distribution's layout directly, so it makes the
// checks a manifest put would. An app layer the output repository does
// not link refuses the rebase, with nothing recorded, and so does a base
// layer its repository does not link or whose bytes are gone; a link of
// the right size holding zeros (as a crash before a group's sync can leave
// it) is written again, and the result reads back whole.
func TestRebaseServerSideStorageChecksAsAManifestPut(t *testing.T) {
	h := start(t)
	f := setupRebase(t, h, true)
	ctx := ctxT(t)
	v2 := filepath.Join(h.env.DataDir, "registry", "storage", "docker", "registry", "v2")
	link := func(repo string, l v1.Layer) string {
		d := digestOfLayer(t, l)
		return filepath.Join(v2, "repositories", repo, "_layers", "sha256", d[len("sha256:"):], "link")
	}
	appLayers, err := f.app.Layers()
	if err != nil {
		t.Fatal(err)
	}
	own := link("team/app", appLayers[len(appLayers)-1])
	saved, err := os.ReadFile(own)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(own); err != nil {
		t.Fatal(err)
	}
	_, err = h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
	if err == nil || !strings.Contains(err.Error(), "is not linked in team/app") {
		t.Fatalf("rebase with the app layer not linked in team/app: %v, want an error that says so", err)
	}
	if hist := h.history(t, "team", "app", "latest"); len(hist) != 1 || hist[0].Image != f.appDigest {
		t.Errorf("the refused rebase moved the tag: %+v", hist)
	}
	if _, err := h.env.Admin.Get(ctx, api.Builds, "team", "app-1"); err == nil {
		t.Errorf("a refused rebase recorded a build")
	}

	if err := os.WriteFile(own, saved, 0o644); err != nil {
		t.Fatal(err)
	}
	v2Layers, err := f.v2img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	// The new base's own layer is linked into team/app from base/os, as a
	// cross-repository mount: base/os must link it, and its bytes must be
	// stored.
	newLayer := digestOfLayer(t, v2Layers[len(v2Layers)-1])
	data := filepath.Join(v2, "blobs", "sha256", newLayer[len("sha256:"):len("sha256:")+2], newLayer[len("sha256:"):], "data")
	for _, hide := range []struct{ path, why string }{
		{link("base/os", v2Layers[len(v2Layers)-1]), "not linked there"},
		{data, "its bytes are not stored"},
	} {
		if err := os.Rename(hide.path, hide.path+".away"); err != nil {
			t.Fatal(err)
		}
		_, err = h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
		if err == nil || !strings.Contains(err.Error(), hide.why) {
			t.Errorf("rebase with the new base's layer %s in base/os: %v, want an error that says so", hide.why, err)
		}
		if err := os.Rename(hide.path+".away", hide.path); err != nil {
			t.Fatal(err)
		}
	}
	if hist := h.history(t, "team", "app", "latest"); len(hist) != 1 || hist[0].Image != f.appDigest {
		t.Errorf("the refused rebases moved the tag: %+v", hist)
	}
	patch := link("team/app", v2Layers[len(v2Layers)-1])
	if err := os.MkdirAll(filepath.Dir(patch), 0o755); err != nil {
		t.Fatal(err)
	}
	// Zeros of the link's size: what a file written but not synced can
	// hold after the machine crashed, on a file system without a journal.
	if err := os.WriteFile(patch, make([]byte, len(digestOfLayer(t, v2Layers[len(v2Layers)-1]))), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := h.user(t, "alice").RebaseBuildConfig(ctx, "team", "app")
	if err != nil {
		t.Fatalf("rebase: %v", err)
	}
	if got, err := os.ReadFile(patch); err != nil || string(got) != digestOfLayer(t, v2Layers[len(v2Layers)-1]) {
		t.Errorf("the zeroed link of the new base's layer = %q (%v) after the rebase, want its digest", got, err)
	}
	img := remoteImage(t, h, "alice", "team/app@"+b.Status.OutputDigest)
	if err := validate.Image(img, validate.Fast); err != nil {
		t.Errorf("the rebased image does not validate: %v", err)
	}
	for _, l := range v2Layers {
		if r := h.do(t, req{method: http.MethodHead, path: "/v2/team/app/blobs/" + digestOfLayer(t, l), user: "alice"}); r.code != http.StatusOK {
			t.Errorf("HEAD team/app's blob %s = %d, want 200", digestOfLayer(t, l), r.code)
		}
	}
}
