package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// The trust tests' helpers: a server with a logged-in CLI, images with a
// Debian package database, OSV advisories written by the test, cosign's
// signature layout, and polling.

// trustServer is one `slipway start` (no BuildKit) with a CLI logged in
// as admin and admin's push credentials.
type trustServer struct {
	t     *testing.T
	p     *proc
	admin *client.Client
	cli   cli
	auth  remote.Option
}

func startTrustServer(t *testing.T, extra ...string) *trustServer {
	t.Helper()
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, append([]string{"--buildkitd", "none"}, extra...)...)
	logIfDied(t, p)
	s := &trustServer{t: t, p: p, admin: p.admin(t), cli: cli{t: t, config: filepath.Join(t.TempDir(), "config")}}
	s.auth = remote.WithAuth(&authn.Basic{Username: "admin", Password: s.admin.Token()})
	s.cli.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(p.out.String()), "\n")
			t.Logf("server log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	return s
}

// login returns a CLI logged in as an htpasswd user.
func (s *trustServer) login(user, password string) cli {
	s.t.Helper()
	c := cli{t: s.t, config: filepath.Join(s.t.TempDir(), "config")}
	c.ok("login", s.p.url(), "-u", user, "-p", password, "--certificate-authority", s.p.caFile())
	return c
}

// client logs an htpasswd user in through the Go client.
func (s *trustServer) client(user, password string) *client.Client {
	s.t.Helper()
	ca, err := os.ReadFile(s.p.caFile())
	if err != nil {
		s.t.Fatal(err)
	}
	c, err := client.New(s.p.url(), client.WithCAData(ca))
	if err != nil {
		s.t.Fatal(err)
	}
	resp, err := c.Login(context.Background(), user, password)
	if err != nil {
		s.t.Fatalf("login %s: %v", user, err)
	}
	c, err = client.New(s.p.url(), client.WithCAData(ca), client.WithToken(resp.Token))
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

func (s *trustServer) projects(names ...string) {
	s.t.Helper()
	for _, n := range names {
		if err := s.admin.Create(context.Background(), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: n}}); err != nil {
			s.t.Fatalf("create project %s: %v", n, err)
		}
	}
}

// apply runs `slipway apply -f` on a manifest in project ns.
func (s *trustServer) apply(ns, manifest string) string {
	s.t.Helper()
	f := filepath.Join(s.t.TempDir(), "manifest.yaml")
	if err := os.WriteFile(f, []byte(manifest), 0o600); err != nil {
		s.t.Fatal(err)
	}
	return s.cli.ok("apply", "-f", f, "-n", ns)
}

// ref is the registry's name for project/repoTag.
func (s *trustServer) ref(projectRepo string) string { return s.p.registry + "/" + projectRepo }

// push writes img to project/stream:tag as admin and returns its digest.
func (s *trustServer) push(projectRepoTag string, img v1.Image) string {
	s.t.Helper()
	if err := remote.Write(mustRef(s.t, s.ref(projectRepoTag)), img, s.auth); err != nil {
		s.t.Fatalf("push %s: %v", projectRepoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		s.t.Fatal(err)
	}
	return d.String()
}

// signingKey creates SigningKey name in project with `slipway apply` and
// waits for the server to publish its public key.
func (s *trustServer) signingKey(project, keyName string) *api.SigningKey {
	s.t.Helper()
	s.apply(project, "kind: SigningKey\nmetadata:\n  name: "+keyName+"\n")
	var key *api.SigningKey
	trustWait(s.t, time.Minute, "the public key of "+project+"/"+keyName, func() (bool, string) {
		o, err := s.admin.Get(context.Background(), api.SigningKeys, project, keyName)
		if err != nil {
			return false, err.Error()
		}
		key = o.(*api.SigningKey)
		return strings.Contains(key.PublicKey, "BEGIN PUBLIC KEY") && key.Fingerprint != "", fmt.Sprintf("%+v", key)
	})
	return key
}

// importDB runs `slipway vulndb import DIR` and waits until the scanner
// has loaded it; it returns the database version (the artifact digest).
func (s *trustServer) importDB(dir string) string {
	s.t.Helper()
	out := s.cli.ok("vulndb", "import", dir)
	version := regexp.MustCompile(`as (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if version == nil {
		s.t.Fatalf("vulndb import printed %q, want the database digest", out)
	}
	trustWait(s.t, time.Minute, "the scanner loads database "+version[1], func() (bool, string) {
		o, err := s.admin.Get(context.Background(), api.VulnerabilityDatabases, "", "default")
		if err != nil {
			return false, err.Error()
		}
		st := o.(*api.VulnerabilityDatabase).Status
		return st.Version == version[1], fmt.Sprintf("%+v", st)
	})
	return version[1]
}

// waitScan waits until the scan of digest in project satisfies cond.
func (s *trustServer) waitScan(project, digest, what string, cond func(*api.ImageScan) bool) *api.ImageScan {
	s.t.Helper()
	var sc *api.ImageScan
	trustWait(s.t, 90*time.Second, "scan of "+project+"@"+digest+": "+what, func() (bool, string) {
		o, err := s.admin.Get(context.Background(), api.ImageScans, project, digest)
		if err != nil {
			return false, err.Error()
		}
		sc = o.(*api.ImageScan)
		return cond(sc), fmt.Sprintf("%+v", sc.Status)
	})
	return sc
}

// promote runs `slipway promote` in the pipeline's project and returns
// the promotion's name and the command's result.
func (s *trustServer) promote(ns string, args ...string) (promotion, stdout, stderr string, err error) {
	s.t.Helper()
	stdout, stderr, err = s.cli.run("", append([]string{"promote", "-n", ns}, args...)...)
	m := regexp.MustCompile(`promotion/(\S+) created`).FindStringSubmatch(stdout)
	if m == nil {
		s.t.Fatalf("slipway promote %s made no promotion: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout, stderr)
	}
	return m[1], stdout, stderr, err
}

func (s *trustServer) promotion(ns, name string) *api.Promotion {
	s.t.Helper()
	o, err := s.admin.Get(context.Background(), api.Promotions, ns, name)
	if err != nil {
		s.t.Fatal(err)
	}
	return o.(*api.Promotion)
}

// waitPromotion waits until the promotion satisfies cond.
func (s *trustServer) waitPromotion(ns, name, what string, cond func(*api.Promotion) bool) *api.Promotion {
	s.t.Helper()
	var p *api.Promotion
	trustWait(s.t, 90*time.Second, "promotion "+name+" "+what, func() (bool, string) {
		o, err := s.admin.Get(context.Background(), api.Promotions, ns, name)
		if err != nil {
			return false, err.Error()
		}
		p = o.(*api.Promotion)
		return cond(p), fmt.Sprintf("%+v", p.Status)
	})
	return p
}

// tagDigest is what project/stream:tag points at, read from the registry.
func (s *trustServer) tagDigest(projectRepoTag string) string {
	s.t.Helper()
	desc, err := remote.Head(mustRef(s.t, s.ref(projectRepoTag)), s.auth)
	if err != nil {
		s.t.Fatalf("HEAD %s: %v", projectRepoTag, err)
	}
	return desc.Digest.String()
}

// trustWait polls cond until it holds; on timeout the test fails with
// the last state cond described. The timeout only bounds a hang.
func trustWait(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		if state != "" {
			last = state
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last seen:\n%s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// debianImage is busyboxImage plus a layer that makes it a Debian 12
// system with the given packages (name, version) in var/lib/dpkg/status.
// marker goes into a file, so images with the same packages differ. The
// command sleeps, so pods of it run.
func debianImage(t *testing.T, marker string, pkgs ...[2]string) v1.Image {
	t.Helper()
	var status strings.Builder
	for _, p := range pkgs {
		fmt.Fprintf(&status, "Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: %s\nDescription: %s for the trust tests\n\n", p[0], p[1], p[0])
	}
	layer := filesLayer(t, map[string]string{
		"etc/os-release":      "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
		"var/lib/dpkg/status": status.String(),
		"etc/slipway-marker":  marker + "\n",
	})
	img, err := mutate.AppendLayers(busyboxImage(t), layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd = []string{"/bin/busybox", "sleep", "3600"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// filesLayer is a layer of regular files (path → content) and the
// directories above them.
func filesLayer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	dirs := map[string]bool{}
	for _, n := range names {
		var parents []string
		for d := path.Dir(n); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			tw.WriteHeader(&tar.Header{Name: parents[i] + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n]))})
		tw.Write([]byte(files[n]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(inMemory(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// debAdvisory is an OSV record for a Debian 12 package fixed in fixed;
// extra fields (severity, database_specific, aliases) are merged in.
func debAdvisory(id, pkg, fixed string, extra map[string]any) map[string]any {
	r := map[string]any{
		"id": id, "modified": "2026-01-01T00:00:00Z", "summary": id + " in " + pkg,
		"affected": []any{map[string]any{
			"package": map[string]any{"ecosystem": "Debian:12", "name": pkg},
			"ranges":  []any{map[string]any{"type": "ECOSYSTEM", "events": []any{map[string]string{"introduced": "0"}, map[string]string{"fixed": fixed}}}},
		}},
	}
	for k, v := range extra {
		r[k] = v
	}
	return r
}

// osvDir writes OSV records as DIR/<id>.json.
func writeOSVDir(t *testing.T, records ...map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	for _, r := range records {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, r["id"].(string)+".json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// htpasswdFile writes bcrypt entries for users (name → password).
func htpasswdFile(t *testing.T, users map[string]string) string {
	t.Helper()
	var lines []string
	for u, pw := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	p := filepath.Join(t.TempDir(), "users.htpasswd")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// cosign's layout: the signature of REPO@sha256:HEX is the manifest
// tagged REPO:sha256-HEX.sig, one layer per signature, the signature in
// this annotation.
const cosignSigAnnotation = "dev.cosignproject.cosign/signature"

func sigTagOf(t *testing.T, repo, digest string) name.Reference {
	return mustRef(t, repo+":"+strings.Replace(digest, ":", "-", 1)+".sig")
}

// trustManifest is a manifest to PUT as it is.
type trustManifest struct {
	b  []byte
	mt types.MediaType
}

func (r trustManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r trustManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// rawManifest reads the manifest ref names.
func (s *trustServer) rawManifest(ref name.Reference) (*v1.Manifest, types.MediaType) {
	s.t.Helper()
	desc, err := remote.Get(ref, s.auth)
	if err != nil {
		s.t.Fatalf("GET %s: %v", ref, err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		s.t.Fatalf("%s: %v", ref, err)
	}
	return &m, desc.MediaType
}

// putRawManifest writes m to ref; its blobs must be in ref's repository.
func (s *trustServer) putRawManifest(ref name.Reference, m *v1.Manifest, mt types.MediaType) {
	s.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := remote.Put(ref, trustManifest{b: b, mt: mt}, s.auth); err != nil {
		s.t.Fatalf("PUT %s: %v", ref, err)
	}
}

// tamperSignature flips one byte of the first signature in the .sig
// manifest of repo@digest and writes it back under the same tag.
func (s *trustServer) tamperSignature(repo, digest string) {
	s.t.Helper()
	ref := sigTagOf(s.t, repo, digest)
	m, mt := s.rawManifest(ref)
	if len(m.Layers) == 0 || m.Layers[0].Annotations[cosignSigAnnotation] == "" {
		s.t.Fatalf("%s holds no cosign signature: %+v", ref, m)
	}
	raw, err := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[cosignSigAnnotation])
	if err != nil {
		s.t.Fatal(err)
	}
	raw[len(raw)-3] ^= 0x01
	m.Layers[0].Annotations[cosignSigAnnotation] = base64.StdEncoding.EncodeToString(raw)
	s.putRawManifest(ref, m, mt)
}

// copySignature puts the .sig manifest of repo@from at repo@to's .sig
// tag, as someone copying a valid signature onto another image would.
func (s *trustServer) copySignature(repo, from, to string) {
	s.t.Helper()
	m, mt := s.rawManifest(sigTagOf(s.t, repo, from))
	s.putRawManifest(sigTagOf(s.t, repo, to), m, mt)
}

// cosignBinary returns the repository's bin/cosign, building it from the
// pinned module (the go.mod tool line) if `make build` has not.
func cosignBinary(t *testing.T) string {
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

// cosignRun runs the stock cosign CLI offline in dir (HOME too), logged in
// to the registry as user with token through DOCKER_CONFIG.
func cosignRun(t *testing.T, dir, registry, user, token string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cfg := filepath.Join(dir, "docker")
	if err := os.MkdirAll(cfg, 0o700); err != nil {
		t.Fatal(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + token))
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, registry, auth), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cosignBinary(t), args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "DOCKER_CONFIG=" + cfg, "TUF_ROOT=" + filepath.Join(dir, "tuf")}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// blobFile is where the filesystem storage driver keeps a blob's bytes
// under a server's data dir.
func blobFile(dataDir, digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(dataDir, "registry", "storage", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// trustRemoveContainers removes every container a node agent with this
// prefix made on the engine.
func trustRemoveContainers(t *testing.T, d *dockerd, prefix string) {
	out, err := exec.Command("docker", "-H", d.Host(), "ps", "-aq", "--filter", "label=io.slipway.runtime="+prefix).Output()
	if err != nil {
		t.Logf("listing the containers of %s: %v", prefix, err)
		return
	}
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		if out, err := exec.Command("docker", append([]string{"-H", d.Host(), "rm", "-f", "-v"}, ids...)...).CombinedOutput(); err != nil {
			t.Logf("removing the containers of %s: %v\n%s", prefix, err, out)
		}
	}
}
