package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.etcd.io/etcd/server/v3/embed"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// The attacker tests of M5 (etcd exhaustion): a user whose create loop or
// push loop would fill etcd meets the platform's per-project limits, with
// an error that names the limit, the project and what to do, while other
// projects keep working; and a server whose etcd did fill up says so in
// /readyz and /metrics, for the embedded etcd and for an external one.

// quotaLimits are small limits, so that a loop reaches them quickly. The
// image limit leaves room for the SBOM referrers the scanner pushes for
// every image, which are Images of the project too.
var quotaLimits = []string{"--project-object-limits", "imagestreams=5,images=12", "--max-tags-per-stream", "3", "--max-tag-history", "4"}

func TestSecurityQuota(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw", "alice": "alicepw"})
	s := startTrustServer(t, append([]string{"--htpasswd", ht}, quotaLimits...)...)
	ctx := context.Background()
	mal := s.client("mallory", "mallorypw")
	ali := s.client("alice", "alicepw")
	malAuth := remote.WithAuth(&authn.Basic{Username: "mallory", Password: mal.Token()})
	aliAuth := remote.WithAuth(&authn.Basic{Username: "alice", Password: ali.Token()})
	for c, p := range map[*client.Client][]string{mal: {"mal-api", "mal-push", "mal-tags", "mal-img"}, ali: {"ali"}} {
		for _, n := range p {
			if err := c.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: n}}); err != nil {
				t.Fatalf("create project %s: %v", n, err)
			}
		}
	}
	push := func(auth remote.Option, ref string) error {
		return remote.Write(mustRef(t, s.ref(ref)), mustRandomImage(t), auth)
	}
	wantLimit := func(t *testing.T, what string, err error, wants ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error, want the project's limit", what)
		}
		for _, w := range wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", what, err, w)
			}
		}
	}

	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"M5 mallory's create loop stops at the project's image stream limit with a 403 that says what to do; alice's project still works", func(t *testing.T) {
			var err error
			created := 0
			for i := 0; i < 12 && err == nil; i++ {
				if err = mal.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "mal-api", Name: fmt.Sprintf("loop%d", i)}}); err == nil {
					created++
				}
			}
			if created != 5 {
				t.Errorf("mallory created %d image streams in mal-api before a refusal (err %v), want 5", created, err)
			}
			wantLimit(t, "mallory's 6th image stream", err, `project "mal-api" already holds 5 imagestreams`, "delete those it no longer needs", "--project-object-limit")
			if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden {
				t.Errorf("mallory's 6th image stream: status %+v, want 403", st)
			}
			if items, _, err := mal.List(ctx, api.ImageStreams, "mal-api", client.ListOptions{}); err != nil || len(items) != 5 {
				t.Errorf("mal-api holds %d image streams (%v), want 5: the refusal changed nothing", len(items), err)
			}
			if err := ali.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "ali", Name: "app"}}); err != nil {
				t.Errorf("alice creates an image stream in her own project: %v", err)
			}
			// Deleting makes room again.
			if _, err := mal.Delete(ctx, api.ImageStreams, "mal-api", "loop0"); err != nil {
				t.Fatal(err)
			}
			if err := mal.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "mal-api", Name: "again"}}); err != nil {
				t.Errorf("mallory creates an image stream after deleting one: %v", err)
			}
		}},
		{"M5 mallory's push loop of new repositories stops at the image stream limit with DENIED; alice pushes on", func(t *testing.T) {
			var err error
			pushed := 0
			for i := 0; i < 12 && err == nil; i++ {
				if err = push(malAuth, fmt.Sprintf("mal-push/s%d:latest", i)); err == nil {
					pushed++
				}
			}
			if pushed != 5 {
				t.Errorf("mallory pushed %d new repositories to mal-push before a refusal (err %v), want 5", pushed, err)
			}
			wantLimit(t, "mallory's 6th repository", err, "DENIED", `project "mal-push" already holds 5 imagestreams`, "--project-object-limit")
			if _, err := s.admin.Get(ctx, api.ImageStreams, "mal-push", "s5"); err == nil {
				t.Errorf("the refused push's image stream mal-push/s5 exists")
			}
			if err := push(aliAuth, "ali/pushed:latest"); err != nil {
				t.Errorf("alice pushes to her own project: %v", err)
			}
		}},
		{"M5 mallory's push loop of new tags stops at the tags-per-stream limit with DENIED; existing tags still move", func(t *testing.T) {
			var err error
			pushed := 0
			for i := 0; i < 8 && err == nil; i++ {
				if err = push(malAuth, fmt.Sprintf("mal-tags/app:t%d", i)); err == nil {
					pushed++
				}
			}
			if pushed != 3 {
				t.Errorf("mallory pushed %d tags to mal-tags/app before a refusal (err %v), want 3", pushed, err)
			}
			wantLimit(t, "mallory's 4th tag", err, "DENIED", `3 tags in image stream "app"`, "use another image stream", "--max-tags-per-stream")
			if err := push(malAuth, "mal-tags/app:t0"); err != nil {
				t.Errorf("mallory moves an existing tag: %v", err)
			}
		}},
		{"M5 mallory's push loop of new images stops at the project's image limit, and a tag keeps at most --max-tag-history entries", func(t *testing.T) {
			var err error
			pushed := 0
			for i := 0; i < 30 && err == nil; i++ {
				if err = push(malAuth, "mal-img/app:latest"); err == nil {
					pushed++
				}
			}
			// Each image may also get an SBOM referrer from the scanner,
			// an Image of the project as well: 6 to 12 pushes fit.
			if pushed < 6 || pushed > 12 {
				t.Errorf("mallory pushed %d images to mal-img before a refusal (err %v), want 6 to 12", pushed, err)
			}
			wantLimit(t, "mallory's image past the limit", err, "DENIED", `project "mal-img" already holds 12 images`, "--project-object-limit")
			if items, _, err := s.admin.List(ctx, api.Images, "mal-img", client.ListOptions{}); err != nil || len(items) != 12 {
				t.Errorf("mal-img holds %d images (%v), want 12: no writer passes the limit", len(items), err)
			}
			o, err := s.admin.Get(ctx, api.ImageStreams, "mal-img", "app")
			if err != nil {
				t.Fatal(err)
			}
			for _, tg := range o.(*api.ImageStream).Status.Tags {
				if tg.Tag == "latest" && len(tg.Items) != 4 {
					t.Errorf("mal-img/app:latest keeps %d history entries after %d pushes, want 4 (--max-tag-history)", len(tg.Items), pushed)
				}
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.run)
	}
}

// TestSecurityQuotaEtcdFull fills a server's etcd, as an admin would by
// raising the limits, and expects /readyz and /metrics to report the
// NOSPACE alarm with what to do, for the embedded etcd (with a small
// --etcd-quota-backend-bytes) and for an external etcd of small quota.
func TestSecurityQuotaEtcdFull(t *testing.T) {
	const quota = 24 << 20
	rows := []struct {
		name  string
		start func(t *testing.T) (s *trustServer, endpoint string)
	}{
		{"M5 an embedded etcd filled to its quota makes /readyz and /metrics report NOSPACE", func(t *testing.T) (*trustServer, string) {
			return startTrustServer(t, "--etcd-quota-backend-bytes", fmt.Sprint(quota)), ""
		}},
		{"M5 an external etcd filled to its quota makes /readyz and /metrics report NOSPACE", func(t *testing.T) (*trustServer, string) {
			ep := startSmallEtcd(t, quota)
			return startTrustServer(t, "--etcd-endpoints", ep), ep
		}},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			s, endpoint := row.start(t)
			ctx := context.Background()
			s.projects("fill")
			big := strings.Repeat("x", 2<<20)
			var err error
			for i := 0; i < 40 && err == nil; i++ {
				err = s.admin.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "fill", Name: fmt.Sprintf("big%d", i), Annotations: map[string]string{"fill": big}}})
			}
			if err == nil {
				t.Fatalf("80 MiB written into a %d MiB etcd without an error", quota>>20)
			}
			t.Logf("the write that filled etcd: %v", err)
			if !strings.Contains(err.Error(), "NOSPACE") {
				t.Errorf("the write that filled etcd answered %q, want it to say etcd is full (NOSPACE)", err)
			}
			code, body := s.getText(t, "/readyz", "")
			if code != http.StatusServiceUnavailable {
				t.Errorf("/readyz with etcd full = %d %q, want 503", code, body)
			}
			for _, want := range []string{"NOSPACE", "defrag", "etcdctl alarm disarm", "--etcd-quota-backend-bytes"} {
				if !strings.Contains(body, want) {
					t.Errorf("/readyz with etcd full says %q; want it to say %q", body, want)
				}
			}
			code, body = s.getText(t, "/metrics", s.admin.Token())
			for _, want := range []string{`slipway_etcd_alarms{alarm="NOSPACE"} 1`, fmt.Sprintf("slipway_etcd_db_quota_bytes{endpoint=%q} %g", endpoint, float64(quota)), "slipway_etcd_db_size_bytes{"} {
				if code != http.StatusOK || !strings.Contains(body, want) {
					t.Errorf("/metrics with etcd full = %d, does not hold %q:\n%s", code, want, grepLines(body, "slipway_etcd"))
				}
			}
		})
	}
}

// getText GETs path on the API, with a bearer token unless "".
func (s *trustServer) getText(t *testing.T, path, token string) (int, string) {
	t.Helper()
	ca, err := os.ReadFile(s.p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest(http.MethodGet, s.p.url()+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func grepLines(text, substr string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// startSmallEtcd runs an etcd member of the given backend quota in the
// test process, as an external cluster of one, and returns its client URL.
func startSmallEtcd(t *testing.T, quota int64) string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cu, _ := url.Parse("http://" + freePort(t))
	pu, _ := url.Parse("http://" + freePort(t))
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	cfg.QuotaBackendBytes = quota
	cfg.MaxRequestBytes = 4 << 20
	cfg.LogLevel = "error"
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatal("external etcd not ready after 60s")
	}
	return cu.String()
}

// TestSecurityProjectsPerUser plays mallory multiplying the per-project
// limits by making projects, herself and through a service account of
// hers: both count against her cap (M5).
func TestSecurityProjectsPerUser(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw"})
	s := startTrustServer(t, "--htpasswd", ht, "--max-projects-per-user", "3")
	ctx := context.Background()
	mal := s.client("mallory", "mallorypw")
	newProject := func(c *client.Client, name string) error {
		return c.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: name}})
	}
	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"M5 mallory's project loop stops at the per-user cap with a 403 that says what to do", func(t *testing.T) {
			var err error
			created := 0
			for i := 0; i < 10 && err == nil; i++ {
				if err = newProject(mal, fmt.Sprintf("mal%d", i)); err == nil {
					created++
				}
			}
			if created != 3 {
				t.Fatalf("mallory created %d projects before a refusal (err %v), want 3", created, err)
			}
			if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden || !strings.Contains(st.Message, "mallory already has 3 projects") || !strings.Contains(st.Message, "--max-projects-per-user") {
				t.Errorf("mallory's 4th project: %v, want a 403 naming the cap and the flag", err)
			}
			if err := newProject(s.admin, "admins-own"); err != nil {
				t.Errorf("a cluster admin creates a project: %v", err)
			}
		}},
		{"M5 mallory cannot reset her count by editing her project's requester annotation", func(t *testing.T) {
			patch := []byte(`{"metadata":{"annotations":{"openshift.io/requester":"someone-else"}}}`)
			o, err := mal.Patch(ctx, api.Projects, "", "mal0", patch)
			if err != nil {
				t.Fatalf("mallory patches her project: %v", err)
			}
			if got := o.GetObjectMeta().Annotations[api.ProjectRequesterAnnotation]; got != "mallory" {
				t.Errorf("mal0's requester after mallory's patch = %q, want mallory", got)
			}
			if err := newProject(mal, "mal-after-patch"); err == nil {
				t.Errorf("after patching the annotation mallory created a 4th project")
			}
		}},
		{"M5 a service account of mallory's counts against her: its projects do not multiply her cap", func(t *testing.T) {
			if _, err := mal.Delete(ctx, api.Projects, "", "mal2"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, time.Minute, "mal2 gone", func() (bool, string) {
				_, err := s.admin.Get(ctx, api.Projects, "", "mal2")
				return api.IsNotFound(err), fmt.Sprint(err)
			})
			if err := mal.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Namespace: "mal0", Name: "robot"}}); err != nil {
				t.Fatal(err)
			}
			tr, err := mal.CreateToken(ctx, "mal0", "robot", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			ca, err := os.ReadFile(s.p.caFile())
			if err != nil {
				t.Fatal(err)
			}
			robot, err := client.New(s.p.url(), client.WithCAData(ca), client.WithToken(tr.Status.Token))
			if err != nil {
				t.Fatal(err)
			}
			if err := newProject(robot, "robot0"); err != nil {
				t.Fatalf("mallory's robot creates a project while she has room for one: %v", err)
			}
			err = newProject(robot, "robot1")
			if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusForbidden || !strings.Contains(st.Message, "mallory already has 3 projects") {
				t.Errorf("mallory's robot's second project: %v, want a 403 counting it against mallory", err)
			}
			if err := newProject(mal, "mal-full"); err == nil {
				t.Errorf("mallory created a 4th project after her robot took her last place")
			}
		}},
	}
	for _, row := range rows {
		t.Run(row.name, row.run)
	}
}

// TestSecurityQuotaPromotion: a promotion copies inside the registry,
// with no push, so it once bypassed the registry.bytes quota. mallory's
// project small has a hard registry.bytes limit of 256Ki set by the
// cluster admin; her pipeline from her project big promotes a 1 MiB image
// into it. The promotion fails saying which quota it would exceed and what
// to do, and small holds nothing of the image.
func TestSecurityQuotaPromotion(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "mallorypw"})
	s := startTrustServer(t, "--htpasswd", ht)
	ctx := context.Background()
	mal := s.client("mallory", "mallorypw")
	for _, n := range []string{"big", "small"} {
		if err := mal.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: n}}); err != nil {
			t.Fatalf("create project %s: %v", n, err)
		}
	}
	if err := s.admin.Create(ctx, api.ResourceQuotas, &api.ResourceQuota{ObjectMeta: api.ObjectMeta{Name: "registry", Namespace: "small"},
		Spec: api.ResourceQuotaSpec{Hard: map[string]string{api.QuotaRegistryBytes: "256Ki"}}}); err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(1<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(mustRef(t, s.ref("big/app:latest")), img, remote.WithAuth(&authn.Basic{Username: "mallory", Password: mal.Token()})); err != nil {
		t.Fatalf("mallory pushes big/app:latest: %v", err)
	}
	dgst := digestOf(t, img)
	if err := mal.Create(ctx, api.Pipelines, &api.Pipeline{ObjectMeta: api.ObjectMeta{Name: "release", Namespace: "big"}, Spec: api.PipelineSpec{Stream: "app",
		Stages: []api.PipelineStage{{Name: "dev", Project: "big", Tag: "latest"}, {Name: "live", Project: "small", Tag: "live"}}}}); err != nil {
		t.Fatalf("mallory's pipeline: %v", err)
	}
	if err := mal.Create(ctx, api.Promotions, &api.Promotion{ObjectMeta: api.ObjectMeta{Name: "p1", Namespace: "big"},
		Spec: api.PromotionSpec{Pipeline: "release", To: "live", Image: dgst}}); err != nil {
		t.Fatalf("mallory's promotion: %v", err)
	}
	p := s.waitPromotion("big", "p1", "finished", func(p *api.Promotion) bool {
		return p.Status.Phase == api.PromotionComplete || p.Status.Phase == api.PromotionFailed || p.Status.Phase == api.PromotionRefused
	})
	for _, want := range []string{"exceeded quota registry: registry.bytes used", "hard 256Ki (project small)", "slipway adm prune images"} {
		if p.Status.Phase != api.PromotionFailed || !strings.Contains(p.Status.Message, want) {
			t.Errorf("promotion of a 1 MiB image into small (hard registry.bytes 256Ki): %s %q, want Failed saying %q", p.Status.Phase, p.Status.Message, want)
		}
	}
	if _, err := s.admin.Get(ctx, api.Images, "small", dgst); !api.IsNotFound(err) {
		t.Errorf("small's record of the image after the failed promotion: %v, want not found", err)
	}
	if n, err := s.admin.Get(ctx, api.ImageStreams, "small", "app"); err == nil && len(n.(*api.ImageStream).Status.Tags) > 0 {
		t.Errorf("small/app has tags after the failed promotion: %+v", n.(*api.ImageStream).Status.Tags)
	}
	if _, err := remote.Head(mustRef(t, s.ref("small/app@"+dgst)), remote.WithAuth(&authn.Basic{Username: "mallory", Password: mal.Token()})); err == nil {
		t.Errorf("small/app@%s is pullable after the failed promotion", dgst)
	}
}
