package cmd

import (
	"archive/zip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/lineage"
	"slipway.dev/slipway/scan"
)

// VulnDBProject holds imported vulnerability databases; the name is
// reserved, so only a cluster admin can create it.
const VulnDBProject = api.VulnDBProject

func vulndbCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "vulndb",
		Short:   "Manage the offline vulnerability database (OSV format)",
		Example: `  slipway vulndb import Debian-all.zip`,
	}
	imp := &cobra.Command{
		Use:   "import FILE.zip|DIR",
		Short: "Load an osv.dev export (a zip, or a directory of OSV JSON files); every stored SBOM is matched again",
		Example: `  slipway vulndb import ~/Downloads/Debian-all.zip
  slipway vulndb import ./osv-advisories/`,
		Args: exactArgs(1, "a zip or a directory of OSV JSON"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := connect()
			if err != nil {
				return err
			}
			ctx := c.Context()
			path := args[0]
			st, err := os.Stat(path)
			if err != nil {
				return err
			}
			if st.IsDir() {
				if path, err = zipDir(path); err != nil {
					return err
				}
				defer os.Remove(path)
			}
			// Check it here, so a bad file changes nothing.
			db, err := scan.LoadDB(path)
			if err != nil {
				return err
			}
			if err := cl.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: VulnDBProject}}); api.IsAlreadyExists(err) {
				// Made by an earlier import, or by someone else before
				// the name was reserved: whoever holds a role there
				// could replace or delete the database.
				if err := vulndbProjectIsPlatforms(ctx, cl); err != nil {
					return err
				}
			} else if err != nil {
				return fmt.Errorf("making project %s for the database: %w", VulnDBProject, err)
			}
			host, err := cl.RegistryHost(ctx)
			if err != nil {
				return err
			}
			// The zip is the blob, as is: not gzipped again.
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			layer := static.NewLayer(data, "application/zip")
			img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: layer})
			if err != nil {
				return err
			}
			tag, err := name.NewTag(host+"/"+VulnDBProject+"/osv:latest", name.Insecure)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "Uploading %s (%d advisories)\n", args[0], db.Len())
			if err := remote.Write(tag, img, remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: "slipway", Password: cl.Token()})); err != nil {
				return fmt.Errorf("uploading the database: %w", err)
			}
			d, _ := img.Digest()
			src := host + "/" + VulnDBProject + "/osv@" + d.String()
			vdb := &api.VulnerabilityDatabase{ObjectMeta: api.ObjectMeta{Name: scan.DatabaseName, Annotations: map[string]string{scan.DatabaseSourceAnnotation: src}}}
			if err := cl.Create(ctx, api.VulnerabilityDatabases, vdb); api.IsAlreadyExists(err) {
				patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{scan.DatabaseSourceAnnotation: src}}})
				_, err = cl.Patch(ctx, api.VulnerabilityDatabases, "", scan.DatabaseName, patch)
				if err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Imported %d advisories as %s; stored SBOMs are being matched again.\n", db.Len(), d)
			return nil
		},
	}
	c.AddCommand(imp)
	return c
}

// vulndbProjectIsPlatforms refuses a vulndb project in which anyone but
// cluster admins and the project's own service accounts holds a role.
func vulndbProjectIsPlatforms(ctx context.Context, cl *client.Client) error {
	me, err := cl.WhoAmI(ctx)
	if err != nil {
		return err
	}
	admins := map[api.Subject]bool{{Kind: api.SubjectUser, Name: me.Name}: true}
	crbs, _, err := cl.List(ctx, api.ClusterRoleBindings, "", client.ListOptions{})
	if err != nil {
		return fmt.Errorf("checking who holds roles in project %s: %w", VulnDBProject, err)
	}
	for _, o := range crbs {
		if b := o.(*api.ClusterRoleBinding); b.RoleRef.Name == "cluster-admin" {
			for _, sub := range b.Subjects {
				admins[sub] = true
			}
		}
	}
	rbs, _, err := cl.List(ctx, api.RoleBindings, VulnDBProject, client.ListOptions{})
	if err != nil {
		return fmt.Errorf("checking who holds roles in project %s: %w", VulnDBProject, err)
	}
	for _, o := range rbs {
		b := o.(*api.RoleBinding)
		for _, sub := range b.Subjects {
			if admins[sub] || (sub.Kind == api.SubjectServiceAccount && sub.Namespace == VulnDBProject) {
				continue
			}
			return fmt.Errorf("project %s, where the cluster's vulnerability database is kept, grants %s to %s %s (rolebinding %s), who could replace or delete the database; "+
				"a cluster admin deletes the project (slipway delete project %s) and imports again", VulnDBProject, b.RoleRef.Name, strings.ToLower(sub.Kind), sub.Name, b.Name, VulnDBProject)
		}
	}
	return nil
}

// zipDir packs a directory's .json files into a temporary zip.
func zipDir(dir string) (string, error) {
	f, err := os.CreateTemp("", "slipway-osv-*.zip")
	if err != nil {
		return "", err
	}
	zw := zip.NewWriter(f)
	err = fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return err
		}
		w, err := zw.Create(p)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	})
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// resolveImage turns STREAM:TAG, STREAM@DIGEST or a full reference into
// the project, stream and digest.
func resolveImage(ctx context.Context, cl *client.Client, ns, arg string) (project, stream, digest string, err error) {
	host, _ := cl.RegistryHost(ctx) // unknown: no reference is cut as the registry's
	return lineage.ResolveImage(ctx, cl, host, ns, arg)
}

func scanCmd() *cobra.Command {
	var output string
	var wait time.Duration
	c := &cobra.Command{
		Use:   "scan IMAGE",
		Short: "Show an image's SBOM summary and vulnerability findings, worst first",
		Example: `  slipway scan web:latest
  slipway scan web@sha256:4f1c… -o json`,
		Args: exactArgs(1, "an image: STREAM:TAG or STREAM@DIGEST"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			project, stream, digest, err := resolveImage(ctx, cl, ns, args[0])
			if err != nil {
				return err
			}
			deadline := time.Now().Add(wait)
			var sc *api.ImageScan
			for {
				o, err := cl.Get(ctx, api.ImageScans, project, digest)
				if err == nil && o.(*api.ImageScan).Status.Phase != "" {
					sc = o.(*api.ImageScan)
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s/%s@%s has no scan yet; scans run when an image is pushed (try --wait 30s)", project, stream, digest)
				}
				time.Sleep(500 * time.Millisecond)
			}
			out := c.OutOrStdout()
			switch output {
			case "json", "yaml":
				p, err := newPrinter(out, output, api.ImageScans, false)
				if err != nil {
					return err
				}
				return p.object(sc, "")
			case "":
			default:
				return usagef("-o %q: use json or yaml", output)
			}
			st := sc.Status
			fmt.Fprintf(out, "Image:     %s/%s@%s\nScan:      %s %s\nPackages:  %d\nDatabase:  %s\n", project, stream, digest, st.Phase, st.Message, st.Packages, orNone(st.DBVersion))
			var counts []string
			for i := len(api.Severities) - 1; i >= 0; i-- {
				if n := st.Counts[api.Severities[i]]; n > 0 {
					counts = append(counts, fmt.Sprintf("%d %s", n, api.Severities[i]))
				}
			}
			switch {
			case st.Phase == scan.PhaseScanned && st.DBVersion == "":
				fmt.Fprintf(out, "Findings:  unknown: no vulnerability database was loaded; a cluster admin runs `slipway vulndb import FILE.zip`\n")
			case st.Phase != scan.PhaseScanned:
				fmt.Fprintf(out, "Findings:  unknown\n")
			default:
				fmt.Fprintf(out, "Findings:  %s\n", orNone(strings.Join(counts, ", ")))
			}
			if len(st.Findings) > 0 {
				tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
				fmt.Fprintln(tw, "\nSEVERITY\tID\tPACKAGE\tVERSION\tFIXED IN\tSUMMARY")
				for _, f := range st.Findings {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.ID, f.Package, f.Version, orNone(f.FixedIn), f.Summary)
				}
				tw.Flush()
			}
			return nil
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "json or yaml")
	c.Flags().DurationVar(&wait, "wait", 0, "wait this long for a scan that has not finished")
	return c
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func signCmd() *cobra.Command {
	var key string
	c := &cobra.Command{
		Use:   "sign IMAGE@DIGEST [--key NAME]",
		Short: "Sign an image by digest with one of the project's signing keys",
		Example: `  slipway sign web@sha256:4f1c… --key release
  slipway sign 127.0.0.1:5000/shop/web@sha256:4f1c…`,
		Args: exactArgs(1, "an image by digest"),
		RunE: func(c *cobra.Command, args []string) error {
			if !strings.Contains(args[0], "@sha256:") && !strings.Contains(args[0], "@sha512:") {
				return usagef("sign by digest: %s is a tag, which can move; name the image as STREAM@sha256:… (see `slipway get is`)", args[0])
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			project, stream, digest, err := resolveImage(ctx, cl, ns, args[0])
			if err != nil {
				return err
			}
			host, err := cl.RegistryHost(ctx)
			if err != nil {
				return err
			}
			ref := host + "/" + project + "/" + stream + "@" + digest
			body, _ := json.Marshal(map[string]string{"image": ref})
			resp, err := cl.Do(ctx, http.MethodPost, client.Path(api.SigningKeys, project, key, "sign"), nil, body, "application/json")
			if err != nil {
				return err
			}
			resp.Body.Close()
			fmt.Fprintf(c.OutOrStdout(), "Signed %s with %s/%s\n", ref, project, key)
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "default", "the project's signing key")
	return c
}

func promoteCmd() *cobra.Command {
	var to, reason string
	var revision int64
	var wait time.Duration
	c := &cobra.Command{
		Use:   "promote PIPELINE --to STAGE [--revision N]",
		Short: "Promote what the previous stage runs into a stage, by digest, through its gates",
		Long: `Promote the image the previous stage's tag holds into STAGE: the target project's
policy is checked, approval and soak gates wait, then the image is copied by
digest (blobs mounted, signatures and attestations with it), verified again
and tagged. --revision N promotes the image of the stage's Nth promotion
again: a rollback.`,
		Example: `  slipway promote shop --to qa --reason "passed smoke tests"
  slipway promote shop --to prod --revision 3`,
		Args: exactArgs(1, "a pipeline"),
		RunE: func(c *cobra.Command, args []string) error {
			if to == "" {
				return usagef("--to STAGE is required")
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			p := &api.Promotion{
				ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("%s-%s-%d", args[0], to, time.Now().UnixMilli()), Namespace: ns},
				Spec:       api.PromotionSpec{Pipeline: args[0], To: to, Reason: reason},
			}
			if revision > 0 {
				hist, err := history(ctx, cl, ns, args[0])
				if err != nil {
					return err
				}
				for _, h := range hist {
					if h.Spec.To == to && h.Status.Revision == revision {
						p.Spec.Image = h.Status.Source[strings.LastIndex(h.Status.Source, "@")+1:]
					}
				}
				if p.Spec.Image == "" {
					return fmt.Errorf("stage %s has no revision %d; see `slipway history %s`", to, revision, args[0])
				}
				p.Spec.Reason = strings.TrimSpace(reason + " (rollback to revision " + strconv.FormatInt(revision, 10) + ")")
			}
			if err := cl.Create(ctx, api.Promotions, p); err != nil {
				return err
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "promotion/%s created\n", p.Name)
			deadline := time.Now().Add(wait)
			last := ""
			for {
				o, err := cl.Get(ctx, api.Promotions, ns, p.Name)
				if err != nil {
					return err
				}
				st := o.(*api.Promotion).Status
				if st.Message != last && st.Message != "" {
					fmt.Fprintf(out, "%s: %s\n", orNone(st.Phase), st.Message)
					last = st.Message
				}
				switch st.Phase {
				case api.PromotionComplete:
					return nil
				case api.PromotionRefused, api.PromotionFailed:
					return fmt.Errorf("promotion %s %s: %s", p.Name, strings.ToLower(st.Phase), st.Message)
				}
				if time.Now().After(deadline) {
					fmt.Fprintf(out, "promotion/%s is %s; follow it with `slipway get promotion %s`\n", p.Name, orNone(st.Phase), p.Name)
					return nil
				}
				time.Sleep(300 * time.Millisecond)
			}
		},
	}
	c.Flags().StringVar(&to, "to", "", "the stage to promote into")
	c.Flags().StringVar(&reason, "reason", "", "why, for the record")
	c.Flags().Int64Var(&revision, "revision", 0, "promote the image of this earlier promotion into the stage again (rollback)")
	c.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the promotion to finish")
	return c
}

func history(ctx context.Context, cl *client.Client, ns, pipeline string) ([]*api.Promotion, error) {
	items, _, err := cl.List(ctx, api.Promotions, ns, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []*api.Promotion
	for _, o := range items {
		if p := o.(*api.Promotion); p.Spec.Pipeline == pipeline {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreationTimestamp.Before(*out[j].CreationTimestamp) })
	return out, nil
}

func approveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "approve PROMOTION",
		Short:   "Approve a promotion that waits for approval (needs the promote permission in its target project)",
		Example: `  slipway approve shop-prod-1764201234567`,
		Args:    exactArgs(1, "a promotion"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			resp, err := cl.Do(c.Context(), http.MethodPost, client.Path(api.Promotions, ns, args[0], "approve"), nil, []byte("{}"), "application/json")
			if err != nil {
				return err
			}
			resp.Body.Close()
			fmt.Fprintf(c.OutOrStdout(), "promotion/%s approved\n", args[0])
			return nil
		},
	}
}

func historyCmd() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "history PIPELINE",
		Short:   "Show a pipeline's promotions: what moved where, when, who asked and approved, and why",
		Example: `  slipway history shop -o json`,
		Args:    exactArgs(1, "a pipeline"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			hist, err := history(c.Context(), cl, ns, args[0])
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			switch output {
			case "json", "yaml":
				p, err := newPrinter(out, output, api.Promotions, false)
				if err != nil {
					return err
				}
				var items []api.Object
				for _, h := range hist {
					items = append(items, h)
				}
				return p.list(items)
			case "":
			default:
				return usagef("-o %q: use json or yaml", output)
			}
			if len(hist) == 0 {
				return errors.New("no promotions yet; start one with `slipway promote " + args[0] + " --to STAGE`")
			}
			tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "WHEN\tFROM\tTO\tREVISION\tPHASE\tIMAGE\tAPPROVED BY\tREASON")
			for _, h := range hist {
				var by []string
				for _, a := range h.Status.Approvals {
					by = append(by, a.User)
				}
				img := h.Status.Source
				if at := strings.LastIndex(img, "@"); at > 0 {
					img = img[at+1:]
				}
				rev := ""
				if h.Status.Revision > 0 {
					rev = strconv.FormatInt(h.Status.Revision, 10)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.CreationTimestamp.Format(time.RFC3339), orNone(h.Status.From), h.Spec.To, orNone(rev), orNone(h.Status.Phase), orNone(img), orNone(strings.Join(by, ",")), orNone(h.Spec.Reason))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "", "json or yaml")
	return c
}
