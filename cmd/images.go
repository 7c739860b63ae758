package cmd

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
	"slipway.dev/slipway/registry"
)

// imageRef is [project/]stream:tag or [project/]stream@digest.
type imageRef struct {
	project, stream, tag, digest string
}

func (r imageRef) String() string {
	s := r.project + "/" + r.stream
	if r.digest != "" {
		return s + "@" + r.digest
	}
	return s + ":" + r.tag
}

// parseImageRef reads a reference to an image stream tag or image. The
// project defaults to the current one.
func parseImageRef(s, defaultProject string, needTag bool) (imageRef, error) {
	var r imageRef
	rest := s
	if i := strings.Index(rest, "@"); i >= 0 {
		rest, r.digest = rest[:i], rest[i+1:]
		if len(api.ValidateDigestName(r.digest)) > 0 {
			return r, usagef("%q: %q is not a sha256 or sha512 digest", s, r.digest)
		}
	} else if i := strings.LastIndex(rest, ":"); i >= 0 {
		rest, r.tag = rest[:i], rest[i+1:]
		if len(api.ValidateTagName(r.tag)) > 0 {
			return r, usagef("%q: %q is not a valid tag", s, r.tag)
		}
	} else if needTag {
		return r, usagef("%q needs a tag: [PROJECT/]STREAM:TAG", s)
	}
	r.project, r.stream = defaultProject, rest
	if p, st, ok := strings.Cut(rest, "/"); ok {
		r.project, r.stream = p, st
	}
	if r.project == "" {
		return r, usagef("%q names no project: use PROJECT/STREAM or pass -n", s)
	}
	if len(api.ValidateStreamName(r.stream)) > 0 {
		return r, usagef("%q: %q is not a valid image stream name", s, r.stream)
	}
	return r, nil
}

func currentProject(cfg *Config) string {
	p, _ := cfg.project()
	return p
}

func tagCmd() *cobra.Command {
	var alias, del bool
	c := &cobra.Command{
		Use:   "tag SOURCE DEST... | tag -d DEST...",
		Short: "Point image stream tags at an image, by digest",
		Long: `Point one or more image stream tags at the image SOURCE names, resolved to
its digest now (with --alias, DEST follows SOURCE as it moves). Content is
linked into the destination repository on the server; nothing is copied.`,
		Example: `  slipway tag web:1.2 web:prod
  slipway tag shop/web@sha256:4f1c… qa/web:candidate
  slipway tag --alias web:latest web:stable
  slipway tag -d web:old`,
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			me, err := cl.WhoAmI(c.Context())
			if err != nil {
				return err
			}
			if del {
				if len(args) == 0 {
					return usagef("name the tags to delete: slipway tag -d STREAM:TAG")
				}
				for _, a := range args {
					ref, err := parseImageRef(a, currentProject(cfg), true)
					if err != nil {
						return err
					}
					if err := deleteTag(c.Context(), cl, ref); err != nil {
						return err
					}
					fmt.Fprintf(c.OutOrStdout(), "Deleted tag %s.\n", ref)
				}
				return nil
			}
			if len(args) < 2 {
				return usagef("tag needs a source and at least one destination; see 'slipway tag --help'")
			}
			if isExternal(args[0]) {
				if alias {
					return usagef("--alias follows tags in this registry; to follow an external image use `slipway import-image --scheduled`")
				}
				for _, a := range args[1:] {
					dst, err := parseImageRef(a, currentProject(cfg), true)
					if err != nil {
						return err
					}
					from := &api.ObjectReference{Kind: "DockerImage", Name: args[0]}
					gen, err := setSpecTagGen(c.Context(), cl, dst, from, false, me.Name)
					if err != nil {
						return err
					}
					if err := waitImport(c.Context(), cl, dst, args[0], gen, c.OutOrStdout()); err != nil {
						return err
					}
				}
				return nil
			}
			src, err := parseImageRef(args[0], currentProject(cfg), false)
			if err != nil {
				return err
			}
			if src.tag == "" && src.digest == "" {
				src.tag = "latest"
			}
			from := &api.ObjectReference{Namespace: src.project}
			var dgst string
			if alias {
				if src.tag == "" {
					return usagef("--alias needs a source tag, not a digest")
				}
				from.Kind, from.Name = "ImageStreamTag", src.stream+":"+src.tag
			} else {
				dgst = src.digest
				if dgst == "" {
					o, err := cl.Get(c.Context(), api.ImageStreams, src.project, src.stream)
					if err != nil {
						return err
					}
					ev, ok := imagestreams.Latest(o.(*api.ImageStream), src.tag)
					if !ok {
						return fmt.Errorf("%s has no image yet; push one first", src)
					}
					dgst = ev.Image
				}
				from.Kind, from.Name = "ImageStreamImage", src.stream+"@"+dgst
			}
			for _, a := range args[1:] {
				dst, err := parseImageRef(a, currentProject(cfg), true)
				if err != nil {
					return err
				}
				if err := setSpecTag(c.Context(), cl, dst, from, alias, me.Name); err != nil {
					return err
				}
				if alias {
					fmt.Fprintf(c.OutOrStdout(), "Tag %s set up to track %s.\n", dst, src)
					continue
				}
				if err := waitTag(c.Context(), cl, dst, dgst); err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "Tag %s set to %s@%s.\n", dst, src.project+"/"+src.stream, dgst)
			}
			return nil
		},
	}
	c.Flags().BoolVar(&alias, "alias", false, "make DEST track SOURCE as it moves")
	c.Flags().BoolVarP(&del, "delete", "d", false, "delete the named tags")
	return c
}

// setSpecTag writes a spec tag on the destination stream, creating the
// stream if needed, with compare-and-swap retries.
func setSpecTag(ctx context.Context, cl *client.Client, dst imageRef, from *api.ObjectReference, alias bool, by string) error {
	_, err := setSpecTagGen(ctx, cl, dst, from, alias, by)
	return err
}

// setSpecTagGen is setSpecTag that also reports the stream's generation
// after the write, to wait for the server's answer to it.
func setSpecTagGen(ctx context.Context, cl *client.Client, dst imageRef, from *api.ObjectReference, alias bool, by string) (int64, error) {
	want := api.TagReference{Name: dst.tag, From: from, Alias: alias, Annotations: map[string]string{registry.TaggedByAnnotation: by}}
	for attempt := 0; attempt < 10; attempt++ {
		o, err := cl.Get(ctx, api.ImageStreams, dst.project, dst.stream)
		if api.IsNotFound(err) {
			is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: dst.stream, Namespace: dst.project}, Spec: api.ImageStreamSpec{Tags: []api.TagReference{want}}}
			err = cl.Create(ctx, api.ImageStreams, is)
			if api.IsReason(err, api.ReasonAlreadyExists) {
				continue
			}
			return is.Generation, err
		}
		if err != nil {
			return 0, err
		}
		is := o.(*api.ImageStream)
		is.Spec.Tags = slices.DeleteFunc(is.Spec.Tags, func(t api.TagReference) bool { return t.Name == dst.tag })
		is.Spec.Tags = append(is.Spec.Tags, want)
		err = cl.Update(ctx, api.ImageStreams, is)
		if api.IsConflict(err) {
			continue
		}
		return is.Generation, err
	}
	return 0, fmt.Errorf("%s kept changing under us; try again", dst)
}

// waitTag waits until the server has linked the image and moved the tag,
// or reports the tag's error condition.
func waitTag(ctx context.Context, cl *client.Client, dst imageRef, dgst string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		o, err := cl.Get(ctx, api.ImageStreams, dst.project, dst.stream)
		if err != nil {
			return err
		}
		is := o.(*api.ImageStream)
		if ev, ok := imagestreams.Latest(is, dst.tag); ok && ev.Image == dgst {
			return nil
		}
		for _, t := range is.Status.Tags {
			if t.Tag == dst.tag && len(t.Conditions) > 0 && t.Conditions[0].Status == "False" {
				return fmt.Errorf("tagging %s failed: %s", dst, t.Conditions[0].Message)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("the server has not moved %s yet; check `slipway describe is %s`", dst, dst.stream)
}

func deleteTag(ctx context.Context, cl *client.Client, ref imageRef) error {
	for attempt := 0; attempt < 10; attempt++ {
		o, err := cl.Get(ctx, api.ImageStreams, ref.project, ref.stream)
		if err != nil {
			return err
		}
		is := o.(*api.ImageStream)
		before := len(is.Spec.Tags) + len(is.Status.Tags)
		is.Spec.Tags = slices.DeleteFunc(is.Spec.Tags, func(t api.TagReference) bool { return t.Name == ref.tag })
		is.Status.Tags = slices.DeleteFunc(is.Status.Tags, func(t api.NamedTagEventList) bool { return t.Tag == ref.tag })
		if len(is.Spec.Tags)+len(is.Status.Tags) == before {
			return fmt.Errorf("%s does not exist", ref)
		}
		status := is.Status
		if err := cl.Update(ctx, api.ImageStreams, is); api.IsConflict(err) {
			continue
		} else if err != nil {
			return err
		}
		is.Status = status
		if err := cl.UpdateStatus(ctx, api.ImageStreams, is); api.IsConflict(err) {
			continue
		} else if err != nil {
			return err
		}
		return nil
	}
	return fmt.Errorf("%s kept changing under us; try again", ref)
}

func rollbackCmd() *cobra.Command {
	var to int
	c := &cobra.Command{
		Use:   "rollback is/STREAM:TAG --to N",
		Short: "Move an image stream tag back to entry N of its history",
		Long: `Move a tag back to entry N of its history (0 is the current image, 1 the one
before, as listed by 'slipway describe is'). The rollback is itself recorded
at the head of the history.`,
		Example: "  slipway rollback is/web:prod --to 1",
		Args:    exactArgs(1, "is/STREAM:TAG"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			arg, ok := strings.CutPrefix(args[0], "is/")
			if !ok {
				arg, ok = strings.CutPrefix(args[0], "imagestream/")
			}
			if !ok {
				return usagef("rollback works on image stream tags: slipway rollback is/STREAM:TAG --to N")
			}
			ref, err := parseImageRef(arg, currentProject(cfg), true)
			if err != nil {
				return err
			}
			me, err := cl.WhoAmI(c.Context())
			if err != nil {
				return err
			}
			for attempt := 0; attempt < 10; attempt++ {
				o, err := cl.Get(c.Context(), api.ImageStreams, ref.project, ref.stream)
				if err != nil {
					return err
				}
				is := o.(*api.ImageStream)
				for _, t := range is.Spec.Tags {
					if t.Name == ref.tag && t.From != nil {
						return fmt.Errorf("%s follows %s %s; change its source with `slipway tag` instead", ref, t.From.Kind, t.From.Name)
					}
				}
				i := slices.IndexFunc(is.Status.Tags, func(t api.NamedTagEventList) bool { return t.Tag == ref.tag })
				if i < 0 {
					return fmt.Errorf("%s does not exist", ref)
				}
				items := is.Status.Tags[i].Items
				if to < 0 || to >= len(items) {
					return usagef("%s has %d history entries (0 is the current one); --to %d is out of range", ref, len(items), to)
				}
				if to == 0 {
					fmt.Fprintf(c.OutOrStdout(), "%s already points at %s.\n", ref, items[0].Image)
					return nil
				}
				ev := items[to]
				ev.Created, ev.By = time.Now().UTC().Truncate(time.Millisecond), me.Name
				is.Status.Tags[i].Items = append([]api.TagEvent{ev}, items...)
				err = cl.UpdateStatus(c.Context(), api.ImageStreams, is)
				if api.IsConflict(err) {
					continue
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(c.OutOrStdout(), "Rolled %s back to %s (history entry %d).\n", ref, ev.Image, to)
				return nil
			}
			return fmt.Errorf("%s kept changing under us; try again", ref)
		},
	}
	c.Flags().IntVar(&to, "to", 1, "history entry to go back to (0 is current)")
	return c
}

// describeImageStream prints tags with their history, newest first.
func describeImageStream(out io.Writer, is *api.ImageStream) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\nProject:\t%s\n", is.Name, is.Namespace)
	if is.CreationTimestamp != nil {
		fmt.Fprintf(tw, "Created:\t%s ago\n", age(is.CreationTimestamp))
	}
	fmt.Fprintf(tw, "Labels:\t%s\nImage repository:\t%s\n", kv(is.Labels), is.Status.DockerImageRepository)
	tw.Flush()
	spec := map[string]api.TagReference{}
	for _, t := range is.Spec.Tags {
		spec[t.Name] = t
	}
	if len(is.Status.Tags) == 0 {
		fmt.Fprintln(out, "\nNo tags yet: push with `docker push "+is.Status.DockerImageRepository+":TAG`.")
	}
	for _, t := range is.Status.Tags {
		fmt.Fprintf(out, "\n%s\n", t.Tag)
		if s, ok := spec[t.Tag]; ok && s.From != nil {
			how := "tagged from"
			if s.Alias {
				how = "tracks"
			}
			fmt.Fprintf(out, "  %s %s %s\n", how, s.From.Kind, s.From.Name)
		}
		for i, ev := range t.Items {
			mark := " "
			if i == 0 {
				mark = "*"
			}
			by := ev.By
			if by == "" {
				by = "unknown"
			}
			created := ev.Created
			fmt.Fprintf(out, "  %s %2d  %s\n        %s ago by %s\n", mark, i, ev.DockerImageReference, age(&created), by)
		}
		for _, cond := range t.Conditions {
			if cond.Status == "False" {
				fmt.Fprintf(out, "  ! %s: %s\n", cond.Reason, cond.Message)
			}
		}
	}
}

func importImageCmd() *cobra.Command {
	var from string
	var all, scheduled, insecure bool
	c := &cobra.Command{
		Use:   "import-image STREAM[:TAG] --from=REF",
		Short: "Import an image from an external registry into an image stream",
		Long: `Import an image (or, with --all, every tag of a repository) from an external
registry. The server does the import: the registry must be on its
--import-allow list, and internal addresses are refused unless an admin
allowed their range. Errors are recorded on the tag; see 'slipway describe is'.`,
		Example: `  slipway import-image base:12 --from=registry.example.com/debian:12
  slipway import-image base --from=registry.example.com/debian --all --scheduled`,
		Args: exactArgs(1, "an image stream, optionally with :TAG"),
		RunE: func(c *cobra.Command, args []string) error {
			if from == "" {
				return usagef("--from=REGISTRY/REPOSITORY[:TAG] is required")
			}
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			arg := args[0]
			if !strings.Contains(arg, ":") && !all {
				tag := "latest"
				if i := strings.LastIndex(from, ":"); i > strings.LastIndex(from, "/") {
					tag = from[i+1:]
				}
				arg += ":" + tag
			}
			ref, err := parseImageRef(arg, currentProject(cfg), !all)
			if err != nil {
				return err
			}
			me, err := cl.WhoAmI(c.Context())
			if err != nil {
				return err
			}
			start := time.Now().UTC().Truncate(time.Millisecond)
			now := start.Format(time.RFC3339Nano)
			var gen int64
			for attempt := 0; attempt < 10; attempt++ {
				o, err := cl.Get(c.Context(), api.ImageStreams, ref.project, ref.stream)
				create := api.IsNotFound(err)
				if err != nil && !create {
					return err
				}
				is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: ref.stream, Namespace: ref.project}}
				if !create {
					is = o.(*api.ImageStream)
				}
				if all {
					if is.Annotations == nil {
						is.Annotations = map[string]string{}
					}
					is.Annotations[registry.ImportAllAnnotation] = from
					is.Annotations[registry.ImportAllAnnotation+"-insecure"] = fmt.Sprint(insecure)
					is.Annotations[registry.TaggedByAnnotation] = me.Name
				} else {
					want := api.TagReference{Name: ref.tag, From: &api.ObjectReference{Kind: "DockerImage", Name: from},
						ImportPolicy: api.TagImportPolicy{Scheduled: scheduled, Insecure: insecure},
						Annotations:  map[string]string{registry.TaggedByAnnotation: me.Name, registry.ImportRequestedAnnotation: now}}
					is.Spec.Tags = slices.DeleteFunc(is.Spec.Tags, func(t api.TagReference) bool { return t.Name == ref.tag })
					is.Spec.Tags = append(is.Spec.Tags, want)
				}
				if create {
					err = cl.Create(c.Context(), api.ImageStreams, is)
				} else {
					err = cl.Update(c.Context(), api.ImageStreams, is)
				}
				if api.IsConflict(err) || api.IsReason(err, api.ReasonAlreadyExists) {
					continue
				}
				if err != nil {
					return err
				}
				gen = is.Generation
				break
			}
			if all {
				fmt.Fprintf(c.OutOrStdout(), "Importing every tag of %s into %s/%s; see `slipway describe is %s`.\n", from, ref.project, ref.stream, ref.stream)
				return nil
			}
			return waitImport(c.Context(), cl, ref, from, gen, c.OutOrStdout())
		},
	}
	c.Flags().StringVar(&from, "from", "", "external image to import, REGISTRY/REPOSITORY[:TAG]")
	c.Flags().BoolVar(&all, "all", false, "import every tag of the repository")
	c.Flags().BoolVar(&scheduled, "scheduled", false, "look for changes periodically and import them")
	c.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP or unverified TLS to the source")
	return c
}

// waitImport waits for the server's answer to an import of from into ref:
// the tag's condition for the stream's generation gen or later.
func waitImport(ctx context.Context, cl *client.Client, ref imageRef, from string, gen int64, out io.Writer) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		o, err := cl.Get(ctx, api.ImageStreams, ref.project, ref.stream)
		if err != nil {
			return err
		}
		for _, t := range o.(*api.ImageStream).Status.Tags {
			if t.Tag != ref.tag || len(t.Conditions) == 0 || t.Conditions[0].Generation < gen {
				continue
			}
			if t.Conditions[0].Status == "False" {
				return fmt.Errorf("import of %s failed: %s", from, t.Conditions[0].Message)
			}
			if len(t.Items) > 0 {
				fmt.Fprintf(out, "Imported %s into %s as %s (%s).\n", from, ref, t.Items[0].Image, t.Conditions[0].Reason)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
	return fmt.Errorf("the import of %s has not finished; check `slipway describe is %s`", from, ref.stream)
}

// isExternal reports whether a tag source names another registry: its
// first component is a host (has a dot or a port, or is localhost).
func isExternal(src string) bool {
	first, _, ok := strings.Cut(src, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}
