package cmd

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// resolve turns "projects", "project", "proj" or "rb" into a resource.
func resolve(name string) (*api.Resource, error) {
	r, ok := api.Lookup(name)
	if !ok || r.Hidden {
		return nil, usagef("the server doesn't have a resource type %q; see `slipway api-resources`", name)
	}
	return r, nil
}

// splitTypeName reads "TYPE NAME" or "TYPE/NAME".
func splitTypeName(args []string) (*api.Resource, []string, error) {
	if len(args) == 0 {
		return nil, nil, usagef("name a resource type, such as `projects`; see `slipway api-resources`")
	}
	typ, names := args[0], args[1:]
	if t, n, ok := strings.Cut(typ, "/"); ok {
		typ, names = t, append([]string{n}, names...)
	}
	r, err := resolve(typ)
	return r, names, err
}

func getCmd() *cobra.Command {
	var output, selector string
	var watch, allNS bool
	var limit int64
	c := &cobra.Command{
		Use:   "get RESOURCE [NAME...]",
		Short: "Show one or many resources",
		Example: `  slipway get projects
  slipway get sa -n myproject -o yaml
  slipway get rolebindings -l team=web -o wide
  slipway get sa builder -o json
  slipway get serviceaccounts -w          # keep watching for changes`,
		ValidArgsFunction: completeTypes,
		RunE: func(c *cobra.Command, args []string) error {
			res, names, err := splitTypeName(args)
			if err != nil {
				return err
			}
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			ns := ""
			if res.Namespaced && !allNS {
				if ns, err = cfg.project(); err != nil {
					return err
				}
			}
			p, err := newPrinter(c.OutOrStdout(), output, res, allNS)
			if err != nil {
				return err
			}
			ctx := c.Context()
			if watch {
				if len(names) > 1 {
					return usagef("-w watches one object or a whole list, not %d names", len(names))
				}
				opts := client.ListOptions{LabelSelector: selector}
				if len(names) == 1 {
					opts.Name = names[0]
				}
				ch, err := cl.Watch(ctx, res, ns, "", opts)
				if err != nil {
					return err
				}
				for ev := range ch {
					if ev.Err != nil {
						return ev.Err
					}
					if err := p.object(ev.Object, ev.Type); err != nil {
						return err
					}
				}
				return ctx.Err()
			}
			if len(names) > 0 {
				var objs []api.Object
				for _, n := range names {
					o, err := cl.Get(ctx, res, ns, n)
					if err != nil {
						return err
					}
					objs = append(objs, o)
				}
				if len(objs) == 1 && (output == "json" || output == "yaml") {
					return p.doc(objs[0])
				}
				return p.list(objs)
			}
			var all []api.Object
			opts := client.ListOptions{LabelSelector: selector, Limit: limit}
			for {
				items, meta, err := cl.List(ctx, res, ns, opts)
				if err != nil {
					return err
				}
				all = append(all, items...)
				if meta.Continue == "" {
					break
				}
				opts.Continue = meta.Continue
			}
			if len(all) == 0 && output == "" {
				where := ""
				if ns != "" {
					where = " in project " + ns
				}
				fmt.Fprintf(c.ErrOrStderr(), "No %s found%s.\n", res.Name, where)
				return nil
			}
			return p.list(all)
		},
	}
	f := c.Flags()
	f.StringVarP(&output, "output", "o", "", "json, yaml, wide or name")
	f.StringVarP(&selector, "selector", "l", "", "label selector, such as app=web,tier!=db")
	f.BoolVarP(&watch, "watch", "w", false, "after listing, watch for changes")
	f.BoolVarP(&allNS, "all-namespaces", "A", false, "list across every project you can see")
	f.Int64Var(&limit, "chunk-size", 500, "fetch lists in pages of this many items")
	_ = c.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"json", "yaml", "wide", "name"}, cobra.ShellCompDirectiveNoFileComp
	})
	return c
}

func completeTypes(c *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, r := range api.Resources() {
		if !r.Hidden {
			out = append(out, r.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func describeCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "describe RESOURCE NAME",
		Short:             "Show a resource in detail",
		Example:           "  slipway describe project myproject\n  slipway describe rolebinding admin -n myproject\n  slipway describe quota compute -n myproject",
		ValidArgsFunction: completeTypes,
		RunE: func(c *cobra.Command, args []string) error {
			res, names, err := splitTypeName(args)
			if err != nil {
				return err
			}
			if len(names) == 0 {
				return usagef("describe needs a name: slipway describe %s NAME", res.Name)
			}
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			ns := ""
			if res.Namespaced {
				if ns, err = cfg.project(); err != nil {
					return err
				}
			}
			for i, n := range names {
				o, err := cl.Get(c.Context(), res, ns, n)
				if err != nil {
					return err
				}
				if i > 0 {
					fmt.Fprintln(c.OutOrStdout())
				}
				if is, ok := o.(*api.ImageStream); ok {
					describeImageStream(c.OutOrStdout(), is)
					continue
				}
				if q, ok := o.(*api.ResourceQuota); ok {
					describeQuota(c.OutOrStdout(), q)
					continue
				}
				if err := describe(c.OutOrStdout(), res, o); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func apiResourcesCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "api-resources",
		Short:   "List the resource types the server knows",
		Example: "  slipway api-resources",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSHORTNAMES\tNAMESPACED\tKIND")
			rs := api.Resources()
			sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
			for _, r := range rs {
				if !r.Hidden {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", r.Name, strings.Join(r.ShortNames, ","), r.Namespaced, r.Kind)
				}
			}
			return tw.Flush()
		},
	}
}
