package e2e

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sirupsen/logrus"
)

// standaloneRegistry is a plain distribution registry with in-memory
// storage on 127.0.0.1, to import from. It returns its host:port.
func standaloneRegistry(t *testing.T) string {
	t.Helper()
	logrus.SetLevel(logrus.FatalLevel)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"inmemory":    configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.HTTP.Secret = "tag-test"
	cfg.HTTP.RelativeURLs = true
	srv := httptest.NewServer(handlers.NewApp(context.Background(), cfg))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func tagTestImage(t *testing.T) (v1.Image, string) {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return img, d.String()
}

func TestCLITagRollback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	src := standaloneRegistry(t)
	srcImg, srcDigest := tagTestImage(t)
	srcRef, err := name.ParseReference(src+"/lib/img:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(srcRef, srcImg, remote.WithContext(ctx)); err != nil {
		t.Fatalf("push to the standalone registry: %v", err)
	}

	p := startServer(t, t.TempDir(), freePort(t), "--import-allow", src, "--import-allow-cidr", "127.0.0.0/8")
	logIfDied(t, p)
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	c.ok("new-project", "p2")
	c.ok("new-project", "p")
	token := strings.TrimSpace(c.ok("whoami", "-t"))

	push := func(repoTag string, img v1.Image) {
		t.Helper()
		if err := remote.Write(ggcrRef(t, p.registry, repoTag), img, ggcrOpts(ctx, token)...); err != nil {
			t.Fatalf("push %s: %v", repoTag, err)
		}
	}
	// head is the digest a tag resolves to in the registry, or the error.
	head := func(repoTag string) (string, error) {
		t.Helper()
		desc, err := remote.Get(ggcrRef(t, p.registry, repoTag), ggcrOpts(ctx, token)...)
		if err != nil {
			return "", err
		}
		return desc.Digest.String(), nil
	}
	wantHead := func(repoTag, want string) {
		t.Helper()
		got, err := head(repoTag)
		if err != nil || got != want {
			t.Errorf("GET %s by tag: got %s, %v; want %s", repoTag, got, err, want)
		}
	}

	img1, d1 := tagTestImage(t)
	img2, d2 := tagTestImage(t)
	push("p/web:1", img1)
	push("p/web:1", img2)

	out := c.ok("tag", "web:1", "p2/web:candidate")
	if !strings.Contains(out, "Tag p2/web:candidate set to") || !strings.Contains(out, d2) {
		t.Errorf("slipway tag web:1 p2/web:candidate printed %q, want \"Tag p2/web:candidate set to …%s\"", out, d2)
	}
	if err := ggcrVerify(ctx, ggcrRef(t, p.registry, "p2/web:candidate"), img2, token); err != nil {
		t.Errorf("p2/web:candidate: %v", err)
	}

	desc := c.ok("describe", "is", "web")
	for i, d := range []string{d2, d1} {
		re := regexp.MustCompile(`(?m)^\s+[* ]\s+` + strconv.Itoa(i) + `\s+\S+/p/web@` + regexp.QuoteMeta(d) + `$`)
		if !re.MatchString(desc) {
			t.Errorf("describe is web: no history entry %d for %s:\n%s", i, d, desc)
		}
	}
	if !strings.Contains(desc, "by admin") {
		t.Errorf("describe is web does not name who pushed:\n%s", desc)
	}

	out = c.ok("rollback", "is/web:1", "--to", "1")
	if !strings.Contains(out, d1) {
		t.Errorf("rollback printed %q, want it to name %s", out, d1)
	}
	wantHead("p/web:1", d1)
	if desc := c.ok("describe", "is", "web"); !regexp.MustCompile(`(?m)^\s+\*\s+0\s+\S+/p/web@` + regexp.QuoteMeta(d1) + `$`).MatchString(desc) {
		t.Errorf("describe after rollback: entry 0 is not %s:\n%s", d1, desc)
	}
	// A tag that follows a source is not rolled back by hand.
	c.fails("change its source", "rollback", "is/p2/web:candidate", "--to", "0")
	c.fails("out of range", "rollback", "is/web:1", "--to", "7")

	if out := c.ok("tag", "-d", "web:1"); !strings.Contains(out, "Deleted tag p/web:1") {
		t.Errorf("tag -d printed %q", out)
	}
	_, err = head("p/web:1")
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound || len(terr.Errors) == 0 || terr.Errors[0].Code != transport.ManifestUnknownErrorCode {
		t.Errorf("GET p/web:1 after tag -d: got %v, want 404 MANIFEST_UNKNOWN", err)
	}
	c.fails("does not exist", "tag", "-d", "web:1")
	// The tag in the other project has its own links.
	if err := ggcrVerify(ctx, ggcrRef(t, p.registry, "p2/web:candidate"), img2, token); err != nil {
		t.Errorf("p2/web:candidate after deleting p/web:1: %v", err)
	}

	// An alias follows its source as it moves.
	push("p/web:2", img1)
	if out := c.ok("tag", "--alias", "web:2", "web:stable"); !strings.Contains(out, "set up to track") {
		t.Errorf("tag --alias printed %q", out)
	}
	waitHead := func(repoTag, want string) {
		t.Helper()
		var got string
		var err error
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if got, err = head(repoTag); err == nil && got == want {
				return
			}
		}
		t.Errorf("%s: got %s, %v; want %s", repoTag, got, err, want)
	}
	waitHead("p/web:stable", d1)
	img3, d3 := tagTestImage(t)
	push("p/web:2", img3)
	waitHead("p/web:stable", d3)
	if desc := c.ok("describe", "is", "web"); !strings.Contains(desc, "tracks ImageStreamTag web:2") {
		t.Errorf("describe is web does not show the alias:\n%s", desc)
	}

	// Import from an allowed external registry.
	out = c.ok("import-image", "base:1", "--from="+src+"/lib/img:1", "--insecure")
	if !strings.Contains(out, "Imported") || !strings.Contains(out, " into p/base:1") || !strings.Contains(out, srcDigest) {
		t.Errorf("import-image printed %q, want Imported … into p/base:1 as %s", out, srcDigest)
	}
	if err := ggcrVerify(ctx, ggcrRef(t, p.registry, "p/base:1"), srcImg, token); err != nil {
		t.Errorf("imported p/base:1: %v", err)
	}

	// A server without the allow-list refuses the same import.
	p2 := startServer(t, t.TempDir(), freePort(t))
	logIfDied(t, p2)
	c2 := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c2.ok("login", p2.url(), "-u", "admin", "-p", p2.adminPassword(t), "--certificate-authority", p2.caFile())
	c2.ok("new-project", "q")
	c2.fails("allow-list", "import-image", "base:1", "--from="+src+"/lib/img:1", "--insecure")
}
