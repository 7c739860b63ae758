// Package identity says who is making a request: users who log in with a
// password (the built-in admin, or an htpasswd file), and service accounts.
// Both present bearer tokens, which are random, stored only as a hash,
// expiring and revocable.
package identity

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"slipway.dev/slipway/api"
)

// Errors of this package.
var (
	ErrUnauthenticated = errors.New("identity: unauthenticated")
	ErrBadPassword     = errors.New("identity: wrong user name or password")
	ErrTokenExpired    = errors.New("identity: token expired")
	ErrTokenUnknown    = errors.New("identity: token unknown or revoked")
)

// Well-known groups.
const (
	GroupAuthenticated   = "system:authenticated"
	GroupServiceAccounts = "system:serviceaccounts"
	GroupClusterAdmins   = "system:cluster-admins"
	AnonymousUser        = "system:anonymous"
	GroupUnauthenticated = "system:unauthenticated"
)

// Info is an authenticated subject.
type Info struct {
	Name   string   `json:"name"`
	Groups []string `json:"groups,omitempty"`
}

// IsAnonymous reports whether no credentials were presented.
func (i Info) IsAnonymous() bool { return i.Name == AnonymousUser }

// ServiceAccount returns the project and name when i is a service account.
func (i Info) ServiceAccount() (project, name string, ok bool) {
	return api.SplitServiceAccountUser(i.Name)
}

// InGroup reports whether i belongs to group g.
func (i Info) InGroup(g string) bool {
	for _, x := range i.Groups {
		if x == g {
			return true
		}
	}
	return false
}

// Anonymous is the subject of a request without credentials.
var Anonymous = Info{Name: AnonymousUser, Groups: []string{GroupUnauthenticated}}

type ctxKey struct{}

// WithInfo returns ctx carrying the request's subject.
func WithInfo(ctx context.Context, i Info) context.Context {
	return context.WithValue(ctx, ctxKey{}, i)
}

// FromContext returns the request's subject, or Anonymous.
func FromContext(ctx context.Context) Info {
	if i, ok := ctx.Value(ctxKey{}).(Info); ok {
		return i
	}
	return Anonymous
}

// TokenPrefix starts every Slipway token, so secret scanners can find them.
const TokenPrefix = "sha256~"

// NewToken returns a fresh random bearer token and the name under which its
// hash is stored.
func NewToken() (secret, name string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("identity: no randomness: " + err.Error())
	}
	secret = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, TokenName(secret)
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// TokenName is the stored name of a token: a hash of the secret, short enough
// to be a DNS label.
func TokenName(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return strings.ToLower(b32.EncodeToString(sum[:]))
}

// wellFormed rejects strings that cannot be our tokens before any lookup.
func wellFormed(secret string) bool {
	rest, ok := strings.CutPrefix(secret, TokenPrefix)
	if !ok || len(rest) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// ServiceAccountInfo is the identity of service account name of project,
// with the groups its token would authenticate with: for the server's own
// in-process requests made as that account, which need no token.
func ServiceAccountInfo(project, name string) Info {
	return infoFor(api.ServiceAccountUser(project, name), nil)
}

// infoFor derives the groups of a user or service account name.
func infoFor(name string, extra []string) Info {
	groups := []string{GroupAuthenticated}
	if p, _, ok := api.SplitServiceAccountUser(name); ok {
		groups = append(groups, GroupServiceAccounts, GroupServiceAccounts+":"+p)
	}
	return Info{Name: name, Groups: append(groups, extra...)}
}

func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func tokenObject(name, user, desc string, ttl time.Duration, now time.Time) *api.Token {
	t := &api.Token{
		ObjectMeta: api.ObjectMeta{Name: name},
		Spec:       api.TokenSpec{User: user, ExpiresAt: now.Add(ttl).UTC(), Description: desc},
	}
	if p, _, ok := api.SplitServiceAccountUser(user); ok {
		t.Labels = map[string]string{ProjectLabel: p}
	}
	return t
}

// ProjectLabel marks a service account's tokens with its project, so
// deleting the project deletes them.
const ProjectLabel = "slipway.dev/project"

func describe(user string) string {
	if _, _, ok := api.SplitServiceAccountUser(user); ok {
		return "service account " + user
	}
	return fmt.Sprintf("user %q", user)
}
