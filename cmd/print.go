package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"slipway.dev/slipway/api"
)

// printer writes objects in one of the -o formats.
type printer struct {
	format    string // "", wide, json, yaml, name
	res       *api.Resource
	allNS     bool
	tw        *tabwriter.Writer
	out       io.Writer
	headerDue bool
}

var formats = []string{"", "wide", "json", "yaml", "name"}

func newPrinter(out io.Writer, format string, res *api.Resource, allNS bool) (*printer, error) {
	if !contains(formats, format) {
		return nil, usagef("-o %q is not a format; use json, yaml, wide or name", format)
	}
	return &printer{format: format, res: res, allNS: allNS, out: out, tw: tabwriter.NewWriter(out, 0, 8, 3, ' ', 0), headerDue: true}, nil
}

// list prints a whole list: one List document for json and yaml.
func (p *printer) list(items []api.Object) error {
	switch p.format {
	case "json", "yaml":
		if items == nil {
			items = []api.Object{}
		}
		return p.doc(map[string]any{"apiVersion": api.APIVersion, "kind": p.res.Kind + "List", "items": items})
	}
	if len(items) == 0 && p.format == "" {
		return nil
	}
	for _, o := range items {
		if err := p.object(o, ""); err != nil {
			return err
		}
	}
	return p.tw.Flush()
}

// object prints one object; event, if set, is a watch event type shown in
// a leading column.
func (p *printer) object(o api.Object, event string) error {
	switch p.format {
	case "json", "yaml":
		if event != "" {
			return p.doc(map[string]any{"type": event, "object": o})
		}
		return p.doc(o)
	case "name":
		_, err := fmt.Fprintf(p.out, "%s/%s\n", strings.ToLower(p.res.Kind), o.GetObjectMeta().Name)
		return err
	}
	cols := p.columns()
	if p.headerDue {
		var hdr []string
		if event != "" {
			hdr = append(hdr, "EVENT")
		}
		if p.allNS && p.res.Namespaced {
			hdr = append(hdr, "PROJECT")
		}
		hdr = append(hdr, "NAME")
		for _, c := range cols {
			hdr = append(hdr, c.Header)
		}
		hdr = append(hdr, "AGE")
		fmt.Fprintln(p.tw, strings.Join(hdr, "\t"))
		p.headerDue = false
	}
	var row []string
	if event != "" {
		row = append(row, event)
	}
	m := o.GetObjectMeta()
	if p.allNS && p.res.Namespaced {
		row = append(row, m.Namespace)
	}
	row = append(row, m.Name)
	generic := toMap(o)
	for _, c := range cols {
		row = append(row, cell(lookupPath(generic, c.Path)))
	}
	row = append(row, age(m.CreationTimestamp))
	fmt.Fprintln(p.tw, strings.Join(row, "\t"))
	if event != "" {
		return p.tw.Flush()
	}
	return nil
}

func (p *printer) columns() []api.Column {
	var out []api.Column
	for _, c := range p.res.Columns {
		if !c.Wide || p.format == "wide" {
			out = append(out, c)
		}
	}
	return out
}

func (p *printer) doc(v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if p.format == "yaml" {
		y, err := yaml.JSONToYAML(data)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(p.out, "---\n%s", y); err != nil {
			return err
		}
		return nil
	}
	_, err = fmt.Fprintf(p.out, "%s\n", data)
	return err
}

func toMap(o any) map[string]any {
	data, _ := json.Marshal(o)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	return m
}

// lookupPath follows a dotted path; a part may select a list element by
// a field, as in status.conditions[type=Ready].status.
func lookupPath(m map[string]any, path string) any {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		part, sel, _ := strings.Cut(part, "[")
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[part]
		if sel == "" {
			continue
		}
		k, v, _ := strings.Cut(strings.TrimSuffix(sel, "]"), "=")
		list, _ := cur.([]any)
		cur = nil
		for _, x := range list {
			if e, ok := x.(map[string]any); ok && fmt.Sprint(e[k]) == v {
				cur = e
				break
			}
		}
	}
	return cur
}

func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return "<none>"
	case string:
		if v == "" {
			return "<none>"
		}
		return v
	case []any:
		var parts []string
		for _, x := range v {
			if m, ok := x.(map[string]any); ok {
				if tag, ok := m["tag"].(string); ok {
					parts = append(parts, tag)
					continue
				}
				if ns, ok := m["namespace"].(string); ok && ns != "" {
					parts = append(parts, fmt.Sprintf("%v/%v/%v", m["kind"], ns, m["name"]))
				} else {
					parts = append(parts, fmt.Sprintf("%v/%v", m["kind"], m["name"]))
				}
				continue
			}
			parts = append(parts, fmt.Sprint(x))
		}
		if len(parts) == 0 {
			return "<none>"
		}
		return strings.Join(parts, ",")
	case map[string]any:
		// A quota's hard or used: pods=10,services=2.
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = fmt.Sprintf("%s=%v", k, v[k])
		}
		if len(keys) == 0 {
			return "<none>"
		}
		return strings.Join(keys, ",")
	}
	return fmt.Sprint(v)
}

func age(t *time.Time) string {
	if t == nil {
		return "<unknown>"
	}
	d := time.Since(*t)
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// describe prints an object for people: metadata first, then the rest as
// YAML.
func describe(out io.Writer, res *api.Resource, o api.Object) error {
	m := o.GetObjectMeta()
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\n", m.Name)
	if res.Namespaced {
		fmt.Fprintf(tw, "Project:\t%s\n", m.Namespace)
	}
	fmt.Fprintf(tw, "Kind:\t%s\n", res.Kind)
	fmt.Fprintf(tw, "Labels:\t%s\n", kv(m.Labels))
	fmt.Fprintf(tw, "Annotations:\t%s\n", kv(m.Annotations))
	if m.CreationTimestamp != nil {
		fmt.Fprintf(tw, "Created:\t%s (%s ago)\n", m.CreationTimestamp.Local().Format(time.RFC1123), age(m.CreationTimestamp))
	}
	if m.DeletionTimestamp != nil {
		fmt.Fprintf(tw, "Deleting since:\t%s\n", m.DeletionTimestamp.Local().Format(time.RFC1123))
	}
	fmt.Fprintf(tw, "UID:\t%s\nResource version:\t%s\nGeneration:\t%d\n", m.UID, m.ResourceVersion, m.Generation)
	tw.Flush()
	rest := toMap(o)
	delete(rest, "metadata")
	delete(rest, "apiVersion")
	delete(rest, "kind")
	keys := make([]string, 0, len(rest))
	for k := range rest {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		data, _ := json.Marshal(rest[k])
		y, _ := yaml.JSONToYAML(data)
		fmt.Fprintf(out, "%s:\n", strings.ToUpper(k[:1])+k[1:])
		for _, line := range strings.Split(strings.TrimRight(string(y), "\n"), "\n") {
			fmt.Fprintf(out, "  %s\n", line)
		}
	}
	return nil
}

func kv(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
