package builders

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"slipway.dev/slipway/api"
)

// The post-commit hook runs a command in the image a build just made, in
// the same BuildKit solve and before the export: if it exits non-zero, the
// build fails and nothing is pushed, as OpenShift's postCommit does.

// hookArgs is the hook's command line: a script runs under /bin/sh -c; a
// command runs with args; args alone go to the image's entrypoint.
func hookArgs(h *api.BuildPostCommit, cfg ocispec.ImageConfig) ([]string, error) {
	switch {
	case h.Script != "":
		return append([]string{"/bin/sh", "-c", h.Script}, h.Args...), nil
	case len(h.Command) > 0:
		return append(append([]string(nil), h.Command...), h.Args...), nil
	case len(h.Args) > 0 && len(cfg.Entrypoint) > 0:
		return append(append([]string(nil), cfg.Entrypoint...), h.Args...), nil
	}
	return nil, fmt.Errorf("builders: the postCommit hook needs a script, a command, or args for the image's entrypoint")
}

// runPostCommit runs hook on res's image, with the image's env, working
// directory and user. It returns the hook's failure, or nil.
func runPostCommit(ctx context.Context, gw gateway.Client, res *gateway.Result, hook *api.BuildPostCommit) error {
	ref, err := res.SingleRef()
	if err != nil {
		return err
	}
	var img ocispec.Image
	if raw := res.Metadata[exptypes.ExporterImageConfigKey]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &img); err != nil {
			return fmt.Errorf("builders: reading the new image's config: %w", err)
		}
	}
	args, err := hookArgs(hook, img.Config)
	if err != nil {
		return err
	}
	st, err := ref.ToState()
	if err != nil {
		return err
	}
	opts := []llb.RunOption{llb.Args(args), llb.WithCustomName("post-commit hook: " + strings.Join(args, " "))}
	for _, e := range img.Config.Env {
		k, v, _ := strings.Cut(e, "=")
		opts = append(opts, llb.AddEnv(k, v))
	}
	if img.Config.WorkingDir != "" {
		opts = append(opts, llb.Dir(img.Config.WorkingDir))
	}
	if img.Config.User != "" {
		opts = append(opts, llb.User(img.Config.User))
	}
	def, err := st.Run(opts...).Root().Marshal(ctx)
	if err != nil {
		return err
	}
	_, err = gw.Solve(ctx, gateway.SolveRequest{Definition: def.ToPB(), Evaluate: true})
	return err
}

// imageUser is the User in the config of a solve's result, and whether
// there was a config to read.
func imageUser(res *gateway.Result) (string, bool) {
	var img ocispec.Image
	raw := res.Metadata[exptypes.ExporterImageConfigKey]
	if len(raw) == 0 || json.Unmarshal(raw, &img) != nil {
		return "", false
	}
	return img.Config.User, true
}
