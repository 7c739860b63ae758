package cmd

import (
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

func newProjectCmd() *cobra.Command {
	var display, desc string
	c := &cobra.Command{
		Use:     "new-project NAME",
		Short:   "Create a project, become its admin, and switch to it",
		Example: `  slipway new-project shop --display-name "Web shop"`,
		Args:    exactArgs(1, "a project name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			p := &api.Project{ObjectMeta: api.ObjectMeta{Name: args[0]}, Spec: api.ProjectSpec{DisplayName: display, Description: desc}}
			if err := cl.Create(c.Context(), api.Projects, p); err != nil {
				return err
			}
			cfg.Project = p.Name
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Now using project %q on server %q.\n", p.Name, cl.Server())
			return nil
		},
	}
	c.Flags().StringVar(&display, "display-name", "", "human-readable name")
	c.Flags().StringVar(&desc, "description", "", "what the project is for")
	return c
}

func projectCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "project [NAME]",
		Short:   "Show the current project, or switch to another",
		Example: "  slipway project\n  slipway project shop",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			if len(args) == 0 {
				if cfg.Project == "" {
					return usagef("no current project; pick one with `slipway project NAME`")
				}
				fmt.Fprintf(c.OutOrStdout(), "Using project %q on server %q.\n", cfg.Project, cl.Server())
				return nil
			}
			if _, err := cl.Get(c.Context(), api.Projects, "", args[0]); err != nil {
				return err
			}
			cfg.Project = args[0]
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Now using project %q on server %q.\n", args[0], cl.Server())
			return nil
		},
	}
}

func projectsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "projects",
		Short:   "List the projects you can see; * marks the current one",
		Example: "  slipway projects",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			items, _, err := cl.List(c.Context(), api.Projects, "", client.ListOptions{})
			if err != nil {
				return err
			}
			if len(items) == 0 {
				fmt.Fprintln(c.OutOrStdout(), "You have no projects. Create one with `slipway new-project NAME`.")
				return nil
			}
			fmt.Fprintf(c.OutOrStdout(), "You have access to these projects on server %q:\n\n", cl.Server())
			for _, o := range items {
				p := o.(*api.Project)
				mark := " "
				if p.Name == cfg.Project {
					mark = "*"
				}
				line := fmt.Sprintf("  %s %s", mark, p.Name)
				if p.Spec.DisplayName != "" {
					line += " - " + p.Spec.DisplayName
				}
				if p.Status.Phase == api.ProjectTerminating {
					line += " (terminating)"
				}
				fmt.Fprintln(c.OutOrStdout(), line)
			}
			return nil
		},
	}
}

func policyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "policy",
		Short: "Grant and revoke roles in a project",
		Example: `  slipway policy add-role-to-user edit alice -n shop
  slipway policy add-role-to-user image-pusher -z ci-robot -n shop
  slipway policy remove-role-from-user edit alice -n shop`,
	}
	c.AddCommand(roleCmd(true), roleCmd(false))
	return c
}

// roleCmd grants or revokes a ClusterRole in a project by editing the
// RoleBinding named after the role, as `oc policy` does.
func roleCmd(add bool) *cobra.Command {
	var sa, group bool
	use, short := "add-role-to-user ROLE USER", "Grant a role to a user, group (--group) or service account (-z) in a project"
	if !add {
		use, short = "remove-role-from-user ROLE USER", "Take a role away from a user, group or service account in a project"
	}
	c := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: "  slipway policy " + use[:len(use)-10] + " view bob -n shop\n  slipway policy " + use[:len(use)-10] + " image-puller -z deployer -n shop",
		Args:    exactArgs(2, "a role and a subject"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			role, who := args[0], args[1]
			subj := api.Subject{Kind: api.SubjectUser, Name: who}
			switch {
			case sa && group:
				return usagef("-z and --group cannot be combined")
			case sa:
				subj = api.Subject{Kind: api.SubjectServiceAccount, Name: who, Namespace: ns}
			case group:
				subj = api.Subject{Kind: api.SubjectGroup, Name: who}
			}
			ctx := c.Context()
			for attempt := 0; ; attempt++ {
				o, err := cl.Get(ctx, api.RoleBindings, ns, role)
				switch {
				case api.IsNotFound(err) && add:
					b := &api.RoleBinding{ObjectMeta: api.ObjectMeta{Name: role, Namespace: ns}, RoleRef: api.RoleRef{Kind: "ClusterRole", Name: role}, Subjects: []api.Subject{subj}}
					err = cl.Create(ctx, api.RoleBindings, b)
					if api.IsReason(err, api.ReasonAlreadyExists) && attempt < 5 {
						continue
					}
				case api.IsNotFound(err):
					return fmt.Errorf("%s %q has no role %q in project %q", subj.Kind, who, role, ns)
				case err == nil:
					b := o.(*api.RoleBinding)
					if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != role {
						return fmt.Errorf("rolebinding %q in project %q binds %s %q, not role %q; edit it with `slipway apply`", role, ns, b.RoleRef.Kind, b.RoleRef.Name, role)
					}
					i := slices.Index(b.Subjects, subj)
					switch {
					case add && i >= 0:
						fmt.Fprintf(c.OutOrStdout(), "%s %q already has role %q in project %q\n", subj.Kind, who, role, ns)
						return nil
					case add:
						b.Subjects = append(b.Subjects, subj)
						err = cl.Update(ctx, api.RoleBindings, b)
					case i < 0:
						return fmt.Errorf("%s %q has no role %q in project %q", subj.Kind, who, role, ns)
					case len(b.Subjects) == 1:
						_, err = cl.Delete(ctx, api.RoleBindings, ns, role)
					default:
						b.Subjects = slices.Delete(b.Subjects, i, i+1)
						err = cl.Update(ctx, api.RoleBindings, b)
					}
					if api.IsConflict(err) && attempt < 5 {
						continue
					}
				}
				if err != nil {
					return err
				}
				verb := "added to"
				if !add {
					verb = "removed from"
				}
				fmt.Fprintf(c.OutOrStdout(), "role %q %s %s %q in project %q\n", role, verb, subj.Kind, who, ns)
				return nil
			}
		},
	}
	c.Flags().BoolVarP(&sa, "serviceaccount", "z", false, "the subject is a service account in the project")
	c.Flags().BoolVar(&group, "group", false, "the subject is a group")
	return c
}

// admCmd holds cluster administration verbs.
func admCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "adm",
		Short:   "Administer the cluster (cluster admins)",
		Example: "  slipway adm revoke-tokens alice\n  slipway adm policy add-scc-to-user privileged -z monitor -n ops",
	}
	c.AddCommand(admPolicyCmd())
	c.AddCommand(&cobra.Command{
		Use:     "revoke-tokens USER",
		Short:   "End every session of a user: delete all their tokens, without deleting the user",
		Example: "  slipway adm revoke-tokens alice\n  # alice logs in again with her password to get a new token",
		Args:    exactArgs(1, "a user name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := connect()
			if err != nil {
				return err
			}
			msg, err := cl.RevokeUserTokens(c.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), msg)
			return nil
		},
	})
	c.AddCommand(nodeAdmCmds()...)
	c.AddCommand(admRegistryCmds()...)
	return c
}
