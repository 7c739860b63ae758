package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/registry"
)

// admRegistryCmds are the registry's administration verbs under `adm`.
func admRegistryCmds() []*cobra.Command {
	prune := &cobra.Command{Use: "prune", Short: "Remove old images and tag history", Example: "  slipway adm prune images -n shop --confirm"}
	prune.AddCommand(pruneImagesCmd())
	return []*cobra.Command{prune, gcCmd()}
}

func writeReport(out io.Writer, output string, v any, text func()) error {
	switch output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		return (&printer{format: "yaml", out: out}).doc(v)
	case "":
		text()
		return nil
	}
	return usagef("-o %q: use json or yaml", output)
}

func pruneImagesCmd() *cobra.Command {
	var (
		keep        int
		younger     time.Duration
		confirm     bool
		dryRun      bool
		allProjects bool
		output      string
	)
	c := &cobra.Command{
		Use:   "images",
		Short: "Prune tag history and images nothing keeps (a dry run unless --confirm)",
		Long: `Prune tag history beyond --keep-tag-revisions that is older than --keep-younger-than,
then every image of the project that no kept history entry holds. Nothing a pod, replication
controller, deployment config, running or recent build, pending promotion, pipeline stage or
image stream spec names is pruned, nor the children of a kept index, nor a signature, SBOM or
attestation whose subject is kept.

Without --confirm nothing changes: the command lists what would go and why. The bytes are freed
by the next garbage collection (slipway adm gc).

Project admins prune their project (-n or the current one); cluster admins may prune every
project with --all-projects. Retention rules a project applies to itself hourly are the
annotations slipway.dev/retention-keep-tag-revisions and slipway.dev/retention-keep-younger-than.`,
		Example: `  slipway adm prune images -n shop
  slipway adm prune images -n shop --keep-tag-revisions 5 --keep-younger-than 24h --confirm
  slipway adm prune images --all-projects -o json`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if keep < 1 {
				return usagef("--keep-tag-revisions must be at least 1: a tag's current image is never pruned (untag to remove a tag)")
			}
			if younger <= 0 {
				return usagef("--keep-younger-than must be positive, such as 60m")
			}
			if confirm && dryRun && c.Flags().Changed("dry-run") {
				return usagef("--dry-run and --confirm contradict each other: pass one")
			}
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			project := ""
			if !allProjects {
				if project, err = cfg.project(); err != nil {
					return err
				}
			} else if g.project != "" {
				return usagef("-n and --all-projects contradict each other: pass one")
			}
			var rep registry.PruneReport
			in := registry.PruneRequest{Project: project, KeepTagRevisions: keep, KeepYoungerThan: younger.String(), Confirm: confirm}
			if err := cl.RegistryAdmin(c.Context(), http.MethodPost, "prune/images", nil, in, &rep); err != nil {
				return err
			}
			out := c.OutOrStdout()
			return writeReport(out, output, &rep, func() { printPrune(out, &rep) })
		},
	}
	f := c.Flags()
	f.IntVar(&keep, "keep-tag-revisions", registry.DefaultKeepTagRevisions, "keep this many newest entries of every tag's history")
	f.DurationVar(&younger, "keep-younger-than", registry.DefaultKeepYoungerThan, "keep history entries and images younger than this")
	f.BoolVar(&confirm, "confirm", false, "remove what the dry run lists (without it nothing changes)")
	f.BoolVar(&dryRun, "dry-run", true, "list what would be removed and why, and change nothing (the default)")
	f.BoolVar(&allProjects, "all-projects", false, "prune every project (cluster admins)")
	f.StringVarP(&output, "output", "o", "", "json or yaml")
	return c
}

func printPrune(out io.Writer, rep *registry.PruneReport) {
	verb := "Removed"
	if rep.DryRun {
		verb = "Would remove"
	}
	var entries, images int
	for _, it := range rep.Removed {
		if it.Kind == "Image" {
			images++
		} else {
			entries++
		}
	}
	fmt.Fprintf(out, "%s %d history entries and %d images (keep %d revisions per tag, and anything younger than %s).\n", verb, entries, images, rep.KeepTagRevisions, rep.KeepYoungerThan)
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	for _, it := range rep.Removed {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", kindWhere(it), short(it.Image), it.Reason)
	}
	tw.Flush()
	if len(rep.Kept) > 0 {
		fmt.Fprintf(out, "Kept although the rules alone would remove them:\n")
		for _, it := range rep.Kept {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", kindWhere(it), short(it.Image), it.Reason)
		}
		tw.Flush()
	}
	if rep.DryRun {
		fmt.Fprintln(out, "This was a dry run: nothing changed. Run again with --confirm to remove these; then `slipway adm gc` frees the bytes.")
	}
}

func kindWhere(it registry.PruneItem) string {
	if it.Kind == "Image" {
		return "image " + it.Project
	}
	return fmt.Sprintf("history %s/%s:%s#%d", it.Project, it.Stream, it.Tag, it.Position)
}

func short(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

func gcCmd() *cobra.Command {
	var (
		grace  time.Duration
		dryRun bool
		output string
	)
	c := &cobra.Command{
		Use:   "gc",
		Short: "Delete blobs no manifest references, while pushes go on (cluster admins)",
		Long: `Collect the registry's garbage online: mark every blob a manifest of any repository
references, and delete the others that were neither pushed nor referenced within --gc-grace.
Pushes continue meanwhile; a blob a concurrent push uses is never deleted.

Prune first (slipway adm prune images) so that old manifests stop holding their blobs.`,
		Example: `  slipway adm gc --dry-run
  slipway adm gc --gc-grace 2h -o json
  slipway adm gc why sha256:4f1c...`,
		Args: exactArgs(0, ""),
		RunE: func(c *cobra.Command, _ []string) error {
			if grace <= 0 {
				return usagef("--gc-grace must be positive, such as 1h")
			}
			cl, _, err := connect()
			if err != nil {
				return err
			}
			var rep registry.GCReport
			if err := cl.RegistryAdmin(c.Context(), http.MethodPost, "gc", nil, registry.GCRequest{Grace: grace.String(), DryRun: dryRun}, &rep); err != nil {
				return err
			}
			out := c.OutOrStdout()
			return writeReport(out, output, &rep, func() {
				verb := "Deleted"
				if rep.DryRun {
					verb = "Would delete"
				}
				fmt.Fprintf(out, "%s %d blobs, freeing %s (%d bytes). Scanned %d repositories, %d manifests, %d blobs; %d referenced, %d spared by the grace period %s, %d taken back by pushes meanwhile.\n",
					verb, len(rep.Deleted), humanBytes(rep.BytesFreed), rep.BytesFreed, rep.Repositories, rep.Manifests, rep.Blobs, rep.Marked, rep.Spared, rep.Grace, rep.Rereferenced)
				for _, b := range rep.Deleted {
					fmt.Fprintf(out, "  %s\t%s\n", b.Digest, humanBytes(b.Size))
				}
				if rep.DryRun {
					fmt.Fprintln(out, "This was a dry run: nothing was deleted.")
				}
			})
		},
	}
	f := c.Flags()
	f.DurationVar(&grace, "gc-grace", registry.DefaultGCGrace, "spare blobs pushed or referenced within this long")
	f.BoolVar(&dryRun, "dry-run", false, "list what would be deleted and the bytes it frees, and delete nothing")
	f.StringVarP(&output, "output", "o", "", "json or yaml")
	c.AddCommand(gcWhyCmd())
	return c
}

func gcWhyCmd() *cobra.Command {
	var (
		grace  time.Duration
		output string
	)
	c := &cobra.Command{
		Use:     "why DIGEST",
		Short:   "Say what keeps a blob: the manifests, tags and repositories that hold it",
		Example: "  slipway adm gc why sha256:4f1c0d...",
		Args:    exactArgs(1, "a blob or manifest digest"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := connect()
			if err != nil {
				return err
			}
			var why registry.BlobWhy
			if err := cl.RegistryAdmin(c.Context(), http.MethodGet, "blobs/"+url.PathEscape(args[0]), url.Values{"grace": {grace.String()}}, nil, &why); err != nil {
				return err
			}
			out := c.OutOrStdout()
			return writeReport(out, output, &why, func() {
				size := ""
				if why.Stored {
					size = " (" + humanBytes(why.Size) + ")"
				}
				fmt.Fprintf(out, "%s%s: %s\n", why.Digest, size, why.Verdict)
				for _, h := range why.Holders {
					via := ""
					if h.Via != "" {
						via = " via " + short(h.Via)
					}
					fmt.Fprintf(out, "  %-10s %s%s\n", h.Kind, h.Name, via)
				}
			})
		},
	}
	c.Flags().DurationVar(&grace, "gc-grace", registry.DefaultGCGrace, "the grace period the next collection uses")
	c.Flags().StringVarP(&output, "output", "o", "", "json or yaml")
	return c
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
