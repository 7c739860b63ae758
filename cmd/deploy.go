package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/deploy"
)

func rolloutCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rollout SUBCOMMAND dc/NAME",
		Short: "Start, watch, list, undo, pause or resume deployment config rollouts",
		Example: `  slipway rollout latest dc/web
  slipway rollout status dc/web
  slipway rollout history dc/web
  slipway rollout undo dc/web --to-revision 3
  slipway rollout pause dc/web`,
	}
	c.AddCommand(rolloutLatestCmd(), rolloutStatusCmd(), rolloutHistoryCmd(), rolloutUndoCmd(),
		rolloutPauseCmd("pause", true), rolloutPauseCmd("resume", false))
	return c
}

// dcName accepts NAME, dc/NAME and deploymentconfig/NAME.
func dcName(arg string) string {
	if _, n, ok := strings.Cut(arg, "/"); ok {
		return n
	}
	return arg
}

func getDC(ctx context.Context, cl *client.Client, ns, name string) (*api.DeploymentConfig, error) {
	o, err := cl.Get(ctx, api.DeploymentConfigs, ns, name)
	if err != nil {
		return nil, err
	}
	return o.(*api.DeploymentConfig), nil
}

func revisions(ctx context.Context, cl *client.Client, ns, dc string) ([]*api.ReplicationController, error) {
	items, _, err := cl.List(ctx, api.ReplicationControllers, ns, client.ListOptions{LabelSelector: api.DeploymentConfigLabel + "=" + dc})
	if err != nil {
		return nil, err
	}
	return deploy.Revisions(items, dc), nil
}

// patchDC changes a deployment config, retrying on conflicts.
func patchDC(ctx context.Context, cl *client.Client, ns, name string, fn func(*api.DeploymentConfig) error) (*api.DeploymentConfig, error) {
	for range 10 {
		dc, err := getDC(ctx, cl, ns, name)
		if err != nil {
			return nil, err
		}
		if err := fn(dc); err != nil {
			return nil, err
		}
		if err := cl.Update(ctx, api.DeploymentConfigs, dc); api.IsConflict(err) {
			continue
		} else if err != nil {
			return nil, err
		}
		return dc, nil
	}
	return nil, fmt.Errorf("deployment config %s kept changing under us; try again", name)
}

func rolloutLatestCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "latest dc/NAME",
		Short:   "Roll out a new revision now, with the images the triggers point at",
		Example: `  slipway rollout latest dc/web`,
		Args:    exactArgs(1, "a deployment config"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			name := dcName(args[0])
			if _, err := patchDC(c.Context(), cl, ns, name, func(dc *api.DeploymentConfig) error {
				if dc.Spec.Paused {
					return fmt.Errorf("dc/%s is paused; run `slipway rollout resume dc/%s` first", name, name)
				}
				if dc.Annotations == nil {
					dc.Annotations = map[string]string{}
				}
				dc.Annotations[deploy.RequestAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
				return nil
			}); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "deploymentconfig/%s rolling out; follow it with `slipway rollout status dc/%s`\n", name, name)
			return nil
		},
	}
}

func rolloutStatusCmd() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:     "status dc/NAME",
		Short:   "Wait for the latest rollout and report how it ended",
		Example: `  slipway rollout status dc/web --timeout 5m`,
		Args:    exactArgs(1, "a deployment config"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			name := dcName(args[0])
			ctx, cancel := context.WithTimeout(c.Context(), timeout)
			defer cancel()
			out := c.OutOrStdout()
			last := ""
			for {
				dc, err := getDC(ctx, cl, ns, name)
				if err != nil {
					return err
				}
				revs, err := revisions(ctx, cl, ns, name)
				if err != nil {
					return err
				}
				if len(revs) == 0 {
					msg := "waiting for the first revision"
					for _, cd := range dc.Status.Conditions {
						if cd.Status == api.ConditionFalse {
							msg = cd.Message
						}
					}
					if msg != last {
						fmt.Fprintln(out, msg)
						last = msg
					}
				} else {
					rc := revs[len(revs)-1]
					phase := rc.Annotations[api.DeploymentPhaseAnnotation]
					msg := fmt.Sprintf("revision %d: %s, %d of %d new pods ready", deploy.Version(rc), phase, rc.Status.ReadyReplicas, dc.Spec.Replicas)
					if msg != last {
						fmt.Fprintln(out, msg)
						last = msg
					}
					switch phase {
					case api.DeploymentComplete:
						fmt.Fprintf(out, "deploymentconfig/%s: revision %d rolled out\n", name, deploy.Version(rc))
						return nil
					case api.DeploymentFailed:
						return fmt.Errorf("revision %d failed: %s", deploy.Version(rc), rc.Annotations[api.DeploymentReasonAnnotation])
					}
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("dc/%s did not finish rolling out within %s; last: %s", name, timeout, last)
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	return c
}

func rolloutHistoryCmd() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "history dc/NAME",
		Short:   "List a deployment config's revisions, their state, cause and images",
		Example: `  slipway rollout history dc/web -o json`,
		Args:    exactArgs(1, "a deployment config"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			revs, err := revisions(c.Context(), cl, ns, dcName(args[0]))
			if err != nil {
				return err
			}
			type row struct {
				Revision int64    `json:"revision"`
				Name     string   `json:"name"`
				Status   string   `json:"status"`
				Replicas int32    `json:"replicas"`
				Cause    string   `json:"cause"`
				Images   []string `json:"images"`
			}
			var rows []row
			for _, rc := range revs {
				r := row{Revision: deploy.Version(rc), Name: rc.Name, Status: rc.Annotations[api.DeploymentPhaseAnnotation], Replicas: rc.Spec.Replicas, Cause: rc.Annotations[api.DeploymentCauseAnnotation]}
				for _, ct := range rc.Spec.Template.Spec.Containers {
					r.Images = append(r.Images, ct.Image)
				}
				rows = append(rows, r)
			}
			out := c.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			case "yaml":
				return (&printer{format: "yaml", out: out}).doc(rows)
			case "":
			default:
				return usagef("-o %q: use json or yaml", output)
			}
			tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "REVISION\tSTATUS\tREPLICAS\tCAUSE\tIMAGES")
			for _, r := range rows {
				fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", r.Revision, r.Status, r.Replicas, r.Cause, strings.Join(r.Images, ","))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "json or yaml")
	return c
}

func rolloutUndoCmd() *cobra.Command {
	var to int64
	c := &cobra.Command{
		Use:   "undo dc/NAME [--to-revision N]",
		Short: "Roll back to the previous (or a given) revision's template and images",
		Long: `Roll back: the config takes the template and images of the previous
complete revision (or --to-revision N), and rolls it out as a new revision.
Its image triggers are turned off, so a tag that moves does not undo the
rollback; turn them back on with 'slipway set triggers' or by editing the config.`,
		Example: `  slipway rollout undo dc/web
  slipway rollout undo dc/web --to-revision 2`,
		Args: exactArgs(1, "a deployment config"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			name := dcName(args[0])
			revs, err := revisions(c.Context(), cl, ns, name)
			if err != nil {
				return err
			}
			var target *api.ReplicationController
			if to > 0 {
				for _, rc := range revs {
					if deploy.Version(rc) == to {
						target = rc
					}
				}
				if target == nil {
					return fmt.Errorf("dc/%s has no revision %d; see `slipway rollout history dc/%s`", name, to, name)
				}
			} else if len(revs) > 1 {
				for _, rc := range revs[:len(revs)-1] {
					if rc.Annotations[api.DeploymentPhaseAnnotation] == api.DeploymentComplete {
						target = rc
					}
				}
			}
			if target == nil {
				return fmt.Errorf("dc/%s has no earlier complete revision to roll back to", name)
			}
			if _, err := patchDC(c.Context(), cl, ns, name, func(dc *api.DeploymentConfig) error {
				tpl := *target.Spec.Template
				tpl.Labels = map[string]string{}
				for k, v := range target.Spec.Template.Labels {
					if k != api.DeploymentLabel && k != api.DeploymentConfigLabel {
						tpl.Labels[k] = v
					}
				}
				dc.Spec.Template = &tpl
				for i := range dc.Spec.Triggers {
					if p := dc.Spec.Triggers[i].ImageChangeParams; p != nil {
						p.Automatic = false
					}
				}
				if dc.Annotations == nil {
					dc.Annotations = map[string]string{}
				}
				dc.Annotations[deploy.RequestAnnotation] = "undo to " + target.Name + " at " + time.Now().UTC().Format(time.RFC3339Nano)
				return nil
			}); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "deploymentconfig/%s rolling back to revision %d; image triggers are off until you turn them back on\n", name, deploy.Version(target))
			return nil
		},
	}
	c.Flags().Int64Var(&to, "to-revision", 0, "the revision to go back to (default: the previous complete one)")
	return c
}

func rolloutPauseCmd(verb string, pause bool) *cobra.Command {
	return &cobra.Command{
		Use:     verb + " dc/NAME",
		Short:   map[bool]string{true: "Stop new rollouts of a deployment config", false: "Let a paused deployment config roll out again"}[pause],
		Example: "  slipway rollout " + verb + " dc/web",
		Args:    exactArgs(1, "a deployment config"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			name := dcName(args[0])
			if _, err := patchDC(c.Context(), cl, ns, name, func(dc *api.DeploymentConfig) error {
				dc.Spec.Paused = pause
				return nil
			}); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "deploymentconfig/%s %sd\n", name, verb)
			return nil
		},
	}
}

func scaleCmd() *cobra.Command {
	var replicas int32
	c := &cobra.Command{
		Use:   "scale dc/NAME|rc/NAME --replicas N",
		Short: "Set how many pods a deployment config or replication controller runs",
		Example: `  slipway scale dc/web --replicas 5
  slipway scale rc/worker --replicas 0`,
		Args: exactArgs(1, "dc/NAME or rc/NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			if replicas < 0 {
				return usagef("--replicas must be 0 or more")
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			kind, name, ok := strings.Cut(args[0], "/")
			if !ok {
				return usagef("name the kind: dc/%s or rc/%s", args[0], args[0])
			}
			r, found := api.Lookup(kind)
			if !found || (r != api.DeploymentConfigs && r != api.ReplicationControllers) {
				return usagef("scale works on dc/NAME or rc/NAME, not %q", kind)
			}
			patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": replicas}})
			if _, err := cl.Patch(c.Context(), r, ns, name, patch); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s/%s scaled to %d\n", strings.ToLower(r.Kind), name, replicas)
			return nil
		},
	}
	c.Flags().Int32Var(&replicas, "replicas", -1, "the number of pods")
	_ = c.MarkFlagRequired("replicas")
	return c
}

func execCmd() *cobra.Command {
	var container string
	c := &cobra.Command{
		Use:   "exec POD [-c CONTAINER] -- COMMAND [ARGS...]",
		Short: "Run a command in a pod's container",
		Long: `Run a command in a pod's container and print its output as it comes.

The node stops a command whose output passes 16 MiB (stdout and stderr
together) or that runs longer than an hour, and this command then fails
saying so; write large output to a file in the container instead.`,
		Example: `  slipway exec web-1-x7k2p -- ls /app
  slipway exec web-1-x7k2p -c sidecar -- cat /shared/state`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if c.ArgsLenAtDash() != 1 {
				return usagef("put the command after --: slipway exec POD -- COMMAND")
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			code, err := cl.PodExecStream(c.Context(), ns, args[0], container, args[1:], c.OutOrStdout(), c.ErrOrStderr())
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&container, "container", "c", "", "the container (default: the pod's first)")
	return c
}

// exitError passes a remote command's exit code on.
type exitError struct{ code int }

func (e *exitError) Error() string { return "command exited with status " + strconv.Itoa(e.code) }

// ExitCode is the status the CLI should exit with for err.
func ExitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
