package cmd

import (
	"fmt"
	"io"
	"text/tabwriter"

	"slipway.dev/slipway/api"
)

// describeQuota shows, per resource the quota names, what the project
// uses (status.used, as the quota controller last counted it), the soft
// limit that warns and the hard limit that refuses.
func describeQuota(out io.Writer, q *api.ResourceQuota) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "Name:\t%s\nProject:\t%s\n", q.Name, q.Namespace)
	fmt.Fprintln(tw, "Resource\tUsed\tSoft\tHard")
	fmt.Fprintln(tw, "--------\t----\t----\t----")
	or := func(m map[string]string, k string) string {
		if v, ok := m[k]; ok {
			return v
		}
		return "-"
	}
	for _, n := range q.QuotaNames() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, or(q.Status.Used, n), or(q.Spec.Soft, n), or(q.Spec.Hard, n))
	}
	tw.Flush()
	if q.Status.Used == nil {
		fmt.Fprintln(out, "\nUsage is not counted yet: the quota controller fills it within seconds.")
	}
}
