package cmd

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
)

// admPolicyCmd holds the cluster admin's grants of the privileged pod
// exception (issue 14), in the shape of `oc adm policy add-scc-to-user`.
func admPolicyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "policy",
		Short: "Grant and revoke the privileged pod exception (cluster admins)",
		Example: `  slipway adm policy add-scc-to-user privileged -z monitor -n ops
  slipway adm policy remove-scc-from-user privileged -z monitor -n ops`,
	}
	c.AddCommand(sccCmd(true), sccCmd(false))
	return c
}

// sccCmd adds a project's service account to, or removes it from, the
// ClusterRoleBinding of the privileged-pods ClusterRole. Only a cluster
// admin may write ClusterRoleBindings; a RoleBinding of the role in a
// project grants nothing.
func sccCmd(add bool) *cobra.Command {
	var sa bool
	use, short := "add-scc-to-user privileged -z SERVICEACCOUNT", "Let the pods of a service account run privileged (beyond the restricted default)"
	if !add {
		use, short = "remove-scc-from-user privileged -z SERVICEACCOUNT", "Take the privileged pod exception away from a service account"
	}
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

Pods run restricted: as a UID from their project's range, never root, with
every capability dropped and no new privileges. A pod that names the
service account in spec.serviceAccountName may ask for more (privileged,
UID 0, capabilities.add, allowPrivilegeEscalation, hostPID) once a cluster
admin has granted it here. Host paths and the node's network and IPC
namespaces are never granted.`,
		Example: "  slipway adm policy " + use[:len(use)-len(" privileged -z SERVICEACCOUNT")] + " privileged -z monitor -n ops",
		Args:    exactArgs(2, "privileged and a service account (-z NAME)"),
		RunE: func(c *cobra.Command, args []string) error {
			if args[0] != "privileged" {
				return usagef("the only exception is \"privileged\", not %q", args[0])
			}
			if !sa {
				return usagef("the exception is granted to a service account: give -z NAME and -n PROJECT")
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			ctx := c.Context()
			name := api.PrivilegedPodsRole
			subj := api.Subject{Kind: api.SubjectServiceAccount, Name: args[1], Namespace: ns}
			if add {
				if _, err := cl.Get(ctx, api.ServiceAccounts, ns, args[1]); err != nil {
					return fmt.Errorf("service account %s in project %s: %w", args[1], ns, err)
				}
			}
			for attempt := 0; ; attempt++ {
				o, err := cl.Get(ctx, api.ClusterRoleBindings, "", name)
				switch {
				case api.IsNotFound(err) && add:
					err = cl.Create(ctx, api.ClusterRoleBindings, &api.ClusterRoleBinding{
						ObjectMeta: api.ObjectMeta{Name: name},
						RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: api.PrivilegedPodsRole},
						Subjects:   []api.Subject{subj},
					})
					if api.IsReason(err, api.ReasonAlreadyExists) && attempt < 5 {
						continue
					}
				case api.IsNotFound(err):
					return fmt.Errorf("service account %s of project %s does not hold the privileged exception", args[1], ns)
				case err == nil:
					b := o.(*api.ClusterRoleBinding)
					i := slices.Index(b.Subjects, subj)
					switch {
					case add && i >= 0:
						fmt.Fprintf(c.OutOrStdout(), "service account %s of project %s already holds the privileged exception\n", args[1], ns)
						return nil
					case add:
						b.Subjects = append(b.Subjects, subj)
						err = cl.Update(ctx, api.ClusterRoleBindings, b)
					case i < 0:
						return fmt.Errorf("service account %s of project %s does not hold the privileged exception", args[1], ns)
					case len(b.Subjects) == 1:
						_, err = cl.Delete(ctx, api.ClusterRoleBindings, "", name)
					default:
						b.Subjects = slices.Delete(b.Subjects, i, i+1)
						err = cl.Update(ctx, api.ClusterRoleBindings, b)
					}
					if api.IsConflict(err) && attempt < 5 {
						continue
					}
				}
				if err != nil {
					return err
				}
				verb := "granted to"
				if !add {
					verb = "taken from"
				}
				fmt.Fprintf(c.OutOrStdout(), "the privileged pod exception was %s service account %s of project %s\n", verb, args[1], ns)
				return nil
			}
		},
	}
	c.Flags().BoolVarP(&sa, "serviceaccount", "z", false, "the subject is a service account in the project (-n)")
	return c
}
