// Package builders runs Builds: Dockerfile builds on a supervised
// buildkitd, with the base image resolved to a digest when the build starts
// and the result pushed straight into the integrated registry with a token
// scoped to the build.
//
// Today the Docker strategy with an inline Dockerfile is built; git and
// binary sources, Source-to-Image, triggers and mass rebuilds are next.
package builders

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/cli/cli/config/types"
	bk "github.com/moby/buildkit/client"
	dfbuilder "github.com/moby/buildkit/frontend/dockerfile/builder"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/tonistiigi/fsutil"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/rbac"
	"slipway.dev/slipway/store"
)

// TokenIssuer makes and revokes short-lived tokens for a project's builder
// service account.
type TokenIssuer interface {
	IssueServiceAccountToken(ctx context.Context, project, sa string, ttl time.Duration) (string, *api.Token, error)
	Revoke(ctx context.Context, secret string) (int64, error)
}

// Authorizer answers RBAC questions from the server's caches.
type Authorizer interface {
	Authorize(u identity.Info, a rbac.Attributes) (bool, string)
}

// Controller runs Builds.
type Controller struct {
	Store    *store.Store
	Daemon   *Daemon
	Tokens   TokenIssuer
	Authz    Authorizer
	Registry string // host:port of the integrated registry
	// LogDir keeps full build logs. Required.
	LogDir string
	// WorkDir holds each running build's context (its clone or upload),
	// removed when the build ends. What a build running when the server
	// stopped (or was killed) left there is removed at the next Run.
	// Default: LogDir's sibling "build-contexts" (the system's temporary
	// directory, not swept, when LogDir is empty too).
	WorkDir string
	// GitTransport carries git fetches; the server passes the import
	// guard, so builds clone only from allowed, non-internal hosts.
	GitTransport http.RoundTripper
	// MaxRunning bounds builds running at once on this node. Default 4.
	MaxRunning int
	// MaxRunningPerProject bounds one project's share of MaxRunning, so
	// that one project cannot hold every slot while others wait. Default
	// half of MaxRunning (at least 1). When a slot frees, the waiting
	// build of the project with the fewest running builds takes it.
	MaxRunningPerProject int
	// Sign, if set, signs and attests each pushed output (ref is by
	// digest) with what this controller resolved for the build (r), not
	// with b's status. It reports whether it signed; an error fails the
	// build.
	Sign func(ctx context.Context, b *api.Build, ref string, r Resolved) (bool, error)
	// Rebaser, when set, runs rebase builds inside the registry (no HTTP,
	// no token) with the rights of the project's builder account.
	Rebaser Rebaser

	mu      sync.Mutex
	running map[string]context.CancelFunc
	waiting map[string]bool // pending builds held back by MaxRunning
	builds  *store.Informer
	queue   *store.WorkQueue
	// rechecks holds the builds waiting for quota that have a recheck
	// scheduled (quota.go), so each has one at most.
	rechecks sync.Map
}

// Resolved is what the controller itself resolved while it ran a build,
// the facts its provenance states. They are never read back from the
// Build: its status is written as the build goes (a copy taken at the
// start has none of them), and anything a user could write must not reach
// a signed statement (M7).
type Resolved struct {
	// Revision is the commit that was cloned; "" without a git source.
	Revision string
	// BaseImage is the base the build started from,
	// REGISTRY/PROJECT/STREAM@DIGEST; "" without one.
	BaseImage string
	// Started is when the build started running.
	Started time.Time
}

// BuilderServiceAccount is the identity builds push as.
const BuilderServiceAccount = "builder"

// Label on builds naming their config.
const BuildConfigLabel = "slipway.dev/buildconfig"

// Run reconciles Builds until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	c.running, c.waiting = map[string]context.CancelFunc{}, map[string]bool{}
	if c.MaxRunning == 0 {
		c.MaxRunning = 4
	}
	if c.MaxRunningPerProject == 0 {
		c.MaxRunningPerProject = max(1, c.MaxRunning/2)
	}
	guardGit(c.GitTransport)
	if c.WorkDir == "" && c.LogDir != "" {
		c.WorkDir = filepath.Join(filepath.Dir(c.LogDir), "build-contexts")
	}
	if c.WorkDir != "" {
		// Contexts of builds that were running when this server last
		// stopped: those builds are failed or run again, each with a new
		// context.
		if err := os.RemoveAll(c.WorkDir); err != nil {
			slog.Warn("builders: removing old build contexts", "dir", c.WorkDir, "err", err)
		}
		if err := os.MkdirAll(c.WorkDir, 0o700); err != nil {
			slog.Error("builders: build context directory", "dir", c.WorkDir, "err", err)
		}
	}
	inf := c.buildsInformer()
	q := store.NewWorkQueue()
	c.queue = q
	inf.AddHandler(func(ev store.Event) {
		if ev.Type == api.Deleted {
			c.mu.Lock()
			delete(c.waiting, ev.Object.GetObjectMeta().Namespace+"/"+ev.Object.GetObjectMeta().Name)
			c.mu.Unlock()
			return
		}
		b := ev.Object.(*api.Build)
		q.Add(b.Namespace + "/" + b.Name)
		// A build that ends may let the next one of its config start,
		// and frees room in its project's builds quota.
		if api.IsFinished(b.Status.Phase) {
			c.quotaFreed(b.Namespace)
			for _, other := range c.siblings(b) {
				if !api.IsFinished(other.Status.Phase) {
					q.Add(other.Namespace + "/" + other.Name)
				}
			}
		}
	})
	c.builds = inf
	go inf.Run(ctx)
	q.Process(ctx, inf, "builders: build", func(o api.Object) error { return c.reconcile(ctx, o.(*api.Build)) })
}

// MaxBuildRestarts is how many times a build whose controller stopped
// while it ran is run again before it ends as an Error.
const MaxBuildRestarts = 2

func (c *Controller) reconcile(ctx context.Context, b *api.Build) error {
	key := b.Namespace + "/" + b.Name
	c.mu.Lock()
	cancel, running := c.running[key]
	c.mu.Unlock()
	if api.IsFinished(b.Status.Phase) || b.Status.Cancelled {
		c.mu.Lock()
		delete(c.waiting, key)
		c.mu.Unlock()
	}
	switch {
	case api.IsFinished(b.Status.Phase):
		if name := b.Labels[BuildConfigLabel]; name != "" {
			c.prune(ctx, b.Namespace, name, c.siblings(b))
		}
		return nil
	case b.Status.Cancelled && running:
		cancel()
		return nil
	case b.Status.Cancelled:
		return c.finish(ctx, b, api.BuildCancelled, "CancelledBuild", "the build was cancelled", "", "")
	case running:
		return nil
	case b.Status.Phase == api.BuildRunning && b.Status.Restarts >= MaxBuildRestarts:
		return c.finish(ctx, b, api.BuildError, "ControllerRestarted", fmt.Sprintf("the build controller running the build stopped %d times; start it again", b.Status.Restarts+1), "", "")
	case b.Status.Phase == api.BuildRunning:
		// Running, but not in this process: the controller that ran it
		// stopped (a leader lost, a crash). Run it again here: a trigger
		// fires once per image, so a build left as an error would leave,
		// say, a base image's security fix unbuilt.
		return c.setStatus(ctx, b, func(s *api.BuildStatus) {
			if s.Phase == api.BuildRunning {
				s.Phase, s.Reason = api.BuildPending, "ControllerRestarted"
				s.Message = "the build controller running the build stopped; running it again"
				s.Restarts++
			}
		})
	case b.Status.Phase == "" || b.Status.Phase == api.BuildNew:
		return c.setStatus(ctx, b, func(s *api.BuildStatus) { s.Phase, s.Reason = api.BuildPending, "" })
	}
	// Pending: start it, unless the config's run policy says to wait.
	if wait, err := c.applyRunPolicy(ctx, b); wait || err != nil {
		return err
	}
	c.mu.Lock()
	if ok, first := c.mayStartLocked(b.Namespace); !ok {
		c.waiting[key] = true
		msg := fmt.Sprintf("waiting for a build slot: %d of %d are taken, and a project runs at most %d at once", len(c.running), c.MaxRunning, c.MaxRunningPerProject)
		c.mu.Unlock()
		for _, k := range first {
			c.queue.Add(k)
		}
		if b.Status.Message != msg {
			return c.setStatus(ctx, b, func(s *api.BuildStatus) {
				if s.Phase == api.BuildPending {
					s.Message = msg
				}
			})
		}
		return nil
	}
	delete(c.waiting, key)
	deadline := b.Spec.Deadline()
	bctx, cancelBuild := context.WithTimeoutCause(ctx, deadline, &deadlineError{deadline})
	c.running[key] = cancelBuild
	c.mu.Unlock()
	if started, err := c.startWithinQuota(ctx, b); !started || err != nil {
		c.mu.Lock()
		delete(c.running, key)
		c.mu.Unlock()
		cancelBuild()
		return err
	}
	go func() {
		defer func() {
			c.mu.Lock()
			delete(c.running, key)
			var next []string
			for k := range c.waiting {
				next = append(next, k)
			}
			c.mu.Unlock()
			cancelBuild()
			// A slot is free: look at the builds that waited for one.
			for _, k := range next {
				c.queue.Add(k)
			}
		}()
		c.run(bctx, ctx, b)
	}()
	return nil
}

// mayStartLocked reports whether a build of project ns may take a slot
// now: one is free, the project is under its share, and no other project
// with fewer builds running waits (those it returns, to look at first).
func (c *Controller) mayStartLocked(ns string) (bool, []string) {
	if len(c.running) >= c.MaxRunning {
		return false, nil
	}
	runningIn := func(ns string) int {
		n := 0
		for k := range c.running {
			if projectOf(k) == ns {
				n++
			}
		}
		return n
	}
	mine := runningIn(ns)
	if mine >= c.MaxRunningPerProject {
		return false, nil
	}
	var first []string
	for k := range c.waiting {
		if other := projectOf(k); other != ns {
			if n := runningIn(other); n < mine && n < c.MaxRunningPerProject {
				first = append(first, k)
			}
		}
	}
	return len(first) == 0, first
}

func projectOf(key string) string {
	ns, _, _ := strings.Cut(key, "/")
	return ns
}

// deadlineError ends a build that ran past its completionDeadlineSeconds.
type deadlineError struct{ d time.Duration }

func (e *deadlineError) Error() string {
	return fmt.Sprintf("the build ran past its deadline of %s (spec.completionDeadlineSeconds); make it faster or raise the deadline", e.d)
}

// siblings are the builds of the same config.
func (c *Controller) siblings(b *api.Build) []*api.Build {
	var out []*api.Build
	if name := b.Labels[BuildConfigLabel]; name != "" {
		objs, _ := c.builds.ByIndex(byConfig, b.Namespace+"/"+name)
		for _, o := range objs {
			out = append(out, o.(*api.Build))
		}
		return out
	}
	for _, o := range c.builds.List(b.Namespace) {
		if other := o.(*api.Build); other.Labels[BuildConfigLabel] == "" {
			out = append(out, other)
		}
	}
	return out
}

// byConfig indexes builds by PROJECT/CONFIG; byQuotaWait those waiting for
// quota by PROJECT.
const (
	byConfig    = "config"
	byQuotaWait = "quota-wait"
)

// buildsInformer is the controller's cache of builds, with its indexes.
func (c *Controller) buildsInformer() *store.Informer {
	inf := store.NewInformer(c.Store, api.Builds)
	// Builds by config: a project holds thousands after a server-side
	// rebase, and every finished build looks up its config's others.
	inf.AddIndex(byConfig, func(o api.Object) []string {
		if b := o.(*api.Build); b.Labels[BuildConfigLabel] != "" {
			return []string{b.Namespace + "/" + b.Labels[BuildConfigLabel]}
		}
		return nil
	})
	// Builds waiting for quota by project: every finished build looks
	// for them, and a rebase records thousands of finished builds.
	inf.AddIndex(byQuotaWait, func(o api.Object) []string {
		if b := o.(*api.Build); b.Status.Phase == api.BuildPending && b.Status.Reason == api.BuildWaitingForQuota {
			return []string{b.Namespace}
		}
		return nil
	})
	return inf
}

// applyRunPolicy reports whether b must wait: Serial runs a config's builds
// one at a time in order; SerialLatestOnly also cancels older builds that
// have not started; Parallel never waits.
func (c *Controller) applyRunPolicy(ctx context.Context, b *api.Build) (bool, error) {
	name := b.Labels[BuildConfigLabel]
	if name == "" {
		return false, nil
	}
	o, err := c.Store.Get(ctx, api.BuildConfigs, b.Namespace, name)
	if err != nil {
		return false, nil // the config is gone: nothing to order against
	}
	policy := o.(*api.BuildConfig).Spec.RunPolicy
	if policy == "Parallel" {
		return false, nil
	}
	wait := false
	for _, other := range c.siblings(b) {
		if other.Name == b.Name || api.IsFinished(other.Status.Phase) {
			continue
		}
		older := buildNumber(other) < buildNumber(b)
		if policy == "SerialLatestOnly" && older && other.Status.Phase != api.BuildRunning {
			if err := c.setStatus(ctx, other, func(s *api.BuildStatus) { s.Cancelled = true }); err != nil {
				return true, err
			}
			continue
		}
		if other.Status.Phase == api.BuildRunning || older {
			wait = true
		}
	}
	return wait, nil
}

func (c *Controller) setStatus(ctx context.Context, b *api.Build, fn func(*api.BuildStatus)) error {
	_, err := c.Store.GuaranteedUpdate(ctx, api.Builds, b.Namespace, b.Name, store.UpdateOptions{Status: true}, func(o api.Object) error {
		fn(&o.(*api.Build).Status)
		return nil
	})
	return err
}

func (c *Controller) finish(ctx context.Context, b *api.Build, phase, reason, msg, ref, dgst string) error {
	now := time.Now().UTC().Truncate(time.Second)
	return c.setStatus(ctx, b, func(s *api.BuildStatus) {
		if api.IsFinished(s.Phase) {
			return // decided already: the cache that sent us here was stale
		}
		s.Phase, s.Reason, s.Message = phase, reason, msg
		s.CompletionTimestamp = &now
		if ref != "" {
			s.OutputDockerImageReference, s.OutputDigest = ref, dgst
		}
	})
}

// run builds; ctx ends on cancel, parent on shutdown.
func (c *Controller) run(ctx, parent context.Context, b *api.Build) {
	now := time.Now().UTC().Truncate(time.Second)
	fail := func(phase, reason, msg string) {
		var de *deadlineError
		switch {
		case ctx.Err() != nil && parent.Err() == nil && errors.As(context.Cause(ctx), &de):
			phase, reason, msg = api.BuildFailed, "DeadlineExceeded", de.Error()
		case ctx.Err() != nil && parent.Err() == nil:
			phase, reason, msg = api.BuildCancelled, "CancelledBuild", "the build was cancelled"
		}
		if err := c.finish(parent, b, phase, reason, msg, "", ""); err != nil {
			slog.Error("builders: recording a failed build", "build", b.Name, "err", err)
		}
	}
	if err := c.setStatus(parent, b, func(s *api.BuildStatus) { s.Phase, s.StartTimestamp, s.Message = api.BuildRunning, &now, "" }); err != nil {
		return
	}
	logPath := filepath.Join(c.LogDir, b.Namespace, b.Name+".log")
	_ = os.MkdirAll(filepath.Dir(logPath), 0o700)
	logFile, err := os.Create(logPath)
	if err != nil {
		fail(api.BuildError, "LogFailed", err.Error())
		return
	}
	defer logFile.Close()
	tail := &tailBuffer{max: 8 << 10}
	logs := io.MultiWriter(logFile, tail)
	stopTail := c.publishTail(parent, b, tail)
	defer stopTail()

	out, phase, reason, err := c.build(ctx, b, logs)
	ref, dgst := out.ref, out.digest
	stopTail()
	_ = c.setStatus(parent, b, func(s *api.BuildStatus) { s.LogTail = tail.String() })
	if err != nil {
		var de *deadlineError
		if errors.As(context.Cause(ctx), &de) {
			err = de
		}
		fmt.Fprintf(logs, "\nerror: %v\n", err)
		_ = c.setStatus(parent, b, func(s *api.BuildStatus) { s.LogTail = tail.String() })
		fail(phase, reason, err.Error())
		return
	}
	if c.Sign != nil {
		signed, err := c.Sign(ctx, redacted(b), ref, Resolved{Revision: out.revision, BaseImage: out.base, Started: now})
		switch {
		case err != nil:
			fmt.Fprintf(logs, "\nerror: signing %s: %v\n", ref, err)
			_ = c.setStatus(parent, b, func(s *api.BuildStatus) {
				s.LogTail = tail.String()
				s.OutputDockerImageReference, s.OutputDigest = ref, dgst
			})
			fail(api.BuildFailed, "SigningFailed", "pushed "+ref+" but could not sign it: "+err.Error())
			return
		case signed:
			fmt.Fprintf(logs, "Signed %s and attached its SLSA provenance\n", ref)
			_ = c.setStatus(parent, b, func(s *api.BuildStatus) { s.LogTail = tail.String() })
		}
	}
	if w := api.RootImageWarning(out.user); out.userKnown && w != "" {
		fmt.Fprintf(logs, "\nWarning: %s\n", w)
		_ = c.setStatus(parent, b, func(s *api.BuildStatus) { s.LogTail, s.Warnings = tail.String(), []string{w} })
	}
	if err := c.finish(parent, b, api.BuildComplete, "", "pushed "+ref, ref, dgst); err != nil {
		slog.Error("builders: recording a finished build", "build", b.Name, "err", err)
	}
}

// redacted is b without credentials in its git URI, for provenance.
func redacted(b *api.Build) *api.Build {
	g := b.Spec.Source.Git
	if g == nil || api.RedactURI(g.URI) == g.URI {
		return b
	}
	c := *b
	gc := *g
	gc.URI = api.RedactURI(g.URI)
	c.Spec.Source.Git = &gc
	return &c
}

// publishTail copies the log's tail into status every second while the
// build runs, so `slipway logs -f` can follow it through a watch.
func (c *Controller) publishTail(ctx context.Context, b *api.Build, t *tailBuffer) func() {
	done := make(chan struct{})
	var once sync.Once
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		last := ""
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if s := t.String(); s != last {
					last = s
					_ = c.setStatus(ctx, b, func(st *api.BuildStatus) { st.LogTail = s })
				}
			}
		}
	}()
	return func() { once.Do(func() { close(done) }) }
}

// built is what a build pushed, and what it resolved on the way.
type built struct {
	ref, digest    string // the output, REGISTRY/PROJECT/STREAM@DIGEST and DIGEST
	revision, base string // the commit cloned and the base used (Resolved)
	user           string // the image config's User, if userKnown
	userKnown      bool   // a full build read its config; a rebase keeps it
}

// build runs one build and returns what it pushed.
func (c *Controller) build(ctx context.Context, b *api.Build, logs io.Writer) (out built, phase, reason string, err error) {
	fail := func(phase, reason string, err error) (built, string, string, error) {
		return built{}, phase, reason, err
	}
	ds := b.Spec.Strategy.DockerStrategy
	to := b.Spec.Output.To
	if to == nil || to.Kind != "ImageStreamTag" {
		return fail(api.BuildError, "InvalidOutput", errors.New("the output must be an ImageStreamTag"))
	}
	outNS := to.Namespace
	if outNS == "" {
		outNS = b.Namespace
	}
	if outNS != b.Namespace {
		return fail(api.BuildError, "InvalidOutput", errors.New("builds push only into their own project"))
	}
	stream, tag, ok := strings.Cut(to.Name, ":")
	if !ok {
		tag = "latest"
	}
	if b.Spec.Rebase {
		out, err := c.tryRebase(ctx, b, stream, tag, logs)
		switch {
		case err == nil:
			return out, "", "", nil
		case errors.Is(err, errNoRebase):
			fmt.Fprintf(logs, "Not rebasing (%v); running a full build\n", err)
		default:
			return fail(api.BuildFailed, "RebaseFailed", err)
		}
	}
	dir, err := os.MkdirTemp(c.WorkDir, "build-")
	if err != nil {
		return fail(api.BuildError, "ContextFailed", err)
	}
	defer os.RemoveAll(dir)
	contextPath := filepath.Join(dir, "context")
	if err := os.MkdirAll(contextPath, 0o700); err != nil {
		return fail(api.BuildError, "ContextFailed", err)
	}
	var revision string
	if bin := b.Spec.Source.Binary; bin != nil && bin.Digest == "" {
		return fail(api.BuildFailed, "NoSourceUploaded", errors.New("this build config takes its source from `slipway start-build --from-dir DIR`"))
	} else if bin != nil {
		if err := c.fetchBinary(ctx, b, bin, contextPath, logs); err != nil {
			reason := "FetchSourceFailed"
			if errors.Is(err, ErrHostileArchive) {
				reason = "InvalidSourceArchive"
			}
			return fail(api.BuildFailed, reason, err)
		}
	} else if g := b.Spec.Source.Git; g != nil {
		fmt.Fprintf(logs, "Cloning %s %s\n", api.RedactURI(g.URI), g.Ref)
		if revision, err = clone(ctx, g, contextPath, nil); err != nil {
			return fail(api.BuildFailed, "FetchSourceFailed", err)
		}
		fmt.Fprintf(logs, "Commit %s\n", revision)
		_ = c.setStatus(ctx, b, func(s *api.BuildStatus) { s.Revision = revision })
	}
	if d := b.Spec.Source.ContextDir; d != "" {
		// The context dir must really be inside the source: a symlink in
		// the repository must not hand the server's files to the build.
		root, _ := filepath.EvalSymlinks(contextPath)
		real, err := filepath.EvalSymlinks(filepath.Join(contextPath, filepath.Clean(d)))
		if err != nil || (real != root && !strings.HasPrefix(real, root+string(filepath.Separator))) {
			return fail(api.BuildFailed, "InvalidContextDir", fmt.Errorf("context directory %q is not a directory inside the source", d))
		}
		contextPath = real
	}
	s2i := b.Spec.Strategy.Type == "Source"
	dockerfile := b.Spec.Source.Dockerfile
	if dockerfile == "" && !s2i {
		// Read through os.Root, so a symlinked Dockerfile cannot reach
		// outside the checked-out source.
		root, err := os.OpenRoot(contextPath)
		if err != nil {
			return fail(api.BuildFailed, "InvalidContextDir", fmt.Errorf("context directory %q: %w", b.Spec.Source.ContextDir, err))
		}
		data, err := root.ReadFile("Dockerfile")
		root.Close()
		if err != nil {
			return fail(api.BuildFailed, "InvalidDockerfile", fmt.Errorf("the source has no readable Dockerfile in %q: %w", b.Spec.Source.ContextDir, err))
		}
		dockerfile = string(data)
	}
	var baseRef string
	if from := b.Spec.Strategy.BaseImage(); from != nil {
		baseRef, err = c.resolveFrom(ctx, b.Namespace, from)
		if pd := (*pullDeniedError)(nil); errors.As(err, &pd) {
			return fail(api.BuildFailed, "ImagePullDenied", err)
		} else if err != nil {
			return fail(api.BuildFailed, "InvalidBaseImage", err)
		}
		if !s2i {
			if dockerfile, err = replaceLastFrom(dockerfile, baseRef); err != nil {
				return fail(api.BuildFailed, "InvalidDockerfile", err)
			}
		}
		fmt.Fprintf(logs, "Base image %s resolved to %s\n", from.Name, baseRef)
		_ = c.setStatus(ctx, b, func(s *api.BuildStatus) { s.BaseImage = baseRef })
	}
	if s2i && baseRef == "" {
		return fail(api.BuildFailed, "InvalidBaseImage", errors.New("Source builds need a builder image"))
	}
	if err := c.ensureBuilder(ctx, b.Namespace); err != nil {
		return fail(api.BuildError, "BuilderAccountFailed", err)
	}
	secret, _, err := c.Tokens.IssueServiceAccountToken(ctx, b.Namespace, BuilderServiceAccount, time.Hour)
	if err != nil {
		return fail(api.BuildError, "TokenFailed", err)
	}
	defer func() { _, _ = c.Tokens.Revoke(context.WithoutCancel(ctx), secret) }()

	dfDir := filepath.Join(dir, "dockerfile")
	if err := os.MkdirAll(dfDir, 0o700); err != nil {
		return fail(api.BuildError, "ContextFailed", err)
	}
	if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile"), []byte(dockerfile), 0o600); err != nil {
		return fail(api.BuildError, "ContextFailed", err)
	}
	ctxFS, err := fsutil.NewFS(contextPath)
	if err != nil {
		return fail(api.BuildError, "InvalidContextDir", err)
	}
	dfFS, err := fsutil.NewFS(dfDir)
	if err != nil {
		return fail(api.BuildError, "ContextFailed", err)
	}
	cl, err := c.Daemon.Client(ctx, 30*time.Second)
	if err != nil {
		return fail(api.BuildError, "BuildkitUnavailable", err)
	}
	defer cl.Close()

	target := c.Registry + "/" + b.Namespace + "/" + stream + ":" + tag
	// image-resolve-mode=pull: every image is resolved at the registry,
	// never from the worker's image store; imageaccess.go says why that
	// alone does not cover images by digest, and what does.
	attrs := map[string]string{"filename": "Dockerfile", "image-resolve-mode": "pull",
		"label:io.openshift.build.name": b.Name, "label:io.openshift.build.namespace": b.Namespace}
	if ds != nil {
		for _, a := range ds.BuildArgs {
			attrs["build-arg:"+a.Name] = a.Value
		}
	}
	exportAttrs := map[string]string{"name": target, "push": "true", "registry.insecure": "true"}
	if g := b.Spec.Source.Git; g != nil {
		attrs["label:io.openshift.build.source-location"] = api.RedactURI(g.URI)
		attrs["label:io.openshift.build.commit.id"] = revision
		exportAttrs["annotation.org.opencontainers.image.source"] = api.RedactURI(g.URI)
		exportAttrs["annotation.org.opencontainers.image.revision"] = revision
	}
	if baseRef != "" {
		exportAttrs["annotation.org.opencontainers.image.base.name"] = baseRef[:strings.LastIndex(baseRef, "@")]
		exportAttrs["annotation.org.opencontainers.image.base.digest"] = baseRef[strings.LastIndex(baseRef, "@")+1:]
	}
	registryHost := c.Registry
	auth := authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
		AuthConfigProvider: func(_ context.Context, host string, _ []string, _ authprovider.ExpireCachedAuthCheck) (types.AuthConfig, error) {
			if host != registryHost {
				return types.AuthConfig{}, nil
			}
			return types.AuthConfig{Username: BuilderServiceAccount, Password: secret}, nil
		},
	})
	access := newImageAccess(c.Registry, b.Namespace, secret)
	ch := make(chan *bk.SolveStatus)
	disp, err := progressui.NewDisplay(logs, progressui.PlainMode)
	if err != nil {
		return fail(api.BuildError, "LogFailed", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = disp.UpdateFrom(context.WithoutCancel(ctx), ch)
	}()
	var resp *bk.SolveResponse
	var hookErr error
	var user string
	var userKnown bool
	hook := func(ctx context.Context, gw gateway.Client, res *gateway.Result) error {
		user, userKnown = imageUser(res)
		if b.Spec.PostCommit == nil {
			return nil
		}
		hookErr = runPostCommit(ctx, gw, res, b.Spec.PostCommit)
		return hookErr
	}
	if s2i {
		base, berr := c.baseImageRecord(ctx, b, baseRef)
		if berr != nil {
			close(ch)
			wg.Wait()
			return fail(api.BuildFailed, "InvalidBaseImage", berr)
		}
		labels := map[string]string{}
		for k, v := range attrs {
			if l, ok := strings.CutPrefix(k, "label:"); ok {
				labels[l] = v
			}
		}
		resp, err = c.solveS2I(ctx, cl, b, baseRef, base, ctxFS, exportAttrs, labels, auth, access, hook, ch)
	} else {
		// Through the gateway, so the post-commit hook runs on the result
		// before the export pushes it.
		// The Dockerfile frontend runs here, not in buildkitd, so that
		// scopedGateway can keep cache mounts per project. "cmdline" says
		// it is not to forward to another frontend image.
		if _, _, _, ok := parser.DetectSyntax([]byte(dockerfile)); ok {
			fmt.Fprintf(logs, "Ignoring the Dockerfile's `# syntax=` line: builds use Slipway's own Dockerfile frontend\n")
		}
		attrs["cmdline"] = "slipway"
		resp, err = cl.Build(ctx, bk.SolveOpt{
			LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
			Exports:       []bk.ExportEntry{{Type: bk.ExporterImage, Attrs: exportAttrs}},
			Session:       []session.Attachable{auth},
			FrontendAttrs: attrs,
		}, "slipway-docker", func(ctx context.Context, gw gateway.Client) (*gateway.Result, error) {
			res, err := dfbuilder.Build(ctx, &scopedGateway{Client: gw, prefix: cacheScope(b.Namespace), access: access})
			if err != nil {
				return nil, err
			}
			return res, hook(ctx, gw, res)
		}, ch)
	}
	wg.Wait()
	if hookErr != nil {
		return fail(api.BuildFailed, "PostCommitHookFailed", fmt.Errorf("the postCommit hook failed, so nothing was pushed: %w", hookErr))
	}
	if denied := access.refusal(); err != nil && denied != nil {
		return fail(api.BuildFailed, "ImagePullDenied", denied)
	}
	if err != nil {
		return fail(api.BuildFailed, "BuildFailed", err)
	}
	dgst := resp.ExporterResponse["containerimage.digest"]
	return built{ref: c.Registry + "/" + b.Namespace + "/" + stream + "@" + dgst, digest: dgst, revision: revision, base: baseRef, user: user, userKnown: userKnown}, "", "", nil
}

// tryRebase runs the rebase strategy: resolve the base, and swap it in
// under the output's current image.
func (c *Controller) tryRebase(ctx context.Context, b *api.Build, stream, tag string, logs io.Writer) (built, error) {
	from := b.Spec.Strategy.BaseImage()
	if from == nil {
		return built{}, fmt.Errorf("%w: the strategy has no base image", errNoRebase)
	}
	baseRef, err := c.resolveFrom(ctx, b.Namespace, from)
	if err != nil {
		return built{}, fmt.Errorf("%w: %v", errNoRebase, err) // the full build reports it
	}
	fmt.Fprintf(logs, "Base image %s resolved to %s\n", from.Name, baseRef)
	_ = c.setStatus(ctx, b, func(s *api.BuildStatus) { s.BaseImage = baseRef })
	if err := c.ensureBuilder(ctx, b.Namespace); err != nil {
		return built{}, err
	}
	var ref, dgst, from0 string
	if c.Rebaser != nil {
		ref, dgst, from0, err = c.rebaseInRegistry(ctx, b, baseRef, stream, tag, logs)
	} else {
		secret, _, terr := c.Tokens.IssueServiceAccountToken(ctx, b.Namespace, BuilderServiceAccount, 10*time.Minute)
		if terr != nil {
			return built{}, terr
		}
		defer func() { _, _ = c.Tokens.Revoke(context.WithoutCancel(ctx), secret) }()
		ref, dgst, from0, err = c.rebase(ctx, b, baseRef, stream, tag, secret, logs)
	}
	if err != nil {
		return built{}, err
	}
	_ = c.setStatus(ctx, b, func(s *api.BuildStatus) { s.RebasedFrom = from0 })
	return built{ref: ref, digest: dgst, base: baseRef}, nil
}

// baseImageRecord finds the Image record of a resolved base reference
// (REGISTRY/PROJECT/STREAM@DIGEST), for the builder image's labels.
func (c *Controller) baseImageRecord(ctx context.Context, b *api.Build, ref string) (*api.Image, error) {
	rest, ok := strings.CutPrefix(ref, c.Registry+"/")
	at := strings.LastIndex(rest, "@")
	if !ok || at < 0 {
		return nil, fmt.Errorf("builder image %s is not in the integrated registry; import it first", ref)
	}
	project, _, _ := strings.Cut(rest[:at], "/")
	o, err := c.Store.Get(ctx, api.Images, project, rest[at+1:])
	if err != nil {
		return nil, fmt.Errorf("builder image %s has no record: %w", ref, err)
	}
	img := o.(*api.Image)
	if img.Config == nil {
		img.Config = &api.ImageConfig{}
	}
	return img, nil
}

// fetchBinary downloads an uploaded archive from the build's own project,
// as the builder account, and unpacks it safely.
func (c *Controller) fetchBinary(ctx context.Context, b *api.Build, bin *api.BinaryBuildSource, dir string, logs io.Writer) error {
	if !strings.HasPrefix(bin.Repository, b.Namespace+"/") || len(api.ValidateDigestName(bin.Digest)) > 0 {
		return fmt.Errorf("the uploaded source must be a blob of project %s", b.Namespace)
	}
	if err := c.ensureBuilder(ctx, b.Namespace); err != nil {
		return err
	}
	secret, _, err := c.Tokens.IssueServiceAccountToken(ctx, b.Namespace, BuilderServiceAccount, 10*time.Minute)
	if err != nil {
		return err
	}
	defer func() { _, _ = c.Tokens.Revoke(context.WithoutCancel(ctx), secret) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Registry+"/v2/"+bin.Repository+"/blobs/"+bin.Digest, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(BuilderServiceAccount, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching the uploaded source %s@%s: %s", bin.Repository, bin.Digest, resp.Status)
	}
	fmt.Fprintf(logs, "Unpacking the uploaded source %s\n", bin.Digest)
	return extractContext(io.LimitReader(resp.Body, MaxContextBytes+1<<20), dir)
}

// pullDeniedError is a base image in a project the build's project may
// not pull from.
type pullDeniedError struct{ msg string }

func (e *pullDeniedError) Error() string { return e.msg }

// resolveFrom turns the strategy's from into a digest reference. A base in
// another project, as a stream or on the integrated registry, is resolved
// only while the build's project may pull from there (mayPullFrom).
func (c *Controller) resolveFrom(ctx context.Context, ns string, from *api.ObjectReference) (string, error) {
	src := from.Namespace
	if src == "" {
		src = ns
	}
	if from.Kind == "DockerImage" {
		src = ns
		if rest, ok := strings.CutPrefix(from.Name, c.Registry+"/"); ok {
			src, _, _ = strings.Cut(rest, "/")
		}
	}
	if src != ns {
		if why := mayPullFrom(ctx, c.Store, c.Authz, ns, src); why != "" {
			return "", &pullDeniedError{fmt.Sprintf("base image %s of project %s is not resolved: %s", from.Name, src, why)}
		}
	}
	switch from.Kind {
	case "DockerImage":
		return from.Name, nil
	case "ImageStreamImage":
		// Pinned by a trigger: the digest it saw, newest wins.
		stream, digest, ok := strings.Cut(from.Name, "@")
		if !ok {
			return "", fmt.Errorf("from %q is not STREAM@DIGEST", from.Name)
		}
		return c.Registry + "/" + src + "/" + stream + "@" + digest, nil
	case "ImageStreamTag":
	default:
		return "", fmt.Errorf("from.kind %q is not ImageStreamTag, ImageStreamImage or DockerImage", from.Kind)
	}
	stream, tag, ok := strings.Cut(from.Name, ":")
	if !ok {
		tag = "latest"
	}
	o, err := c.Store.Get(ctx, api.ImageStreams, src, stream)
	if err != nil {
		return "", fmt.Errorf("base image stream %s/%s: %w", src, stream, err)
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return "", fmt.Errorf("base image %s/%s:%s has no image yet; push one first", src, stream, tag)
	}
	return c.Registry + "/" + src + "/" + stream + "@" + ev.Image, nil
}

// ensureBuilder makes the project's builder service account and lets it
// push (image-builder), as OpenShift does for every project.
func (c *Controller) ensureBuilder(ctx context.Context, ns string) error {
	sa := &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: BuilderServiceAccount, Namespace: ns}}
	if err := c.Store.Create(ctx, api.ServiceAccounts, sa); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	rb := &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: "system-image-builders", Namespace: ns},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: rbac.ImageBuilder},
		Subjects:   []api.Subject{{Kind: api.SubjectServiceAccount, Name: BuilderServiceAccount, Namespace: ns}},
	}
	if err := c.Store.Create(ctx, api.RoleBindings, rb); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	// A binding made a moment ago may not be in the authorizer's cache
	// yet; wait for it rather than fail the first build of a project.
	who := identity.Info{Name: api.ServiceAccountUser(ns, BuilderServiceAccount), Groups: []string{identity.GroupAuthenticated}}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if ok, _ := c.Authz.Authorize(who, rbac.Attributes{Verb: "update", Resource: "imagestreams", Subresource: "layers", Namespace: ns}); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("the builder service account of %s has no push rights; check rolebinding system-image-builders", ns)
}

// replaceLastFrom points the Dockerfile's last FROM at ref, keeping its
// stage name, as OpenShift's Docker strategy does.
func replaceLastFrom(dockerfile, ref string) (string, error) {
	res, err := parser.Parse(strings.NewReader(dockerfile))
	if err != nil {
		return "", fmt.Errorf("the Dockerfile does not parse: %w", err)
	}
	var last *parser.Node
	for _, n := range res.AST.Children {
		if strings.EqualFold(n.Value, "from") {
			last = n
		}
	}
	if last == nil {
		return "", errors.New("the Dockerfile has no FROM")
	}
	lines := strings.Split(dockerfile, "\n")
	line := "FROM " + ref
	if n := last.Next; n != nil && n.Next != nil && strings.EqualFold(n.Next.Value, "as") && n.Next.Next != nil {
		line += " AS " + n.Next.Next.Value
	}
	for i := last.StartLine; i < last.EndLine; i++ {
		lines[i] = "" // continuation lines of a multi-line FROM
	}
	lines[last.StartLine-1] = line
	return strings.Join(lines, "\n"), nil
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
