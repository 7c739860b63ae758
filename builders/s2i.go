package builders

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bk "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/session"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/tonistiigi/fsutil"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/imagestreams"
)

// Source-to-Image, as BuildKit LLB: the builder image's assemble script runs
// over the injected source, and its run script becomes the new image's
// command. Both strategies share one engine.

// Labels a builder image may carry.
const (
	ScriptsURLLabel   = "io.openshift.s2i.scripts-url"
	DestinationLabel  = "io.openshift.s2i.destination"
	defaultScriptsDir = "/usr/libexec/s2i"
)

// s2iPlan is what a builder image says about itself.
type s2iPlan struct {
	scripts, dest, user string
}

// planS2I reads the builder image's labels (recorded in its Image) for the
// scripts directory and source destination.
func planS2I(cfg *api.ImageConfig) (s2iPlan, error) {
	p := s2iPlan{scripts: defaultScriptsDir, dest: "/tmp"}
	if cfg == nil {
		return p, nil
	}
	if u := cfg.Labels[ScriptsURLLabel]; u != "" {
		dir, ok := strings.CutPrefix(u, "image://")
		if !ok {
			return p, fmt.Errorf("%s %q: only image:// scripts are supported (scripts inside the builder image)", ScriptsURLLabel, u)
		}
		p.scripts = dir
	}
	if d := cfg.Labels[DestinationLabel]; d != "" {
		p.dest = d
	}
	p.user = cfg.User
	return p, nil
}

// solveS2I builds with LLB: copy the source into DEST/src, run assemble as
// the image's user, and export with run as the command.
func (c *Controller) solveS2I(ctx context.Context, cl *bk.Client, b *api.Build, baseRef string, base *api.Image, ctxFS fsutil.FS,
	exportAttrs map[string]string, labels map[string]string, auth session.Attachable, access *imageAccess,
	hook func(context.Context, gateway.Client, *gateway.Result) error, ch chan *bk.SolveStatus) (*bk.SolveResponse, error) {
	plan, err := planS2I(base.Config)
	if err != nil {
		close(ch)
		return nil, err
	}
	ss := b.Spec.Strategy.SourceStrategy
	src := plan.dest + "/src"
	// The new image's config: the builder's, with run as its command.
	img := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: base.Config.Architecture}}
	if img.Architecture == "" {
		img.Architecture = "amd64"
	}
	now := time.Now().UTC()
	img.Created = &now
	img.Config.Env = append([]string(nil), base.Config.Env...)
	if ss != nil {
		for _, e := range ss.Env {
			img.Config.Env = append(img.Config.Env, e.Name+"="+e.Value)
		}
	}
	img.Config.User = plan.user
	img.Config.WorkingDir = src
	img.Config.Cmd = []string{plan.scripts + "/run"}
	img.Config.Labels = map[string]string{}
	for k, v := range base.Config.Labels {
		img.Config.Labels[k] = v
	}
	for k, v := range labels {
		img.Config.Labels[k] = v
	}
	cfgJSON, err := json.Marshal(img)
	if err != nil {
		close(ch)
		return nil, err
	}
	var prev string
	if ss != nil && ss.Incremental {
		prev = c.previousOutput(ctx, b)
	}
	return cl.Build(ctx, bk.SolveOpt{
		LocalMounts: map[string]fsutil.FS{"context": ctxFS},
		Exports:     []bk.ExportEntry{{Type: bk.ExporterImage, Attrs: exportAttrs}},
		Session:     []session.Attachable{auth},
	}, "slipway-s2i", func(ctx context.Context, gw gateway.Client) (*gateway.Result, error) {
		// Images are resolved through the gateway that checks them at the
		// registry as the build's project, in force-pull mode
		// (imageaccess.go).
		sg := &scopedGateway{Client: gw, prefix: cacheScope(b.Namespace), access: access}
		image := func(ref string) llb.State { return llb.Image(ref, llb.ResolveModeForcePull, llb.WithMetaResolver(sg)) }
		copyOpts := &llb.CopyInfo{CopyDirContentsOnly: true, CreateDestPath: true}
		if plan.user != "" {
			copyOpts.ChownOpt = &llb.ChownOpt{User: &llb.UserOpt{Name: plan.user}}
		}
		st := image(baseRef).File(llb.Copy(llb.Local("context"), "/", src, copyOpts))
		if prev != "" {
			st = st.File(llb.Copy(saveArtifacts(image(prev), plan), "/artifacts.tar*", plan.dest+"/artifacts/", &llb.CopyInfo{
				AllowWildcard: true, AllowEmptyWildcard: true, AttemptUnpack: true, CreateDestPath: true, ChownOpt: copyOpts.ChownOpt,
			}))
		}
		runOpts := []llb.RunOption{llb.Args([]string{plan.scripts + "/assemble"}), llb.Dir(src), llb.WithCustomName("assemble")}
		if plan.user != "" {
			runOpts = append(runOpts, llb.User(plan.user))
		}
		for _, e := range base.Config.Env {
			k, v, _ := strings.Cut(e, "=")
			runOpts = append(runOpts, llb.AddEnv(k, v))
		}
		if ss != nil {
			for _, e := range ss.Env {
				runOpts = append(runOpts, llb.AddEnv(e.Name, e.Value))
			}
		}
		def, err := st.Run(runOpts...).Root().Marshal(ctx)
		if err != nil {
			return nil, err
		}
		res, err := sg.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return nil, err
		}
		res.AddMeta(exptypes.ExporterImageConfigKey, cfgJSON)
		return res, hook(ctx, gw, res)
	}, ch)
}

// saveArtifacts runs save-artifacts in the previous image, when it has
// one, and returns a state holding its tar stream as /artifacts.tar.
func saveArtifacts(prev llb.State, plan s2iPlan) llb.State {
	script := plan.scripts + "/save-artifacts"
	opts := []llb.RunOption{
		llb.Args([]string{"/bin/sh", "-c", "if [ -x " + script + " ]; then " + script + " > /slipway-artifacts/artifacts.tar; fi"}),
		llb.WithCustomName("save-artifacts from the previous image"),
		llb.AddMount("/slipway-artifacts", llb.Scratch()),
	}
	if plan.user != "" {
		opts = append(opts, llb.User(plan.user))
	}
	return prev.Run(opts...).GetMount("/slipway-artifacts")
}

// previousOutput is the image the build's output tag holds now, by
// digest, or "" for a first build.
func (c *Controller) previousOutput(ctx context.Context, b *api.Build) string {
	to := b.Spec.Output.To
	stream, tag, ok := strings.Cut(to.Name, ":")
	if !ok {
		tag = "latest"
	}
	o, err := c.Store.Get(ctx, api.ImageStreams, b.Namespace, stream)
	if err != nil {
		return ""
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return ""
	}
	return c.Registry + "/" + b.Namespace + "/" + stream + "@" + ev.Image
}
