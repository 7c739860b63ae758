package builders

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"slipway.dev/slipway/api"
)

var (
	installOnce  sync.Once
	gitTransport struct {
		sync.RWMutex
		rt http.RoundTripper
	}
)

// guardGit makes every git fetch go through rt (the import guard). go-git
// keeps its protocols in a global table, so this is process-wide.
func guardGit(rt http.RoundTripper) {
	gitTransport.Lock()
	gitTransport.rt = rt
	gitTransport.Unlock()
	installOnce.Do(func() {
		hc := &http.Client{Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			gitTransport.RLock()
			rt := gitTransport.rt
			gitTransport.RUnlock()
			if rt == nil {
				return nil, errors.New("builders: git fetches are not configured")
			}
			return rt.RoundTrip(r)
		})}
		client.InstallProtocol("https", githttp.NewClient(hc))
		client.InstallProtocol("http", githttp.NewClient(hc))
		// Nothing else: file:// (and plain paths) would run the host's
		// git-upload-pack on the server's own files, ssh:// would use the
		// server's keys and agent, and git:// would dial past the guard.
		for _, scheme := range []string{"file", "ssh", "git"} {
			client.InstallProtocol(scheme, nil)
		}
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var commitRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// clone fetches src into dir and returns the commit checked out. Only
// http(s) URLs are fetched, whatever the API let through. Credentials in
// the URL are used for the fetch but appear in no error and are not left
// in the checkout's .git/config.
func clone(ctx context.Context, src *api.GitBuildSource, dir string, progress *os.File) (string, error) {
	if msg := api.ValidGitURI(src.URI); msg != "" {
		return "", fmt.Errorf("git URI %q %s", api.RedactURI(src.URI), msg)
	}
	rev, err := cloneURI(ctx, src, dir, progress)
	if err != nil && src.URI != api.RedactURI(src.URI) {
		err = errors.New(strings.ReplaceAll(err.Error(), src.URI, api.RedactURI(src.URI)))
		if u, perr := url.Parse(src.URI); perr == nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				err = errors.New(strings.ReplaceAll(err.Error(), pw, "REDACTED"))
			}
		}
	}
	return rev, err
}

func cloneURI(ctx context.Context, src *api.GitBuildSource, dir string, progress *os.File) (string, error) {
	opts := &git.CloneOptions{URL: src.URI, Tags: git.NoTags}
	if progress != nil {
		opts.Progress = progress
	}
	ref := src.Ref
	switch {
	case ref == "":
		opts.Depth = 1
	case commitRe.MatchString(ref):
		// A commit needs history to find it.
	default:
		opts.Depth = 1
		opts.SingleBranch = true
		opts.ReferenceName = plumbing.NewBranchReferenceName(ref)
	}
	repo, err := git.PlainCloneContext(ctx, dir, false, opts)
	if err != nil && opts.ReferenceName != "" {
		// Not a branch: try a tag.
		_ = os.RemoveAll(dir)
		opts.ReferenceName = plumbing.NewTagReferenceName(ref)
		repo, err = git.PlainCloneContext(ctx, dir, false, opts)
	}
	if err != nil {
		return "", fmt.Errorf("cloning %s: %w", src.URI, err)
	}
	if commitRe.MatchString(ref) {
		wt, err := repo.Worktree()
		if err != nil {
			return "", err
		}
		if err := wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(ref)}); err != nil {
			return "", fmt.Errorf("checking out %s: %w", ref, err)
		}
	}
	if redacted := api.RedactURI(src.URI); redacted != src.URI {
		cfg, err := repo.Config()
		if err != nil {
			return "", err
		}
		for _, r := range cfg.Remotes {
			r.URLs = []string{redacted}
		}
		if err := repo.SetConfig(cfg); err != nil {
			return "", err
		}
	}
	head, err := repo.Head()
	if err != nil {
		return "", err
	}
	return head.Hash().String(), nil
}
