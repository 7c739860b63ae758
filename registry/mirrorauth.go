package registry

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
)

// A mirror's upstream credentials: the admin's, in a file on the
// registry's host (--mirror NAME=URL,credentials=FILE). Users pull with
// their own Slipway tokens and never see them: the file's path and
// content are in no response, and a refusal by the upstream is reported
// as the mirror's problem (upstreamErr), not the user's.

// errMirrorCredentials: the credentials file cannot be read or is not
// USERNAME:PASSWORD. Its content is never in the message.
var errMirrorCredentials = errors.New("registry: mirror credentials")

// maxCredentialsFile bounds what is read of a credentials file.
const maxCredentialsFile = 64 << 10

// readCredentials reads USERNAME:PASSWORD from the first line of path
// (the password may hold colons; a trailing newline is not part of it).
func readCredentials(path string) (authn.AuthConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return authn.AuthConfig{}, fmt.Errorf("%w: %v", errMirrorCredentials, err)
	}
	defer f.Close()
	buf := make([]byte, maxCredentialsFile+1)
	n, _ := f.Read(buf)
	if n > maxCredentialsFile {
		return authn.AuthConfig{}, fmt.Errorf("%w: %s is over 64 KiB; it must hold one line, USERNAME:PASSWORD", errMirrorCredentials, path)
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	line = strings.TrimSuffix(line, "\r")
	user, pass, ok := strings.Cut(line, ":")
	if !ok || user == "" || pass == "" {
		return authn.AuthConfig{}, fmt.Errorf("%w: the first line of %s is not USERNAME:PASSWORD", errMirrorCredentials, path)
	}
	return authn.AuthConfig{Username: user, Password: pass}, nil
}

// credentialsFile authenticates with what its file holds at the time of
// each fetch.
type credentialsFile string

func (c credentialsFile) Authorization() (*authn.AuthConfig, error) {
	a, err := readCredentials(string(c))
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// credentialScope lets a request that carries credentials (an
// Authorization header: the admin's password, or a token bought with it)
// go only to the upstream's host or to a token service the upstream named
// in a challenge, over HTTPS unless the upstream itself is plain HTTP.
// ggcr already leaves the header off a redirect to another host (blob
// storage, a CDN) and checks the realm's scheme; this holds whatever the
// client library does. The import guard (underneath) still decides which
// hosts and addresses may be dialled at all.
type credentialScope struct {
	base  http.RoundTripper
	host  string // the upstream's host[:port], as requests name it
	plain bool   // the upstream is http://

	mu     sync.Mutex
	realms map[string]bool // hosts the upstream named as its token service
}

func newCredentialScope(base http.RoundTripper, host string, plain bool) *credentialScope {
	return &credentialScope{base: base, host: host, plain: plain, realms: map[string]bool{}}
}

// errCredentialScope: a request would have carried the mirror's
// credentials to a host they are not for.
var errCredentialScope = errors.New("registry: mirror credentials are only for the upstream")

var realmParam = regexp.MustCompile(`(?i)\brealm="([^"]*)"`)

func (c *credentialScope) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") != "" && !c.mayCarry(req.URL) {
		return nil, fmt.Errorf("%w: refusing to send them to %s://%s", errCredentialScope, req.URL.Scheme, req.URL.Host)
	}
	resp, err := c.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && req.URL.Host == c.host {
		for _, h := range resp.Header.Values("WWW-Authenticate") {
			for _, m := range realmParam.FindAllStringSubmatch(h, -1) {
				if u, err := url.Parse(m[1]); err == nil && u.Host != "" && (u.Scheme == "https" || (u.Scheme == "http" && c.plain)) {
					c.mu.Lock()
					c.realms[u.Host] = true
					c.mu.Unlock()
				}
			}
		}
	}
	return resp, err
}

func (c *credentialScope) mayCarry(u *url.URL) bool {
	if u.Scheme != "https" && !(u.Scheme == "http" && c.plain) {
		return false
	}
	if u.Host == c.host {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.realms[u.Host]
}
