package cmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"slipway.dev/slipway/client"
)

// Config is the CLI's saved state: where the server is, how to trust it,
// who we are and which project we work in.
type Config struct {
	Server                   string `json:"server,omitempty"`
	CertificateAuthorityData []byte `json:"certificateAuthorityData,omitempty"`
	InsecureSkipTLSVerify    bool   `json:"insecureSkipTLSVerify,omitempty"`
	User                     string `json:"user,omitempty"`
	Token                    string `json:"token,omitempty"`
	Project                  string `json:"project,omitempty"`
}

// DefaultServer is where `slipway start` listens by default.
const DefaultServer = "https://127.0.0.1:8443"

func configPath() string {
	if g.configPath != "" {
		return g.configPath
	}
	if p := os.Getenv("SLIPWAY_CONFIG"); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".slipway", "config")
}

func loadConfig() (*Config, error) {
	var c Config
	data, err := os.ReadFile(configPath())
	if errors.Is(err, os.ErrNotExist) {
		return &c, nil
	}
	if err != nil {
		return nil, err
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("config %s is not valid YAML: %w; fix or delete it and log in again", configPath(), err)
	}
	return &c, nil
}

// save writes the config with mode 0600: it holds a token.
func (c *Config) save() error {
	p := configPath()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// connect builds a client from the config and the global flags.
func connect() (*client.Client, *Config, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	server := cfg.Server
	if g.server != "" {
		server = g.server
	}
	if server == "" {
		return nil, nil, usagef("not logged in: run `slipway login %s -u USER`", DefaultServer)
	}
	token := cfg.Token
	if g.token != "" {
		token = g.token
	}
	opts := []client.Option{client.WithToken(token), client.WithWarnings(printWarning)}
	switch {
	case g.insecure || (cfg.InsecureSkipTLSVerify && g.caFile == ""):
		opts = append(opts, client.WithInsecureSkipVerify())
	case g.caFile != "":
		ca, err := os.ReadFile(g.caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--certificate-authority: %w", err)
		}
		opts = append(opts, client.WithCAData(ca))
	case len(cfg.CertificateAuthorityData) > 0:
		opts = append(opts, client.WithCAData(cfg.CertificateAuthorityData))
	}
	c, err := client.New(server, opts...)
	return c, cfg, err
}

// project is the -n flag, or the current project from the config.
func (c *Config) project() (string, error) {
	if g.project != "" {
		return g.project, nil
	}
	if c.Project != "" {
		return c.Project, nil
	}
	return "", usagef("no project selected: pass -n PROJECT, or pick one with `slipway project NAME` (create one with `slipway new-project NAME`)")
}

// connectProject is connect for commands that work inside one project.
func connectProject() (*client.Client, string, error) {
	cl, cfg, err := connect()
	if err != nil {
		return nil, "", err
	}
	ns, err := cfg.project()
	return cl, ns, err
}

// printWarning shows a warning the server attached to an answer on
// stderr, as kubectl does.
func printWarning(msg string) { fmt.Fprintln(os.Stderr, "Warning: "+msg) }
