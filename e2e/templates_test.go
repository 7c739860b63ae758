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

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
)

// shopTemplate makes an image stream, a service, a build config whose
// webhook secret is generated, and a deployment config whose replicas are
// an int parameter; the deployment config starts on a config change, so
// its revisions and pods exist for delete app to remove.
const shopTemplate = `apiVersion: slipway.dev/v1
kind: Template
metadata:
  name: shop
message: "${NAME} is ready with ${REPLICAS} replicas"
labels:
  template: shop
parameters:
- name: NAME
  required: true
- name: REPLICAS
  type: int
  value: "1"
  min: 1
  max: 5
- name: WEBHOOK_SECRET
  generate: expression
  from: "[a-zA-Z0-9]{24}"
objects:
- kind: ImageStream
  metadata: {name: "${NAME}"}
- kind: Service
  metadata: {name: "${NAME}"}
  spec:
    selector: {app: "${NAME}"}
    ports: [{port: 80, targetPort: 8080}]
- kind: BuildConfig
  metadata: {name: "${NAME}"}
  spec:
    source: {dockerfile: "FROM scratch\n"}
    strategy: {type: Docker}
    output: {to: {kind: ImageStreamTag, name: "${NAME}:latest"}}
    triggers:
    - type: Generic
      secret: "${WEBHOOK_SECRET}"
- kind: DeploymentConfig
  metadata: {name: "${NAME}"}
  spec:
    replicas: "${{REPLICAS}}"
    selector: {app: "${NAME}"}
    template:
      metadata: {labels: {app: "${NAME}"}}
      spec:
        containers:
        - name: web
          image: registry.example/shop/web:1
    triggers:
    - type: ConfigChange
`

// TestTemplatesNewApp instantiates a template with new-app as a project
// admin, runs it again (nothing changes, the generated secret is kept),
// changes a parameter, shows that bad parameters change nothing and that a
// viewer cannot read the generated values, and deletes the app: nothing it
// made is left, revisions and pods included.
func TestTemplatesNewApp(t *testing.T) {
	dir, addr := t.TempDir(), freePort(t)
	users := htpasswdFile(t, map[string]string{"alice": "alicepw", "val": "valpw"})
	p := startServer(t, dir, addr, "--no-node", "--htpasswd", users)
	admin := p.admin(t)
	ctx := context.Background()

	alice := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	alice.ok("login", p.url(), "-u", "alice", "-p", "alicepw", "--certificate-authority", p.caFile())
	alice.ok("new-project", "tmpl")
	val := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	val.ok("login", p.url(), "-u", "val", "-p", "valpw", "--certificate-authority", p.caFile())
	if err := admin.Create(ctx, api.RoleBindings, &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: "val-view", Namespace: "tmpl"},
		RoleRef: api.RoleRef{Kind: "ClusterRole", Name: "view"}, Subjects: []api.Subject{{Kind: "User", Name: "val"}}}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "shop.yaml")
	if err := os.WriteFile(file, []byte(shopTemplate), 0o644); err != nil {
		t.Fatal(err)
	}
	alice.ok("apply", "-f", file, "-n", "tmpl")

	// process prints the objects and creates nothing.
	out := alice.ok("process", "shop", "-n", "tmpl", "-p", "NAME=shop", "-p", "REPLICAS=2")
	if !strings.Contains(out, "replicas: 2\n") || !strings.Contains(out, "name: shop\n") {
		t.Errorf("process printed:\n%s\nwant the deployment config with replicas: 2 (a number)", out)
	}
	if got := appObjects(t, admin, "tmpl", "shop"); len(got) != 0 {
		t.Fatalf("process created %v; want nothing", got)
	}

	// Bad parameters: every problem is named, and nothing is made.
	_, errOut, err := alice.run("", "new-app", "shop", "-n", "tmpl", "-p", "REPLICAS=9", "-p", "COLOUR=red")
	if err == nil || !strings.Contains(errOut, "NAME is required") || !strings.Contains(errOut, "above the maximum 5") || !strings.Contains(errOut, "no parameter COLOUR") {
		t.Errorf("new-app with bad parameters: err=%v stderr=%q; want all three problems named", err, errOut)
	}
	if got := appObjects(t, admin, "tmpl", "shop"); len(got) != 0 {
		t.Fatalf("a refused new-app left %v", got)
	}

	out = alice.ok("new-app", "shop", "-n", "tmpl", "-p", "NAME=shop")
	for _, want := range []string{"imagestream/shop created", "service/shop created", "buildconfig/shop created", "deploymentconfig/shop created", "Generated parameters (kept in secret/app-record-shop): WEBHOOK_SECRET", "shop is ready with 1 replicas"} {
		if !strings.Contains(out, want) {
			t.Errorf("new-app printed:\n%s\nwant a line %q", out, want)
		}
	}
	secret := webhookSecret(t, admin, "tmpl", "shop")
	if !regexp.MustCompile(`^[a-zA-Z0-9]{24}$`).MatchString(secret) {
		t.Errorf("the build config's webhook secret = %q; want 24 generated characters", secret)
	}
	rec := getSecret(t, admin, "tmpl", "app-record-shop")
	if string(rec.Data["WEBHOOK_SECRET"]) != secret {
		t.Errorf("the app record keeps WEBHOOK_SECRET=%q; the build config has %q", rec.Data["WEBHOOK_SECRET"], secret)
	}
	// A viewer of the project sees the app but not its generated values.
	val.ok("get", "buildconfigs", "-n", "tmpl")
	val.fails("cannot get secrets app-record-shop", "get", "secret", "app-record-shop", "-n", "tmpl", "-o", "json")

	// The deployment config made a revision and its pod (Pending: no node).
	waitFor(t, time.Minute, "the first revision's pod", func() (bool, string) {
		pods, _, err := admin.List(ctx, api.Pods, "tmpl", client.ListOptions{LabelSelector: api.DeploymentConfigLabel + "=shop"})
		return err == nil && len(pods) == 1, fmt.Sprintf("%d pods, %v", len(pods), err)
	})

	// Again with the same parameters: nothing changes.
	out = alice.ok("new-app", "shop", "-n", "tmpl", "-p", "NAME=shop")
	for _, kind := range []string{"imagestream", "service", "buildconfig", "deploymentconfig"} {
		if !strings.Contains(out, kind+"/shop unchanged") {
			t.Errorf("second new-app printed:\n%s\nwant %s/shop unchanged", out, kind)
		}
	}
	if again := getSecret(t, admin, "tmpl", "app-record-shop"); again.ResourceVersion != rec.ResourceVersion {
		t.Errorf("the second run rewrote the app record (resourceVersion %s → %s)", rec.ResourceVersion, again.ResourceVersion)
	}
	if s := webhookSecret(t, admin, "tmpl", "shop"); s != secret {
		t.Errorf("the second run changed the generated webhook secret %q → %q", secret, s)
	}

	// Another parameter value updates in place, as a number.
	out = alice.ok("new-app", "shop", "-n", "tmpl", "-p", "NAME=shop", "-p", "REPLICAS=3")
	if !strings.Contains(out, "deploymentconfig/shop configured") || !strings.Contains(out, "service/shop unchanged") {
		t.Errorf("new-app with REPLICAS=3 printed:\n%s\nwant the deployment config configured and the rest unchanged", out)
	}
	o, err := admin.Get(ctx, api.DeploymentConfigs, "tmpl", "shop")
	if err != nil || o.(*api.DeploymentConfig).Spec.Replicas != 3 {
		t.Errorf("deploymentconfig/shop replicas = %v, %v; want 3", o, err)
	}

	// delete app removes what the app made, and what that made.
	out = alice.ok("delete", "app", "shop", "-n", "tmpl")
	if !strings.Contains(out, "secret/app-record-shop deleted") {
		t.Errorf("delete app printed:\n%s", out)
	}
	waitFor(t, time.Minute, "nothing of the app left", func() (bool, string) {
		left := appObjects(t, admin, "tmpl", "shop")
		return len(left) == 0, strings.Join(left, "\n")
	})
	if _, err := admin.Get(ctx, api.Templates, "tmpl", "shop"); err != nil {
		t.Errorf("delete app removed the template itself: %v", err)
	}
	alice.fails(`no app "shop" in project tmpl`, "delete", "app", "shop", "-n", "tmpl")
}

// appObjects lists what is left in ns of an app: objects labelled
// app=NAME, and the revisions, pods and builds of its configs.
func appObjects(t *testing.T, c *client.Client, ns, app string) []string {
	t.Helper()
	var left []string
	for _, q := range []struct {
		res *api.Resource
		sel string
	}{
		{api.ImageStreams, "app=" + app}, {api.Services, "app=" + app}, {api.BuildConfigs, "app=" + app},
		{api.DeploymentConfigs, "app=" + app}, {api.Secrets, "app=" + app}, {api.Routes, "app=" + app},
		{api.ReplicationControllers, api.DeploymentConfigLabel + "=" + app}, {api.Pods, api.DeploymentConfigLabel + "=" + app},
		{api.Builds, builders.BuildConfigLabel + "=" + app},
	} {
		items, _, err := c.List(context.Background(), q.res, ns, client.ListOptions{LabelSelector: q.sel})
		if err != nil {
			t.Fatalf("list %s: %v", q.res.Name, err)
		}
		for _, o := range items {
			left = append(left, q.res.Name+"/"+o.GetObjectMeta().Name)
		}
	}
	return left
}

func webhookSecret(t *testing.T, c *client.Client, ns, name string) string {
	t.Helper()
	o, err := c.Get(context.Background(), api.BuildConfigs, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range o.(*api.BuildConfig).Spec.Triggers {
		if tr.Type == "Generic" {
			return tr.Secret
		}
	}
	b, _ := json.Marshal(o)
	t.Fatalf("buildconfig/%s has no Generic trigger: %s", name, b)
	return ""
}

func getSecret(t *testing.T, c *client.Client, ns, name string) *api.Secret {
	t.Helper()
	o, err := c.Get(context.Background(), api.Secrets, ns, name)
	if err != nil {
		t.Fatalf("secret %s: %v", name, err)
	}
	return o.(*api.Secret)
}
