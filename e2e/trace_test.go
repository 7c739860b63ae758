package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/lineage"
)

// TestTrace builds an image from a git repository on a signed project,
// deploys it, and traces the running pod back: the trace names the pod's
// real digest, the build, the commit `git rev-parse` reports, the base
// image's digest, the scan's SBOM and the signature; -o json parses and
// -o dot is Graphviz. A user of another project tracing the same pod gets
// a refusal and none of the data.
func TestTrace(t *testing.T) {
	root := t.TempDir()
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(work, "Dockerfile"), []byte("FROM base\nCOPY hello.txt /www/hello.txt\n"), 0o644)
	os.WriteFile(filepath.Join(work, "hello.txt"), []byte("hello from git\n"), 0o644)
	git(t, work, "add", ".")
	git(t, work, "commit", "-q", "-m", "first")
	commit := git(t, work, "rev-parse", "HEAD")
	git(t, root, "clone", "-q", "--bare", work, filepath.Join(root, "web.git"))
	host := gitServer(t, root)

	ht := htpasswdFile(t, map[string]string{"mallory": "pw-mallory"})
	c := startCluster(t, "trace", "--buildkitd", buildkitd(t), "--import-allow", host, "--import-allow-cidr", "127.0.0.0/8", "--htpasswd", ht)
	ctx := context.Background()
	dbOut := c.cli.ok("vulndb", "import", writeOSVDir(t, opensslAdvisory()))
	waitFor(t, time.Minute, "the scanner loads the database", func() (bool, string) {
		o, err := c.admin.Get(ctx, api.VulnerabilityDatabases, "", "default")
		if err != nil {
			return false, err.Error()
		}
		v := o.(*api.VulnerabilityDatabase).Status.Version
		return v != "" && strings.Contains(dbOut, v), dbOut + " loaded: " + v
	})
	baseDigest := c.push("base:1", tracedBase(t, vulnOpenSSL))
	c.signingKey()
	if err := c.admin.Create(ctx, api.BuildConfigs, &api.BuildConfig{
		ObjectMeta: api.ObjectMeta{Name: "web", Namespace: c.ns},
		Spec: api.BuildConfigSpec{
			Source:   api.BuildSource{Git: &api.GitBuildSource{URI: "http://" + host + "/web.git", Ref: "main"}},
			Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "base:1"}}},
			Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "web:latest"}},
		},
	}); err != nil {
		t.Fatal(err)
	}
	c.cli.ok("start-build", "web", "--wait")
	b := waitBuild(t, c.admin, c.ns, "web-1")
	if b.Status.Phase != api.BuildComplete || b.Status.Revision != commit {
		t.Fatalf("web-1 = %s at %q, want Complete at %s\n%s", b.Status.Phase, b.Status.Revision, commit, b.Status.LogTail)
	}
	digest := b.Status.OutputDigest
	c.apply(webConfig("web", 1, ""))
	pod := c.waitRunning("deploymentconfig=web", 1, 2*time.Minute)[0]
	var sbom string
	waitFor(t, time.Minute, "the scan of "+digest, func() (bool, string) {
		o, err := c.admin.Get(ctx, api.ImageScans, c.ns, digest)
		if err != nil {
			return false, err.Error()
		}
		st := o.(*api.ImageScan).Status
		sbom = st.SBOMDigest
		return sbom != "" && st.DBVersion != "" && len(st.Findings) == 1, fmt.Sprintf("%+v", st)
	})
	// Promoted into a second project: the trace finds the promotion from
	// either stage's copy of the digest.
	if err := c.admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "live"}}); err != nil {
		t.Fatal(err)
	}
	c.apply("kind: Pipeline\nmetadata: {name: web}\nspec:\n  stream: web\n  stages:\n  - {name: dev, project: shop, tag: latest}\n  - {name: live, project: live, tag: live}\n")
	promotion := regexp.MustCompile(`promotion/(\S+) created`).FindStringSubmatch(c.cli.ok("promote", "web", "--to", "live", "--wait", "2m"))
	if promotion == nil {
		t.Fatal("slipway promote printed no promotion")
	}
	live := c.cli.ok("trace", "web:live", "-n", "live")
	if !strings.Contains(live, "promoted by → promotion "+c.ns+"/"+promotion[1]) || !strings.Contains(live, "built by → build "+c.ns+"/web-1") || !strings.Contains(live, "commit "+commit) {
		t.Errorf("slipway trace web:live -n live lacks the promotion %s, the build in shop or the commit:\n%s", promotion[1], live)
	}
	traceChecks(t, c, pod.Name, digest, baseDigest, commit, sbom)

	// --vuln: the pod runs the finding (by its alias); a fixed base
	// pushed since is named, with the config whose rebuild takes it.
	fixed := c.push("base:1", tracedBase(t, fixedOpenSSL))
	waitFor(t, time.Minute, "the scan of the fixed base", func() (bool, string) {
		o, err := c.admin.Get(ctx, api.ImageScans, c.ns, fixed)
		if err != nil {
			return false, err.Error()
		}
		st := o.(*api.ImageScan).Status
		return st.DBVersion != "" && st.Packages > 0, fmt.Sprintf("%+v", st)
	})
	out := c.cli.ok("trace", "--vuln", "CVE-2099-0001")
	t.Logf("slipway trace --vuln CVE-2099-0001:\n%s", out)
	for _, want := range []string{"pod " + c.ns + "/" + pod.Name, digest, "finding DSA-9001-1", "rebuild → buildconfig " + c.ns + "/web", baseDigest, "fixed base exists", fixed} {
		if !strings.Contains(out, want) {
			t.Errorf("slipway trace --vuln CVE-2099-0001 lacks %q", want)
		}
	}
	if out := c.cli.ok("trace", "--vuln", "CVE-1999-0001"); strings.Contains(out, pod.Name) {
		t.Errorf("slipway trace --vuln of an id nothing has listed the pod:\n%s", out)
	}
}

// tracedBase is an httpd image that says it has Debian's openssl at
// version, for the scanner.
func tracedBase(t *testing.T, version string) v1.Image {
	t.Helper()
	dpkg := filesLayer(t, map[string]string{
		"etc/os-release":      "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
		"var/lib/dpkg/status": "Package: openssl\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: " + version + "\nDescription: openssl for the trace test\n\n",
	})
	img, err := mutate.AppendLayers(httpdImage(t, "v1", 8080), dpkg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// traceChecks runs `slipway trace` on pod as the admin and as mallory, a
// user with a project of her own.
func traceChecks(t *testing.T, c *cluster, pod, digest, baseDigest, commit, sbom string) {
	t.Helper()
	tree := c.cli.ok("trace", "pod/"+pod)
	t.Logf("slipway trace pod/%s:\n%s", pod, tree)
	for _, want := range []string{"pod " + c.ns + "/" + pod, digest, "build " + c.ns + "/web-1", "commit " + commit, baseDigest, sbom, "signed by → signature", "promoted by → promotion", "deploymentconfig " + c.ns + "/web"} {
		if !strings.Contains(tree, want) {
			t.Errorf("slipway trace pod/%s lacks %q", pod, want)
		}
	}
	if strings.Contains(tree, "not visible") {
		t.Errorf("the project's admin was told a hop is not visible:\n%s", tree)
	}

	var g lineage.Graph
	js := c.cli.ok("trace", "dc/web", "-o", "json")
	if err := json.Unmarshal([]byte(js), &g); err != nil {
		t.Fatalf("slipway trace -o json does not parse: %v\n%s", err, js)
	}
	kinds := map[string]string{}
	for _, n := range g.Nodes {
		kinds[n.Kind+" "+n.Name] = n.ID
		kinds[n.Kind+" "+n.Digest] = n.ID
	}
	for _, want := range []string{"Image " + digest, "Image " + baseDigest, "Commit " + commit, "Build web-1", "Pod " + pod, "Scan " + sbom} {
		if kinds[want] == "" {
			t.Errorf("slipway trace dc/web -o json has no node %q; nodes: %v", want, kinds)
		}
	}
	if len(g.Edges) < len(g.Nodes)-1 {
		t.Errorf("slipway trace -o json: %d edges for %d nodes, want a connected graph", len(g.Edges), len(g.Nodes))
	}
	if dot := c.cli.ok("trace", "web:latest", "-o", "dot"); !strings.HasPrefix(dot, "digraph") || !strings.Contains(dot, digest) {
		t.Errorf("slipway trace -o dot = %q, want a digraph naming %s", dot, digest)
	}

	mallory := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	mallory.ok("login", c.p.url(), "-u", "mallory", "-p", "pw-mallory", "--certificate-authority", c.p.caFile())
	mallory.ok("new-project", "mal")
	for _, target := range []string{"pod/" + pod, "dc/web", "web@" + digest} {
		out, errOut, err := mallory.run("", "trace", target, "-n", c.ns, "-o", "json")
		if err == nil || !strings.Contains(errOut, "not visible to you") {
			t.Errorf("mallory: slipway trace %s -n %s = %v, stderr %q; want it refused as not visible", target, c.ns, err, errOut)
		}
		// Only what she named herself may come back.
		leak := out != "" || strings.Contains(errOut, commit) || strings.Contains(errOut, "build") ||
			!strings.Contains(target, digest) && strings.Contains(errOut, digest)
		if leak {
			t.Errorf("mallory: slipway trace %s -n %s told her something of shop's:\nstdout: %s\nstderr: %s", target, c.ns, out, errOut)
		}
	}
	// With view in live alone, she traces live's copy: what live holds
	// shows, and the hops into shop (the base image, its referrers and
	// scan) say they are not visible to her.
	if err := c.admin.Create(context.Background(), api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "mallory-view", Namespace: "live"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "view"},
		Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: "mallory"}},
	}); err != nil {
		t.Fatal(err)
	}
	partial := mallory.ok("trace", "web:live", "-n", "live")
	t.Logf("mallory: slipway trace web:live -n live:\n%s", partial)
	if !strings.Contains(partial, "image live/web@"+digest) || !strings.Contains(partial, "based on → image shop/base@"+baseDigest+"  (not visible to you)") {
		t.Errorf("mallory: slipway trace web:live -n live does not show live's image and the base as not visible:\n%s", partial)
	}
	if strings.Contains(partial, "build ") || strings.Contains(partial, "promotion ") {
		t.Errorf("mallory: slipway trace web:live -n live shows shop's build or promotion:\n%s", partial)
	}
	// shop's pod runs this finding, but not for her.
	if out := mallory.ok("trace", "--vuln", "CVE-2099-0001"); strings.Contains(out, c.ns+"/") {
		t.Errorf("mallory: slipway trace --vuln listed shop's pods:\n%s", out)
	}
}
