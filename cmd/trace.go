package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/lineage"
)

func writeGraph(w io.Writer, g *lineage.Graph, output string) error {
	switch output {
	case "":
		lineage.WriteTree(w, g)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if g.Nodes == nil {
			g.Nodes = []lineage.Node{}
		}
		if g.Edges == nil {
			g.Edges = []lineage.Edge{}
		}
		return enc.Encode(g)
	case "dot":
		lineage.WriteDot(w, g)
	default:
		return usagef("-o %q: use json or dot (or nothing, for a tree)", output)
	}
	return nil
}

func traceCmd() *cobra.Command {
	var output, vuln string
	c := &cobra.Command{
		Use:   "trace IMAGE|pod/NAME|dc/NAME | --vuln ID",
		Short: "Show where a running image came from: pod → digest → build → commit → base → scan → signatures → promotions",
		Long: `Trace an image's lineage: the pods that run it, its digest, the build and
commit that made it, its base image, its SBOM and findings, its signatures
and attestations, and its promotions. Everything is read with your own
credentials; a hop you may not read is shown as "not visible to you".

--vuln ID lists the running pods you may see whose image has the finding
(an OSV, CVE or GHSA id), with the build config whose rebuild replaces the
image and whether its base's stream has an image without the finding.

-o json prints {"nodes": [{id, kind, name, namespace, digest, detail,
notVisible}], "edges": [{from, to, label}]}; -o dot prints Graphviz.`,
		Example: `  slipway trace pod/web-3-x7k2q
  slipway trace dc/web -o dot | dot -Tsvg > web.svg
  slipway trace web:latest -o json
  slipway trace --vuln CVE-2024-45491`,
		Args: func(c *cobra.Command, args []string) error {
			if vuln == "" && len(args) != 1 || vuln != "" && len(args) != 0 {
				return usagef("name one image, pod/NAME or dc/NAME, or --vuln ID alone\nSee '%s --help' for usage.", c.CommandPath())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if output != "" && output != "json" && output != "dot" {
				return usagef("-o %q: use json or dot (or nothing, for a tree)", output)
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			host, err := cl.RegistryHost(ctx)
			if err != nil {
				return err
			}
			t := lineage.New(cl, host, lineage.RegistryReferrers(host, cl.Token()))
			if vuln != "" {
				projects := []string{ns}
				if items, _, err := cl.List(ctx, api.Projects, "", client.ListOptions{}); err == nil {
					projects = projects[:0]
					for _, o := range items {
						projects = append(projects, o.(*api.Project).Name)
					}
					sort.Strings(projects)
				}
				t.Vuln(ctx, projects, vuln)
				if len(t.Graph().Nodes) == 0 && output == "" {
					fmt.Fprintf(c.OutOrStdout(), "No running pod you may see runs an image with %s.\n", vuln)
					return nil
				}
				return writeGraph(c.OutOrStdout(), t.Graph(), output)
			}
			arg := args[0]
			_, err = t.Trace(ctx, ns, arg)
			if errors.Is(err, lineage.ErrOtherRegistry) {
				return usagef("%s", err)
			}
			if err != nil {
				if lineage.Forbidden(err) {
					return fmt.Errorf("%s is %s: %s", arg, lineage.NotVisibleMessage, Friendly(err))
				}
				return err
			}
			return writeGraph(c.OutOrStdout(), t.Graph(), output)
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "json or dot (default: a tree)")
	c.Flags().StringVar(&vuln, "vuln", "", "list the running pods whose image has this finding (CVE, GHSA or OSV id)")
	return c
}
