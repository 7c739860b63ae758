package cmd

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
)

// nodeAdmCmds are the adm verbs of node identity.
func nodeAdmCmds() []*cobra.Command {
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create-bootstrap-token NODE",
		Short: "Mint a one-use token with which the node NODE joins the cluster",
		Long: `Mint a one-use token with which the node NODE joins the cluster once
(slipway node --bootstrap-token-file): the API signs the node's
certificate for system:node:NODE and the token is used up. Only the token is
printed, so it can go straight to a file.`,
		Example: "  slipway adm create-bootstrap-token worker-1 --ttl 30m > worker-1.token",
		Args:    exactArgs(1, "a node name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := connect()
			if err != nil {
				return err
			}
			tr, err := cl.CreateBootstrapToken(c.Context(), args[0], ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), tr.Status.Token)
			fmt.Fprintf(c.ErrOrStderr(), "Bootstrap token for node %s, good once until %s.\n", args[0], tr.Status.ExpirationTimestamp.Format(time.RFC3339))
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used (at most 24h)")
	revoke := &cobra.Command{
		Use:   "revoke-node NODE",
		Short: "Revoke a node's credential: delete its Node, so its certificate does nothing",
		Long: `Revoke a node's credential by deleting its Node: the API then refuses the
node's certificate for everything, and the node can only join again with a
new bootstrap token. Its pods are made again elsewhere.`,
		Example: "  slipway adm revoke-node worker-1",
		Args:    exactArgs(1, "a node name"),
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := connect()
			if err != nil {
				return err
			}
			if _, err := cl.Delete(c.Context(), api.Nodes, "", args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "node %s revoked: its credential does nothing now; it joins again only with a new bootstrap token\n", args[0])
			return nil
		},
	}
	return []*cobra.Command{create, revoke}
}
