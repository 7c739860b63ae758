package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/templates"
)

// An application is what one `slipway new-app NAME` made. Its record is a
// Secret (which the view role cannot read) holding the parameter values
// that were generated, so that running new-app again reuses them rather
// than making new passwords, and listing every object the app has ever
// made, so that `slipway delete app` removes exactly those.
const (
	// AppLabel is on every object of an application, as oc new-app does.
	AppLabel = "app"
	// appRecordLabel marks the record Secret.
	appRecordLabel = "slipway.dev/app-record"
	// appObjectsAnnotation lists the record's objects, "kind/name", as JSON.
	appObjectsAnnotation = "slipway.dev/app-objects"
	// appTemplateAnnotation names the template the app came from.
	appTemplateAnnotation = "slipway.dev/app-template"
)

func appRecordName(app string) string { return "app-record-" + app }

// appRecord is an application's record, read from its Secret.
type appRecord struct {
	secret  *api.Secret
	objects []string // kind/name
}

func readAppRecord(ctx context.Context, cl *client.Client, ns, app string) (*appRecord, error) {
	o, err := cl.Get(ctx, api.Secrets, ns, appRecordName(app))
	if api.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := o.(*api.Secret)
	if s.Labels[appRecordLabel] != "true" || s.Labels[AppLabel] != app {
		return nil, fmt.Errorf("secret %s exists but is not the record of app %s; remove or rename it", s.Name, app)
	}
	r := &appRecord{secret: s}
	if a := s.Annotations[appObjectsAnnotation]; a != "" {
		if err := json.Unmarshal([]byte(a), &r.objects); err != nil {
			return nil, fmt.Errorf("secret %s: annotation %s is not a JSON list: %v", s.Name, appObjectsAnnotation, err)
		}
	}
	return r, nil
}

func validAppName(app string) error {
	if msgs := validation.IsDNS1123Label(app); len(msgs) > 0 || len(appRecordName(app)) > 63 {
		return usagef("%q is not an app name: use at most %d lower-case letters, digits and -, starting with a letter (--name NAME)", app, 63-len(appRecordName("")))
	}
	return nil
}

func newAppCmd() *cobra.Command {
	var tf templateFlags
	var sf sourceFlags
	var name string
	c := &cobra.Command{
		Use:   "new-app (TEMPLATE | -f TEMPLATE_FILE | DIR | GIT_URL) [--name APP] [-p NAME=VALUE]...",
		Short: "Create an application from a template or from source, labelled app=APP",
		Long: `Create every object of a template in the current project, with the label
app=APP (APP is --name, or the template's name). The parameter values that
were generated are kept in the app's record (the Secret app-record-APP, which
view users cannot read), so running new-app again keeps them: a second run
with the same parameters changes nothing, and one with other parameters
updates the objects in place. 'slipway delete app APP' removes everything the
app made.

Every parameter and every object is checked before anything is created.

From source (a directory, written with a / as in ./web, or an http(s) git
URL with an optional #REF): new-app makes an image stream APP, a build
config APP that builds the source into APP:latest, a deployment config APP
that rolls out every image of APP:latest, and a service APP when the
Dockerfile EXPOSEs ports (APP is --name, or the directory's or repository's
name). A Dockerfile means the Docker strategy, and a FROM that names an
image stream tag of the platform (NAME:TAG, or PROJECT/NAME:TAG) is built
on it; without a Dockerfile, name a Source-to-Image builder with
--strategy source --image-stream PROJECT/BUILDER:TAG (its service takes
the ports the builder's io.openshift.expose-services label names). The
build config has
a Generic webhook trigger whose generated secret is kept in the Secret
APP-webhook and the app's record.

A directory that is a clone with an http(s) origin is built from that
origin, at its current branch (push first); the build config's ConfigChange
trigger starts the first build. Any other directory is uploaded, as
start-build --from-dir does: new-app uploads it and starts a build when it
makes the app (when the build config has no build yet). Running new-app
again changes nothing and starts no build, even if the directory changed:
give --rebuild to upload it again and start a build (for a git source,
--rebuild starts a build of the branch). --expose --hostname HOST also
makes a route APP to the service at HOST, served by the edge router.`,
		Example: `  slipway new-app shop -p NAME=shop
  slipway new-app -f shop-template.yaml --name shop-canary -p REPLICAS=1
  slipway new-app ./web                        # a directory with a Dockerfile
  slipway new-app ./web --rebuild              # upload it again and build
  slipway new-app ./web --expose --hostname web.apps.example.com   # and a route
  slipway new-app https://git.example/shop/api.git#v2 --context-dir server
  slipway new-app ./site --strategy source --image-stream openshift/nginx:1.24
  slipway delete app shop`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			fromSource := len(args) == 1 && isSourceArg(args[0])
			if !fromSource {
				for _, f := range []string{"context-dir", "strategy", "image-stream", "rebuild", "expose", "hostname"} {
					if c.Flags().Changed(f) {
						return usagef("--%s is for an app from source: give a directory (./DIR) or a git URL", f)
					}
				}
			}
			if fromSource {
				for _, f := range []string{"filename", "param", "param-file", "labels"} {
					if c.Flags().Changed(f) {
						return usagef("--%s is for an app from a template; an app from source takes --name, --context-dir, --strategy, --image-stream, --rebuild, --expose and --hostname", f)
					}
				}
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			if fromSource {
				return newAppFromSource(ctx, cl, ns, args[0], name, sf, c.OutOrStdout(), c.ErrOrStderr())
			}
			t, err := tf.loadTemplate(ctx, cl, ns, args, c.InOrStdin())
			if err != nil {
				return err
			}
			app := name
			if app == "" {
				app = t.Name
			}
			if err := validAppName(app); err != nil {
				return err
			}
			vals, err := tf.values()
			if err != nil {
				return err
			}
			labels, err := tf.labelMap()
			if err != nil {
				return err
			}
			labels[AppLabel] = app
			rec, err := readAppRecord(ctx, cl, ns, app)
			if err != nil {
				return err
			}
			remembered := map[string]string{}
			if rec != nil {
				for k, v := range rec.secret.Data {
					remembered[k] = string(v)
				}
			}
			res, err := templates.Process(t, templates.Options{Values: vals, Remembered: remembered, Labels: labels})
			if err != nil {
				return err
			}
			docs, err := processed(t, res, ns)
			if err != nil {
				return err
			}
			for _, d := range docs {
				if m := d.obj.GetObjectMeta(); m.Namespace != ns {
					return fmt.Errorf("%s: the template puts %s in project %s; new-app creates in %s only", d.from, d.ref(), m.Namespace, ns)
				}
			}
			out := c.OutOrStdout()
			// The record first: generated values are kept before anything
			// uses them, so a run that fails half-way and is run again
			// makes the same objects.
			data := map[string][]byte{}
			for _, p := range res.Generated {
				data[p] = []byte(res.Values[p])
			}
			if err := writeAppRecord(ctx, cl, ns, app, map[string]string{appTemplateAnnotation: t.Name}, rec, data, docs); err != nil {
				return fmt.Errorf("writing the app's record: %w", err)
			}
			for _, d := range docs {
				verb, err := applyOne(ctx, cl, d)
				if err != nil {
					return fmt.Errorf("%s: %w (run new-app again to finish; it keeps what was made)", d.ref(), err)
				}
				fmt.Fprintf(out, "%s %s\n", d.ref(), verb)
			}
			if len(res.Generated) > 0 {
				fmt.Fprintf(out, "Generated parameters (kept in secret/%s): %s\n", appRecordName(app), strings.Join(res.Generated, ", "))
			}
			if res.Message != "" {
				fmt.Fprintf(out, "\n%s\n", res.Message)
			}
			return nil
		},
	}
	tf.add(c)
	c.Flags().StringVar(&name, "name", "", "the app's name, put on every object as the label app=NAME (default: the template's, directory's or repository's name)")
	c.Flags().StringVar(&sf.contextDir, "context-dir", "", "from source: the directory inside the source to build")
	c.Flags().StringVar(&sf.strategy, "strategy", "", "from source: docker (needs a Dockerfile) or source (needs --image-stream); default: docker when there is a Dockerfile")
	c.Flags().StringVar(&sf.imageStream, "image-stream", "", "from source: the Source-to-Image builder, [PROJECT/]BUILDER[:TAG]; implies --strategy source")
	c.Flags().BoolVar(&sf.rebuild, "rebuild", false, "from source: start a build even though the app exists (a directory is uploaded again)")
	c.Flags().BoolVar(&sf.expose, "expose", false, "from source: also make a route APP to the app's service, at --hostname")
	c.Flags().StringVar(&sf.hostname, "hostname", "", "from source, with --expose: the route's host, such as web.apps.example.com")
	return c
}

// writeAppRecord creates or updates the app's record so that it holds the
// values generated now (data), what the app came from (origin: its
// template or its source, as annotations) and every object the app has
// made, now or before.
func writeAppRecord(ctx context.Context, cl *client.Client, ns, app string, origin map[string]string, rec *appRecord, data map[string][]byte, docs []document) error {
	var objects []string
	if rec != nil {
		objects = rec.objects
	}
	for _, d := range docs {
		if ref := d.ref(); !slices.Contains(objects, ref) {
			objects = append(objects, ref)
		}
	}
	list, _ := json.Marshal(objects)
	annotations := map[string]string{appObjectsAnnotation: string(list)}
	maps.Copy(annotations, origin)
	s := &api.Secret{
		ObjectMeta: api.ObjectMeta{
			Name: appRecordName(app), Namespace: ns,
			Labels:      map[string]string{AppLabel: app, appRecordLabel: "true"},
			Annotations: annotations,
		},
		Data: data,
	}
	if rec == nil {
		return cl.Create(ctx, api.Secrets, s)
	}
	if equalData(data, rec.secret.Data) && maps.Equal(annotations, rec.secret.Annotations) {
		return nil
	}
	s.ResourceVersion = rec.secret.ResourceVersion
	return cl.Update(ctx, api.Secrets, s)
}

func equalData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}

func deleteAppCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "app NAME",
		Short: "Delete everything an application made with new-app",
		Long: `Delete every object recorded in the app's record (secret app-record-NAME),
with what those objects made in turn (a deployment config's revisions and
pods, a build config's builds), and then the record. Objects that are
already gone are skipped.`,
		Example: "  slipway delete app shop",
		Args:    exactArgs(1, "an app name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			app := args[0]
			if err := validAppName(app); err != nil {
				return err
			}
			rec, err := readAppRecord(ctx, cl, ns, app)
			if err != nil {
				return err
			}
			if rec == nil {
				return fmt.Errorf("no app %q in project %s: apps are what `slipway new-app` made; see `slipway get secrets -l %s=true`", app, ns, appRecordLabel)
			}
			out := c.OutOrStdout()
			var errs []error
			for _, ref := range slices.Backward(rec.objects) {
				if err := deleteWithDependents(ctx, cl, out, ns, ref); err != nil {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%w (the app's record is kept; run delete app again)", errors.Join(errs...))
			}
			if _, err := cl.Delete(ctx, api.Secrets, ns, rec.secret.Name); err != nil && !api.IsNotFound(err) {
				return err
			}
			fmt.Fprintf(out, "secret/%s deleted\n", rec.secret.Name)
			return nil
		},
	}
}

// dependents are what a kind of object makes, found by label, which
// deleting it does not delete: OpenShift 3's client-side reapers did the
// same.
var dependents = map[string][]struct {
	res   *api.Resource
	label string
}{
	"DeploymentConfig":      {{api.ReplicationControllers, api.DeploymentConfigLabel}, {api.Pods, api.DeploymentConfigLabel}},
	"ReplicationController": {{api.Pods, api.ControllerLabel}},
	"BuildConfig":           {{api.Builds, builders.BuildConfigLabel}},
}

func deleteWithDependents(ctx context.Context, cl *client.Client, out io.Writer, ns, ref string) error {
	kind, name, _ := strings.Cut(ref, "/")
	var res *api.Resource
	for _, r := range api.Resources() {
		if strings.ToLower(r.Kind) == kind {
			res = r
		}
	}
	if res == nil {
		return fmt.Errorf("%s: kind %q is unknown", ref, kind)
	}
	if _, err := cl.Delete(ctx, res, ns, name); err != nil && !api.IsNotFound(err) {
		return fmt.Errorf("%s: %w", ref, err)
	} else if err == nil {
		fmt.Fprintf(out, "%s deleted\n", ref)
	}
	for _, dep := range dependents[res.Kind] {
		items, _, err := cl.List(ctx, dep.res, ns, client.ListOptions{LabelSelector: dep.label + "=" + name})
		if err != nil {
			return fmt.Errorf("%s: listing its %s: %w", ref, dep.res.Name, err)
		}
		for _, o := range items {
			sub := strings.ToLower(dep.res.Kind) + "/" + o.GetObjectMeta().Name
			if err := deleteWithDependents(ctx, cl, out, ns, sub); err != nil {
				return err
			}
		}
	}
	return nil
}
