package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// The trust tests (issue 6): scans and database updates, signatures that
// stock cosign verifies, policies that refuse with reasons, and a dev →
// qa → prod pipeline with its gates, the registry's tag guard and the
// node agent's admission.

const (
	vulnOpenSSL  = "3.0.11-1~deb12u1"
	fixedOpenSSL = "3.0.13-1~deb12u1"
	vulnLibxml   = "2.9.14+dfsg-1.3~deb12u1"
	fixedLibxml  = "2.9.14+dfsg-1.3~deb12u2"
	// CVSS 3.1 vectors: 9.8 (CRITICAL) and 7.5 (HIGH).
	cvssCritical = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
	cvssHigh     = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"
)

// opensslAdvisory is CRITICAL through database_specific.severity.
func opensslAdvisory() map[string]any {
	return debAdvisory("DSA-9001-1", "openssl", fixedOpenSSL, map[string]any{
		"aliases":           []string{"CVE-2099-0001"},
		"database_specific": map[string]any{"severity": "CRITICAL"},
	})
}

// libxmlAdvisory is HIGH through a CVSS vector.
func libxmlAdvisory() map[string]any {
	return debAdvisory("DSA-9002-1", "libxml2", fixedLibxml, map[string]any{
		"aliases":  []string{"CVE-2099-0002"},
		"severity": []any{map[string]string{"type": "CVSS_V3", "score": cvssHigh}},
	})
}

func findingIDs(sc *api.ImageScan) []string {
	var ids []string
	for _, f := range sc.Status.Findings {
		ids = append(ids, f.Severity+" "+f.ID+" "+f.Package+" "+f.Version)
	}
	return ids
}

// TestFindingsAndDatabaseUpdate: with an OSV directory imported, a pushed
// image with a vulnerable openssl in its dpkg database is flagged CRITICAL
// and the same image with the fixed openssl is not. A second database
// with an advisory for another package both images hold reaches their
// stored scans by rematching their SBOMs: the layers are deleted from the
// registry's storage before the update, so a rescan could not read them;
// scannedAt and the SBOM stay as they were while dbVersion moves.
func TestFindingsAndDatabaseUpdate(t *testing.T) {
	s := startTrustServer(t)
	ctx := context.Background()
	s.projects("scan")
	db1 := s.importDB(writeOSVDir(t, opensslAdvisory()))

	vuln := debianImage(t, "vulnerable", [2]string{"openssl", vulnOpenSSL}, [2]string{"libxml2", vulnLibxml}, [2]string{"base-files", "12.4+deb12u5"})
	clean := debianImage(t, "clean", [2]string{"openssl", fixedOpenSSL}, [2]string{"libxml2", vulnLibxml}, [2]string{"base-files", "12.4+deb12u5"})
	vulnDigest := s.push("scan/app:vuln", vuln)
	cleanDigest := s.push("scan/app:clean", clean)

	out := s.cli.ok("scan", "app:vuln", "-n", "scan", "--wait", "60s")
	for _, want := range []string{"Findings:  1 CRITICAL", "DSA-9001-1", "openssl", vulnOpenSSL, fixedOpenSSL, "Database:  " + db1} {
		if !strings.Contains(out, want) {
			t.Errorf("slipway scan app:vuln does not show %q:\n%s", want, out)
		}
	}
	out = s.cli.ok("scan", "app:clean", "-n", "scan", "--wait", "60s")
	if !strings.Contains(out, "Findings:  <none>") || strings.Contains(out, "DSA-9001-1") {
		t.Errorf("slipway scan app:clean flags the fixed openssl:\n%s", out)
	}
	var asJSON api.ImageScan
	if err := json.Unmarshal([]byte(s.cli.ok("scan", "app@"+vulnDigest, "-n", "scan", "-o", "json")), &asJSON); err != nil {
		t.Fatal(err)
	}
	if asJSON.Status.Counts["CRITICAL"] != 1 || len(asJSON.Status.Findings) != 1 || asJSON.Status.Findings[0].FixedIn != fixedOpenSSL || asJSON.Status.Packages < 3 {
		t.Errorf("scan -o json of the vulnerable image = %+v; want one CRITICAL finding fixed in %s and at least the 3 dpkg packages", asJSON.Status, fixedOpenSSL)
	}

	before := map[string]*api.ImageScan{}
	for _, d := range []string{vulnDigest, cleanDigest} {
		o, err := s.admin.Get(ctx, api.ImageScans, "scan", d)
		if err != nil {
			t.Fatal(err)
		}
		before[d] = o.(*api.ImageScan)
		if before[d].Status.SBOMDigest == "" || before[d].Status.ScannedAt == nil || before[d].Status.DBVersion != db1 {
			t.Fatalf("scan of %s = %+v; want an SBOM, scannedAt and database %s", d, before[d].Status, db1)
		}
	}

	// The SBOM is a referrer of its image, in CycloneDX.
	for _, d := range []string{vulnDigest, cleanDigest} {
		idx, err := remote.Referrers(mustRef(t, s.ref("scan/app@"+d)).(name.Digest), s.auth)
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var found []string
		for _, r := range im.Manifests {
			found = append(found, r.Digest.String()+" "+r.ArtifactType)
			if r.Digest.String() == before[d].Status.SBOMDigest {
				sbom, _ := s.rawManifest(mustRef(t, s.ref("scan/app@"+r.Digest.String())))
				if len(sbom.Layers) != 1 || sbom.Layers[0].MediaType != "application/vnd.cyclonedx+json" {
					t.Errorf("SBOM referrer %s = %+v, want one application/vnd.cyclonedx+json layer", r.Digest, sbom)
				}
				t.Logf("SBOM referrer of %s: %s, artifactType %q", d, r.Digest, r.ArtifactType)
				found = nil
				break
			}
		}
		if found != nil {
			t.Errorf("referrers of %s = %v; the SBOM %s is not among them", d, found, before[d].Status.SBOMDigest)
		}
	}

	// Take the package layers away: the registry can no longer serve
	// them, so only the stored SBOMs can give the new findings.
	for _, img := range []v1.Image{vuln, clean} {
		layers := layerDigests(t, img)
		pkgLayer := layers[len(layers)-1]
		f := blobFile(s.p.dataDir, pkgLayer)
		if err := os.Remove(f); err != nil {
			t.Fatalf("removing the package layer from storage: %v", err)
		}
		d, _ := img.Digest()
		l, err := remote.Layer(mustRef(t, s.ref("scan/app@"+pkgLayer)).(name.Digest), s.auth)
		if err == nil {
			var rc io.ReadCloser
			if rc, err = l.Compressed(); err == nil {
				_, err = io.Copy(io.Discard, rc)
				rc.Close()
			}
		}
		if err == nil {
			t.Fatalf("layer %s of %s still reads after its file was removed", pkgLayer, d)
		}
	}

	db2 := s.importDB(writeOSVDir(t, opensslAdvisory(), libxmlAdvisory()))
	if db2 == db1 {
		t.Fatalf("the second database has the first one's version %s", db1)
	}
	want := map[string][]string{
		vulnDigest:  {"CRITICAL DSA-9001-1 openssl " + vulnOpenSSL, "HIGH DSA-9002-1 libxml2 " + vulnLibxml},
		cleanDigest: {"HIGH DSA-9002-1 libxml2 " + vulnLibxml},
	}
	for _, d := range []string{vulnDigest, cleanDigest} {
		after := s.waitScan("scan", d, "rematched with "+db2, func(sc *api.ImageScan) bool { return sc.Status.DBVersion == db2 })
		if got := findingIDs(after); strings.Join(got, "; ") != strings.Join(want[d], "; ") {
			t.Errorf("findings of %s after the update = %q, want %q", d, got, want[d])
		}
		b, a := before[d].Status, after.Status
		if a.Phase != "Scanned" || a.SBOMDigest != b.SBOMDigest || !a.ScannedAt.Equal(*b.ScannedAt) || a.Packages != b.Packages {
			t.Errorf("scan of %s after the update = phase %s sbom %s scannedAt %v packages %d; want it as before (Scanned, %s, %v, %d): matched again, not scanned again",
				d, a.Phase, a.SBOMDigest, a.ScannedAt, a.Packages, b.SBOMDigest, b.ScannedAt, b.Packages)
		}
		if a.MatchedAt == nil || a.MatchedAt.Before(*b.MatchedAt) {
			t.Errorf("matchedAt of %s went from %v to %v", d, b.MatchedAt, a.MatchedAt)
		}
	}
	// The update is announced: an event names the new finding and the
	// tag that holds the image.
	var evs string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if evs = s.cli.ok("get", "events", "-n", "scan"); strings.Contains(evs, "NewFindings") && strings.Contains(evs, "DSA-9002-1") && strings.Contains(evs, "app:clean") {
			break
		}
	}
	if !strings.Contains(evs, "NewFindings") || !strings.Contains(evs, "DSA-9002-1") || !strings.Contains(evs, "app:clean") {
		t.Errorf("get events after the update:\n%s\nwant a NewFindings event naming DSA-9002-1 and the tag app:clean", evs)
	}
	// Only the two images were scanned: not their SBOMs, not the
	// database artifacts.
	t.Run("the scanner skips SBOMs and databases", func(t *testing.T) {
		onlyImagesScanned(t, s, map[string][]string{"scan": {vulnDigest, cleanDigest}, "vulndb": nil})
	})
	out = s.cli.ok("scan", "app:clean", "-n", "scan")
	if !strings.Contains(out, "Findings:  1 HIGH") || !strings.Contains(out, "DSA-9002-1") || !strings.Contains(out, "Database:  "+db2) {
		t.Errorf("slipway scan app:clean after the update:\n%s", out)
	}
}

// TestSignVerifyAndPolicyRefusals: a SigningKey created with only a name
// gets a key pair from the server; `slipway sign STREAM@DIGEST` signs with
// it and the stock cosign CLI verifies the signature with the published
// public key (and refuses an unsigned image). Signing a tag is refused.
// A project whose policy requires that key refuses, with the reason, an
// unsigned image, one whose signature was tampered with and one carrying
// a signature copied from another digest, and accepts the signed one,
// whose signature travels with it.
func TestSignVerifyAndPolicyRefusals(t *testing.T) {
	s := startTrustServer(t)
	s.projects("sig", "target")
	key := s.signingKey("sig", "default")
	repo := s.ref("sig/app")

	signed := s.push("sig/app:latest", debianImage(t, "signed"))
	if out := s.cli.ok("sign", "app@"+signed, "-n", "sig"); !strings.Contains(out, "Signed "+repo+"@"+signed+" with sig/default") {
		t.Errorf("slipway sign printed %q", out)
	}
	s.cli.fails("sign by digest", "sign", "app:latest", "-n", "sig")

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cosign.pub"), []byte(key.PublicKey), 0o600); err != nil {
		t.Fatal(err)
	}
	cosign := func(ref string) (string, string, error) {
		return cosignRun(t, dir, s.p.registry, "admin", s.admin.Token(), "verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", ref)
	}
	out, errOut, err := cosign(repo + "@" + signed)
	if err != nil {
		t.Fatalf("cosign verify %s: %v\nstdout: %s\nstderr: %s", signed, err, out, errOut)
	}
	var payloads []struct {
		Critical struct {
			Image struct {
				Digest string `json:"docker-manifest-digest"`
			} `json:"image"`
		} `json:"critical"`
	}
	if err := json.Unmarshal([]byte(out), &payloads); err != nil || len(payloads) != 1 || payloads[0].Critical.Image.Digest != signed {
		t.Errorf("cosign verify printed %s (%v); want one payload for %s", out, err, signed)
	}

	// The target accepts only what sig/default signed.
	s.apply("sig", `kind: Pipeline
metadata: {name: release}
spec:
  stream: app
  stages:
  - {name: build, project: sig, tag: latest}
  - {name: accept, project: target, tag: accepted}
`)
	s.apply("target", `kind: ImagePolicy
metadata: {name: signed-only}
spec:
  requireSignatures: [sig/default]
`)
	refused := func(what, digest string, wantInMessage ...string) {
		t.Helper()
		if got := s.push("sig/app:latest", debianImage(t, what)); got != digest {
			t.Fatalf("pushed %s, want %s", got, digest)
		}
		name, stdout, stderr, err := s.promote("sig", "release", "--to", "accept")
		if err == nil {
			t.Errorf("%s: slipway promote succeeded, want a refusal\n%s", what, stdout)
			return
		}
		p := s.promotion("sig", name)
		msg := p.Status.Message
		if p.Status.Phase != api.PromotionRefused || !strings.Contains(stderr, "refused") {
			t.Errorf("%s: promotion %s = %s %q, stderr %q; want Refused", what, name, p.Status.Phase, msg, stderr)
		}
		for _, w := range append([]string{"the policy of target refuses " + digest, "target/signed-only: requireSignatures"}, wantInMessage...) {
			if !strings.Contains(msg, w) || !strings.Contains(stderr, w) {
				t.Errorf("%s: refusal %q (stderr %q) does not say %q", what, msg, stderr, w)
			}
		}
		t.Logf("%s: %s", what, msg)
	}

	// Unsigned.
	unsigned := digestOf(t, debianImage(t, "unsigned"))
	refused("unsigned", unsigned, "not signed")
	if _, errOut, err := cosign(repo + "@" + unsigned); err == nil {
		t.Errorf("cosign verify of the unsigned image succeeded")
	} else if !strings.Contains(errOut, "no signatures found") && !strings.Contains(errOut, "no matching signatures") {
		t.Logf("cosign on the unsigned image: %s", errOut)
	}

	// Signed, then its .sig tampered with.
	tampered := s.push("sig/app:tampered", debianImage(t, "tampered"))
	s.cli.ok("sign", "app@"+tampered, "-n", "sig")
	s.tamperSignature(repo, tampered)
	refused("tampered", tampered, "invalid signature")

	// A valid signature of another digest.
	copied := digestOf(t, debianImage(t, "copied"))
	s.push("sig/app:copied", debianImage(t, "copied"))
	s.copySignature(repo, signed, copied)
	refused("copied", copied, "signature is for "+signed+", not "+copied)

	// The signed image passes, and its signature came along.
	s.push("sig/app:latest", debianImage(t, "signed"))
	name, stdout, stderr, err := s.promote("sig", "release", "--to", "accept")
	if err != nil {
		t.Fatalf("promoting the signed image: %v\n%s\n%s", err, stdout, stderr)
	}
	p := s.promotion("sig", name)
	if p.Status.Phase != api.PromotionComplete || s.tagDigest("target/app:accepted") != signed {
		t.Fatalf("promotion of the signed image = %+v; want Complete with target/app:accepted at %s", p.Status, signed)
	}
	if out, errOut, err := cosign(s.ref("target/app") + "@" + signed); err != nil {
		t.Errorf("cosign verify of the promoted copy: %v\n%s\n%s", err, out, errOut)
	}

	// The scanner scans images, not the signatures attached to them.
	t.Run("the scanner skips signatures", func(t *testing.T) {
		images := []string{signed, unsigned, tampered, copied}
		onlyImagesScanned(t, s, map[string][]string{"sig": images, "target": images})
	})
}

// onlyImagesScanned fails if a project has an ImageScan for anything but
// the images listed for it.
func onlyImagesScanned(t *testing.T, s *trustServer, images map[string][]string) {
	t.Helper()
	for ns, digests := range images {
		items, _, err := s.admin.List(context.Background(), api.ImageScans, ns, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range items {
			sc := o.(*api.ImageScan)
			if slices.Contains(digests, sc.Name) {
				continue
			}
			desc := "no Image record"
			if img, err := s.admin.Get(context.Background(), api.Images, ns, sc.Name); err == nil {
				im := img.(*api.Image)
				var mts []string
				for _, l := range im.Layers {
					mts = append(mts, l.MediaType)
				}
				desc = fmt.Sprintf("%s, subject %q, artifactType %q, layers %v", im.DockerImageReference, im.Subject, im.ArtifactType, mts)
			}
			t.Errorf("%s has an ImageScan (%s: %s) for %s, which is not an image: %s", ns, sc.Status.Phase, sc.Status.Message, sc.Name, desc)
		}
	}
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestPromotionDevQAProd runs the pipeline dev → qa → prod (approval and
// a soak before prod) with policies in qa and prod that require dev's
// signature and nothing above HIGH, prod's with a VEX entry. It shows an
// unsigned image refused; a CRITICAL one refused while qa's VEX entry is
// expired and let through once it is current; a promotion into prod
// waiting for approval, an editor of prod refused (403), admin's approval
// completing it; `slipway history`; a direct push to prod's tag denied by
// the registry; the node agent refusing a pod in prod whose image breaks
// prod's policy while a promoted image runs; and a rollback by revision.
func TestPromotionDevQAProd(t *testing.T) {
	d := dockerDaemon(t)
	const node = "trust-promote"
	// Registered before the server's cleanup, so it runs after the
	// server is killed: nothing is left to make the containers again.
	t.Cleanup(func() { trustRemoveContainers(t, d, node) })
	ht := htpasswdFile(t, map[string]string{"bob": "pw-bob"})
	s := startTrustServer(t, "--htpasswd", ht, "--docker-host", d.Host(), "--node-name", node, "--container-prefix", node, "--no-proxy")
	ctx := context.Background()
	s.projects("dev", "qa", "prod")
	s.signingKey("dev", "default")
	db := s.importDB(writeOSVDir(t, opensslAdvisory()))
	if err := s.admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "bob-edit", Namespace: "prod"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "edit"},
		Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: "bob"}},
	}); err != nil {
		t.Fatal(err)
	}
	s.apply("dev", `kind: Pipeline
metadata: {name: shop}
spec:
  stream: app
  stages:
  - {name: dev, project: dev, tag: latest}
  - {name: qa, project: qa, tag: qa}
  - {name: prod, project: prod, tag: prod, requireApproval: true, minSoak: 2s}
`)
	policy := func(expires time.Time) string {
		return fmt.Sprintf(`kind: ImagePolicy
metadata: {name: gate}
spec:
  requireSignatures: [dev/default]
  maxSeverity: HIGH
  ignore:
  - id: CVE-2099-0001
    reason: openssl's TLS server is not used by this app
    expires: %s
`, expires.UTC().Format(time.RFC3339))
	}
	s.apply("qa", policy(time.Now().Add(-24*time.Hour)))
	s.apply("prod", policy(time.Now().Add(24*time.Hour)))

	pushScanned := func(marker string, sign bool, pkgs ...[2]string) string {
		t.Helper()
		digest := s.push("dev/app:latest", debianImage(t, marker, pkgs...))
		if sign {
			s.cli.ok("sign", "app@"+digest, "-n", "dev")
		}
		s.waitScan("dev", digest, "scanned with "+db, func(sc *api.ImageScan) bool {
			return sc.Status.Phase == "Scanned" && sc.Status.DBVersion == db
		})
		return digest
	}
	promoteRefused := func(stage string, want ...string) {
		t.Helper()
		name, stdout, stderr, err := s.promote("dev", "shop", "--to", stage)
		p := s.promotion("dev", name)
		if err == nil || p.Status.Phase != api.PromotionRefused {
			t.Fatalf("promote --to %s: %v, phase %s; want Refused\n%s%s", stage, err, p.Status.Phase, stdout, stderr)
		}
		for _, w := range want {
			if !strings.Contains(p.Status.Message, w) || !strings.Contains(stderr, w) {
				t.Errorf("refusal %q (stderr %q) does not say %q", p.Status.Message, stderr, w)
			}
		}
		t.Logf("refused into %s: %s", stage, p.Status.Message)
	}
	promoteOK := func(stage string, extra ...string) string {
		t.Helper()
		name, stdout, stderr, err := s.promote("dev", append([]string{"shop", "--to", stage}, extra...)...)
		if err != nil {
			t.Fatalf("promote --to %s: %v\n%s%s\n%+v", stage, err, stdout, stderr, s.promotion("dev", name).Status)
		}
		return name
	}
	// approveIntoProd waits for the approval gate, has bob (edit in prod)
	// refused, and approves as admin.
	approveIntoProd := func(name string) *api.Promotion {
		t.Helper()
		seen := map[string]bool{}
		s.waitPromotion("dev", name, "waits for approval", func(p *api.Promotion) bool {
			if strings.HasPrefix(p.Status.Message, "soaking") {
				seen["soak gate"] = true
			}
			return p.Status.Phase == api.PromotionPending && strings.Contains(p.Status.Message, "waiting for approval by a user with the promote permission in prod") &&
				strings.Contains(p.Status.Message, "slipway approve "+name)
		})
		t.Logf("%s reached the approval gate (after the soak gate: %v)", name, seen["soak gate"])
		bob := s.login("bob", "pw-bob")
		bob.fails("bob may not approve promotions into prod", "approve", name, "-n", "dev")
		resp, err := s.client("bob", "pw-bob").Do(ctx, http.MethodPost, client.Path(api.Promotions, "dev", name, "approve"), nil, []byte("{}"), "application/json")
		if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden {
			if resp != nil {
				resp.Body.Close()
			}
			t.Errorf("bob's POST promotions/%s/approve = %v, want 403", name, err)
		}
		if p := s.promotion("dev", name); p.Status.Phase != api.PromotionPending || len(p.Status.Approvals) != 0 {
			t.Errorf("after bob's refused approval, %s = %+v; want Pending with no approvals", name, p.Status)
		}
		if out := s.cli.ok("approve", name, "-n", "dev"); !strings.Contains(out, "promotion/"+name+" approved") {
			t.Errorf("approve printed %q", out)
		}
		return s.waitPromotion("dev", name, "completes", func(p *api.Promotion) bool {
			return p.Status.Phase != api.PromotionPending && p.Status.Phase != ""
		})
	}
	complete := func(p *api.Promotion, digest string, revision int64) {
		t.Helper()
		if p.Status.Phase != api.PromotionComplete || len(p.Status.Approvals) != 1 || p.Status.Approvals[0].User != "admin" {
			t.Fatalf("promotion %s = %+v; want Complete, approved by admin", p.Name, p.Status)
		}
		if p.Status.Revision != revision {
			t.Errorf("promotion %s into prod has revision %d, want %d", p.Name, p.Status.Revision, revision)
		}
		if got := s.tagDigest("prod/app:prod"); got != digest {
			t.Fatalf("prod/app:prod = %s after promotion %s, want %s", got, p.Name, digest)
		}
	}

	// 1. Unsigned: refused at qa, for its signature only.
	unsigned := pushScanned("unsigned", false, [2]string{"openssl", fixedOpenSSL})
	promoteRefused("qa", "the policy of qa refuses "+unsigned, "qa/gate: requireSignatures", "not signed")

	// 2. Clean and signed: through qa, then prod behind approval.
	good := pushScanned("good", true, [2]string{"openssl", fixedOpenSSL})
	promoteOK("qa")
	if got := s.tagDigest("qa/app:qa"); got != good {
		t.Fatalf("qa/app:qa = %s, want %s", got, good)
	}
	name, _, _, err := s.promote("dev", "shop", "--to", "prod", "--wait", "0s", "--reason", "release 1")
	if err != nil {
		t.Fatal(err)
	}
	complete(approveIntoProd(name), good, 1)

	// Signing is for the key's project admins: bob edits prod but may
	// not sign there.
	s.signingKey("prod", "default")
	_, errOut, err := s.login("bob", "pw-bob").run("", "sign", "app@"+good, "-n", "prod")
	if err == nil || !strings.Contains(errOut, "bob") {
		t.Errorf("bob's slipway sign in prod: %v %q; want a refusal naming bob", err, errOut)
	}
	t.Logf("bob signing in prod: %s", strings.TrimSpace(errOut))

	// 3. CRITICAL and signed: qa's VEX entry has expired, so it is
	// refused; once the entry is current it passes, and prod's covers it.
	critical := pushScanned("critical", true, [2]string{"openssl", vulnOpenSSL})
	promoteRefused("qa", "the policy of qa refuses "+critical, "qa/gate: maxSeverity HIGH", "CRITICAL DSA-9001-1 in openssl "+vulnOpenSSL)
	s.apply("qa", policy(time.Now().Add(24*time.Hour)))
	promoteOK("qa")
	name, _, _, err = s.promote("dev", "shop", "--to", "prod", "--wait", "0s", "--reason", "release 2")
	if err != nil {
		t.Fatal(err)
	}
	p := approveIntoProd(name)
	complete(p, critical, 2)
	passedSeverity := false
	for _, c := range p.Status.Checks {
		passedSeverity = passedSeverity || (c.Passed && strings.Contains(c.Rule, "prod/gate: maxSeverity HIGH"))
	}
	if !passedSeverity {
		t.Errorf("checks of %s = %+v; want prod/gate's maxSeverity passed (its VEX covers the CRITICAL finding)", name, p.Status.Checks)
	}

	// 4. The history shows the chain: who approved, why, and each
	// stage's revisions counting 1, 2, … (what --revision names).
	hist := s.cli.ok("history", "shop", "-n", "dev")
	t.Logf("slipway history shop:\n%s", hist)
	var prodDone, refusals int
	for _, line := range strings.Split(hist, "\n") {
		f := strings.Fields(line)
		if len(f) < 7 {
			continue
		}
		switch {
		case f[1] == "qa" && f[2] == "prod" && f[4] == api.PromotionComplete && f[6] == "admin":
			prodDone++
		case f[4] == api.PromotionRefused:
			refusals++
		}
	}
	if prodDone != 2 || refusals != 2 || !strings.Contains(hist, "release 1") || !strings.Contains(hist, "release 2") {
		t.Errorf("history shows %d promotions into prod completed with admin's approval and %d refusals; want 2 and 2, with the reasons", prodDone, refusals)
	}
	revisions := func() map[string][]int64 {
		var list struct {
			Items []api.Promotion `json:"items"`
		}
		if err := json.Unmarshal([]byte(s.cli.ok("history", "shop", "-n", "dev", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		revs := map[string][]int64{}
		for _, p := range list.Items {
			if p.Status.Phase == api.PromotionComplete {
				revs[p.Spec.To] = append(revs[p.Spec.To], p.Status.Revision)
			}
		}
		for _, r := range revs {
			slices.Sort(r)
		}
		return revs
	}
	t.Run("each stage's revisions count 1, 2", func(t *testing.T) {
		if got := revisions(); fmt.Sprint(got["qa"]) != "[1 2]" || fmt.Sprint(got["prod"]) != "[1 2]" {
			t.Errorf("revisions of completed promotions = %v; want qa [1 2] and prod [1 2]", got)
		}
	})

	// 5. Only a promotion moves prod's tag, even for admin.
	err = remote.Write(mustRef(t, s.ref("prod/app:prod")), debianImage(t, "hotfix"), s.auth)
	if err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "prod/app:prod is a stage of pipeline dev/shop") {
		t.Errorf("admin's push to prod/app:prod = %v; want DENIED naming the pipeline", err)
	}
	t.Logf("admin's push to prod/app:prod: %v", err)
	// Nor through the API: a rollback of the tag's history is refused too.
	s.cli.fails("only a promotion moves it", "rollback", "is/app:prod", "--to", "1", "-n", "prod")
	if got := s.tagDigest("prod/app:prod"); got != critical {
		t.Errorf("prod/app:prod = %s after the denied push, want %s", got, critical)
	}

	// 6. The node agent admits by prod's policy.
	pod := func(name, image string) {
		t.Helper()
		if err := s.admin.Create(ctx, api.Pods, &api.Pod{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: "prod"},
			Spec:       api.PodSpec{Containers: []api.Container{{Name: "app", Image: image}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	pod("unsigned", s.ref("dev/app@"+unsigned))
	pod("released", s.ref("prod/app@"+critical))
	podStatus := func(name string) (*api.Pod, string) {
		o, err := s.admin.Get(ctx, api.Pods, "prod", name)
		if err != nil {
			return nil, err.Error()
		}
		p := o.(*api.Pod)
		return p, fmt.Sprintf("phase=%s reason=%s message=%q containers=%+v", p.Status.Phase, p.Status.Reason, p.Status.Message, p.Status.ContainerStatuses)
	}
	trustWait(t, 2*time.Minute, "the unsigned pod is refused by policy", func() (bool, string) {
		p, st := podStatus("unsigned")
		return p != nil && p.Status.Reason == "PolicyDenied", st
	})
	up, _ := podStatus("unsigned")
	for _, w := range []string{"breaks the policy of prod", "prod/gate: requireSignatures", "not signed"} {
		if !strings.Contains(up.Status.Message, w) {
			t.Errorf("PolicyDenied message %q does not say %q", up.Status.Message, w)
		}
	}
	if up.Status.Phase == api.PodRunning || len(up.Status.ContainerStatuses) > 0 && up.Status.ContainerStatuses[0].ContainerID != "" {
		t.Errorf("the refused pod has a container: %+v", up.Status)
	}
	t.Logf("unsigned pod: %s: %s", up.Status.Reason, up.Status.Message)
	trustWait(t, 2*time.Minute, "the released image runs in prod", func() (bool, string) {
		p, st := podStatus("released")
		return p != nil && p.Status.Phase == api.PodRunning && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State == "Running", st
	})

	// 7. Roll prod back to revision 1.
	name, _, _, err = s.promote("dev", "shop", "--to", "prod", "--revision", "1", "--wait", "0s")
	if err != nil {
		t.Fatal(err)
	}
	if p := s.promotion("dev", name); p.Spec.Image != good || !strings.Contains(p.Spec.Reason, "rollback to revision 1") {
		t.Errorf("rollback promotion spec = %+v; want image %s and a rollback reason", p.Spec, good)
	}
	complete(approveIntoProd(name), good, 3)
	t.Run("the rollback is prod's revision 3", func(t *testing.T) {
		if got := revisions(); fmt.Sprint(got["prod"]) != "[1 2 3]" {
			t.Errorf("prod's revisions after the rollback = %v, want [1 2 3]", got["prod"])
		}
	})
	if hist := s.cli.ok("history", "shop", "-n", "dev"); !strings.Contains(hist, "rollback to revision 1") {
		t.Errorf("history does not show the rollback:\n%s", hist)
	}
}
