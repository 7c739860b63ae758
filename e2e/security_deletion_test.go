package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// The attacker tests of project deletion (M2 of the security review): a
// victim fills project "gone" (an image, a referrer, a build log, its
// service accounts bound in another project) and deletes it; mallory makes
// a project of the same name and must find nothing of the victim's.

// delReg sends one registry request with a platform token as the Basic
// password and returns the status and body.
func delReg(t *testing.T, s *trustServer, method, path, user, token string, body []byte, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+s.p.registry+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, token)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// delPutBlob uploads data to repo in one POST+PUT and returns its digest.
func delPutBlob(t *testing.T, s *trustServer, repo, user, token string, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.p.registry+"/v2/"+repo+"/blobs/uploads/", nil)
	req.SetBasicAuth(user, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start an upload to %s: %d", repo, resp.StatusCode)
	}
	loc := strings.TrimPrefix(resp.Header.Get("Location"), "http://"+s.p.registry)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if code, body := delReg(t, s, http.MethodPut, loc+sep+"digest="+d, user, token, data, map[string]string{"Content-Type": "application/octet-stream"}); code != http.StatusCreated {
		t.Fatalf("upload blob to %s: %d %s", repo, code, body)
	}
	return d
}

// referrerCount is how many referrers GET /v2/REPO/referrers/DIGEST lists.
func referrerCount(t *testing.T, s *trustServer, repo, dgst, user, token string) (int, string) {
	t.Helper()
	code, body := delReg(t, s, http.MethodGet, "/v2/"+repo+"/referrers/"+dgst, user, token, nil, nil)
	var idx struct {
		Manifests []json.RawMessage `json:"manifests"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &idx) != nil {
		return -1, fmt.Sprintf("%d %s", code, body)
	}
	return len(idx.Manifests), body
}

func bindingSubjects(t *testing.T, c *client.Client, ns, name string) ([]api.Subject, error) {
	t.Helper()
	o, err := c.Get(context.Background(), api.RoleBindings, ns, name)
	if err != nil {
		return nil, err
	}
	return o.(*api.RoleBinding).Subjects, nil
}

func TestSecurityDeletion(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw", "victim": "victimpw"})
	s := startTrustServer(t, "--htpasswd", ht)
	ctx := context.Background()
	victim := s.client("victim", "victimpw")
	for _, p := range []string{"gone", "other"} {
		if err := victim.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}); err != nil {
			t.Fatalf("victim creates project %s: %v", p, err)
		}
	}

	// The victim's image, and a referrer (an SBOM-like artifact) of it.
	img := mustRandomImage(t)
	if err := remote.Write(mustRef(t, s.ref("gone/app:latest")), img, remote.WithAuth(&authn.Basic{Username: "victim", Password: victim.Token()})); err != nil {
		t.Fatalf("victim pushes gone/app:latest: %v", err)
	}
	dgst := digestOf(t, img)
	cfg, _ := img.ConfigName()
	manifest, _ := img.RawManifest()
	emptyCfg := delPutBlob(t, s, "gone/app", "victim", victim.Token(), []byte("{}"))
	secret := delPutBlob(t, s, "gone/app", "victim", victim.Token(), []byte("victim's SBOM: db-password=hunter2"))
	ref := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom",
"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},
"layers":[{"mediaType":"text/plain","digest":%q,"size":%d}],
"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d}}`,
		emptyCfg, secret, len("victim's SBOM: db-password=hunter2"), dgst, len(manifest))
	sum := sha256.Sum256([]byte(ref))
	refDigest := "sha256:" + hex.EncodeToString(sum[:])
	if code, body := delReg(t, s, http.MethodPut, "/v2/gone/app/manifests/"+refDigest, "victim", victim.Token(), []byte(ref), map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}); code != http.StatusCreated {
		t.Fatalf("victim pushes a referrer: %d %s", code, body)
	}
	if n, body := referrerCount(t, s, "gone/app", dgst, "victim", victim.Token()); n != 1 {
		t.Fatalf("the victim's referrers before the deletion: %s, want 1", body)
	}

	// A build log the build controller kept for the victim's build app-1
	// (written in place: BuildKit is off in this server).
	logFile := filepath.Join(s.p.dataDir, "builds", "gone", "app-1.log")
	if err := os.MkdirAll(filepath.Dir(logFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logFile, []byte("STEP 3: echo victim-build-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The victim's service accounts, bound in its other project.
	for _, b := range []*api.RoleBinding{
		{ObjectMeta: api.ObjectMeta{Name: "deployers", Namespace: "other"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "edit"},
			Subjects: []api.Subject{{Kind: api.SubjectServiceAccount, Namespace: "gone", Name: "deployer"}, {Kind: api.SubjectUser, Name: "victim"}}},
		{ObjectMeta: api.ObjectMeta{Name: "gone-builder", Namespace: "other"}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "edit"},
			Subjects: []api.Subject{{Kind: api.SubjectServiceAccount, Namespace: "gone", Name: "builder"}, {Kind: api.SubjectUser, Name: api.ServiceAccountUser("gone", "deployer")}}},
	} {
		if err := s.admin.Create(ctx, api.RoleBindings, b); err != nil {
			t.Fatalf("bind gone's service accounts in other (%s): %v", b.Name, err)
		}
	}

	if _, err := victim.Delete(ctx, api.Projects, "", "gone"); err != nil {
		t.Fatalf("victim deletes project gone: %v", err)
	}
	mal := s.client("mallory", "mallorypw")
	waitFor(t, 60*time.Second, "mallory to make project gone again", func() (bool, string) {
		err := mal.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "gone"}})
		return err == nil, fmt.Sprint(err)
	})

	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"M2 the deleted project's manifest and blobs are not pullable by digest from the project made again", func(t *testing.T) {
			for _, path := range []string{"/v2/gone/app/manifests/" + dgst, "/v2/gone/app/manifests/" + refDigest, "/v2/gone/app/blobs/" + cfg.String(), "/v2/gone/app/blobs/" + secret} {
				code, body := delReg(t, s, http.MethodGet, path, "mallory", mal.Token(), nil, map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"})
				if code != http.StatusNotFound {
					t.Errorf("mallory GET %s = %d %.200s, want 404", path, code, body)
				}
			}
		}},
		{"M2 the deleted project's referrers are not listed in the project made again", func(t *testing.T) {
			if n, body := referrerCount(t, s, "gone/app", dgst, "mallory", mal.Token()); n != 0 {
				t.Errorf("mallory lists the referrers of the victim's digest: %s, want none", body)
			}
		}},
		{"M2 the deleted project's build log is not served for a Build of the same name", func(t *testing.T) {
			b := &api.Build{ObjectMeta: api.ObjectMeta{Name: "app-1", Namespace: "gone"}, Spec: api.BuildSpec{
				Strategy: api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "nosuch:1"}}},
				Output:   api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:latest"}}}}
			if err := mal.Create(ctx, api.Builds, b); err != nil {
				t.Fatalf("mallory creates Build app-1: %v", err)
			}
			resp, err := mal.Do(ctx, http.MethodGet, client.Path(api.Builds, "gone", "app-1", "log"), nil, nil, "")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), "victim-build-secret") {
					t.Errorf("mallory reads builds/app-1/log: %q, want nothing of the victim's build", body)
				}
			} else if !api.IsNotFound(err) {
				t.Logf("builds/app-1/log: %v", err)
			}
			if data, err := os.ReadFile(logFile); err == nil && strings.Contains(string(data), "victim-build-secret") {
				t.Errorf("the deleted project's build log %s is still on disk: %q", logFile, data)
			}
		}},
		{"M2 other projects' bindings no longer name the deleted project's service accounts", func(t *testing.T) {
			subj, err := bindingSubjects(t, s.admin, "other", "deployers")
			if err != nil {
				t.Fatalf("binding other/deployers: %v, want it kept for its other subject", err)
			}
			if want := []api.Subject{{Kind: api.SubjectUser, Name: "victim"}}; !slices.Equal(subj, want) {
				t.Errorf("other/deployers subjects = %+v, want only %+v", subj, want)
			}
			if subj, err := bindingSubjects(t, s.admin, "other", "gone-builder"); !api.IsNotFound(err) {
				t.Errorf("binding other/gone-builder: subjects %+v, err %v; want it deleted (it named only gone's service accounts)", subj, err)
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.run)
	}
}

// TestSecurityDeletionVolumes runs pods: the victim's pod writes a secret
// to a persistent volume; after the project is deleted and mallory makes
// it again, her pod with the same claim finds nothing.
func TestSecurityDeletionVolumes(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw"})
	c := startCluster(t, "secdelvol", "--htpasswd", ht)
	ctx := context.Background()
	if err := c.admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "gone"}}); err != nil {
		t.Fatal(err)
	}
	img := podImage(t, nil, "sh", "-c", "echo db-password=hunter2 > /data/creds; exec sleep 100000")
	if err := remote.Write(mustRef(t, c.p.registry+"/gone/app:1"), img, c.auth); err != nil {
		t.Fatalf("push gone/app:1: %v", err)
	}
	pod := func(name, image string, cmd ...string) *api.Pod {
		return &api.Pod{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "gone"}, Spec: api.PodSpec{
			Volumes: []api.Volume{{Name: "v", Persistent: &api.PersistentVolumeSource{ClaimName: "data"}}},
			Containers: []api.Container{{Name: "c", Image: image, Command: cmd,
				VolumeMounts: []api.VolumeMount{{Name: "v", MountPath: "/data"}}}}}}
	}
	if err := c.admin.Create(ctx, api.Pods, pod("w", c.p.registry+"/gone/app:1")); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(c.p.dataDir, "node", "volumes", "gone", "data", "creds")
	waitFor(t, 2*time.Minute, "the victim's pod to write its secret to the volume", func() (bool, string) {
		b, err := os.ReadFile(creds)
		p, _ := c.admin.Get(ctx, api.Pods, "gone", "w")
		return err == nil && strings.Contains(string(b), "hunter2"), fmt.Sprintf("%s: %q %v; pod %+v", creds, b, err, p)
	})
	if _, err := c.admin.Delete(ctx, api.Projects, "", "gone"); err != nil {
		t.Fatalf("delete project gone: %v", err)
	}
	mal := func() *client.Client {
		ca, _ := os.ReadFile(c.p.caFile())
		cl, _ := client.New(c.p.url(), client.WithCAData(ca))
		resp, err := cl.Login(ctx, "mallory", "mallorypw")
		if err != nil {
			t.Fatal(err)
		}
		cl, _ = client.New(c.p.url(), client.WithCAData(ca), client.WithToken(resp.Token))
		return cl
	}()
	waitFor(t, time.Minute, "mallory to make project gone again", func() (bool, string) {
		err := mal.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "gone"}})
		return err == nil, fmt.Sprint(err)
	})
	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"M2 the deleted project's persistent volume is not mounted in the project made again", func(t *testing.T) {
			reader := podImage(t, nil, "sh", "-c", "cat /data/creds; echo read-done; exec sleep 100000")
			if err := remote.Write(mustRef(t, c.p.registry+"/gone/reader:1"), reader, remote.WithAuth(&authn.Basic{Username: "mallory", Password: mal.Token()})); err != nil {
				t.Fatalf("mallory pushes gone/reader:1: %v", err)
			}
			if err := mal.Create(ctx, api.Pods, pod("r", c.p.registry+"/gone/reader:1")); err != nil {
				t.Fatalf("mallory creates pod r: %v", err)
			}
			var logs bytes.Buffer
			waitFor(t, 2*time.Minute, "mallory's pod to print what the volume holds", func() (bool, string) {
				logs.Reset()
				err := mal.PodLogs(ctx, "gone", "r", "c", false, &logs)
				return err == nil && strings.Contains(logs.String(), "read-done"), fmt.Sprintf("logs %q, err %v", logs.String(), err)
			})
			if strings.Contains(logs.String(), "hunter2") {
				t.Errorf("mallory's pod read the deleted project's volume: %q", logs.String())
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.run)
	}
}
