package signing_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"slipway.dev/slipway/signing"
)

// cosignBin returns the repository's bin/cosign, building it from the
// pinned module (the go.mod tool line) if `make build` has not.
func cosignBin(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../bin/cosign")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		cmd := exec.Command("go", "build", "-o", p, "github.com/sigstore/cosign/v2/cmd/cosign")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building cosign: %v\n%s", err, out)
		}
	}
	return p
}

// cosignCLI runs the real cosign against the test registry, offline, with
// its own HOME and a docker config that logs in as the fixture's user.
type cosignCLI struct {
	t   *testing.T
	bin string
	env []string
	dir string
}

func newCosign(t *testing.T, f *fixture, kp *signing.KeyPair) *cosignCLI {
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(f.user + ":" + f.token))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, f.env.Registry, auth)
	for name, data := range map[string]string{
		"docker/config.json": cfg,
		"cosign.pub":         string(kp.PublicKey),
		"cosign.key":         string(kp.PrivateKey),
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"DOCKER_CONFIG=" + filepath.Join(dir, "docker"),
		"TUF_ROOT=" + filepath.Join(dir, "tuf"),
		"COSIGN_PASSWORD=pw",
	}
	return &cosignCLI{t: t, bin: cosignBin(t), env: env, dir: dir}
}

func (c *cosignCLI) run(extraEnv []string, args ...string) (stdout, stderr string, err error) {
	c.t.Helper()
	cmd := exec.CommandContext(ctxT(c.t), c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append(append([]string(nil), c.env...), extraEnv...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (c *cosignCLI) ok(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(nil, args...)
	if err != nil {
		c.t.Fatalf("cosign %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (c *cosignCLI) fails(args ...string) string {
	c.t.Helper()
	out, errOut, err := c.run(nil, args...)
	if err == nil {
		c.t.Fatalf("cosign %s succeeded, want it to fail\nstdout: %s\nstderr: %s", strings.Join(args, " "), out, errOut)
	}
	return errOut
}

// TestCosignVerifies is the compatibility test: what Sign and Attest
// write, the real cosign CLI (built from the pinned module) verifies, and
// what cosign signs, Verify accepts.
func TestCosignVerifies(t *testing.T) {
	f := start(t)
	ctx := ctxT(t)
	kp, signer := key(t, 0)
	base := f.push(t, "base", "1")
	a := f.push(t, "app", "1")
	unsigned := f.push(t, "app", "2")
	c := f.push(t, "app", "3")
	cli := newCosign(t, f, kp)

	if err := signing.Sign(ctx, a, signer, f.opts()...); err != nil {
		t.Fatal(err)
	}
	st, err := testProvenance(base).Statement()
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.Attest(ctx, a, signer, st, f.opts()...); err != nil {
		t.Fatal(err)
	}

	out := cli.ok("verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", a.String())
	var verified []struct {
		Critical struct {
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
		} `json:"critical"`
	}
	if err := json.Unmarshal([]byte(out), &verified); err != nil || len(verified) != 1 || verified[0].Critical.Image.Digest != a.DigestStr() {
		t.Errorf("cosign verify printed %s (%v), want one payload for %s", out, err, a.DigestStr())
	}

	out = cli.ok("verify-attestation", "--key", "cosign.pub", "--type", "slsaprovenance1", "--insecure-ignore-tlog", "--allow-insecure-registry", a.String())
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &env); err != nil {
		t.Fatalf("cosign verify-attestation printed %s: %v", out, err)
	}
	stmt, _ := base64.StdEncoding.DecodeString(env.Payload)
	var s struct {
		PredicateType string `json:"predicateType"`
		Predicate     struct {
			BuildDefinition struct {
				BuildType string `json:"buildType"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(stmt, &s); err != nil || s.PredicateType != signing.PredicateSLSAProvenance || s.Predicate.BuildDefinition.BuildType != signing.BuildType {
		t.Errorf("cosign verify-attestation statement = %s (%v)", stmt, err)
	}

	// The CLI can say no: nothing on this image, and another key.
	cli.fails("verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", unsigned.String())
	otherKP, _ := key(t, 1)
	if err := os.WriteFile(filepath.Join(cli.dir, "other.pub"), otherKP.PublicKey, 0o600); err != nil {
		t.Fatal(err)
	}
	cli.fails("verify", "--key", "other.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", a.String())
	cli.fails("verify-attestation", "--key", "other.pub", "--type", "slsaprovenance1", "--insecure-ignore-tlog", "--allow-insecure-registry", a.String())

	// cosign reads the referrer Sign wrote: with the tag layout
	// tampered, plain verify fails and --experimental-oci11 (referrers
	// first) succeeds.
	if err := signing.Sign(ctx, c, signer, f.opts()...); err != nil {
		t.Fatal(err)
	}
	m, mt := f.manifest(t, sigTag(c, "sig"))
	raw, _ := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[sigAnnotation])
	raw[len(raw)-3] ^= 0x01
	m.Layers[0].Annotations[sigAnnotation] = base64.StdEncoding.EncodeToString(raw)
	f.putManifest(t, sigTag(c, "sig"), m, mt)
	cli.fails("verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", c.String())
	cli.ok("verify", "--experimental-oci11", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", c.String())
}

// TestCosignSigns goes the other way: cosign signs with a key made by
// GenerateKeyPair, Verify accepts it, and Sign finds cosign's signature to
// be its own (same payload bytes, same annotations), so it adds nothing.
// Then it compares the referrer cosign writes with --registry-referrers-mode
// oci-1-1 with the one Sign writes.
func TestCosignSigns(t *testing.T) {
	f := start(t)
	ctx := ctxT(t)
	kp, signer := key(t, 0)
	a := f.push(t, "app", "1")
	b := f.push(t, "app", "2")
	cli := newCosign(t, f, kp)

	cli.ok("sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry", "--yes", a.String())
	res, err := signing.Verify(ctx, a, [][]byte{kp.PublicKey}, f.opts()...)
	if err != nil || res.KeyFingerprint != kp.Fingerprint {
		t.Fatalf("Verify(signed by cosign) = %+v, %v", res, err)
	}
	if err := signing.Sign(ctx, a, signer, f.opts()...); err != nil {
		t.Fatal(err)
	}
	if m, _ := f.manifest(t, sigTag(a, "sig")); len(m.Layers) != 1 {
		t.Errorf("after cosign and Sign with one key, %s has %d layers, want 1 (the same payload)", sigTag(a, "sig"), len(m.Layers))
	}

	// cosign's oci-1-1 referrer for b, then Sign's for b.
	if _, errOut, err := cli.run([]string{"COSIGN_EXPERIMENTAL=1"}, "sign", "--key", "cosign.key", "--tlog-upload=false", "--allow-insecure-registry", "--yes", "--registry-referrers-mode=oci-1-1", b.String()); err != nil {
		t.Fatalf("cosign sign --registry-referrers-mode=oci-1-1: %v\n%s", err, errOut)
	}
	cosignRefs := sigReferrers(t, f, b)
	if len(cosignRefs) != 1 {
		t.Fatalf("after cosign's oci-1-1 sign, %s has %d signature referrers, want 1", b, len(cosignRefs))
	}
	if err := signing.Sign(ctx, b, signer, f.opts()...); err != nil {
		t.Fatal(err)
	}
	var ours []v1.Descriptor
	for _, d := range sigReferrers(t, f, b) {
		if d.Digest != cosignRefs[0].Digest {
			ours = append(ours, d)
		}
	}
	if len(ours) != 1 {
		t.Fatalf("after Sign, %s has %d new signature referrers, want 1", b, len(ours))
	}
	theirs, _ := f.manifest(t, b.Repository.Digest(cosignRefs[0].Digest.String()))
	mine, _ := f.manifest(t, b.Repository.Digest(ours[0].Digest.String()))
	if d := cmp.Diff(shape(theirs), shape(mine)); d != "" {
		t.Errorf("referrer manifest, -cosign +Sign:\n%s", d)
	}
	if d := cmp.Diff(cosignRefs[0].ArtifactType, ours[0].ArtifactType); d != "" {
		t.Errorf("referrer artifactType, -cosign +Sign:\n%s", d)
	}
	// Both verify, from the referrers.
	if _, err := signing.Verify(ctx, b, [][]byte{kp.PublicKey}, f.opts(signing.WithSource(signing.FromReferrers))...); err != nil {
		t.Errorf("Verify(from referrers) = %v", err)
	}
}

func sigReferrers(t *testing.T, f *fixture, d name.Digest) []v1.Descriptor {
	var out []v1.Descriptor
	for _, m := range f.referrers(t, d).Manifests {
		if m.ArtifactType == sigArtifactType {
			out = append(out, m)
		}
	}
	return out
}

// shape is a manifest without what differs between two signatures.
func shape(m *v1.Manifest) *v1.Manifest {
	c := *m
	c.Config.Digest, c.Config.Size = v1.Hash{}, 0
	c.Layers = nil
	for _, l := range m.Layers {
		l.Digest, l.Size = v1.Hash{}, 0
		ann := map[string]string{}
		for k, v := range l.Annotations {
			if k == sigAnnotation && v != "" {
				v = "<signature>"
			}
			ann[k] = v
		}
		l.Annotations = ann
		c.Layers = append(c.Layers, l)
	}
	return &c
}
