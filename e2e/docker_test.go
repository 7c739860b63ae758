package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

var pushDigest = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)

// TestDockerPushPull drives the integrated registry with the real docker:
// login with a platform token, push, pull, run, the image stream the push
// recorded, and pushes that must be refused.
func TestDockerPushPull(t *testing.T) {
	base := baseImage(t)
	dk := newDockerCLI(t)
	p := startServer(t, t.TempDir(), freePort(t))
	logIfDied(t, p)
	admin := p.admin(t)
	ctx := context.Background()
	const project = "dock"
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
		t.Fatal(err)
	}

	// An image of this test's own: a marker layer on the shared base, so
	// that removing it locally and pulling it moves real content.
	marker := make([]byte, 8)
	_, _ = rand.Read(marker)
	ref := p.registry + "/" + project + "/bb:1"
	dk.build(ref, "FROM "+base+"\nRUN echo "+hex.EncodeToString(marker)+" > /marker\n")

	dk.login(p.registry, "admin", admin.Token())
	out := dk.ok("push", ref)
	m := pushDigest.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("docker push printed no digest:\n%s", out)
	}
	digest := m[1]
	t.Logf("pushed %s as %s", ref, digest)

	dk.ok("rmi", ref)
	if _, err := dk.run("", "image", "inspect", ref); err == nil {
		t.Fatalf("%s is still present after docker rmi", ref)
	}
	if out := dk.ok("pull", ref); !strings.Contains(out, digest) {
		t.Errorf("docker pull %s does not show the pushed digest %s:\n%s", ref, digest, out)
	}
	if out := dk.ok("run", "--rm", ref, "echo", "hi"); strings.TrimSpace(out) != "hi" {
		t.Errorf("docker run %s echo hi printed %q", ref, out)
	}
	if out := dk.ok("run", "--rm", ref, "cat", "/marker"); strings.TrimSpace(out) != hex.EncodeToString(marker) {
		t.Errorf("the pulled image's /marker is %q, want %x", out, marker)
	}

	// Pushing the pulled image to another stream mounts its layers from
	// the first (docker asks for a token covering both repositories).
	ref2 := p.registry + "/" + project + "/bb2:1"
	dk.ok("tag", ref, ref2)
	if out := dk.ok("push", ref2); !strings.Contains(out, "Mounted from "+project+"/bb") || !strings.Contains(out, digest) {
		t.Errorf("docker push %s: want its layers mounted from %s/bb and digest %s:\n%s", ref2, project, digest, out)
	}

	// The push is visible to the CLI as an image stream tag.
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())
	if out := c.ok("describe", "is", "bb", "-n", project); !strings.Contains(out, digest) {
		t.Errorf("slipway describe is bb does not show the digest docker printed (%s):\n%s", digest, out)
	}
	var list struct {
		Items []api.ImageStream `json:"items"`
	}
	if err := json.Unmarshal([]byte(c.ok("get", "is", "-n", project, "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	if got := tagImage(list.Items, "bb", "1"); got != digest {
		t.Errorf("slipway get is -o json: bb:1 points at %q, want %s\n%+v", got, digest, list.Items)
	}

	// Anonymous pushes are refused, even to a new stream.
	dk.ok("logout", p.registry)
	anon := p.registry + "/" + project + "/anon:1"
	dk.ok("tag", ref, anon)
	if out := dk.fails("push", anon); !containsAny(strings.ToLower(out), "unauthorized", "denied", "authentication required") {
		t.Errorf("anonymous docker push failed without saying it was unauthorized or denied:\n%s", out)
	}

	// A service account with view may pull but not push.
	if err := admin.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "viewer", Namespace: project}}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "viewer-view", Namespace: project},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "view"},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "viewer", Namespace: project}},
	}); err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CreateToken(ctx, project, "viewer", 0)
	if err != nil {
		t.Fatal(err)
	}
	dk.login(p.registry, "viewer", tr.Status.Token)
	dk.ok("pull", ref)
	viewerRef := p.registry + "/" + project + "/viewer:1"
	dk.ok("tag", ref, viewerRef)
	if out := dk.fails("push", viewerRef); !strings.Contains(strings.ToLower(out), "denied") {
		t.Errorf("a view user's docker push failed without saying denied:\n%s", out)
	}
	// Pushing over the existing tag is refused too, and leaves it alone.
	if out := dk.fails("push", ref); !strings.Contains(strings.ToLower(out), "denied") {
		t.Errorf("a view user's docker push to an existing stream failed without saying denied:\n%s", out)
	}
	for _, name := range []string{"anon", "viewer"} {
		if _, err := admin.Get(ctx, api.ImageStreams, project, name); !api.IsNotFound(err) {
			t.Errorf("image stream %s after refused pushes: err = %v, want not found", name, err)
		}
	}
	obj, err := admin.Get(ctx, api.ImageStreams, project, "bb")
	if err != nil {
		t.Fatal(err)
	}
	if got := tagImage([]api.ImageStream{*obj.(*api.ImageStream)}, "bb", "1"); got != digest {
		t.Errorf("after refused pushes bb:1 points at %q, want %s", got, digest)
	}
}

// tagImage is the digest a stream's tag points at now, or "".
func tagImage(streams []api.ImageStream, stream, tag string) string {
	for _, is := range streams {
		if is.Name != stream {
			continue
		}
		for _, tl := range is.Status.Tags {
			if tl.Tag == tag && len(tl.Items) > 0 {
				return tl.Items[0].Image
			}
		}
	}
	return ""
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
