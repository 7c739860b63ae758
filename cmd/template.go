package cmd

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/templates"
)

// templateFlags are the flags process and new-app share.
type templateFlags struct {
	files      []string
	params     []string
	paramFiles []string
	labels     []string
}

func (f *templateFlags) add(c *cobra.Command) {
	fl := c.Flags()
	fl.StringSliceVarP(&f.files, "filename", "f", nil, "read the template from this file (- for standard input) instead of the project")
	fl.StringArrayVarP(&f.params, "param", "p", nil, "a parameter value, NAME=VALUE (repeat for more)")
	fl.StringArrayVar(&f.paramFiles, "param-file", nil, "a file of NAME=VALUE lines (# starts a comment)")
	fl.StringArrayVarP(&f.labels, "labels", "l", nil, "a label KEY=VALUE to add to every object (repeat for more)")
}

// values reads -p and --param-file; -p wins.
func (f *templateFlags) values() (map[string]string, error) {
	vals := map[string]string{}
	for _, pf := range f.paramFiles {
		file, err := os.Open(pf)
		if err != nil {
			return nil, fmt.Errorf("--param-file: %w", err)
		}
		sc := bufio.NewScanner(file)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				file.Close()
				return nil, usagef("%s line %d: want NAME=VALUE, got %q", pf, n, line)
			}
			vals[strings.TrimSpace(k)] = v
		}
		err = sc.Err()
		file.Close()
		if err != nil {
			// A line past the scanner's 64 KiB would otherwise end the
			// file there, silently dropping the values after it.
			return nil, fmt.Errorf("--param-file %s: %w", pf, err)
		}
	}
	for _, p := range f.params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("-p %q: want NAME=VALUE", p)
		}
		vals[k] = v
	}
	return vals, nil
}

func (f *templateFlags) labelMap() (map[string]string, error) {
	m := map[string]string{}
	for _, l := range f.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, usagef("-l %q: want KEY=VALUE", l)
		}
		m[k] = v
	}
	return m, nil
}

// loadTemplate reads the template named by args[0] from the project, or
// the one Template in -f.
func (f *templateFlags) loadTemplate(ctx context.Context, cl *client.Client, ns string, args []string, in io.Reader) (*api.Template, error) {
	switch {
	case len(f.files) > 0 && len(args) > 0:
		return nil, usagef("name a template or give -f FILE, not both")
	case len(f.files) > 0:
		docs, err := readDocuments(f.files, in)
		if err != nil {
			return nil, err
		}
		if len(docs) != 1 || docs[0].res != api.Templates {
			return nil, usagef("-f must hold exactly one Template (found %d documents)", len(docs))
		}
		t := docs[0].obj.(*api.Template)
		if t.Namespace == "" {
			t.Namespace = ns
		}
		if err := api.Templates.ValidateObject(t); err != nil {
			return nil, err
		}
		return t, nil
	case len(args) == 1:
		if cl == nil {
			return nil, usagef("reading template %s needs a server: log in, or give the template with -f FILE", args[0])
		}
		o, err := cl.Get(ctx, api.Templates, ns, args[0])
		if err != nil {
			return nil, err
		}
		return o.(*api.Template), nil
	}
	return nil, usagef("name a template (see `slipway get templates`) or give -f FILE")
}

// processed turns a template's processed objects into documents, each
// checked as an object of its kind, so that nothing is printed or created
// unless all of them are valid.
func processed(t *api.Template, res *templates.Result, ns string) ([]document, error) {
	var docs []document
	for i, o := range res.Objects {
		j, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		ds, err := decodeDocuments(j, fmt.Sprintf("template %s objects[%d]", t.Name, i))
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			m := d.obj.GetObjectMeta()
			placeholder := d.res.Namespaced && m.Namespace == "" && ns == ""
			if placeholder {
				m.Namespace = "project" // checked as if in some project; printed without one
			} else if d.res.Namespaced && m.Namespace == "" {
				m.Namespace = ns
			}
			err := d.res.ValidateObject(d.obj)
			if placeholder {
				m.Namespace = ""
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", d.from, err)
			}
		}
		docs = append(docs, ds...)
	}
	return docs, nil
}

func processCmd() *cobra.Command {
	var tf templateFlags
	var output string
	var listParams bool
	c := &cobra.Command{
		Use:   "process (TEMPLATE | -f FILE) [-p NAME=VALUE]...",
		Short: "Substitute a template's parameters and print its objects",
		Long: `Process a template: settle every parameter (given with -p, defaulted, or
generated), check each value against its type, and print the objects with the
values substituted, ready for 'slipway apply -f -'. Nothing is created.

${NAME} is replaced as text anywhere in a string; a whole value "${{NAME}}"
becomes the parameter's typed value (a number for type: int, true/false for
type: bool).`,
		Example: `  slipway process -f shop-template.yaml -p NAME=shop -p REPLICAS=3 | slipway apply -f -
  slipway process shop --parameters
  slipway process shop -p NAME=shop -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if output != "yaml" && output != "json" {
				return usagef("-o %q is not a format; use yaml or json", output)
			}
			var cl *client.Client
			ns := "default"
			if len(args) > 0 || len(tf.files) == 0 {
				var err error
				if cl, ns, err = connectProject(); err != nil {
					return err
				}
			}
			t, err := tf.loadTemplate(c.Context(), cl, ns, args, c.InOrStdin())
			if err != nil {
				return err
			}
			if listParams {
				return printParameters(c.OutOrStdout(), t)
			}
			vals, err := tf.values()
			if err != nil {
				return err
			}
			labels, err := tf.labelMap()
			if err != nil {
				return err
			}
			res, err := templates.Process(t, templates.Options{Values: vals, Labels: labels})
			if err != nil {
				return err
			}
			docs, err := processed(t, res, "")
			if err != nil {
				return err
			}
			p := &printer{format: output, out: c.OutOrStdout()}
			if output == "json" {
				items := make([]any, len(docs))
				for i, d := range docs {
					items[i] = d.obj
				}
				return p.doc(map[string]any{"apiVersion": api.APIVersion, "kind": "List", "items": items})
			}
			for _, d := range docs {
				if err := p.doc(d.obj); err != nil {
					return err
				}
			}
			return nil
		},
	}
	tf.add(c)
	c.Flags().StringVarP(&output, "output", "o", "yaml", "yaml (documents separated by ---) or json (a List)")
	c.Flags().BoolVar(&listParams, "parameters", false, "list the template's parameters instead")
	return c
}

func printParameters(out io.Writer, t *api.Template) error {
	tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTYPE\tREQUIRED\tGENERATOR\tVALUE\tDESCRIPTION")
	for _, p := range t.Parameters {
		typ := p.Type
		if typ == "" {
			typ = api.ParamString
		}
		gen := ""
		if p.Generate != "" {
			gen = p.Generate + " " + p.From
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", p.Name, typ, p.Required, gen, p.Value, p.Description)
	}
	return tw.Flush()
}
