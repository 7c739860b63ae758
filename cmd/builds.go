package cmd

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
)

func startBuildCmd() *cobra.Command {
	var wait, follow bool
	var fromDir string
	c := &cobra.Command{
		Use:   "start-build BUILDCONFIG",
		Short: "Start a new build of a build config",
		Example: `  slipway start-build web
  slipway start-build web --follow     # stream the log until it ends
  slipway start-build web --wait       # exit non-zero if the build fails`,
		Args: exactArgs(1, "a build config name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			var bin *api.BinaryBuildSource
			if fromDir != "" {
				if bin, err = uploadDir(c.Context(), cl, ns, args[0], fromDir, c.ErrOrStderr()); err != nil {
					return err
				}
			}
			b, err := instantiate(c.Context(), cl, ns, args[0], bin)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "build/%s started\n", b.Name)
			if !wait && !follow {
				return nil
			}
			return followBuild(c.Context(), cl, ns, b.Name, follow, c.OutOrStdout())
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "F", false, "stream the build log until the build ends")
	c.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the build to end; exit non-zero if it fails")
	c.Flags().StringVar(&fromDir, "from-dir", "", "upload this directory as the build's source")
	return c
}

// instantiate bumps the config's lastVersion (compare-and-swap) and makes
// Build NAME-N with a copy of the config's spec.
func instantiate(ctx context.Context, cl *client.Client, ns, name string, bin *api.BinaryBuildSource) (*api.Build, error) {
	for attempt := 0; attempt < 10; attempt++ {
		o, err := cl.Get(ctx, api.BuildConfigs, ns, name)
		if err != nil {
			return nil, err
		}
		bc := o.(*api.BuildConfig)
		bc.Status.LastVersion++
		if err := cl.UpdateStatus(ctx, api.BuildConfigs, bc); api.IsConflict(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		b := &api.Build{
			ObjectMeta: api.ObjectMeta{
				Name: fmt.Sprintf("%s-%d", name, bc.Status.LastVersion), Namespace: ns,
				Labels: map[string]string{builders.BuildConfigLabel: name},
			},
			Spec: bc.Spec.BuildSpec(),
		}
		if bin != nil {
			b.Spec.Source.Binary, b.Spec.Source.Git = bin, nil
		}
		if err := cl.Create(ctx, api.Builds, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return nil, fmt.Errorf("build config %s kept changing under us; try again", name)
}

// followBuild waits for a build to end, printing its log as it grows when
// follow is set.
func followBuild(ctx context.Context, cl *client.Client, ns, name string, follow bool, out io.Writer) error {
	// The watch ends with this call: rebuild follows thousands of builds
	// under one long context, and a watch left open per finished build
	// holds a connection and one of the user's watches on the server.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := cl.Watch(ctx, api.Builds, ns, "", client.ListOptions{Name: name})
	if err != nil {
		return err
	}
	printed := ""
	for ev := range ch {
		if ev.Err != nil {
			return ev.Err
		}
		b := ev.Object.(*api.Build)
		if follow {
			printed = printNew(out, printed, b.Status.LogTail)
		}
		if api.IsFinished(b.Status.Phase) {
			if b.Status.Phase != api.BuildComplete {
				return fmt.Errorf("build %s %s (%s): %s", name, strings.ToLower(b.Status.Phase), b.Status.Reason, b.Status.Message)
			}
			fmt.Fprintf(out, "build/%s complete: %s\n", name, b.Status.OutputDockerImageReference)
			if !follow { // a followed log has printed them
				for _, w := range b.Status.Warnings {
					fmt.Fprintf(out, "Warning: %s\n", w)
				}
			}
			return nil
		}
	}
	return ctx.Err()
}

// printNew prints what the tail gained since the last print. The tail is a
// window of the log's end, so find where the old text ends in the new.
func printNew(out io.Writer, old, cur string) string {
	if cur == old {
		return old
	}
	if strings.HasPrefix(cur, old) {
		fmt.Fprint(out, cur[len(old):])
		return cur
	}
	for i := 0; i < len(old); i++ {
		if strings.HasPrefix(cur, old[i:]) {
			fmt.Fprint(out, cur[len(old)-i:])
			return cur
		}
	}
	fmt.Fprint(out, cur)
	return cur
}

func cancelBuildCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "cancel-build BUILD",
		Short:   "Cancel a running or pending build",
		Example: "  slipway cancel-build web-3",
		Args:    exactArgs(1, "a build name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			name := strings.TrimPrefix(args[0], "build/")
			for attempt := 0; attempt < 10; attempt++ {
				o, err := cl.Get(c.Context(), api.Builds, ns, name)
				if err != nil {
					return err
				}
				b := o.(*api.Build)
				if api.IsFinished(b.Status.Phase) {
					return fmt.Errorf("build %s already ended (%s)", name, b.Status.Phase)
				}
				b.Status.Cancelled = true
				if err := cl.UpdateStatus(c.Context(), api.Builds, b); api.IsConflict(err) {
					continue
				} else if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "build/%s cancelling\n", name)
				return nil
			}
			return fmt.Errorf("build %s kept changing; try again", name)
		},
	}
}

func logsCmd() *cobra.Command {
	var follow bool
	var container string
	c := &cobra.Command{
		Use:   "logs [-f] POD [-c CONTAINER] | build/NAME",
		Short: "Show a pod container's log or a build's log",
		Example: `  slipway logs web-2-x7k2p
  slipway logs -f web-2-x7k2p -c sidecar
  slipway logs -f build/web-4`,
		Args: exactArgs(1, "a pod or build/NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			kind, name, ok := strings.Cut(args[0], "/")
			if !ok {
				kind, name = "pod", args[0]
			}
			switch kind {
			case "pod", "pods", "po":
				err := cl.PodLogs(c.Context(), ns, name, container, follow, c.OutOrStdout())
				if !ok && api.IsNotFound(err) {
					// A bare name that is not a pod may be a build.
					if _, berr := cl.Get(c.Context(), api.Builds, ns, name); berr == nil {
						return buildLogs(c, cl, ns, name, follow)
					}
				}
				return err
			case "build", "builds":
				return buildLogs(c, cl, ns, name, follow)
			}
			return usagef("logs shows pods (POD or pod/NAME) and builds (build/NAME), not %q", kind)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the container or build ends")
	c.Flags().StringVarP(&container, "container", "c", "", "the pod's container (default: its first)")
	return c
}

func buildLogs(c *cobra.Command, cl *client.Client, ns, name string, follow bool) error {
	o, err := cl.Get(c.Context(), api.Builds, ns, name)
	if err != nil {
		return err
	}
	b := o.(*api.Build)
	if !follow || api.IsFinished(b.Status.Phase) {
		// The whole log, kept after the build; the tail if the server
		// keeps none.
		resp, err := cl.Do(c.Context(), http.MethodGet, client.Path(api.Builds, ns, name, "log"), nil, nil, "")
		if err != nil {
			fmt.Fprint(c.OutOrStdout(), b.Status.LogTail)
			return nil
		}
		defer resp.Body.Close()
		_, err = io.Copy(c.OutOrStdout(), resp.Body)
		return err
	}
	return followBuild(c.Context(), cl, ns, name, true, c.OutOrStdout())
}

// uploadDir archives dir (without .git) and stores it as a blob in the
// project's NAME-source repository, for the build to fetch.
func uploadDir(ctx context.Context, cl *client.Client, ns, bc, dir string, progress io.Writer) (*api.BinaryBuildSource, error) {
	host, err := cl.RegistryHost(ctx)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "slipway-upload-*.tar")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	tw := tar.NewWriter(f)
	root := os.DirFS(dir)
	if err := tw.AddFS(skipGit{root}); err != nil {
		return nil, fmt.Errorf("archiving %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromFile(f.Name())
	if err != nil {
		return nil, err
	}
	repo, err := name.NewRepository(host+"/"+ns+"/"+bc+"-source", name.Insecure)
	if err != nil {
		return nil, err
	}
	size, _ := layer.Size()
	fmt.Fprintf(progress, "Uploading %s (%d bytes compressed)\n", dir, size)
	if err := remote.WriteLayer(repo, layer, remote.WithAuth(&authn.Basic{Username: "slipway", Password: cl.Token()}), remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("uploading the source: %w", err)
	}
	d, err := layer.Digest()
	if err != nil {
		return nil, err
	}
	return &api.BinaryBuildSource{Repository: ns + "/" + bc + "-source", Digest: d.String()}, nil
}

// skipGit leaves .git directories out of an upload.
type skipGit struct{ fs.FS }

func (s skipGit) ReadDir(name string) ([]fs.DirEntry, error) {
	ents, err := fs.ReadDir(s.FS, name)
	out := ents[:0]
	for _, e := range ents {
		if e.Name() != ".git" {
			out = append(out, e)
		}
	}
	return out, err
}
