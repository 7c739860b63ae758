package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// TestSecurityScan plays the attacker against the scanner and the policy
// gates (issue 11, findings H5, M1 and L3 of the security review), over
// HTTP against one `slipway start`. mallory is any user: she makes her own
// project mal. vic is the victim project, whose ImagePolicy allows nothing
// above HIGH; the cluster admin runs it. The rows run in order on the same
// server: the first ones run before any vulnerability database exists.
func TestSecurityScan(t *testing.T) {
	ht := htpasswdFile(t, map[string]string{"mallory": "pw-mallory"})
	s := startTrustServer(t, "--htpasswd", ht)
	ctx := context.Background()
	mallory := s.client("mallory", "pw-mallory")
	if err := mallory.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "mal"}}); err != nil {
		t.Fatalf("mallory creates her project: %v", err)
	}
	malAuth := remote.WithAuth(&authn.Basic{Username: "mallory", Password: mallory.Token()})
	malPush := func(repoTag string, img v1.Image) string {
		t.Helper()
		if err := remote.Write(mustRef(t, s.ref("mal/"+repoTag)), img, malAuth); err != nil {
			t.Fatalf("mallory pushes mal/%s: %v", repoTag, err)
		}
		return digestOf(t, img)
	}
	s.projects("src", "vic")
	s.apply("vic", "kind: ImagePolicy\nmetadata: {name: no-critical}\nspec:\n  maxSeverity: HIGH\n")
	// The admin's pipelines into vic: from src (the admin's), and from
	// mal, which a stage may name if the admin wants it.
	s.apply("src", "kind: Pipeline\nmetadata: {name: release}\nspec:\n  stream: app\n  stages:\n  - {name: build, project: src, tag: latest}\n  - {name: gate, project: vic, tag: accepted}\n")
	s.apply("mal", "kind: Pipeline\nmetadata: {name: release}\nspec:\n  stream: app\n  stages:\n  - {name: build, project: mal, tag: latest}\n  - {name: gate, project: vic, tag: accepted}\n")
	scanned := func(project, digest string) *api.ImageScan {
		t.Helper()
		return s.waitScan(project, digest, "scanned", func(sc *api.ImageScan) bool { return sc.Status.Phase == "Scanned" || sc.Status.Phase == "Failed" })
	}
	// refused promotes the pipeline of ns into vic and wants a refusal
	// that says want.
	refused := func(ns, want string) {
		t.Helper()
		name, stdout, stderr, err := s.promote(ns, "release", "--to", "gate")
		p := s.promotion(ns, name)
		if err == nil || p.Status.Phase != api.PromotionRefused || !strings.Contains(p.Status.Message, want) {
			t.Errorf("promotion %s/%s = %s %q (err %v)\nstdout: %s\nstderr: %s\nwant Refused saying %q", ns, name, p.Status.Phase, p.Status.Message, err, stdout, stderr, want)
			return
		}
		t.Logf("refused as wanted: %s", p.Status.Message)
	}
	// forge rewrites mal's ImageScan of digest to "no findings", as
	// mallory (admin of mal) could. If the API no longer lets her write
	// status (M7 is fixed elsewhere), the cluster admin writes it in her
	// stead: the scanner and the gates must not trust ImageScans anyway.
	forge := func(digest string) {
		t.Helper()
		o, err := s.admin.Get(ctx, api.ImageScans, "mal", digest)
		if err != nil {
			t.Fatal(err)
		}
		sc := o.(*api.ImageScan)
		sc.Status.Findings, sc.Status.Counts, sc.Status.Phase = nil, map[string]int{}, "Scanned"
		if sc.Status.DBVersion == "" {
			sc.Status.DBVersion = "sha256:" + strings.Repeat("0", 64)
		}
		if err := mallory.UpdateStatus(ctx, api.ImageScans, sc); err != nil {
			t.Logf("mallory cannot write ImageScan status (%v); the cluster admin forges it for her", err)
			if err := s.admin.UpdateStatus(ctx, api.ImageScans, sc); err != nil {
				t.Fatal(err)
			}
		}
		s.waitScan("mal", digest, "forged to no findings", func(sc *api.ImageScan) bool { return len(sc.Status.Findings) == 0 })
	}
	vulnPkgs := [][2]string{{"openssl", vulnOpenSSL}, {"libxml2", vulnLibxml}}

	var db1 string
	rows := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"M1 without a vulnerability database a scan's findings are unknown and maxSeverity refuses", func(t *testing.T) {
			d := s.push("src/app:latest", debianImage(t, "m1-nodb", vulnPkgs...))
			sc := scanned("src", d)
			if sc.Status.DBVersion != "" || !strings.Contains(sc.Status.Message, "slipway vulndb import") {
				t.Errorf("scan without a database = %+v; want no dbVersion and a message that says to run slipway vulndb import", sc.Status)
			}
			if out := s.cli.ok("scan", "app@"+d, "-n", "src"); !strings.Contains(out, "Findings:  unknown") {
				t.Errorf("slipway scan without a database says:\n%s\nwant Findings: unknown", out)
			}
			refused("src", "slipway vulndb import")
		}},
		{"M1 a user cannot create the reserved vulndb project", func(t *testing.T) {
			err := mallory.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "vulndb"}})
			if err == nil || !api.IsReason(err, api.ReasonForbidden) || !strings.Contains(err.Error(), "only a cluster admin") {
				t.Errorf("mallory creates project vulndb: %v; want Forbidden saying only a cluster admin may", err)
			}
		}},
		{"M1 vulndb import refuses a vulndb project in which a user holds a role", func(t *testing.T) {
			// Made by mallory if the row above failed; else the admin
			// makes it and gives mallory a role there.
			if _, err := s.admin.Get(ctx, api.Projects, "", "vulndb"); api.IsNotFound(err) {
				s.projects("vulndb")
			}
			if err := s.admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
				ObjectMeta: api.ObjectMeta{Name: "mallory-admin", Namespace: "vulndb"},
				RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "admin"},
				Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: "mallory"}},
			}); err != nil {
				t.Fatal(err)
			}
			_, stderr, err := s.cli.run("", "vulndb", "import", writeOSVDir(t, opensslAdvisory()))
			if err == nil || !strings.Contains(stderr, "mallory") || !strings.Contains(stderr, "slipway delete project vulndb") {
				t.Errorf("vulndb import into a project mallory administers: err %v, stderr %q; want a refusal naming mallory and the fix", err, stderr)
			}
			rbs, _, err := s.admin.List(ctx, api.RoleBindings, "vulndb", client.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range rbs {
				if b := o.(*api.RoleBinding); slices.ContainsFunc(b.Subjects, func(sub api.Subject) bool { return sub.Name == "mallory" }) {
					if _, err := s.admin.Delete(ctx, api.RoleBindings, "vulndb", b.Name); err != nil {
						t.Fatal(err)
					}
				}
			}
			db1 = s.importDB(writeOSVDir(t, opensslAdvisory()))
		}},
		{"H5 a forged clean ImageScan in the attacker's project does not pass the victim's maxSeverity at promotion", func(t *testing.T) {
			d := malPush("app:latest", debianImage(t, "h5-promote", vulnPkgs...))
			s.waitScan("mal", d, "matched with "+db1, func(sc *api.ImageScan) bool { return sc.Status.DBVersion == db1 })
			forge(d)
			refused("mal", "CRITICAL DSA-9001-1 in openssl")
		}},
		{"H5 a forged clean ImageScan is not copied to another project that pushes the same digest", func(t *testing.T) {
			img := debianImage(t, "h5-copy", vulnPkgs...)
			d := malPush("app:copy", img)
			s.waitScan("mal", d, "matched with "+db1, func(sc *api.ImageScan) bool { return sc.Status.DBVersion == db1 })
			forge(d)
			s.push("src/app:latest", img)
			sc := scanned("src", d)
			if got := findingIDs(sc); len(got) != 1 || !strings.Contains(got[0], "CRITICAL DSA-9001-1") {
				t.Errorf("src's scan of the digest mallory forged = %+v; want its own CRITICAL DSA-9001-1", sc.Status)
			}
			refused("src", "CRITICAL DSA-9001-1 in openssl")
		}},
		{"H5 an Image record naming another image is not scanned in its stead", func(t *testing.T) {
			clean := debianImage(t, "h5-record-clean", [2]string{"openssl", fixedOpenSSL})
			vuln := debianImage(t, "h5-record-vuln", vulnPkgs...)
			cd := malPush("clean:latest", clean)
			scanned("mal", cd)
			vd := digestOf(t, vuln)
			// mallory records the vulnerable digest, before anyone
			// pushes it, as if it were her clean image.
			fake := &api.Image{ObjectMeta: api.ObjectMeta{Name: vd, Namespace: "mal"}, DockerImageReference: s.ref("mal/clean@" + cd)}
			if o, err := s.admin.Get(ctx, api.Images, "mal", cd); err == nil {
				rec := o.(*api.Image)
				fake.MediaType, fake.Config, fake.Layers, fake.Size = rec.MediaType, rec.Config, rec.Layers, rec.Size
			}
			if err := mallory.Create(ctx, api.Images, fake); err != nil {
				t.Logf("mallory cannot write Image records (%v); the cluster admin writes it for her", err)
				if err := s.admin.Create(ctx, api.Images, fake); err != nil {
					t.Fatal(err)
				}
			}
			// The scanner works through records in order: the fake is
			// handled before the real push below.
			s.push("src/app:latest", vuln)
			sc := scanned("src", vd)
			if got := findingIDs(sc); len(got) != 1 || !strings.Contains(got[0], "CRITICAL DSA-9001-1") {
				t.Errorf("src's scan of %s = %+v; want its own CRITICAL DSA-9001-1, not the scan of mallory's %s", vd, sc.Status, cd)
			}
			refused("src", "CRITICAL DSA-9001-1 in openssl")
		}},
		{"L3 the new-findings event in the attacker's project does not name the victim's deployments", func(t *testing.T) {
			// mallory pushes a popular image first; the victim runs the
			// same digest.
			img := debianImage(t, "l3", [2]string{"openssl", fixedOpenSSL}, [2]string{"libxml2", vulnLibxml})
			d := malPush("app:probe", img)
			scanned("mal", d)
			s.push("vic/app:running", img)
			scanned("vic", d)
			if err := s.admin.Create(ctx, api.ReplicationControllers, &api.ReplicationController{
				ObjectMeta: api.ObjectMeta{Name: "secret-service-1", Namespace: "vic"},
				Spec: api.ReplicationControllerSpec{Replicas: 1, Selector: map[string]string{"app": "secret"}, Template: &api.PodTemplateSpec{
					ObjectMeta: api.ObjectMeta{Labels: map[string]string{"app": "secret"}},
					Spec:       api.PodSpec{Containers: []api.Container{{Name: "app", Image: s.ref("vic/app@" + d)}}},
				}},
			}); err != nil {
				t.Fatal(err)
			}
			db2 := s.importDB(writeOSVDir(t, opensslAdvisory(), libxmlAdvisory()))
			s.waitScan("mal", d, "matched with "+db2, func(sc *api.ImageScan) bool { return sc.Status.DBVersion == db2 })
			var malEvents string
			trustWait(t, time.Minute, "a NewFindings event for the image in mal", func() (bool, string) {
				malEvents = eventMessages(t, mallory, "mal")
				return strings.Contains(malEvents, "app:probe"), malEvents
			})
			if strings.Contains(malEvents, "vic") || strings.Contains(malEvents, "secret-service") {
				t.Errorf("mal's new-findings events name the victim's deployment:\n%s", malEvents)
			}
			s.waitScan("vic", d, "matched with "+db2, func(sc *api.ImageScan) bool { return sc.Status.DBVersion == db2 })
			trustWait(t, time.Minute, "vic's NewFindings event names vic's own deployment", func() (bool, string) {
				vic := eventMessages(t, s.admin, "vic")
				return strings.Contains(vic, "vic/secret-service-1"), vic
			})
		}},
	}
	for _, row := range rows {
		if !t.Run(row.name, row.run) && db1 == "" && strings.HasPrefix(row.name, "M1 vulndb import") {
			t.Fatal("no database was imported; the rows after this need one")
		}
	}
}

// eventMessages lists the NewFindings events of a project, as c sees them.
func eventMessages(t *testing.T, c *client.Client, ns string) string {
	t.Helper()
	items, _, err := c.List(context.Background(), api.Events, ns, client.ListOptions{})
	if err != nil {
		t.Fatalf("list events in %s: %v", ns, err)
	}
	var out []string
	for _, o := range items {
		if ev := o.(*api.Event); ev.Reason == "NewFindings" {
			out = append(out, ev.Message)
		}
	}
	return strings.Join(out, "\n")
}

// TestSecurityScanAdmission: H5's second half, at the node agent. mallory
// is an editor of the victim project vic, whose policy allows nothing above
// HIGH, and admin of her own project mal. She runs in vic an image of mal
// whose ImageScan in mal says "no findings": the node agent must judge the
// image by the platform's scan of the digest, not by mal's ImageScan.
func TestSecurityScanAdmission(t *testing.T) {
	d := dockerDaemon(t)
	const node = "sec-scan-admit"
	t.Cleanup(func() { trustRemoveContainers(t, d, node) })
	ht := htpasswdFile(t, map[string]string{"mallory": "pw-mallory"})
	s := startTrustServer(t, "--htpasswd", ht, "--docker-host", d.Host(), "--node-name", node, "--container-prefix", node, "--no-proxy")
	ctx := context.Background()
	mallory := s.client("mallory", "pw-mallory")
	if err := mallory.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "mal"}}); err != nil {
		t.Fatal(err)
	}
	s.projects("vic")
	s.apply("vic", "kind: ImagePolicy\nmetadata: {name: no-critical}\nspec:\n  maxSeverity: HIGH\n")
	if err := s.admin.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "mallory-edit", Namespace: "vic"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "edit"},
		Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: "mallory"}},
	}); err != nil {
		t.Fatal(err)
	}
	// mal lets vic's pods pull from it.
	if err := mallory.Create(ctx, api.RoleBindings, &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "vic-pulls", Namespace: "mal"},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: "image-puller"},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: "deployer", Namespace: "vic"}},
	}); err != nil {
		t.Fatal(err)
	}
	db := s.importDB(writeOSVDir(t, opensslAdvisory()))
	malAuth := remote.WithAuth(&authn.Basic{Username: "mallory", Password: mallory.Token()})
	push := func(repoTag string, img v1.Image) string {
		t.Helper()
		if err := remote.Write(mustRef(t, s.ref("mal/"+repoTag)), img, malAuth); err != nil {
			t.Fatal(err)
		}
		dg := digestOf(t, img)
		s.waitScan("mal", dg, "matched with "+db, func(sc *api.ImageScan) bool { return sc.Status.DBVersion == db })
		return dg
	}
	clean := push("app:clean", debianImage(t, "admit-clean", [2]string{"openssl", fixedOpenSSL}))
	vuln := push("app:vuln", debianImage(t, "admit-vuln", [2]string{"openssl", vulnOpenSSL}))
	// mallory's forged scan of the vulnerable image: no findings.
	o, err := s.admin.Get(ctx, api.ImageScans, "mal", vuln)
	if err != nil {
		t.Fatal(err)
	}
	sc := o.(*api.ImageScan)
	sc.Status.Findings, sc.Status.Counts = nil, map[string]int{}
	if err := mallory.UpdateStatus(ctx, api.ImageScans, sc); err != nil {
		t.Logf("mallory cannot write ImageScan status (%v); the cluster admin forges it for her", err)
		if err := s.admin.UpdateStatus(ctx, api.ImageScans, sc); err != nil {
			t.Fatal(err)
		}
	}
	s.waitScan("mal", vuln, "forged to no findings", func(sc *api.ImageScan) bool { return len(sc.Status.Findings) == 0 })

	for _, name := range []string{"clean", "forged"} {
		image := s.ref("mal/app@" + map[string]string{"clean": clean, "forged": vuln}[name])
		if err := mallory.Create(ctx, api.Pods, &api.Pod{
			ObjectMeta: api.ObjectMeta{Name: name, Namespace: "vic"},
			Spec:       api.PodSpec{Containers: []api.Container{{Name: "app", Image: image}}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	podState := func(name string) (*api.Pod, string) {
		o, err := s.admin.Get(ctx, api.Pods, "vic", name)
		if err != nil {
			return nil, err.Error()
		}
		p := o.(*api.Pod)
		return p, fmt.Sprintf("phase=%s reason=%s message=%q containers=%+v", p.Status.Phase, p.Status.Reason, p.Status.Message, p.Status.ContainerStatuses)
	}
	for _, row := range []struct {
		name, pod string
		denied    bool
	}{
		{"a clean image of mal runs in vic (the pull itself is allowed)", "clean", false},
		{"H5 the node agent refuses an image whose scan is forged in the image's project", "forged", true},
	} {
		t.Run(row.name, func(t *testing.T) {
			trustWait(t, 3*time.Minute, "pod "+row.pod+" runs or is refused", func() (bool, string) {
				p, st := podState(row.pod)
				return p != nil && (p.Status.Reason == "PolicyDenied" || p.Status.Phase == api.PodRunning), st
			})
			p, st := podState(row.pod)
			if denied := p.Status.Reason == "PolicyDenied"; denied != row.denied {
				t.Fatalf("pod %s: %s; want denied=%v", row.pod, st, row.denied)
			}
			if row.denied && !strings.Contains(p.Status.Message, "CRITICAL DSA-9001-1") {
				t.Errorf("pod %s refused with %q; want the CRITICAL finding named", row.pod, p.Status.Message)
			}
		})
	}
}
