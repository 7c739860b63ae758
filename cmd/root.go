// Package cmd holds the commands of the slipway binary: the server roles
// (start) and the client verbs, in the conventions of oc and kubectl.
package cmd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
)

// globals are the flags every client command shares.
type globals struct {
	configPath string
	server     string
	token      string
	project    string
	insecure   bool
	caFile     string
}

var g globals

// Root returns the slipway command tree.
func Root() *cobra.Command {
	root := &cobra.Command{
		Use:   "slipway",
		Short: "Slipway: an image supply-chain platform",
		Long: `Slipway turns source and images into tested, signed, promoted, running
applications, around an integrated OCI registry.

Start everything on this machine, then log in:

  slipway start --data-dir ./slipway.local
  slipway login https://127.0.0.1:8443 -u admin -p "$(cat slipway.local/admin-password)" \
      --certificate-authority slipway.local/pki/ca.crt`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.configPath, "config", "", "client config file (default $SLIPWAY_CONFIG or ~/.slipway/config)")
	pf.StringVar(&g.server, "server", "", "API server URL, overriding the config")
	pf.StringVar(&g.token, "token", "", "bearer token, overriding the config")
	pf.StringVarP(&g.project, "namespace", "n", "", "project to work in (default: the current project)")
	pf.BoolVar(&g.insecure, "insecure-skip-tls-verify", false, "do not verify the server's certificate (unsafe)")
	pf.StringVar(&g.caFile, "certificate-authority", "", "PEM file of the CA that signed the server's certificate")

	root.AddCommand(
		startCmd(), masterCmd(), registryCmd(), nodeCmd(), routerCmd(), pauseCmd(),
		loginCmd(), logoutCmd(), whoamiCmd(), processCmd(), newAppCmd(),
		newProjectCmd(), projectCmd(), projectsCmd(),
		getCmd(), describeCmd(), applyCmd(), createCmd(), deleteCmd(),
		policyCmd(), admCmd(), apiResourcesCmd(),
		tagCmd(), rollbackCmd(), importImageCmd(),
		startBuildCmd(), cancelBuildCmd(), logsCmd(), rebuildCmd(),
		rolloutCmd(), scaleCmd(), execCmd(), exposeCmd(),
		vulndbCmd(), scanCmd(), signCmd(), promoteCmd(), approveCmd(), historyCmd(), traceCmd(),
	)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usagef("%v\nSee '%s --help' for usage.", err, c.CommandPath())
	})
	return root
}

// Friendly turns an error into the one line the CLI prints after "error: ".
func Friendly(err error) string {
	if st, ok := api.StatusFor(err); ok {
		msg := st.Message
		if st.Code == 401 && !strings.Contains(msg, "slipway login") {
			msg += " (log in with `slipway login`)"
		}
		return msg
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return ue.Error()
	}
	return err.Error()
}

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exactArgs is cobra.ExactArgs with a message that names the command.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s; see '%s --help'", c.CommandPath(), what, c.CommandPath())
		}
		return nil
	}
}
