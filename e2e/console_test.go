package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
)

// The console's browser tests: Debian's chromium, headless, driven with
// chromedp against a real `slipway start`, logging in as the platform's
// users. Each test saves a screenshot of every page it visits under
// consoleArtifacts.

// chromiumPath is Debian's chromium; the tests skip only when it is
// missing (hack/install-deps.sh test installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed: the console's browser tests need Debian's chromium (`hack/install-deps.sh test` or `apt-get install chromium`)")
	return ""
}

// consoleArtifacts is where screenshots go: $SLIPWAY_ARTIFACTS/console,
// else artifacts/console in the repository (ignored by git).
func consoleArtifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SLIPWAY_ARTIFACTS")
	if dir == "" {
		dir = "../artifacts"
	}
	dir, err := filepath.Abs(filepath.Join(dir, "console"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serverSPKI is the base64 SHA-256 of the server certificate's public
// key: chromium trusts exactly that key (--ignore-certificate-errors-spki-list),
// the way the CLI trusts the platform's CA, and no other certificate.
func serverSPKI(t *testing.T, p *proc) string {
	t.Helper()
	ca, err := os.ReadFile(p.caFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	conn, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// page is one headless chromium with a profile of its own: one user's
// browser.
type page struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots string
	who   string
}

func openBrowser(t *testing.T, p *proc, who string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", serverSPKI(t, p)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	// What the page says on its console (the console's code warns when a
	// watch breaks and it resumes), shown in the test's log at the end.
	var mu sync.Mutex
	var said []string
	events := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	go func() {
		for ev, err := range events {
			if err != nil {
				return
			}
			var args []string
			for _, a := range ev.Args {
				args = append(args, strings.Trim(string(a.Value), `"`))
			}
			mu.Lock()
			said = append(said, string(ev.Type)+": "+strings.Join(args, " "))
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(said) > 0 {
			t.Logf("%s's browser console:\n%s", who, strings.Join(said, "\n"))
		}
	})
	return &page{t: t, ctx: ctx, base: p.url(), shots: consoleArtifacts(t), who: who}
}

// do runs steps; a step that fails fails the test with a screenshot. The
// timeout only bounds a hang.
func (b *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute*loadFactor)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.shot("failed-" + b.who)
		b.t.Fatalf("%s (as %s): %v", what, b.who, err)
	}
}

// until waits for a JavaScript condition on the page; it watches the
// page's DOM (the page itself updates from the API's watch), it does not
// reload anything.
func (b *page) until(what, expr string) {
	b.t.Helper()
	b.do("waiting until "+what, chromedp.Steps(chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(0))))
}

func eval[T any](b *page, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute*loadFactor)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluating %s (as %s): %v", expr, b.who, err)
	}
	return v
}

// shot saves a screenshot of the whole page as NAME.png.
func (b *page) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	f := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(f, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", f)
}

// open goes to a console route (#/PROJECT/PAGE/...) without reloading.
func (b *page) open(route string) {
	b.t.Helper()
	b.do("opening "+route, chromedp.Steps(chromedp.Evaluate[chromedp.Void](fmt.Sprintf("location.hash = %q", route))))
}

// loadLogin loads the console's login form. Chromium aborts a load when
// the machine's network changes, which the other tests' bridges make it
// do (ERR_NETWORK_CHANGED, an error page that never shows the form), so
// the form gets a few tries.
func (b *page) loadLogin() {
	b.t.Helper()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
		err := chromedp.Do(ctx, chromedp.Navigate(b.base+"/console/"), chromedp.WaitVisible(chromedp.CSS("#login-user")))
		cancel()
		if err == nil {
			return
		}
		if attempt == 6 {
			b.shot("failed-" + b.who)
			b.t.Fatalf("the login form did not appear (as %s): %v", b.who, err)
		}
		b.t.Logf("loading the login form again: %v", err)
	}
}

// load opens the console at route in a new document, logged in already,
// with retries as loadLogin has.
func (b *page) load(route string) {
	b.t.Helper()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
		err := chromedp.Do(ctx, chromedp.Navigate(b.base+"/console/"+route), chromedp.WaitVisible(chromedp.CSS("#user")))
		cancel()
		if err == nil {
			return
		}
		if attempt == 6 {
			b.shot("failed-" + b.who)
			b.t.Fatalf("the console did not load %s (as %s): %v", route, b.who, err)
		}
		b.t.Logf("loading %s again: %v", route, err)
	}
}

// login logs in through the console's form, as user.
//
// It tries again on a new load when the login does not go through:
// chromium aborts requests in flight when the machine's network changes
// (ERR_NETWORK_CHANGED), and other tests add and remove bridges all the
// time; on a fresh root carol's login POST was aborted once and the test
// waited for ever for a page that had shown the error.
func (b *page) login(user, password string) {
	b.t.Helper()
	b.loadLogin()
	if eval[bool](b, `document.title.includes("not built")`) {
		b.t.Fatal("the slipway binary serves the console's placeholder: build the pages first with `make build` (npm ci && npm run build in console/web)")
	}
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second*loadFactor)
		err := chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS("#login-user"), user),
			chromedp.SendKeys(chromedp.CSS("#login-password"), password),
			chromedp.Click(chromedp.CSS("#login-submit")),
			chromedp.WaitVisible(chromedp.CSS("#user")),
		)
		cancel()
		if err == nil {
			return
		}
		if attempt == 4 {
			b.shot("failed-" + b.who)
			b.t.Fatalf("logging in (as %s): %v", b.who, err)
		}
		b.t.Logf("logging in again (as %s): %v", b.who, err)
		// A new document: the login form again, or the console if the
		// last attempt's session was made after all.
		ctx, cancel = context.WithTimeout(b.ctx, 45*time.Second*loadFactor)
		err = chromedp.Do(ctx, chromedp.Navigate(b.base+"/console/"),
			chromedp.Poll[chromedp.Void](`!!document.querySelector('#login-user') || !!document.querySelector('#user')`, chromedp.WithPollingTimeout(0)))
		cancel()
		if err == nil && eval[bool](b, `!!document.querySelector('#user')`) {
			return
		}
	}
}

// mark sets a value on the page's window that a reload would lose.
func (b *page) mark() {
	b.do("marking the page", chromedp.Evaluate[chromedp.Void](`window.__slipwayNoReload = true`))
}

func (b *page) notReloaded(what string) {
	b.t.Helper()
	if !eval[bool](b, `window.__slipwayNoReload === true`) {
		b.t.Fatalf("%s: the page was reloaded", what)
	}
}

// postStatus makes a request from the page with the session's CSRF token,
// as the console's own code would, and returns the HTTP status.
func (b *page) postStatus(path string) int {
	b.t.Helper()
	return eval[int](b, fmt.Sprintf(`(async () => {
		const s = await (await fetch('/console/session')).json();
		const r = await fetch(%q, {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrfToken}, body: '{}'});
		return r.status;
	})()`, path))
}

func jsString(s string) string { b, _ := json.Marshal(s); return string(b) }

// TestConsoleBrowser drives the console in chromium against `slipway
// start` with its node agent on the package's dockerd and a supervised
// buildkitd: log in, a pushed image's tag history, a build's log growing
// live, a rollout completing on the page without a reload, approving a
// promotion; a view user gets no approve button and the API refuses the
// POST; a user of another project sees nothing of it.
func TestConsoleBrowser(t *testing.T) {
	chromiumPath(t)
	users := map[string]string{"alice": "alice-pw-1", "bob": "bob-pw-1", "carol": "carol-pw-1"}
	c := startCluster(t, "console", "--htpasswd", htpasswdFile(t, users), "--buildkitd", buildkitd(t))
	ctx := context.Background()
	for _, p := range []string{"prod", "other"} {
		if err := c.admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}}); err != nil {
			t.Fatal(err)
		}
	}
	bind := func(ns, role, user string) {
		t.Helper()
		rb := &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: role + "-" + user, Namespace: ns},
			RoleRef: api.RoleRef{Kind: "ClusterRole", Name: role}, Subjects: []api.Subject{{Kind: api.SubjectUser, Name: user}}}
		if err := c.admin.Create(ctx, api.RoleBindings, rb); err != nil {
			t.Fatal(err)
		}
	}
	bind("shop", "admin", "alice")
	bind("prod", "admin", "alice")
	bind("shop", "view", "bob")
	bind("prod", "view", "bob")
	bind("other", "admin", "carol")

	v1 := c.push("web:latest", httpdImage(t, "v1", 8080))
	c.apply(webConfig("web", 1, ""))
	c.waitRevision("web", 1, api.DeploymentComplete, 2*time.Minute)

	alice := openBrowser(t, c.p, "alice")
	alice.loadLogin() // (seen on a fresh root: a single load, aborted by a network change, failed the test)
	alice.shot("login")
	alice.login("alice", users["alice"])
	alice.open("#/shop/overview")
	alice.until("the overview shows web's pod", `!!document.querySelector('[data-service="web"] [data-pod]')`)
	alice.shot("overview")

	t.Run("rollout completes live", func(t *testing.T) {
		alice.t = t
		alice.open("#/shop/deployments/web")
		alice.until("revision 1 is complete", `(() => { const s = document.querySelector('#rollout-status'); return s && s.dataset.revision === '1' && s.dataset.state === 'complete'; })()`)
		alice.mark()
		c.push("web:latest", httpdImage(t, "v2", 8080))
		alice.until("revision 2 is complete", `(() => { const s = document.querySelector('#rollout-status'); return s && s.dataset.revision === '2' && s.dataset.state === 'complete'; })()`)
		alice.notReloaded("rollout")
		alice.shot("deployment")
		alice.open("#/shop/deployments")
		alice.until("the list shows web at revision 2", `(() => { const r = document.querySelector('[data-dc="web"]'); return !!r && r.children[1].textContent === '2'; })()`)
		alice.shot("deployments")
	})

	v2 := c.tagDigestOf("web:latest")
	t.Run("tag history", func(t *testing.T) {
		alice.t = t
		alice.open("#/shop/images")
		alice.until("the stream list shows web", `!!document.querySelector('[data-stream="web"]')`)
		alice.shot("images")
		alice.open("#/shop/images/web")
		alice.until("latest's history shows v2 then v1", fmt.Sprintf(`(() => {
			const rows = [...document.querySelectorAll('[data-tag="latest"] tbody tr')].map(r => r.dataset.image);
			return rows.length === 2 && rows[0] === %s && rows[1] === %s; })()`, jsString(v2), jsString(v1)))
		alice.until("alice, an admin, may roll back to v1", `document.querySelectorAll('[data-tag="latest"] tbody tr')[1].querySelector('button.rollback') !== null`)
		if n := eval[int](alice, `document.querySelectorAll('[data-tag="latest"] button.rollback').length`); n != 1 {
			t.Errorf("alice sees %d rollback buttons, want 1 (on the older entry)", n)
		}
		alice.shot("imagestream")
	})

	t.Run("build log live", func(t *testing.T) {
		alice.t = t
		c.push("base:1", busyboxImage(t))
		c.apply(`kind: BuildConfig
metadata: {name: slow}
spec:
  source:
    dockerfile: |
      FROM example.invalid/replaced-by-the-base
      RUN ["/bin/busybox", "sh", "-c", "for i in 1 2 3 4 5 6; do echo console-step-$i; /bin/busybox sleep 3; done"]
  strategy:
    type: Docker
    dockerStrategy:
      from: {kind: ImageStreamTag, name: "base:1"}
  output:
    to: {kind: ImageStreamTag, name: "slow:latest"}
`)
		out := c.cli.ok("start-build", "slow")
		m := regexp.MustCompile(`build/(\S+) started`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("start-build said %q", out)
		}
		alice.open("#/shop/builds/" + m[1])
		alice.mark()
		alice.until("the log shows the first step while the build runs", `(() => {
			const l = document.querySelector('#build-log'), p = document.querySelector('#build-phase');
			return l && p && p.dataset.phase === 'Running' && l.textContent.includes('console-step-1') && !l.textContent.includes('console-step-6'); })()`)
		alice.shot("build-running")
		alice.until("the build completes with the whole log", `(() => {
			const l = document.querySelector('#build-log'), p = document.querySelector('#build-phase');
			return l && p && p.dataset.phase === 'Complete' && l.textContent.includes('console-step-6'); })()`)
		alice.notReloaded("build log")
		alice.shot("build")
		alice.open("#/shop/builds")
		alice.until("the build list shows the build", fmt.Sprintf(`!!document.querySelector('[data-build=%s]')`, jsString(m[1])))
		alice.shot("builds")
	})

	c.apply(`kind: Pipeline
metadata: {name: web}
spec:
  stream: web
  stages:
  - {name: dev, project: shop, tag: latest}
  - {name: prod, project: prod, tag: prod, requireApproval: true}
`)
	out := c.cli.ok("promote", "web", "--to", "prod")
	m := regexp.MustCompile(`promotion/(\S+) created`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("promote said %q", out)
	}
	promo := m[1]
	approvePath := "/console/api/apis/slipway.dev/v1/namespaces/shop/promotions/" + promo + "/approve"
	row := fmt.Sprintf(`document.querySelector('tr[data-promotion=%s]')`, jsString(promo))

	t.Run("view user cannot approve", func(t *testing.T) {
		bob := openBrowser(t, c.p, "bob")
		bob.login("bob", users["bob"])
		bob.open("#/shop/pipelines")
		bob.until("the promotion is listed and bob's right to approve is known", fmt.Sprintf(`(() => { const r = %s; return r && !!r.querySelector('.approve-denied'); })()`, row))
		if n := eval[int](bob, `document.querySelectorAll('button.approve').length`); n != 0 {
			t.Errorf("bob, a viewer, sees %d approve buttons, want none", n)
		}
		bob.shot("pipelines-viewer")
		if code := bob.postStatus(approvePath); code != 403 {
			t.Errorf("bob's POST %s = %d, want 403", approvePath, code)
		}
		if p := c.promotion(promo); len(p.Status.Approvals) != 0 || p.Status.Phase == api.PromotionComplete {
			t.Errorf("after bob's refused approve, the promotion is %s with approvals %v", p.Status.Phase, p.Status.Approvals)
		}
	})

	t.Run("approve a promotion", func(t *testing.T) {
		alice.t = t
		alice.open("#/shop/pipelines")
		alice.until("the promotion waits for approval with an approve button", fmt.Sprintf(`(() => { const r = %s; return r && r.dataset.phase === 'Pending' && !!r.querySelector('button.approve'); })()`, row))
		alice.shot("pipelines-pending")
		alice.mark()
		alice.do("approving", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-promotion=%s] button.approve`, jsString(promo)))))
		alice.until("the promotion completes and prod holds v2", fmt.Sprintf(`(() => {
			const r = %s, s = document.querySelector('[data-stage="prod"]');
			return r && r.dataset.phase === 'Complete' && r.textContent.includes('alice') && s && s.dataset.digest === %s; })()`, row, jsString(v2)))
		alice.notReloaded("approval")
		alice.shot("pipelines")
	})

	var sigDigest, sbomDigest string
	t.Run("lineage", func(t *testing.T) {
		alice.t = t
		// v2 signed with shop's key: the page shows the signature and the
		// scan's SBOM, each a referrer of v2, by digest.
		c.signingKey()
		c.cli.ok("sign", "web@"+v2)
		waitFor(t, time.Minute, "v2's signature and SBOM among its referrers", func() (bool, string) {
			idx, err := remote.Referrers(mustRef(t, c.ref("web@"+v2)).(name.Digest), c.auth)
			if err != nil {
				return false, err.Error()
			}
			m, err := idx.IndexManifest()
			if err != nil {
				return false, err.Error()
			}
			for _, d := range m.Manifests {
				switch {
				case strings.Contains(d.ArtifactType, "cosign.artifact.sig"):
					sigDigest = d.Digest.String()
				case strings.Contains(d.ArtifactType, "cyclonedx"):
					sbomDigest = d.Digest.String()
				}
			}
			return sigDigest != "" && sbomDigest != "", fmt.Sprintf("referrers %+v", m.Manifests)
		})
		alice.open("#/shop/lineage/web:latest")
		alice.until("v2's lineage shows the pod that runs it, its signature and its SBOM by digest", fmt.Sprintf(`(() => {
			const g = document.querySelector('[data-image=%s]');
			return !!g && !!g.querySelector('[data-kind="Pod"]') && !!g.querySelector('[data-kind="Build"], [data-kind="Scan"]') &&
				!!g.querySelector('[data-kind="Signature"][data-digest=%s]') && !!g.querySelector('[data-kind="SBOM"][data-digest=%s]') &&
				g.textContent.includes(%s) && g.textContent.includes(%s); })()`, jsString(v2), jsString(sigDigest), jsString(sbomDigest), jsString(sigDigest), jsString(sbomDigest)))
		if eval[bool](alice, `!!document.querySelector('#lineage .node.hidden')`) {
			t.Errorf("alice, shop's admin, was shown a hop as not visible: %s", eval[string](alice, `document.querySelector('#lineage').textContent`))
		}
		alice.shot("lineage")
		// Bob, a viewer, traces it too: the same signature, with his rights.
		bob := openBrowser(t, c.p, "bob")
		bob.login("bob", users["bob"])
		bob.open("#/shop/lineage/web@" + v2)
		bob.until("bob's trace shows v2's signature", fmt.Sprintf(`!!document.querySelector('[data-image=%s] [data-kind="Signature"][data-digest=%s]')`, jsString(v2), jsString(sigDigest)))
	})

	t.Run("vulnerabilities page", func(t *testing.T) {
		alice.t = t
		// An advisory for the openssl a running pod's image has.
		out := c.cli.ok("vulndb", "import", writeOSVDir(t, debAdvisory("DSA-9001-1", "openssl", "3.0.13-1~deb12u1", nil)))
		if !strings.Contains(out, "sha256:") {
			t.Fatalf("vulndb import said %q", out)
		}
		alice.open("#/vulnerabilities")
		d := c.push("vuln:latest", debianImage(t, "console", [2]string{"openssl", "3.0.11-1~deb12u1"}))
		c.apply(fmt.Sprintf("kind: Pod\nmetadata: {name: vuln}\nspec:\n  containers:\n  - {name: app, image: %q}\n", c.ref("vuln@"+d)))
		alice.until("shop lists DSA-9001-1 with vuln:latest and the pod that runs it", `(() => {
			const r = document.querySelector('[data-project="shop"] tr[data-finding="DSA-9001-1"]');
			return !!r && r.textContent.includes('vuln:latest') && r.textContent.includes('vuln') && [...r.querySelectorAll('td')].pop().textContent.trim() === 'vuln'; })()`)
		alice.until("both of alice's projects are listed", `!!document.querySelector('[data-project="shop"]') && !!document.querySelector('[data-project="prod"]')`)
		if eval[bool](alice, `!!document.querySelector('[data-project="other"]')`) {
			t.Error("alice's vulnerabilities page shows project other")
		}
		alice.shot("vulnerabilities")
	})

	// alice in 42 projects: the page follows them all with three watches
	// (one per resource, across projects) and shows a finding pushed into
	// the last project without a reload. A per-project page held three
	// watches each and stopped at 15 projects (64 watches a user).
	many := make([]string, 40)
	t.Run("vulnerabilities of 42 projects live", func(t *testing.T) {
		alice.t = t
		for i := range many {
			many[i] = fmt.Sprintf("many-%02d", i)
			if err := c.admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: many[i]}}); err != nil {
				t.Fatal(err)
			}
			bind(many[i], "admin", "alice")
		}
		alice.load("#/vulnerabilities") // a new document: the project list is read again
		alice.until("42 projects are listed and followed", `(() => {
			const s = document.querySelectorAll('#vulnerabilities section[data-project]');
			return s.length === 42 && [...s].every(x => x.dataset.synced === 'true'); })()`)
		alice.mark()
		last := many[len(many)-1]
		ref := c.p.registry + "/" + last + "/vuln:latest"
		if err := remote.Write(mustRef(t, ref), debianImage(t, "many", [2]string{"openssl", "3.0.11-1~deb12u1"}), c.auth); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		alice.until(last+" lists DSA-9001-1 with vuln:latest", fmt.Sprintf(`(() => {
			const r = document.querySelector('[data-project=%s] tr[data-finding="DSA-9001-1"]');
			return !!r && r.textContent.includes('vuln:latest'); })()`, jsString(last)))
		alice.notReloaded("a finding in the 42nd project")
		if msg := eval[string](alice, `[...document.querySelectorAll('#vulnerabilities .error')].map(e => e.textContent).join('; ')`); msg != "" {
			t.Errorf("the vulnerabilities page shows errors: %s", msg)
		}
		alice.shot("vulnerabilities-many")
	})

	t.Run("roll a tag back from the page", func(t *testing.T) {
		alice.t = t
		alice.open("#/shop/images/web")
		row := `document.querySelectorAll('[data-tag="latest"] tbody tr')`
		alice.until("v1's entry has a rollback button", fmt.Sprintf(`(() => { const r = %s; return r.length === 2 && r[1].dataset.image === %s && !!r[1].querySelector('button.rollback'); })()`, row, jsString(v1)))
		alice.mark()
		alice.do("rolling back", chromedp.Click(chromedp.CSS(`[data-tag="latest"] tbody tr:nth-child(2) button.rollback`)))
		alice.until("latest points at v1 again, rolled back by alice", fmt.Sprintf(`(() => { const r = %s; return r.length === 3 && r[0].dataset.image === %s && r[0].textContent.includes('alice'); })()`, row, jsString(v1)))
		alice.notReloaded("rollback")
		alice.shot("imagestream-rollback")
		if got := c.tagDigestOf("web:latest"); got != v1 {
			t.Errorf("after the rollback web:latest = %s, want v1 %s", got, v1)
		}
	})

	t.Run("other project sees nothing", func(t *testing.T) {
		carol := openBrowser(t, c.p, "carol")
		carol.login("carol", users["carol"])
		carol.until("carol's project list is loaded", `document.querySelectorAll('#project option:not([disabled])').length > 0`)
		if got := eval[[]string](carol, `[...document.querySelectorAll('#project option:not([disabled])')].map(o => o.value)`); len(got) != 1 || got[0] != "other" {
			t.Errorf("carol's projects = %v, want [other]", got)
		}
		for _, route := range []string{"#/shop/overview", "#/shop/pipelines", "#/prod/images"} {
			carol.open(route)
			carol.until(route+" says the project is not visible", `!!document.querySelector('#no-project')`)
		}
		carol.shot("other-project")
		code := eval[int](carol, `fetch('/console/api/apis/slipway.dev/v1/namespaces/shop/imagestreams').then(r => r.status)`)
		if code != 403 {
			t.Errorf("carol's GET of shop's image streams = %d, want 403", code)
		}
		if code := carol.postStatus(approvePath); code != 403 {
			t.Errorf("carol's approve = %d, want 403", code)
		}
		lin := eval[string](carol, `fetch('/console/lineage?namespace=shop&target=web:latest').then(async r => r.status + ' ' + await r.text())`)
		if !strings.HasPrefix(lin, "403 ") || strings.Contains(lin, "sha256:") {
			t.Errorf("carol's trace of shop's web:latest = %s, want 403 and no digest", lin)
		}
		carol.open("#/shop/lineage/web:latest")
		carol.until("shop's lineage is not shown to carol", `!!document.querySelector('#no-project')`)
		carol.open("#/vulnerabilities")
		carol.until("carol's vulnerabilities page follows her project", `(() => { const s = document.querySelector('[data-project="other"]'); return !!s && s.dataset.synced === 'true'; })()`)
		// A finding in carol's project arrives live; by then her watches
		// are past every finding of alice's projects, none of which shows.
		ref := c.p.registry + "/other/vuln:latest"
		if err := remote.Write(mustRef(t, ref), debianImage(t, "carol", [2]string{"openssl", "3.0.11-1~deb12u1"}), c.auth); err != nil {
			t.Fatalf("push %s: %v", ref, err)
		}
		carol.until("other lists DSA-9001-1", `!!document.querySelector('[data-project="other"] tr[data-finding="DSA-9001-1"]')`)
		if got := eval[[]string](carol, `[...document.querySelectorAll('#vulnerabilities [data-project]')].map(s => s.dataset.project)`); len(got) != 1 || got[0] != "other" {
			t.Errorf("carol's vulnerabilities page shows the projects %v, want [other]", got)
		}
		if n := eval[int](carol, `document.querySelectorAll('#vulnerabilities tr[data-finding]').length`); n != 1 {
			t.Errorf("carol's vulnerabilities page shows %d findings, want 1 (other's)", n)
		}
		carol.shot("vulnerabilities-other")
	})
}

// signingKey creates the test project's default SigningKey and waits
// until the server has made its key.
func (c *cluster) signingKey() {
	c.t.Helper()
	c.apply("kind: SigningKey\nmetadata: {name: default}\n")
	waitFor(c.t, time.Minute, "the project's signing key", func() (bool, string) {
		o, err := c.admin.Get(context.Background(), api.SigningKeys, c.ns, "default")
		if err != nil {
			return false, err.Error()
		}
		return o.(*api.SigningKey).Fingerprint != "", "no fingerprint yet"
	})
}

// tagDigestOf is what the test project's repoTag points at now.
func (c *cluster) tagDigestOf(repoTag string) string {
	c.t.Helper()
	stream, tag, _ := strings.Cut(repoTag, ":")
	o, err := c.admin.Get(context.Background(), api.ImageStreams, c.ns, stream)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, t := range o.(*api.ImageStream).Status.Tags {
		if t.Tag == tag && len(t.Items) > 0 {
			return t.Items[0].Image
		}
	}
	c.t.Fatalf("%s has no image", repoTag)
	return ""
}

// promotion reads a promotion of the test project as admin.
func (c *cluster) promotion(name string) *api.Promotion {
	c.t.Helper()
	o, err := c.admin.Get(context.Background(), api.Promotions, c.ns, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return o.(*api.Promotion)
}
