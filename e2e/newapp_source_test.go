package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
)

// TestNewAppSourceDockerfile is issue 14's new-app from source: one
// `new-app DIR` on a directory with a Dockerfile (FROM an image stream of
// the project, EXPOSE 8080, busybox httpd) uploads it, builds it, deploys
// it, and the service answers on its cluster IP. Running it again changes
// nothing and starts no build; --rebuild uploads the changed directory and
// the new content is served; `delete app` leaves nothing, builds included.
func TestNewAppSourceDockerfile(t *testing.T) {
	c := startCluster(t, "newappsrc", "--buildkitd", buildkitd(t))
	ctx := context.Background()
	c.push("base:1", busyboxImage(t))

	src := filepath.Join(t.TempDir(), "web")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "Dockerfile"), []byte(`FROM base:1
COPY index.html /www/index.html
EXPOSE 8080
CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
`), 0o644)
	os.WriteFile(filepath.Join(src, "index.html"), []byte("hello from source\n"), 0o644)

	out := c.cli.ok("new-app", src)
	for _, want := range []string{"imagestream/web created", "secret/web-webhook created", "buildconfig/web created",
		"deploymentconfig/web created", "service/web created", "build/web-1 started"} {
		if !strings.Contains(out, want) {
			t.Errorf("new-app printed:\n%s\nwant a line %q", out, want)
		}
	}
	if b := waitBuild(t, c.admin, c.ns, "web-1"); b.Status.Phase != api.BuildComplete {
		t.Fatalf("web-1 = %s (%s): %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	c.cli.ok("rollout", "status", "dc/web", "--timeout", "2m")
	url, _ := c.serviceURL("web")
	if !strings.HasSuffix(url, ":8080/") {
		t.Errorf("service/web is at %s; want the Dockerfile's EXPOSE 8080", url)
	}
	waitServing(t, url, "hello from source", time.Minute)

	// The build config: built on the image stream the FROM names, a
	// binary source, and a webhook whose secret is in a Secret of the app
	// (not inline), the one the record keeps.
	o, err := c.admin.Get(ctx, api.BuildConfigs, c.ns, "web")
	if err != nil {
		t.Fatal(err)
	}
	bc := o.(*api.BuildConfig)
	if from := bc.Spec.Strategy.BaseImage(); from == nil || from.Kind != "ImageStreamTag" || from.Name != "base:1" {
		t.Errorf("buildconfig/web builds on %+v; want ImageStreamTag base:1 (the Dockerfile's FROM)", from)
	}
	if bc.Spec.Source.Binary == nil || bc.Spec.Source.Git != nil {
		t.Errorf("buildconfig/web source = %+v; want a binary source", bc.Spec.Source)
	}
	var hook *api.BuildTrigger
	for i, tr := range bc.Spec.Triggers {
		if tr.Type == "Generic" {
			hook = &bc.Spec.Triggers[i]
		}
	}
	if hook == nil || hook.Secret != "" || hook.SecretReference == nil || hook.SecretReference.Name != "web-webhook" {
		t.Fatalf("buildconfig/web triggers = %+v; want a Generic trigger with secretReference web-webhook and no inline secret", bc.Spec.Triggers)
	}
	rec := getSecret(t, c.admin, c.ns, "app-record-web")
	hookSecret := getSecret(t, c.admin, c.ns, "web-webhook")
	if s := string(hookSecret.Data[api.WebHookSecretKey]); len(s) < 16 || string(rec.Data["WEBHOOK_SECRET"]) != s {
		t.Errorf("secret/web-webhook holds %q, the record %q; want the same generated secret", s, rec.Data["WEBHOOK_SECRET"])
	}

	// Again: everything unchanged, no build started.
	out = c.cli.ok("new-app", src)
	for _, ref := range []string{"imagestream/web", "secret/web-webhook", "buildconfig/web", "deploymentconfig/web", "service/web"} {
		if !strings.Contains(out, ref+" unchanged") {
			t.Errorf("second new-app printed:\n%s\nwant %s unchanged", out, ref)
		}
	}
	if strings.Contains(out, "started") || strings.Contains(out, "created") || strings.Contains(out, "configured") {
		t.Errorf("second new-app printed:\n%s\nwant nothing created, configured or started", out)
	}
	if again := getSecret(t, c.admin, c.ns, "app-record-web"); again.ResourceVersion != rec.ResourceVersion {
		t.Errorf("the second run rewrote the app record (resourceVersion %s → %s)", rec.ResourceVersion, again.ResourceVersion)
	}
	builds, _, err := c.admin.List(ctx, api.Builds, c.ns, client.ListOptions{LabelSelector: builders.BuildConfigLabel + "=web"})
	if err != nil || len(builds) != 1 {
		t.Errorf("after the second run there are %d builds (%v); want only web-1", len(builds), err)
	}

	// A changed directory is built again only when asked.
	os.WriteFile(filepath.Join(src, "index.html"), []byte("hello again\n"), 0o644)
	out = c.cli.ok("new-app", src, "--rebuild")
	if !strings.Contains(out, "build/web-2 started") || !strings.Contains(out, "buildconfig/web unchanged") {
		t.Errorf("new-app --rebuild printed:\n%s\nwant build/web-2 started and the objects unchanged", out)
	}
	if b := waitBuild(t, c.admin, c.ns, "web-2"); b.Status.Phase != api.BuildComplete {
		t.Fatalf("web-2 = %s (%s): %s\n%s", b.Status.Phase, b.Status.Reason, b.Status.Message, b.Status.LogTail)
	}
	waitServing(t, url, "hello again", 2*time.Minute)

	out = c.cli.ok("delete", "app", "web")
	if !strings.Contains(out, "build/web-1 deleted") || !strings.Contains(out, "build/web-2 deleted") || !strings.Contains(out, "secret/app-record-web deleted") {
		t.Errorf("delete app printed:\n%s\nwant the build and the record deleted", out)
	}
	waitFor(t, 2*time.Minute, "nothing of the app left", func() (bool, string) {
		left := appObjects(t, c.admin, c.ns, "web")
		return len(left) == 0, strings.Join(left, "\n")
	})
	if _, err := c.admin.Get(ctx, api.ImageStreams, c.ns, "base"); err != nil {
		t.Errorf("delete app removed the base image stream, which the app did not make: %v", err)
	}
}

// TestNewAppSourceNoDockerfile: new-app on a directory without a
// Dockerfile says so and how to name a builder, and makes nothing; the
// source strategy's flags are checked before anything is made too. With
// --image-stream the app is made with the Source strategy.
func TestNewAppSourceNoDockerfile(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	p := startServer(t, dir, addr, "--no-node")
	admin := p.admin(t)
	if err := admin.Create(context.Background(), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "src"}}); err != nil {
		t.Fatal(err)
	}
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("project", "src")

	src := filepath.Join(t.TempDir(), "site")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "index.html"), []byte("no Dockerfile here\n"), 0o644)

	_, errOut, err := c.run("", "new-app", src)
	if err == nil || !strings.Contains(errOut, "no Dockerfile found in "+src) || !strings.Contains(errOut, "--strategy source --image-stream PROJECT/BUILDER:TAG") {
		t.Errorf("new-app without a Dockerfile: err=%v stderr=%q; want it to say no Dockerfile was found and how to name an S2I builder", err, errOut)
	}
	c.fails("--strategy source needs a builder image", "new-app", src, "--strategy", "source")
	c.fails("--image-stream", "new-app", src, "--image-stream", "a/b/c:1")
	c.fails("an app from a template", "new-app", src, "-p", "X=1")
	if left := appObjects(t, admin, "src", "site"); len(left) != 0 {
		t.Errorf("a refused new-app made %v", left)
	}
	if _, err := admin.Get(context.Background(), api.Secrets, "src", "app-record-site"); !api.IsNotFound(err) {
		t.Errorf("a refused new-app left its record: %v", err)
	}

	// Named, an S2I builder builds it; the service takes the ports the
	// builder's io.openshift.expose-services label names.
	cf, err := busyboxImage(t).ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"io.openshift.expose-services": "8080:http"}
	builder, err := mutate.ConfigFile(busyboxImage(t), cf)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, p.registry+"/src/builder:1"), builder, remote.WithAuth(&authn.Basic{Username: "admin", Password: admin.Token()})); err != nil {
		t.Fatal(err)
	}
	out := c.ok("new-app", src, "--image-stream", "src/builder:1")
	if !strings.Contains(out, "buildconfig/site created") || !strings.Contains(out, "service/site created") || !strings.Contains(out, "build/site-1 started") {
		t.Errorf("new-app --image-stream printed:\n%s\nwant the build config and service created and a build started", out)
	}
	o, err := admin.Get(context.Background(), api.BuildConfigs, "src", "site")
	if err != nil {
		t.Fatal(err)
	}
	if st := o.(*api.BuildConfig).Spec.Strategy; st.Type != "Source" || st.SourceStrategy == nil || st.SourceStrategy.From == nil || st.SourceStrategy.From.Name != "builder:1" {
		t.Errorf("buildconfig/site strategy = %+v; want Source from builder:1", st)
	}
	o, err = admin.Get(context.Background(), api.Services, "src", "site")
	if err != nil || len(o.(*api.Service).Spec.Ports) != 1 || o.(*api.Service).Spec.Ports[0].Port != 8080 {
		t.Errorf("service/site = %+v, %v; want port 8080 from the builder's label", o, err)
	}
	c.ok("delete", "app", "site")
	waitFor(t, time.Minute, "nothing of the app left", func() (bool, string) {
		left := appObjects(t, admin, "src", "site")
		return len(left) == 0, strings.Join(left, "\n")
	})
}

// TestNewAppSourceGitClone is the must-show: new-app on a
// directory of a local git clone whose origin is an http(s) URL builds
// from that origin (its branch, the directory as context), deploys, and
// the service answers; again changes nothing and starts no build; delete
// app leaves nothing. Then the git URL itself, with #REF and
// --context-dir, and without (no Dockerfile at the root: refused).
func TestNewAppSourceGitClone(t *testing.T) {
	root := t.TempDir()
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	os.MkdirAll(filepath.Join(work, "svc"), 0o755)
	os.WriteFile(filepath.Join(work, "svc", "Dockerfile"), []byte("FROM base:1\nCOPY index.html /www/index.html\nEXPOSE 8081\nCMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8081\", \"-h\", \"/www\"]\n"), 0o644)
	os.WriteFile(filepath.Join(work, "svc", "index.html"), []byte("hello from git\n"), 0o644)
	git(t, work, "add", ".")
	git(t, work, "commit", "-q", "-m", "first")
	commit := git(t, work, "rev-parse", "HEAD")
	git(t, root, "clone", "-q", "--bare", work, filepath.Join(root, "app.git"))
	host := gitServer(t, root)
	uri := "http://" + host + "/app.git"
	clone := filepath.Join(t.TempDir(), "app")
	git(t, filepath.Dir(clone), "clone", "-q", uri, clone)

	routerAddr := freePort(t)
	c := startCluster(t, "newappgit", "--buildkitd", buildkitd(t), "--import-allow", host, "--import-allow-cidr", "127.0.0.0/8",
		"--router-http-listen", routerAddr)
	ctx := context.Background()
	c.push("base:1", busyboxImage(t))

	// --expose without a host, or on a template, is refused before
	// anything is made.
	if _, errOut, err := c.cli.run("", "new-app", filepath.Join(clone, "svc"), "--expose"); err == nil || !strings.Contains(errOut, "--expose needs --hostname") {
		t.Errorf("new-app --expose without --hostname: err=%v stderr=%q; want it to ask for --hostname", err, errOut)
	}
	if left := appObjects(t, c.admin, c.ns, "svc"); len(left) != 0 {
		t.Errorf("a refused new-app made %v", left)
	}

	out := c.cli.ok("new-app", filepath.Join(clone, "svc"), "--expose", "--hostname", "svc.shop.test")
	for _, want := range []string{"imagestream/svc created", "buildconfig/svc created", "deploymentconfig/svc created", "service/svc created", "route/svc created"} {
		if !strings.Contains(out, want) {
			t.Errorf("new-app printed:\n%s\nwant a line %q", out, want)
		}
	}
	o, err := c.admin.Get(ctx, api.BuildConfigs, c.ns, "svc")
	if err != nil {
		t.Fatal(err)
	}
	bc := o.(*api.BuildConfig)
	if g := bc.Spec.Source.Git; g == nil || g.URI != uri || g.Ref != "main" || bc.Spec.Source.ContextDir != "svc" || bc.Spec.Source.Binary != nil {
		t.Errorf("buildconfig/svc source = %+v (git %+v); want %s at main, context svc", bc.Spec.Source, bc.Spec.Source.Git, uri)
	}
	if b := waitBuild(t, c.admin, c.ns, "svc-1"); b.Status.Phase != api.BuildComplete || b.Status.Revision != commit {
		t.Fatalf("svc-1 = %s at %q (%s): %s; want Complete at %s\n%s", b.Status.Phase, b.Status.Revision, b.Status.Reason, b.Status.Message, commit, b.Status.LogTail)
	}
	c.cli.ok("rollout", "status", "dc/svc", "--timeout", "2m")
	url, _ := c.serviceURL("svc")
	waitServing(t, url, "hello from git", time.Minute)
	// The route answers through the edge router, by its host.
	waitFor(t, time.Minute, "route/svc answers through the router", func() (bool, string) {
		req, _ := http.NewRequest("GET", "http://"+routerAddr+"/", nil)
		req.Host = "svc.shop.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), "hello from git"), fmt.Sprintf("%d %q", resp.StatusCode, body)
	})

	out = c.cli.ok("new-app", filepath.Join(clone, "svc"), "--expose", "--hostname", "svc.shop.test")
	for _, ref := range []string{"imagestream/svc", "secret/svc-webhook", "buildconfig/svc", "deploymentconfig/svc", "service/svc", "route/svc"} {
		if !strings.Contains(out, ref+" unchanged") {
			t.Errorf("second new-app printed:\n%s\nwant %s unchanged", out, ref)
		}
	}
	builds, _, err := c.admin.List(ctx, api.Builds, c.ns, client.ListOptions{LabelSelector: builders.BuildConfigLabel + "=svc"})
	if err != nil || len(builds) != 1 {
		t.Errorf("after the second run there are %d builds (%v); want only svc-1", len(builds), err)
	}

	c.cli.ok("delete", "app", "svc")
	waitFor(t, 2*time.Minute, "nothing of the app left", func() (bool, string) {
		left := appObjects(t, c.admin, c.ns, "svc")
		return len(left) == 0, strings.Join(left, "\n")
	})

	// The git URL itself: new-app clones it to look for the Dockerfile.
	_, errOut, err := c.cli.run("", "new-app", uri+"#main", "--name", "fromurl")
	if err == nil || !strings.Contains(errOut, "no Dockerfile found in "+uri) {
		t.Errorf("new-app on the repository's root (no Dockerfile there): err=%v stderr=%q; want no Dockerfile found", err, errOut)
	}
	if left := appObjects(t, c.admin, c.ns, "fromurl"); len(left) != 0 {
		t.Errorf("a refused new-app made %v", left)
	}
	out = c.cli.ok("new-app", uri+"#main", "--context-dir", "svc", "--name", "fromurl")
	if !strings.Contains(out, "buildconfig/fromurl created") || !strings.Contains(out, "service/fromurl created") {
		t.Errorf("new-app URL#main --context-dir svc printed:\n%s", out)
	}
	o, err = c.admin.Get(ctx, api.BuildConfigs, c.ns, "fromurl")
	if err != nil {
		t.Fatal(err)
	}
	if bc := o.(*api.BuildConfig); bc.Spec.Source.Git == nil || bc.Spec.Source.Git.URI != uri || bc.Spec.Source.Git.Ref != "main" || bc.Spec.Source.ContextDir != "svc" {
		t.Errorf("buildconfig/fromurl source = %+v; want %s at main, context svc", bc.Spec.Source, uri)
	}
	if b := waitBuild(t, c.admin, c.ns, "fromurl-1"); b.Status.Phase != api.BuildComplete {
		t.Errorf("fromurl-1 = %s (%s): %s", b.Status.Phase, b.Status.Reason, b.Status.Message)
	}
	c.cli.ok("delete", "app", "fromurl")
	waitFor(t, 2*time.Minute, "nothing of the URL app left", func() (bool, string) {
		left := appObjects(t, c.admin, c.ns, "fromurl")
		return len(left) == 0, strings.Join(left, "\n")
	})
}
