package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/signing"
)

// Rows of TestSecurityBuild about what BuildKit keeps between builds: a
// private base in its content store (H2) and the provenance of a build
// (M7).

// privateBase is the victim's private base image: busybox plus a secret
// file. The victim builds on it once, so BuildKit has it in its content
// store, labelled as pulled from vic/private.
type privateBase struct {
	once   sync.Once
	ref    string // REGISTRY/vic/private@sha256:…
	secret string
	err    string
}

func (e *secBuildEnv) victimPrivateBase(t *testing.T, pb *privateBase) (ref, secret string) {
	t.Helper()
	pb.once.Do(func() {
		pb.secret = fmt.Sprintf("victim-private-%d", time.Now().UnixNano())
		img, err := mutate.AppendLayers(busyboxImage(t), filesLayer(t, map[string]string{"secret.txt": pb.secret + "\n"}))
		if err != nil {
			pb.err = err.Error()
			return
		}
		auth := remote.WithAuth(&authn.Basic{Username: "x", Password: e.victim.Token()})
		if err := remote.Write(mustRef(t, e.p.registry+"/vic/private:1"), img, auth); err != nil {
			pb.err = "push vic/private:1: " + err.Error()
			return
		}
		d, _ := img.Digest()
		pb.ref = e.p.registry + "/vic/private@" + d.String()
		b := e.mustBuild(t, e.victim, "vic", "on-private", api.BuildSpec{
			Source:   api.BuildSource{Dockerfile: "FROM private\nRUN [\"/bin/busybox\", \"cat\", \"/secret.txt\"]\n"},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "private:1"}}},
		})
		if b.Status.Phase != api.BuildComplete || !strings.Contains(b.Status.LogTail, pb.secret) {
			pb.err = fmt.Sprintf("the victim's build on its private base = %s/%s %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
		}
	})
	if pb.err != "" {
		t.Fatal(pb.err)
	}
	return pb.ref, pb.secret
}

// stealsCachedBase is a row: mallory builds a Dockerfile that names the
// victim's private base (dockerfile(ref), ref by digest) with no grant to
// pull it. The build must fail, show nothing of the base, and push nothing.
func (e *secBuildEnv) stealsCachedBase(pb *privateBase, build string, strategy *api.DockerBuildStrategy, dockerfile func(ref string) string) func(t *testing.T) {
	return func(t *testing.T) {
		ref, secret := e.victimPrivateBase(t, pb)
		df := dockerfile(ref)
		b := e.mustBuild(t, e.mallory, "mal", build, api.BuildSpec{
			Source:   api.BuildSource{Dockerfile: df},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: strategy},
		})
		t.Logf("mallory's build of\n%s\n= %s/%s %s", df, b.Status.Phase, b.Status.Reason, b.Status.Message)
		if b.Status.Phase == api.BuildComplete || strings.Contains(b.Status.LogTail, secret) {
			t.Errorf("mallory's build of\n%s\nused the victim's cached private base: %s/%s %s\n%s", df, b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
		}
		if o, err := e.admin.Get(context.Background(), api.ImageStreams, "mal", build); err == nil {
			if st := o.(*api.ImageStream).Status; len(st.Tags) > 0 {
				t.Errorf("an image landed in mal/%s: %+v", build, st.Tags)
			}
		}
		// The refusal names the image and says what to do.
		if b.Status.Phase == api.BuildFailed && (b.Status.Reason != "ImagePullDenied" || !strings.Contains(b.Status.Message, "vic/private") ||
			!strings.Contains(b.Status.Message, "image-puller system:serviceaccount:mal:builder -n vic") && !strings.Contains(b.Status.Message, "another port")) {
			t.Errorf("the failure = %s %q; want ImagePullDenied naming vic/private and what to grant", b.Status.Reason, b.Status.Message)
		}
	}
}

// pullsGrantedBase is the control of the H2 rows: once the victim lets
// mal's builder pull, the same by-digest build works.
func (e *secBuildEnv) pullsGrantedBase(pb *privateBase) func(t *testing.T) {
	return func(t *testing.T) {
		ctx := context.Background()
		ref, secret := e.victimPrivateBase(t, pb)
		grant := &api.RoleBinding{
			ObjectMeta: api.ObjectMeta{Name: "mal-builds-on-private", Namespace: "vic"},
			RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
			Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Namespace: "mal", Name: "builder"}},
		}
		if err := e.victim.Create(ctx, api.RoleBindings, grant); err != nil {
			t.Fatalf("victim grants image-puller to mal's builder: %v", err)
		}
		defer func() {
			if _, err := e.victim.Delete(ctx, api.RoleBindings, "vic", grant.Name); err != nil {
				t.Errorf("removing the grant: %v", err)
			}
		}()
		b := e.mustBuild(t, e.mallory, "mal", "granted", api.BuildSpec{
			Source:   api.BuildSource{Dockerfile: "FROM base\nCOPY --from=" + ref + " /secret.txt /granted.txt\nRUN [\"/bin/busybox\", \"cat\", \"/granted.txt\"]\n"},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}},
		})
		if b.Status.Phase != api.BuildComplete || !strings.Contains(b.Status.LogTail, secret) {
			t.Errorf("with the grant, mallory's build = %s/%s %s; want it to copy the base's file\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
		}
	}
}

// otherPort is the registry's host with a port nothing listens on: BuildKit
// matches cached content by host name without the port.
func (e *secBuildEnv) otherPort(t *testing.T, ref string) string {
	host, _, err := net.SplitHostPort(e.p.registry)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(host, "1") + strings.TrimPrefix(ref, e.p.registry)
}

// provenanceNamesCommitAndBase is the M7 row: a git build signed with the
// project's key attests the commit it cloned and the base it resolved.
func (e *secBuildEnv) provenanceNamesCommitAndBase(t *testing.T) {
	ctx := context.Background()
	if err := e.mallory.Create(ctx, api.SigningKeys, &api.SigningKey{ObjectMeta: api.ObjectMeta{Name: "default", Namespace: "mal"}}); err != nil {
		t.Fatal(err)
	}
	var pub []byte
	waitFor(t, time.Minute, "mal's signing key gets a key pair", func() (bool, string) {
		o, err := e.admin.Get(ctx, api.SigningKeys, "mal", "default")
		if err != nil {
			return false, err.Error()
		}
		pub = []byte(o.(*api.SigningKey).PublicKey)
		return len(pub) > 0, "no public key yet"
	})
	commit := git(t, e.gitRepo, "rev-parse", "main")
	b := e.mustBuild(t, e.mallory, "mal", "attested", api.BuildSpec{Source: api.BuildSource{Git: &api.GitBuildSource{URI: "http://" + e.gitHost + "/app.git", Ref: "main"}}})
	if b.Status.Phase != api.BuildComplete {
		t.Fatalf("attested = %s/%s %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	out, err := name.NewDigest(b.Status.OutputDockerImageReference, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	res, err := signing.VerifyAttestation(ctx, out, [][]byte{pub}, signing.PredicateSLSAProvenance,
		signing.WithAuth(&authn.Basic{Username: "x", Password: e.mallory.Token()}))
	if err != nil {
		t.Fatalf("the build's output has no verified provenance: %v\n%s", err, b.Status.LogTail)
	}
	var st struct {
		Predicate struct {
			BuildDefinition struct {
				ExternalParameters struct {
					Source struct{ Repository, Commit string }
				}
				ResolvedDependencies []struct {
					Name, URI string
					Digest    map[string]string
				}
			}
			RunDetails struct {
				Metadata struct {
					StartedOn *time.Time
				}
			}
		}
	}
	if err := json.Unmarshal(res.Statement, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("the build's provenance: %s", res.Statement)
	bd := st.Predicate.BuildDefinition
	baseDigest, _ := busyboxImage(t).Digest() // mal/base:1
	gotCommit, gotBase := false, false
	for _, d := range bd.ResolvedDependencies {
		gotCommit = gotCommit || d.Digest["gitCommit"] == commit
		gotBase = gotBase || ("sha256:"+d.Digest["sha256"] == baseDigest.String() && strings.Contains(d.URI, "/mal/base@"))
	}
	if bd.ExternalParameters.Source.Commit != commit || !gotCommit {
		t.Errorf("the provenance does not name the commit %s that was cloned: source %+v, resolvedDependencies %+v", commit, bd.ExternalParameters.Source, bd.ResolvedDependencies)
	}
	if !gotBase {
		t.Errorf("the provenance does not name the base mal/base@%s: resolvedDependencies %+v", baseDigest, bd.ResolvedDependencies)
	}
	if st.Predicate.RunDetails.Metadata.StartedOn == nil {
		t.Errorf("the provenance has no start time: %s", res.Statement)
	}
}

// noNetRaw is the C2 row: a RUN step reads its capability sets, and
// CAP_NET_RAW (bit 13) is in none of them, while CAP_CHOWN (bit 0) is,
// so the reading is real.
func (e *secBuildEnv) noNetRaw(t *testing.T) {
	nonce := fmt.Sprintf("%d", time.Now().UnixNano())
	b := e.mustBuild(t, e.mallory, "mal", "caps", api.BuildSpec{Source: api.BuildSource{
		Dockerfile: "FROM base\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo nonce " + nonce + "; /bin/busybox grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status\"]\n"}})
	if b.Status.Phase != api.BuildComplete {
		t.Fatalf("caps = %s/%s %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	seen := 0
	for _, line := range strings.Split(b.Status.LogTail, "\n") {
		i := strings.Index(line, "Cap")
		if i < 0 {
			continue
		}
		set, hex, ok := strings.Cut(line[i:], ":")
		if !ok || !strings.HasPrefix(set, "Cap") {
			continue
		}
		var v uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(hex), "%x", &v); err != nil {
			continue
		}
		seen++
		t.Logf("%s: %016x", set, v)
		if v&(1<<13) != 0 {
			t.Errorf("a RUN step has CAP_NET_RAW in %s (%016x)", set, v)
		}
		if set == "CapEff" && v&1 == 0 {
			t.Errorf("CapEff %016x has no CAP_CHOWN either: the step's capabilities were not read right", v)
		}
	}
	if seen < 3 {
		t.Fatalf("the step printed %d capability sets, want CapPrm, CapEff and CapBnd:\n%s", seen, b.Status.LogTail)
	}
}

// addFromHost is a C2 row: ADD of a URL is fetched by buildkitd itself,
// not by a RUN step, so not from the build network.
func (e *secBuildEnv) addFromHost(t *testing.T) {
	before := e.hostHits.Load()
	url := "http://127.0.0.1:" + e.hostListenPort + fmt.Sprintf("/add-%d", time.Now().UnixNano())
	b := e.mustBuild(t, e.mallory, "mal", "add-url", api.BuildSpec{Source: api.BuildSource{
		Dockerfile: "FROM base\nADD " + url + " /fetched\nRUN [\"/bin/busybox\", \"cat\", \"/fetched\"]\n"}})
	if hits := e.hostHits.Load() - before; hits > 0 || strings.Contains(b.Status.LogTail, "host-listener-reached") {
		t.Errorf("ADD %s reached the host's loopback (%d requests): %s/%s %s\n%s", url, hits, b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	if b.Status.Phase != api.BuildFailed || !strings.Contains(b.Status.Message, "RUN step") {
		t.Errorf("add-url = %s/%s %q; want it refused, saying to download in a RUN step", b.Status.Phase, b.Status.Reason, b.Status.Message)
	}
}
