package cmd

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
)

// An app from source is what `oc new-app DIR|URL` makes: an image stream
// APP, a build config APP that builds the source into APP:latest, a
// deployment config APP that follows APP:latest, and a service APP for the
// ports the Dockerfile exposes. It is recorded and applied as a template
// app is (writeAppRecord, applyOne), so running it again changes nothing
// and `slipway delete app` removes it.

const (
	// appSourceAnnotation on the record names the directory or git URL
	// the app was made from.
	appSourceAnnotation = "slipway.dev/app-source"
	// webhookSecretParam is the record's key for the generated webhook
	// secret.
	webhookSecretParam = "WEBHOOK_SECRET"
)

// sourceFlags are new-app's flags for an app from source.
type sourceFlags struct {
	contextDir  string
	strategy    string
	imageStream string
	rebuild     bool
	// expose makes a route APP for the service, at hostname.
	expose   bool
	hostname string
}

// isSourceArg says whether new-app's argument names source rather than a
// template: a URL, or a path (it has a / or is . or ..). A template name
// is a DNS label, so the two never overlap; a bare directory name is
// written ./DIR.
func isSourceArg(arg string) bool {
	return strings.Contains(arg, "://") || strings.Contains(arg, "/") || arg == "." || arg == ".."
}

// appSource is where an app's source is and what building it takes.
type appSource struct {
	desc       string // the directory or URL, for messages and the record
	localDir   string // set for a binary build: the directory to upload
	git        *api.GitBuildSource
	contextDir string
	dockerfile string // its text; "" when there is none
}

// findSource reads a directory or clones a git URL far enough to look for
// a Dockerfile.
func findSource(ctx context.Context, arg, contextDir string, progress io.Writer) (*appSource, func(), error) {
	cleanup := func() {}
	src := &appSource{desc: arg, contextDir: strings.Trim(path.Clean("/"+filepath.ToSlash(contextDir)), "/")}
	var dir string
	if strings.Contains(arg, "://") {
		uri, ref, _ := strings.Cut(arg, "#")
		if why := api.ValidGitURI(uri); why != "" {
			return nil, cleanup, usagef("%s: a git source %s", api.RedactURI(uri), why)
		}
		src.git = &api.GitBuildSource{URI: uri, Ref: ref}
		tmp, err := os.MkdirTemp("", "slipway-new-app-*")
		if err != nil {
			return nil, cleanup, err
		}
		cleanup = func() { os.RemoveAll(tmp) }
		fmt.Fprintf(progress, "Cloning %s to look for a Dockerfile\n", api.RedactURI(uri))
		if err := gitClone(ctx, uri, ref, tmp); err != nil {
			cleanup()
			return nil, func() {}, err
		}
		dir = tmp
	} else {
		st, err := os.Stat(arg)
		if err != nil {
			return nil, cleanup, usagef("%s: %v; new-app takes a template name, a directory (./DIR) or a git URL (https://HOST/REPO.git[#REF])", arg, err)
		}
		if !st.IsDir() {
			return nil, cleanup, usagef("%s is not a directory; new-app takes a template name, a directory (./DIR) or a git URL", arg)
		}
		dir = arg
		if uri, ref, top := gitOrigin(ctx, arg); uri != "" {
			// Built from the origin: the context is the directory's
			// place in the clone, and --context-dir is inside it.
			src.git = &api.GitBuildSource{URI: uri, Ref: ref}
			abs, err1 := filepath.Abs(arg)
			rel, err2 := filepath.Rel(top, abs)
			if err1 != nil || err2 != nil {
				return nil, cleanup, fmt.Errorf("%s: cannot place it in its clone %s", arg, top)
			}
			if src.contextDir = path.Clean(filepath.ToSlash(filepath.Join(rel, src.contextDir))); src.contextDir == "." {
				src.contextDir = ""
			}
			dir = top
			fmt.Fprintf(progress, "%s is a clone of %s: the build clones it from there (push your commits first)\n", arg, api.RedactURI(uri))
		} else {
			src.localDir = arg
		}
	}
	if src.localDir != "" && src.contextDir != "" {
		// The upload is the context directory itself.
		src.localDir = filepath.Join(src.localDir, filepath.FromSlash(src.contextDir))
		src.contextDir = ""
		dir = src.localDir
	}
	df := filepath.Join(dir, filepath.FromSlash(src.contextDir), "Dockerfile")
	data, err := os.ReadFile(df)
	switch {
	case err == nil:
		src.dockerfile = string(data)
	case !errors.Is(err, os.ErrNotExist):
		return nil, cleanup, fmt.Errorf("reading %s: %w", df, err)
	}
	return src, cleanup, nil
}

// gitOrigin is a local clone's origin, when it is an http(s) URL (the
// only kind the server clones), with its current branch and the clone's
// top directory. "" when dir is not a clone or has no such origin, or git
// is not installed.
func gitOrigin(ctx context.Context, dir string) (uri, ref, top string) {
	git := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...).Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	uri = git("remote", "get-url", "origin")
	if uri == "" || api.ValidGitURI(uri) != "" {
		return "", "", ""
	}
	if ref = git("rev-parse", "--abbrev-ref", "HEAD"); ref == "HEAD" {
		ref = git("rev-parse", "HEAD") // detached: the commit
	}
	return uri, ref, git("rev-parse", "--show-toplevel")
}

func gitClone(ctx context.Context, uri, ref, dir string) error {
	args := []string{"clone", "--quiet", "--depth", "1"}
	if ref != "" {
		args = append(args, "--branch", ref)
	}
	cmd := exec.CommandContext(ctx, "git", append(args, "--", uri, dir)...)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ref != "" {
		// A commit is not a branch: clone it all and check it out.
		os.RemoveAll(dir)
		full := exec.CommandContext(ctx, "git", "clone", "--quiet", "--", uri, dir)
		full.Env = cmd.Env
		if out2, err2 := full.CombinedOutput(); err2 == nil {
			co := exec.CommandContext(ctx, "git", "-C", dir, "checkout", "--quiet", ref)
			if out3, err3 := co.CombinedOutput(); err3 == nil {
				return nil
			} else {
				out = out3
			}
		} else {
			out = out2
		}
	}
	if errors.Is(err, exec.ErrNotFound) {
		return fmt.Errorf("new-app needs git to look at %s: install git", api.RedactURI(uri))
	}
	return fmt.Errorf("cloning %s: %v: %s", api.RedactURI(uri), err, strings.TrimSpace(string(out)))
}

// dockerfileInfo is what new-app reads from a Dockerfile: the image of
// its last FROM and the ports it exposes.
type dockerfileInfo struct {
	from  string
	ports []api.ContainerPort
}

var portRE = regexp.MustCompile(`^(\d+)(?:/(tcp|udp))?$`)

func parseDockerfile(text string) (dockerfileInfo, error) {
	var info dockerfileInfo
	stages := map[string]bool{}
	seen := map[string]bool{}
	hasFrom := false
	var logical []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		logical = append(logical, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		return info, fmt.Errorf("reading the Dockerfile: %w (a line over 4 MiB?)", err)
	}
	if cur.Len() > 0 {
		logical = append(logical, cur.String())
	}
	for _, l := range logical {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			hasFrom = true
			args := f[1:]
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				args = args[1:]
			}
			if len(args) == 0 {
				return info, errors.New("the Dockerfile has a FROM without an image")
			}
			info.from = args[0]
			if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
				stages[strings.ToLower(args[2])] = true
			}
			if stages[strings.ToLower(info.from)] {
				info.from = "" // a stage of this Dockerfile
			}
		case "EXPOSE":
			for _, p := range f[1:] {
				m := portRE.FindStringSubmatch(strings.ToLower(p))
				if m == nil {
					continue // a variable or a range: not a port we can name
				}
				n, err := strconv.Atoi(m[1])
				if err != nil || n < 1 || n > 65535 {
					return info, fmt.Errorf("the Dockerfile exposes port %s, which is not a port (1-65535)", p)
				}
				proto := strings.ToUpper(m[2])
				if proto == "" {
					proto = "TCP"
				}
				key := m[1] + "/" + proto
				if seen[key] {
					continue
				}
				seen[key] = true
				info.ports = append(info.ports, api.ContainerPort{
					Name: fmt.Sprintf("%d-%s", n, strings.ToLower(proto)), ContainerPort: int32(n), Protocol: proto,
				})
			}
		}
	}
	if !hasFrom {
		return info, errors.New("the Dockerfile has no FROM line")
	}
	return info, nil
}

// baseStream finds the image stream tag a Dockerfile's FROM names, as oc
// new-app does: NAME[:TAG] in the project, or PROJECT/NAME[:TAG]. nil when
// FROM names an image elsewhere (the build pulls it as written).
func baseStream(ctx context.Context, cl *client.Client, ns, from string) *api.ObjectReference {
	if from == "" || strings.EqualFold(from, "scratch") || strings.ContainsAny(from, "$@") {
		return nil
	}
	repo, tag, ok := strings.Cut(from, ":")
	if !ok {
		tag = "latest"
	}
	project, stream := ns, repo
	if p, s, ok := strings.Cut(repo, "/"); ok {
		if strings.ContainsAny(p, ".:") || p == "localhost" || strings.Contains(s, "/") {
			return nil // a registry host, or deeper than PROJECT/NAME
		}
		project, stream = p, s
	}
	o, err := cl.Get(ctx, api.ImageStreams, project, stream)
	if err != nil {
		return nil
	}
	if _, ok := imagestreams.Latest(o.(*api.ImageStream), tag); !ok {
		return nil
	}
	ref := &api.ObjectReference{Kind: "ImageStreamTag", Name: stream + ":" + tag}
	if project != ns {
		ref.Namespace = project
	}
	return ref
}

// exposeServicesLabel on an S2I builder image lists the ports its apps
// serve, as PORT:NAME[,PORT:NAME]..., as OpenShift's builder images do.
const exposeServicesLabel = "io.openshift.expose-services"

// builderPorts are the ports an S2I builder image's label names, read
// from the platform's record of the tag's image; none when the tag or its
// record cannot be read.
func builderPorts(ctx context.Context, cl *client.Client, ns string, from *api.ObjectReference) []api.ContainerPort {
	project := from.Namespace
	if project == "" {
		project = ns
	}
	stream, tag, _ := strings.Cut(from.Name, ":")
	o, err := cl.Get(ctx, api.ImageStreams, project, stream)
	if err != nil {
		return nil
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return nil
	}
	o, err = cl.Get(ctx, api.Images, project, ev.Image)
	if err != nil || o.(*api.Image).Config == nil {
		return nil
	}
	return exposedServices(o.(*api.Image).Config.Labels[exposeServicesLabel])
}

// exposedServices parses the label's PORT[/PROTO][:NAME] list.
func exposedServices(label string) []api.ContainerPort {
	var ports []api.ContainerPort
	seen := map[string]bool{}
	for _, item := range strings.Split(label, ",") {
		p, _, _ := strings.Cut(strings.TrimSpace(item), ":")
		m := portRE.FindStringSubmatch(strings.ToLower(p))
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil || n < 1 || n > 65535 {
			continue
		}
		proto := strings.ToUpper(m[2])
		if proto == "" {
			proto = "TCP"
		}
		if key := m[1] + "/" + proto; !seen[key] {
			seen[key] = true
			ports = append(ports, api.ContainerPort{Name: fmt.Sprintf("%d-%s", n, strings.ToLower(proto)), ContainerPort: int32(n), Protocol: proto})
		}
	}
	return ports
}

// builderStream parses --image-stream: [PROJECT/]NAME[:TAG].
func builderStream(ns, s string) (*api.ObjectReference, error) {
	repo, tag, ok := strings.Cut(s, ":")
	if !ok {
		tag = "latest"
	}
	project, stream, ok := strings.Cut(repo, "/")
	if !ok {
		project, stream = ns, repo
	}
	if stream == "" || project == "" || tag == "" || strings.Contains(stream, "/") {
		return nil, usagef("--image-stream %q: want [PROJECT/]NAME[:TAG], such as openshift/python:3.12", s)
	}
	ref := &api.ObjectReference{Kind: "ImageStreamTag", Name: stream + ":" + tag}
	if project != ns {
		ref.Namespace = project
	}
	return ref, nil
}

// defaultAppName is the directory's or repository's base name, made into a
// DNS label.
func defaultAppName(arg string) string {
	s, _, _ := strings.Cut(arg, "#")
	if !strings.Contains(s, "://") {
		if abs, err := filepath.Abs(s); err == nil {
			s = abs
		}
	}
	s = strings.TrimSuffix(strings.TrimRight(s, "/"), ".git")
	s = strings.ToLower(path.Base(filepath.ToSlash(s)))
	s = regexp.MustCompile(`[^a-z0-9-]+`).ReplaceAllString(s, "-")
	s = strings.Trim(s, "-")
	if s != "" && (s[0] < 'a' || s[0] > 'z') {
		s = "app-" + s
	}
	return s
}

// randomSecret is n letters and digits from crypto/rand.
func randomSecret(n int) (string, error) {
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(chars))))
		if err != nil {
			return "", err
		}
		b[i] = chars[k.Int64()]
	}
	return string(b), nil
}

// sourceObjects are the app's objects, in the order they are made.
func sourceObjects(app, ns string, src *appSource, strategy api.BuildStrategy, ports []api.ContainerPort, webhookSecret, host string) []api.Object {
	labels := func() map[string]string { return map[string]string{AppLabel: app} }
	meta := func(name string) api.ObjectMeta {
		return api.ObjectMeta{Name: name, Namespace: ns, Labels: labels()}
	}
	hookSecret := app + "-webhook"
	objs := []api.Object{
		&api.ImageStream{TypeMeta: api.TypeMeta{Kind: "ImageStream"}, ObjectMeta: meta(app)},
		&api.Secret{TypeMeta: api.TypeMeta{Kind: "Secret"}, ObjectMeta: meta(hookSecret),
			Data: map[string][]byte{api.WebHookSecretKey: []byte(webhookSecret)}},
	}
	bsrc := api.BuildSource{ContextDir: src.contextDir}
	triggers := []api.BuildTrigger{{Type: "Generic", SecretReference: &api.SecretLocalReference{Name: hookSecret}}}
	if src.git != nil {
		bsrc.Git = src.git
		triggers = append(triggers, api.BuildTrigger{Type: "ConfigChange"})
		if from := strategy.BaseImage(); from != nil && from.Kind == "ImageStreamTag" {
			triggers = append(triggers, api.BuildTrigger{Type: "ImageChange"})
		}
	} else {
		bsrc.Binary = &api.BinaryBuildSource{}
	}
	objs = append(objs, &api.BuildConfig{TypeMeta: api.TypeMeta{Kind: "BuildConfig"}, ObjectMeta: meta(app),
		Spec: api.BuildConfigSpec{
			Source: bsrc, Strategy: strategy, Triggers: triggers,
			Output: api.BuildOutput{To: &api.ObjectReference{Kind: "ImageStreamTag", Name: app + ":latest"}},
		}})
	sel := map[string]string{AppLabel: app, api.DeploymentConfigLabel: app}
	objs = append(objs, &api.DeploymentConfig{TypeMeta: api.TypeMeta{Kind: "DeploymentConfig"}, ObjectMeta: meta(app),
		Spec: api.DeploymentConfigSpec{
			Replicas: 1, Selector: sel,
			Template: &api.PodTemplateSpec{
				ObjectMeta: api.ObjectMeta{Labels: map[string]string{AppLabel: app, api.DeploymentConfigLabel: app}},
				Spec:       api.PodSpec{Containers: []api.Container{{Name: app, Image: app + ":latest", Ports: ports}}},
			},
			Triggers: []api.DeploymentTrigger{
				{Type: "ConfigChange"},
				{Type: "ImageChange", ImageChangeParams: &api.DeploymentTriggerImageChangeParams{
					Automatic: true, ContainerNames: []string{app},
					From: api.ObjectReference{Kind: "ImageStreamTag", Name: app + ":latest"},
				}},
			},
		}})
	if len(ports) > 0 {
		var sp []api.ServicePort
		for _, p := range ports {
			sp = append(sp, api.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.ContainerPort, TargetPort: p.ContainerPort})
		}
		objs = append(objs, &api.Service{TypeMeta: api.TypeMeta{Kind: "Service"}, ObjectMeta: meta(app),
			Spec: api.ServiceSpec{Selector: sel, Ports: sp}})
		if host != "" {
			objs = append(objs, &api.Route{TypeMeta: api.TypeMeta{Kind: "Route"}, ObjectMeta: meta(app),
				Spec: api.RouteSpec{Host: host, To: api.RouteTargetReference{Kind: "Service", Name: app}}})
		}
	}
	return objs
}

// sourceDocuments makes the objects into documents, each checked as an
// object of its kind, as processed does for a template's.
func sourceDocuments(objs []api.Object) ([]document, error) {
	var docs []document
	for _, o := range objs {
		j, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		ds, err := decodeDocuments(j, "new-app "+strings.ToLower(o.GetTypeMeta().Kind))
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if err := d.res.ValidateObject(d.obj); err != nil {
				return nil, fmt.Errorf("%s: %w", d.ref(), err)
			}
		}
		docs = append(docs, ds...)
	}
	return docs, nil
}

// newAppFromSource is `slipway new-app DIR|URL`.
func newAppFromSource(ctx context.Context, cl *client.Client, ns, arg, name string, sf sourceFlags, out, progress io.Writer) error {
	if sf.strategy != "" && sf.strategy != "docker" && sf.strategy != "source" {
		return usagef("--strategy %q: use docker or source", sf.strategy)
	}
	if sf.strategy == "docker" && sf.imageStream != "" {
		return usagef("--image-stream names the builder of the source strategy; with a Dockerfile the base is the Dockerfile's FROM")
	}
	if sf.strategy == "source" && sf.imageStream == "" {
		return usagef("--strategy source needs a builder image: add --image-stream PROJECT/BUILDER:TAG")
	}
	if sf.imageStream != "" {
		sf.strategy = "source"
	}
	app := name
	if app == "" {
		app = defaultAppName(arg)
	}
	if err := validAppName(app); err != nil {
		return err
	}
	if sf.hostname != "" && !sf.expose {
		return usagef("--hostname is the host of the route --expose makes: add --expose")
	}
	if sf.expose && sf.hostname == "" {
		return usagef("--expose needs --hostname HOST: Slipway has no default router domain yet (for example --hostname %s.apps.example.com)", app)
	}
	src, cleanup, err := findSource(ctx, arg, sf.contextDir, progress)
	defer cleanup()
	if err != nil {
		return err
	}
	var strategy api.BuildStrategy
	var ports []api.ContainerPort
	switch {
	case sf.strategy == "source":
		from, err := builderStream(ns, sf.imageStream)
		if err != nil {
			return err
		}
		strategy = api.BuildStrategy{Type: "Source", SourceStrategy: &api.SourceBuildStrategy{From: from}}
		if ports = builderPorts(ctx, cl, ns, from); len(ports) == 0 {
			fmt.Fprintf(progress, "The builder %s names no ports (label %s): no service is made\n", refString(from), exposeServicesLabel)
		}
	case src.dockerfile != "":
		info, err := parseDockerfile(src.dockerfile)
		if err != nil {
			return fmt.Errorf("%s: %w", src.desc, err)
		}
		strategy = api.BuildStrategy{Type: "Docker", DockerStrategy: &api.DockerBuildStrategy{}}
		if from := baseStream(ctx, cl, ns, info.from); from != nil {
			strategy.DockerStrategy.From = from
			fmt.Fprintf(progress, "The Dockerfile's FROM %s is image stream tag %s: the build uses it\n", info.from, refString(from))
		} else if info.from != "" && !strings.EqualFold(info.from, "scratch") {
			fmt.Fprintf(progress, "The Dockerfile's FROM %s is no image stream tag of the platform: the build pulls it as written\n", info.from)
		}
		ports = info.ports
	default:
		where := "in " + src.desc
		if src.contextDir != "" {
			where = "in " + src.contextDir + " of " + src.desc
		}
		return usagef("no Dockerfile found %s, so new-app cannot tell how to build it: add a Dockerfile, or name a Source-to-Image builder with --strategy source --image-stream PROJECT/BUILDER:TAG", where)
	}
	if sf.expose && len(ports) == 0 {
		return usagef("--expose routes to the app's service, and %s names no port, so new-app makes none: EXPOSE a port in the Dockerfile (or name it in the builder's %s label)", src.desc, exposeServicesLabel)
	}

	rec, err := readAppRecord(ctx, cl, ns, app)
	if err != nil {
		return err
	}
	secret := ""
	if rec != nil {
		secret = string(rec.secret.Data[webhookSecretParam])
	}
	var generated []string
	if secret == "" {
		if secret, err = randomSecret(32); err != nil {
			return err
		}
		generated = append(generated, webhookSecretParam)
	}
	docs, err := sourceDocuments(sourceObjects(app, ns, src, strategy, ports, secret, sf.hostname))
	if err != nil {
		return err
	}
	origin := src.desc
	if src.git != nil {
		origin = api.RedactURI(src.git.URI)
		if src.git.Ref != "" {
			origin += "#" + src.git.Ref
		}
	}
	if err := writeAppRecord(ctx, cl, ns, app, map[string]string{appSourceAnnotation: origin}, rec, map[string][]byte{webhookSecretParam: []byte(secret)}, docs); err != nil {
		return fmt.Errorf("writing the app's record: %w", err)
	}
	for _, d := range docs {
		verb, err := applyOne(ctx, cl, d)
		if err != nil {
			return fmt.Errorf("%s: %w (run new-app again to finish; it keeps what was made)", d.ref(), err)
		}
		fmt.Fprintf(out, "%s %s\n", d.ref(), verb)
	}
	if len(generated) > 0 {
		fmt.Fprintf(out, "Generated the webhook secret (kept in secret/%s-webhook and secret/%s)\n", app, appRecordName(app))
	}
	if sf.expose {
		fmt.Fprintf(out, "route/%s serves http://%s/ through the router (slipway start --router-http-listen); `slipway get route %s` says whether it was admitted\n", app, sf.hostname, app)
	}

	// Builds: a git source's config starts its first build itself
	// (ConfigChange); an uploaded directory's first build, and any
	// --rebuild, are started here.
	o, err := cl.Get(ctx, api.BuildConfigs, ns, app)
	if err != nil {
		return err
	}
	first := o.(*api.BuildConfig).Status.LastVersion == 0
	var started string
	switch {
	case src.localDir != "" && (first || sf.rebuild):
		bin, err := uploadDir(ctx, cl, ns, app, src.localDir, progress)
		if err != nil {
			return err
		}
		b, err := instantiate(ctx, cl, ns, app, bin)
		if err != nil {
			return err
		}
		started = b.Name
		fmt.Fprintf(out, "build/%s started\n", b.Name)
	case src.git != nil && sf.rebuild && !first:
		b, err := instantiate(ctx, cl, ns, app, nil)
		if err != nil {
			return err
		}
		started = b.Name
		fmt.Fprintf(out, "build/%s started\n", b.Name)
	case src.git != nil && first:
		fmt.Fprintf(out, "buildconfig/%s starts its first build from %s\n", app, origin)
		started = app + "-1"
	}
	if started != "" {
		fmt.Fprintf(out, "\nFollow it with `slipway logs -f build/%s`; deploymentconfig/%s rolls out each image the build config makes.\n", started, app)
	}
	return nil
}

func refString(r *api.ObjectReference) string {
	if r.Namespace != "" {
		return r.Namespace + "/" + r.Name
	}
	return r.Name
}
