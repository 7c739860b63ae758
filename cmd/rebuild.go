package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/imagestreams"
)

// rebuildItem is one BuildConfig in a planned rebuild.
type rebuildItem struct {
	Project string `json:"project"`
	Name    string `json:"name"`
	Wave    int    `json:"wave"`
	Base    string `json:"base"`   // PROJECT/STREAM:TAG it builds on
	Output  string `json:"output"` // PROJECT/STREAM:TAG it writes
	// Rebase: the config says rebase: true, so the registry swaps the
	// base in place (buildconfigs/NAME/rebase) and no build runs, unless
	// the server answers that it needs one.
	Rebase bool `json:"rebase,omitempty"`
	// Severity is the worst finding in the output's current image, when
	// it has been scanned: within a wave, the worst go first.
	Severity string `json:"severity,omitempty"`
}

// rebuildPlan is the dependency order of a rebuild.
type rebuildPlan struct {
	Base   string        `json:"base"`
	Items  []rebuildItem `json:"buildConfigs"`
	Images []string      `json:"pushedImages"` // pushed images built on the base, which builds won't update
	// Deployments roll out by themselves when a tag they follow moves.
	Deployments []string `json:"deployments,omitempty"`
}

func tagKey(ns string, ref *api.ObjectReference) string {
	if ref == nil || ref.Kind != "ImageStreamTag" {
		return ""
	}
	p := ref.Namespace
	if p == "" {
		p = ns
	}
	name := ref.Name
	if !strings.Contains(name, ":") {
		name += ":latest"
	}
	return p + "/" + name
}

// planRebuild finds every BuildConfig that builds on base, directly or
// through the output of another, in waves: wave N builds only on outputs
// of waves before it.
func planRebuild(ctx context.Context, cl *client.Client, base string) (*rebuildPlan, error) {
	projects, _, err := cl.List(ctx, api.Projects, "", client.ListOptions{})
	if err != nil {
		return nil, err
	}
	var configs []*api.BuildConfig
	var images []*api.Image
	for _, p := range projects {
		items, _, err := cl.List(ctx, api.BuildConfigs, p.GetObjectMeta().Name, client.ListOptions{})
		if err != nil {
			return nil, err
		}
		for _, o := range items {
			configs = append(configs, o.(*api.BuildConfig))
		}
		imgs, _, err := cl.List(ctx, api.Images, p.GetObjectMeta().Name, client.ListOptions{})
		if err == nil {
			for _, o := range imgs {
				images = append(images, o.(*api.Image))
			}
		}
	}
	plan := &rebuildPlan{Base: base}
	frontier := map[string]bool{base: true}
	done := map[*api.BuildConfig]bool{}
	for wave := 1; len(frontier) > 0; wave++ {
		next := map[string]bool{}
		var items []rebuildItem
		for _, bc := range configs {
			if done[bc] {
				continue
			}
			from := tagKey(bc.Namespace, bc.Spec.Strategy.BaseImage())
			if !frontier[from] {
				continue
			}
			done[bc] = true
			out := tagKey(bc.Namespace, bc.Spec.Output.To)
			items = append(items, rebuildItem{Project: bc.Namespace, Name: bc.Name, Wave: wave, Base: from, Output: out, Rebase: bc.Spec.Rebase})
			next[out] = true
		}
		for i := range items {
			items[i].Severity = worstFinding(ctx, cl, items[i].Output)
		}
		sort.Slice(items, func(i, j int) bool {
			if a, b := api.SeverityRank(items[i].Severity), api.SeverityRank(items[j].Severity); a != b {
				return a > b
			}
			return items[i].Project+"/"+items[i].Name < items[j].Project+"/"+items[j].Name
		})
		plan.Items = append(plan.Items, items...)
		frontier = next
	}
	// Deployments that follow the base or any output.
	tags := map[string]bool{base: true}
	for _, it := range plan.Items {
		tags[it.Output] = true
	}
	for _, p := range projects {
		dcs, _, err := cl.List(ctx, api.DeploymentConfigs, p.GetObjectMeta().Name, client.ListOptions{})
		if err != nil {
			continue
		}
		for _, o := range dcs {
			dc := o.(*api.DeploymentConfig)
			for _, t := range dc.Spec.Triggers {
				if ic := t.ImageChangeParams; ic != nil && ic.Automatic && tags[tagKey(dc.Namespace, &ic.From)] {
					plan.Deployments = append(plan.Deployments, dc.Namespace+"/"+dc.Name+" (follows "+tagKey(dc.Namespace, &ic.From)+")")
				}
			}
		}
	}
	// Pushed images that name the base (any digest it had) in their
	// annotations: builds will not change them; their owners must.
	baseProject, rest, _ := strings.Cut(base, "/")
	stream, tag, _ := strings.Cut(rest, ":")
	if o, err := cl.Get(ctx, api.ImageStreams, baseProject, stream); err == nil {
		digests := map[string]bool{}
		for _, t := range o.(*api.ImageStream).Status.Tags {
			if t.Tag == tag {
				for _, ev := range t.Items {
					digests[ev.Image] = true
				}
			}
		}
		for _, img := range images {
			if digests[img.ManifestAnnotations["org.opencontainers.image.base.digest"]] && img.ManifestAnnotations["io.openshift.build.name"] == "" {
				plan.Images = append(plan.Images, img.Namespace+"/"+img.Name)
			}
		}
	}
	return plan, nil
}

func rebuildCmd() *cobra.Command {
	var base, output string
	var dryRun bool
	var maxConcurrent int
	var maxFailure float64
	c := &cobra.Command{
		Use:   "rebuild --base PROJECT/STREAM:TAG",
		Short: "Rebuild everything that builds on a base image, in waves",
		Long: `Rebuild every BuildConfig that builds on a base image tag, directly or through
another's output, in dependency order (waves). Configs with rebase: true are
rebased inside the registry (the new base swapped in under the current
image, in batches, no build run), with your rights; a config the registry
cannot rebase (no image yet, no recorded base, a postCommit test) gets a
build. The run stops when the share of failed builds goes over
--max-failure-ratio; run it again to resume: configs already built on the
current base are skipped.`,
		Example: `  slipway rebuild --base base/debian:12 --dry-run
  slipway rebuild --base base/debian:12 --max-concurrent 8`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if strings.Count(base, "/") != 1 || !strings.Contains(base, ":") {
				return usagef("--base must be PROJECT/STREAM:TAG")
			}
			if maxConcurrent < 1 {
				return usagef("--max-concurrent must be at least 1")
			}
			cl, _, err := connect()
			if err != nil {
				return err
			}
			plan, err := planRebuild(c.Context(), cl, base)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			if dryRun {
				return printPlan(out, plan, output)
			}
			return runRebuild(c.Context(), cl, plan, maxConcurrent, maxFailure, out)
		},
	}
	f := c.Flags()
	f.StringVar(&base, "base", "", "the base image tag that changed, PROJECT/STREAM:TAG")
	f.BoolVar(&dryRun, "dry-run", false, "list what would be rebuilt, in order, and change nothing")
	f.IntVar(&maxConcurrent, "max-concurrent", 4, "builds running at once (server-side rebase requests: up to 256 at once)")
	f.Float64Var(&maxFailure, "max-failure-ratio", 0.2, "stop when more than this share of builds failed")
	f.StringVarP(&output, "output", "o", "", "json or yaml for the dry run's plan")
	return c
}

func printPlan(out io.Writer, plan *rebuildPlan, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(plan)
	case "yaml":
		p := &printer{format: "yaml", out: out}
		return p.doc(plan)
	case "":
	default:
		return usagef("-o %q: use json or yaml", format)
	}
	fmt.Fprintf(out, "Rebuilding on %s would run %d build config(s):\n", plan.Base, len(plan.Items))
	wave := 0
	for _, it := range plan.Items {
		if it.Wave != wave {
			wave = it.Wave
			fmt.Fprintf(out, "wave %d:\n", wave)
		}
		sev := ""
		if it.Severity != "" {
			sev = "\t[worst finding: " + it.Severity + "]"
		}
		fmt.Fprintf(out, "  %s/%s\t%s -> %s%s\n", it.Project, it.Name, it.Base, it.Output, sev)
	}
	if len(plan.Deployments) > 0 {
		fmt.Fprintf(out, "Deployments that roll out when these tags move:\n")
		for _, d := range plan.Deployments {
			fmt.Fprintf(out, "  %s\n", d)
		}
	}
	if len(plan.Images) > 0 {
		fmt.Fprintf(out, "Pushed images on this base that no build config makes (rebuild them yourself):\n")
		for _, img := range plan.Images {
			fmt.Fprintf(out, "  %s\n", img)
		}
	}
	return nil
}

// rebaseConcurrent bounds server-side rebase requests in flight: the
// registry handles those waiting together, in one batch.
const rebaseConcurrent = 256

// runRebuild starts each wave's builds with at most max running, waits for
// them, and stops when failures pass the ratio.
func runRebuild(ctx context.Context, cl *client.Client, plan *rebuildPlan, max int, ratio float64, out io.Writer) error {
	var bar *progressbar.ProgressBar
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar = progressbar.NewOptions(len(plan.Items), progressbar.OptionSetWriter(out), progressbar.OptionSetDescription("rebuilding"), progressbar.OptionShowCount())
	}
	var mu sync.Mutex
	finished, failed, skipped := 0, 0, 0
	report := func(it rebuildItem, result string) {
		mu.Lock()
		defer mu.Unlock()
		finished++
		if bar != nil {
			_ = bar.Add(1)
			return
		}
		fmt.Fprintf(out, "[%d/%d] %s/%s: %s\n", finished, len(plan.Items), it.Project, it.Name, result)
	}
	for wave := 1; ; wave++ {
		var items []rebuildItem
		for _, it := range plan.Items {
			if it.Wave == wave {
				items = append(items, it)
			}
		}
		if len(items) == 0 {
			break
		}
		sem := make(chan struct{}, max)
		rsem := make(chan struct{}, rebaseConcurrent)
		var wg sync.WaitGroup
		for _, it := range items {
			mu.Lock()
			stop := finished > 0 && float64(failed)/float64(finished) > ratio
			mu.Unlock()
			if stop {
				break
			}
			wg.Add(1)
			if it.Rebase {
				rsem <- struct{}{}
			} else {
				sem <- struct{}{}
			}
			go func() {
				defer wg.Done()
				if it.Rebase {
					b, err := cl.RebaseBuildConfig(ctx, it.Project, it.Name)
					<-rsem
					switch {
					case err == nil && b.Name == "":
						mu.Lock()
						skipped++
						mu.Unlock()
						report(it, "already built on the current base")
						return
					case err == nil:
						report(it, "rebased in the registry: "+b.Status.OutputDigest+" ("+b.Name+")")
						return
					case !client.IsNotRebasable(err):
						mu.Lock()
						failed++
						mu.Unlock()
						report(it, "FAILED: "+err.Error())
						return
					}
					sem <- struct{}{} // a build after all
				}
				defer func() { <-sem }()
				if upToDate(ctx, cl, it) {
					mu.Lock()
					skipped++
					mu.Unlock()
					report(it, "already built on the current base")
					return
				}
				b, err := instantiate(ctx, cl, it.Project, it.Name, nil)
				if err == nil {
					err = followBuild(ctx, cl, it.Project, b.Name, false, io.Discard)
				}
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
					report(it, "FAILED: "+err.Error())
					return
				}
				report(it, "done")
			}()
		}
		wg.Wait()
		mu.Lock()
		stop := finished > 0 && float64(failed)/float64(finished) > ratio
		mu.Unlock()
		if stop {
			return fmt.Errorf("stopped after wave %d: %d of %d builds failed, over the %.0f%% limit; fix them and run the same command to resume", wave, failed, finished, ratio*100)
		}
	}
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(out)
	}
	fmt.Fprintf(out, "Rebuilt %d build config(s) on %s (%d already up to date, %d failed).\n", finished-skipped-failed, plan.Base, skipped, failed)
	if failed > 0 {
		return fmt.Errorf("%d builds failed", failed)
	}
	return nil
}

// upToDate reports whether a config's output was last built on the digest
// its base tag points at now: a rebuild run again resumes past it.
func upToDate(ctx context.Context, cl *client.Client, it rebuildItem) bool {
	bp, rest, _ := strings.Cut(it.Base, "/")
	stream, tag, _ := strings.Cut(rest, ":")
	o, err := cl.Get(ctx, api.ImageStreams, bp, stream)
	if err != nil {
		return false
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return false
	}
	builds, _, err := cl.List(ctx, api.Builds, it.Project, client.ListOptions{LabelSelector: builders.BuildConfigLabel + "=" + it.Name})
	if err != nil {
		return false
	}
	for _, o := range builds {
		b := o.(*api.Build)
		if b.Status.Phase == api.BuildComplete && strings.HasSuffix(b.Status.BaseImage, "@"+ev.Image) {
			return true
		}
	}
	return false
}

// worstFinding is the highest severity among the findings of the image an
// output tag (PROJECT/STREAM:TAG) holds, or "" when it has none or no scan.
func worstFinding(ctx context.Context, cl *client.Client, output string) string {
	project, rest, _ := strings.Cut(output, "/")
	stream, tag, _ := strings.Cut(rest, ":")
	o, err := cl.Get(ctx, api.ImageStreams, project, stream)
	if err != nil {
		return ""
	}
	ev, ok := imagestreams.Latest(o.(*api.ImageStream), tag)
	if !ok {
		return ""
	}
	so, err := cl.Get(ctx, api.ImageScans, project, ev.Image)
	if err != nil {
		return ""
	}
	worst := ""
	for _, f := range so.(*api.ImageScan).Status.Findings {
		if worst == "" || api.SeverityRank(f.Severity) > api.SeverityRank(worst) {
			worst = f.Severity
		}
	}
	return worst
}
