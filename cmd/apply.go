package cmd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// document is one object read from a file.
type document struct {
	res  *api.Resource
	raw  map[string]any
	obj  api.Object
	from string
}

// readDocuments reads YAML or JSON files ("-" is stdin), each holding one
// or more documents separated by "---". Every document is checked before
// anything is sent, so a bad file changes nothing.
func readDocuments(files []string, in io.Reader) ([]document, error) {
	if len(files) == 0 {
		return nil, usagef("name a file with -f FILE (or -f - for standard input)")
	}
	var docs []document
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(in)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, err
		}
		for i, part := range splitYAML(data) {
			where := fmt.Sprintf("%s (document %d)", f, i+1)
			j, err := yaml.YAMLToJSONStrict(part)
			if err != nil {
				return nil, fmt.Errorf("%s is not valid YAML or JSON: %w", where, err)
			}
			if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
				continue
			}
			ds, err := decodeDocuments(j, where)
			if err != nil {
				return nil, err
			}
			docs = append(docs, ds...)
		}
	}
	return docs, nil
}

// decodeDocuments decodes one JSON object as the object of its kind, or a
// List (what `slipway process -o json` prints) as each of its items.
func decodeDocuments(j []byte, where string) ([]document, error) {
	var raw map[string]any
	if err := json.Unmarshal(j, &raw); err != nil {
		return nil, fmt.Errorf("%s is not an object: %w", where, err)
	}
	kind, _ := raw["kind"].(string)
	if kind == "" {
		return nil, fmt.Errorf("%s has no kind", where)
	}
	if kind == "List" {
		items, _ := raw["items"].([]any)
		var docs []document
		for i, it := range items {
			b, _ := json.Marshal(it)
			ds, err := decodeDocuments(b, fmt.Sprintf("%s item %d", where, i+1))
			if err != nil {
				return nil, err
			}
			docs = append(docs, ds...)
		}
		return docs, nil
	}
	res, ok := api.ForKind(kind)
	if !ok || res.Hidden {
		return nil, fmt.Errorf("%s: kind %q is unknown; see `slipway api-resources`", where, kind)
	}
	obj := res.NewObject()
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %s %v", where, kind, strings.TrimPrefix(err.Error(), "json: "))
	}
	return []document{{res: res, raw: raw, obj: obj, from: where}}, nil
}

func splitYAML(data []byte) [][]byte {
	var parts [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimRight(line, " \t") == "---" {
			parts = append(parts, append([]byte(nil), cur.Bytes()...))
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	return append(parts, cur.Bytes())
}

// place puts a namespaced document into the -n project, or the current one.
func (d *document) place(cfg *Config) error {
	m := d.obj.GetObjectMeta()
	if !d.res.Namespaced {
		return nil
	}
	if m.Namespace == "" {
		ns, err := cfg.project()
		if err != nil {
			return err
		}
		m.Namespace = ns
		meta, _ := d.raw["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
			d.raw["metadata"] = meta
		}
		meta["namespace"] = ns
	} else if g.project != "" && g.project != m.Namespace {
		return fmt.Errorf("%s names project %q but -n says %q", d.from, m.Namespace, g.project)
	}
	return nil
}

func (d *document) ref() string {
	return strings.ToLower(d.res.Kind) + "/" + d.obj.GetObjectMeta().Name
}

func applyCmd() *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update resources from YAML or JSON files",
		Long: `Create each object in the files, or, when it exists, merge the file's fields
into it (a JSON merge patch). Files may hold several documents separated by
"---". Every document is checked before anything is sent.`,
		Example: `  slipway apply -f project.yaml
  cat roles.yaml | slipway apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			docs, err := readDocuments(files, c.InOrStdin())
			if err != nil {
				return err
			}
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			for i := range docs {
				if err := docs[i].place(cfg); err != nil {
					return err
				}
			}
			for _, d := range docs {
				verb, err := applyOne(c.Context(), cl, d)
				if err != nil {
					return fmt.Errorf("%s: %w", d.ref(), err)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s %s\n", d.ref(), verb)
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "file to apply (- for standard input)")
	return c
}

func applyOne(ctx context.Context, cl *client.Client, d document) (string, error) {
	m := d.obj.GetObjectMeta()
	err := cl.Create(ctx, d.res, d.obj)
	if err == nil {
		return "created", nil
	}
	if !api.IsReason(err, api.ReasonAlreadyExists) {
		return "", err
	}
	cur, err := cl.Get(ctx, d.res, m.Namespace, m.Name)
	if err != nil {
		return "", err
	}
	patch := d.raw
	if meta, ok := patch["metadata"].(map[string]any); ok {
		delete(meta, "resourceVersion")
		delete(meta, "uid")
		delete(meta, "creationTimestamp")
		delete(meta, "generation")
	}
	delete(patch, "status")
	data, _ := json.Marshal(patch)
	next, err := cl.Patch(ctx, d.res, m.Namespace, m.Name, data)
	if err != nil {
		return "", err
	}
	if next.GetObjectMeta().ResourceVersion == cur.GetObjectMeta().ResourceVersion {
		return "unchanged", nil
	}
	return "configured", nil
}

func createCmd() *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create resources from files, or a service account or token",
		Example: `  slipway create -f project.yaml
  slipway create serviceaccount ci-robot -n myproject
  slipway create token builder -n myproject
  slipway create route edge web --service web --hostname www.example.com`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			docs, err := readDocuments(files, c.InOrStdin())
			if err != nil {
				return err
			}
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			for i := range docs {
				if err := docs[i].place(cfg); err != nil {
					return err
				}
			}
			for _, d := range docs {
				if err := cl.Create(c.Context(), d.res, d.obj); err != nil {
					return fmt.Errorf("%s: %w", d.ref(), err)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s created\n", d.ref())
			}
			return nil
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "file to create from (- for standard input)")
	c.AddCommand(createServiceAccountCmd(), createTokenCmd(), createRouteCmd())
	return c
}

func createServiceAccountCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "serviceaccount NAME",
		Aliases: []string{"sa"},
		Short:   "Create a service account: a robot identity for builds, nodes or CI",
		Example: "  slipway create serviceaccount ci-robot -n myproject",
		Args:    exactArgs(1, "a service account name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			sa := &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: args[0], Namespace: ns}}
			if err := cl.Create(c.Context(), api.ServiceAccounts, sa); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "serviceaccount/%s created\n", sa.Name)
			return nil
		},
	}
}

func createTokenCmd() *cobra.Command {
	var duration time.Duration
	c := &cobra.Command{
		Use:   "token SERVICEACCOUNT",
		Short: "Issue a bearer token for a service account (printed on the last line)",
		Example: `  slipway create token ci-robot -n myproject
  TOKEN=$(slipway create token ci-robot -n myproject --duration 1h | tail -1)`,
		Args: exactArgs(1, "a service account name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			if duration < 0 {
				return usagef("--duration must be positive")
			}
			tr, err := cl.CreateToken(c.Context(), ns, args[0], duration)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "Token for %s, expires %s:\n", api.ServiceAccountUser(ns, args[0]), tr.Status.ExpirationTimestamp.Local().Format(time.RFC1123))
			fmt.Fprintln(c.OutOrStdout(), tr.Status.Token)
			return nil
		},
	}
	c.Flags().DurationVar(&duration, "duration", 0, "lifetime of the token (default: the server's, 24h; at most 90 days, longer asks are shortened with a warning)")
	return c
}

func deleteCmd() *cobra.Command {
	var files []string
	c := &cobra.Command{
		Use:   "delete RESOURCE NAME... | -f FILE",
		Short: "Delete resources; deleting a project deletes everything in it",
		Example: `  slipway delete serviceaccount ci-robot -n myproject
  slipway delete app shop
  slipway delete project myproject
  slipway delete -f roles.yaml`,
		ValidArgsFunction: completeTypes,
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			type target struct {
				res      *api.Resource
				ns, name string
			}
			var targets []target
			if len(files) > 0 {
				docs, err := readDocuments(files, c.InOrStdin())
				if err != nil {
					return err
				}
				for i := range docs {
					if err := docs[i].place(cfg); err != nil {
						return err
					}
					m := docs[i].obj.GetObjectMeta()
					targets = append(targets, target{docs[i].res, m.Namespace, m.Name})
				}
			} else {
				res, names, err := splitTypeName(args)
				if err != nil {
					return err
				}
				if len(names) == 0 {
					return usagef("name what to delete: slipway delete %s NAME", res.Name)
				}
				ns := ""
				if res.Namespaced {
					if ns, err = cfg.project(); err != nil {
						return err
					}
				}
				for _, n := range names {
					targets = append(targets, target{res, ns, n})
				}
			}
			var errs []error
			for _, t := range targets {
				if _, err := cl.Delete(c.Context(), t.res, t.ns, t.name); err != nil {
					errs = append(errs, fmt.Errorf("%s/%s: %w", strings.ToLower(t.res.Kind), t.name, err))
					continue
				}
				fmt.Fprintf(c.OutOrStdout(), "%s/%s deleted\n", strings.ToLower(t.res.Kind), t.name)
			}
			return errors.Join(errs...)
		},
	}
	c.Flags().StringSliceVarP(&files, "filename", "f", nil, "delete the objects named in these files")
	c.AddCommand(deleteAppCmd())
	return c
}
