package cmd

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

func loginCmd() *cobra.Command {
	var user, password string
	c := &cobra.Command{
		Use:   "login [URL]",
		Short: "Log in to a Slipway server and save the token",
		Long: `Log in with a user name and password, and save the server, its CA and a
bearer token in ~/.slipway/config (or $SLIPWAY_CONFIG).

The server's certificate is trusted through --certificate-authority, or by
confirming the fingerprint of its CA when asked.`,
		Example: `  slipway login https://127.0.0.1:8443 -u admin -p "$(cat slipway.local/admin-password)" \
      --certificate-authority slipway.local/pki/ca.crt

  # Asks for the password and to confirm the CA's fingerprint
  slipway login https://slipway.example.com:8443 -u alice`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			server := cfg.Server
			if len(args) == 1 {
				server = args[0]
			}
			if g.server != "" {
				server = g.server
			}
			if server == "" {
				server = DefaultServer
			}
			if !strings.Contains(server, "://") {
				server = "https://" + server
			}
			u, err := url.Parse(server)
			if err != nil || u.Host == "" {
				return usagef("%q is not a server URL like %s", server, DefaultServer)
			}
			if cfg.Server != server {
				// A different server: forget the old one's trust and token.
				cfg = &Config{Server: server, Project: ""}
			}
			switch {
			case g.caFile != "":
				ca, err := os.ReadFile(g.caFile)
				if err != nil {
					return fmt.Errorf("--certificate-authority: %w", err)
				}
				cfg.CertificateAuthorityData, cfg.InsecureSkipTLSVerify = ca, false
			case g.insecure:
				cfg.InsecureSkipTLSVerify, cfg.CertificateAuthorityData = true, nil
			case len(cfg.CertificateAuthorityData) == 0 && u.Scheme == "https":
				ca, err := confirmCA(c.Context(), u.Host, c.InOrStdin(), c.ErrOrStderr())
				if err != nil {
					return err
				}
				cfg.CertificateAuthorityData = ca
			}
			if user == "" {
				if user, err = prompt(c, "Username: ", false); err != nil {
					return err
				}
			}
			if password == "" {
				if password, err = prompt(c, "Password: ", true); err != nil {
					return err
				}
			}
			g.server, g.token, g.caFile = server, "", ""
			if err := cfg.save(); err != nil {
				return err
			}
			cl, _, err := connect()
			if err != nil {
				return err
			}
			resp, err := cl.Login(c.Context(), user, password)
			if err != nil {
				return err
			}
			cfg.User, cfg.Token = resp.User, resp.Token
			cl, err = client.New(server, trustOptions(cfg, resp.Token)...)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			fmt.Fprintf(out, "Logged into %q as %q using a token that expires %s.\n\n", server, resp.User, resp.ExpiresAt.Local().Format(time.RFC1123))
			projects, _, err := cl.List(c.Context(), api.Projects, "", client.ListOptions{})
			if err == nil {
				switch {
				case len(projects) == 0:
					cfg.Project = ""
					fmt.Fprintln(out, "You have no projects. Create one with `slipway new-project NAME`.")
				default:
					names := make([]string, len(projects))
					for i, p := range projects {
						names[i] = p.GetObjectMeta().Name
					}
					if cfg.Project == "" || !contains(names, cfg.Project) {
						cfg.Project = names[0]
					}
					fmt.Fprintf(out, "You have access to %d project(s); using project %q.\n", len(names), cfg.Project)
				}
			}
			return cfg.save()
		},
	}
	c.Flags().StringVarP(&user, "username", "u", "", "user name")
	c.Flags().StringVarP(&password, "password", "p", "", "password (asked for when omitted)")
	return c
}

func trustOptions(cfg *Config, token string) []client.Option {
	opts := []client.Option{client.WithToken(token)}
	if cfg.InsecureSkipTLSVerify {
		opts = append(opts, client.WithInsecureSkipVerify())
	} else if len(cfg.CertificateAuthorityData) > 0 {
		opts = append(opts, client.WithCAData(cfg.CertificateAuthorityData))
	}
	return opts
}

// confirmCA fetches the server's certificate chain and, when it is not
// trusted by the system, shows the fingerprint of the CA that signed it and
// asks whether to trust it. It returns the CA as PEM, or nil when the system
// already trusts the server.
func confirmCA(ctx context.Context, host string, in io.Reader, out io.Writer) ([]byte, error) {
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: &tls.Config{}}
	if conn, err := d.DialContext(ctx, "tcp", host); err == nil {
		conn.Close()
		return nil, nil
	}
	d.Config = &tls.Config{InsecureSkipVerify: true}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s (is `slipway start` running?): %w", host, err)
	}
	defer conn.Close()
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	ca := chain[len(chain)-1]
	sum := sha256.Sum256(ca.Raw)
	fp := fmt.Sprintf("%X", sum[:])
	var pretty []string
	for i := 0; i < len(fp); i += 2 {
		pretty = append(pretty, fp[i:i+2])
	}
	fmt.Fprintf(out, "The server uses a certificate signed by an unknown authority:\n  %s\n  SHA-256 fingerprint: %s\n", ca.Subject.CommonName, strings.Join(pretty, ":"))
	fmt.Fprint(out, "Trust this certificate authority and save it? (y/N): ")
	line, _ := bufio.NewReader(in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return nil, errors.New("the server's CA was not trusted; pass --certificate-authority DATA_DIR/pki/ca.crt (or answer y)")
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), nil
}

func prompt(c *cobra.Command, label string, secret bool) (string, error) {
	f, ok := c.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usagef("%snot given and there is no terminal to ask on; pass it as a flag (-u, -p)", label)
	}
	fmt.Fprint(c.ErrOrStderr(), label)
	if secret {
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(c.ErrOrStderr())
		return string(b), err
	}
	line, err := bufio.NewReader(f).ReadString('\n')
	return strings.TrimSpace(line), err
}

func logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Short:   "Revoke the saved token and forget it",
		Example: "  slipway logout",
		Args:    cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, cfg, err := connect()
			if err != nil {
				return err
			}
			if cl.Token() == "" {
				return usagef("not logged in")
			}
			if err := cl.Revoke(c.Context()); err != nil && !api.IsReason(err, api.ReasonUnauthorized) {
				return err
			}
			user := cfg.User
			cfg.Token, cfg.User = "", ""
			if err := cfg.save(); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "Logged %q out of %q\n", user, cl.Server())
			return nil
		},
	}
}

func whoamiCmd() *cobra.Command {
	var showToken bool
	c := &cobra.Command{
		Use:   "whoami",
		Short: "Show the current user, or with -t its token",
		Example: `  slipway whoami
  docker login -u admin -p "$(slipway whoami -t)" 127.0.0.1:5000`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			cl, _, err := connect()
			if err != nil {
				return err
			}
			if showToken {
				if cl.Token() == "" {
					return usagef("not logged in: run `slipway login`")
				}
				fmt.Fprintln(c.OutOrStdout(), cl.Token())
				return nil
			}
			u, err := cl.WhoAmI(c.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), u.Name)
			return nil
		},
	}
	c.Flags().BoolVarP(&showToken, "show-token", "t", false, "print the bearer token")
	return c
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
