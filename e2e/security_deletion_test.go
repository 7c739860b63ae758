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
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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

// TestSecurityDeletionVolumes runs pods on a node agent of its own (`slipway
// node`, which it can stop): the victim's pod writes a secret to a
// persistent volume; after the project is deleted and mallory makes it
// again, her pod with the same claim finds nothing, also when the node was
// down while the project was deleted and made again.
func TestSecurityDeletionVolumes(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw"})
	c := startCluster(t, "secdelvol", "--htpasswd", ht, "--no-node")
	node := startNodeProcess(t, c)
	ctx := context.Background()
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
	malAuth := remote.WithAuth(&authn.Basic{Username: "mallory", Password: mal.Token()})
	pod := func(ns, name, image string) *api.Pod {
		return &api.Pod{ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns}, Spec: api.PodSpec{
			Volumes: []api.Volume{{Name: "v", Persistent: &api.PersistentVolumeSource{ClaimName: "data"}}},
			Containers: []api.Container{{Name: "c", Image: image,
				VolumeMounts: []api.VolumeMount{{Name: "v", MountPath: "/data"}}}}}}
	}
	// logsSay waits until the pod's log holds want and returns the log.
	logsSay := func(t *testing.T, cl *client.Client, ns, name, want string) string {
		t.Helper()
		var logs bytes.Buffer
		waitFor(t, 3*time.Minute, "pod "+ns+"/"+name+" to print "+want, func() (bool, string) {
			logs.Reset()
			err := cl.PodLogs(ctx, ns, name, "c", false, &logs)
			p, _ := c.admin.Get(ctx, api.Pods, ns, name)
			return err == nil && strings.Contains(logs.String(), want), fmt.Sprintf("logs %q, err %v; pod %+v", logs.String(), err, p)
		})
		return logs.String()
	}
	// victimWrites makes project ns, whose pod writes a secret to its
	// volume.
	victimWrites := func(t *testing.T, ns string) {
		if err := c.admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
		img := podImage(t, nil, "sh", "-c", "echo db-password=hunter2 > /data/creds && echo written; exec sleep 100000")
		if err := remote.Write(mustRef(t, c.p.registry+"/"+ns+"/app:1"), img, c.auth); err != nil {
			t.Fatalf("push %s/app:1: %v", ns, err)
		}
		if err := c.admin.Create(ctx, api.Pods, pod(ns, "w", c.p.registry+"/"+ns+"/app:1")); err != nil {
			t.Fatal(err)
		}
		logsSay(t, c.admin, ns, "w", "written")
	}
	// remake waits for the deletion of ns and makes it again as mallory.
	remake := func(t *testing.T, ns string) {
		waitFor(t, time.Minute, "mallory to make project "+ns+" again", func() (bool, string) {
			err := mal.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: ns}})
			return err == nil, fmt.Sprint(err)
		})
	}
	// malReads runs mallory's pod with the same claim in ns and fails if
	// it reads the victim's secret.
	malReads := func(t *testing.T, ns string) {
		reader := podImage(t, nil, "sh", "-c", "cat /data/creds; echo read-done; exec sleep 100000")
		if err := remote.Write(mustRef(t, c.p.registry+"/"+ns+"/reader:1"), reader, malAuth); err != nil {
			t.Fatalf("mallory pushes %s/reader:1: %v", ns, err)
		}
		if err := mal.Create(ctx, api.Pods, pod(ns, "r", c.p.registry+"/"+ns+"/reader:1")); err != nil {
			t.Fatalf("mallory creates pod r: %v", err)
		}
		if logs := logsSay(t, mal, ns, "r", "read-done"); strings.Contains(logs, "hunter2") {
			t.Errorf("mallory's pod read the deleted project's volume: %q", logs)
		}
	}
	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"M2 the deleted project's persistent volume is not mounted in the project made again", func(t *testing.T) {
			victimWrites(t, "gone")
			if _, err := c.admin.Delete(ctx, api.Projects, "", "gone"); err != nil {
				t.Fatalf("delete project gone: %v", err)
			}
			remake(t, "gone")
			malReads(t, "gone")
		}},
		{"M2 a project deleted and made again while the node is down: the old volume is not mounted in the new one", func(t *testing.T) {
			victimWrites(t, "race")
			node.stop(t)
			if _, err := c.admin.Delete(ctx, api.Projects, "", "race"); err != nil {
				t.Fatalf("delete project race: %v", err)
			}
			remake(t, "race")
			node.start(t)
			malReads(t, "race")
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.run)
	}
}

// nodeProcess is a `slipway node` agent for a cluster started with
// --no-node, under the cluster's node name and container prefix, that a
// test stops and starts again.
type nodeProcess struct {
	c      *cluster
	listen string
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
}

func startNodeProcess(t *testing.T, c *cluster) *nodeProcess {
	n := &nodeProcess{c: c, listen: freePort(t)}
	n.start(t)
	t.Cleanup(func() {
		if n.cmd != nil {
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
	return n
}

// start runs the agent and waits until its Node is ready.
func (n *nodeProcess) start(t *testing.T) {
	t.Helper()
	n.cmd = exec.Command(binary(t), append(nodeJoinArgs(t, n.c, n.c.node), "--data-dir", n.c.p.dataDir,
		"--node-name", n.c.node, "--container-prefix", n.c.node, "--no-proxy",
		"--docker-host", n.c.d.Host(), "--listen", n.listen, "--heartbeat-interval", "2s")...)
	n.out = &bytes.Buffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(n.cmd, n.exited)
	out := n.out
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("slipway node output:\n%s", out.String())
		}
	})
	since := time.Now()
	waitFor(t, time.Minute, "node "+n.c.node+" is ready", func() (bool, string) {
		o, err := n.c.admin.Get(context.Background(), api.Nodes, "", n.c.node)
		if err != nil {
			return false, err.Error()
		}
		for _, cd := range o.(*api.Node).Status.Conditions {
			if cd.Type == "Ready" {
				return cd.Status == api.ConditionTrue && cd.LastHeartbeatTime.After(since), fmt.Sprintf("%+v", cd)
			}
		}
		return false, "no Ready condition"
	})
}

// stop ends the agent with SIGTERM; its pods' containers keep running, as
// when a node goes down.
func (n *nodeProcess) stop(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.exited:
	case <-time.After(time.Minute):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	n.cmd = nil
}
