package identity

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// BootstrapUserPrefix names the holder of a node bootstrap token:
// system:bootstrap:NODE. Such a token is good for one thing only, once:
// joining the node NODE (RedeemBootstrapToken). AuthenticateToken refuses
// it.
const BootstrapUserPrefix = "system:bootstrap:"

// MaxBootstrapTTL is the longest a bootstrap token may live.
const MaxBootstrapTTL = 24 * time.Hour

// ErrBootstrapToken is a bootstrap token that is unknown, expired, used,
// or for another node.
var ErrBootstrapToken = errors.New("identity: bad bootstrap token")

// IssueBootstrapToken mints a one-use token that lets a node named node
// join within ttl (default 1h, at most MaxBootstrapTTL).
func (a *Authenticator) IssueBootstrapToken(ctx context.Context, node string, ttl time.Duration) (string, *api.Token, error) {
	if ttl <= 0 {
		ttl = time.Hour
	}
	if ttl > MaxBootstrapTTL {
		return "", nil, fmt.Errorf("identity: a bootstrap token lives at most %s: %w", MaxBootstrapTTL, store.ErrInvalid)
	}
	return a.issue(ctx, BootstrapUserPrefix+node, "bootstrap token for node "+node, ttl, "")
}

// RedeemBootstrapToken checks that secret is a live bootstrap token for
// node and deletes it, so it joins one node once. Two joins racing with
// one token: one wins, the other is refused.
func (a *Authenticator) RedeemBootstrapToken(ctx context.Context, secret, node string) error {
	if !wellFormed(secret) {
		return fmt.Errorf("%w: not a Slipway token", ErrBootstrapToken)
	}
	o, err := a.cfg.Store.Get(ctx, api.Tokens, "", TokenName(secret))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: unknown or already used", ErrBootstrapToken)
	}
	if err != nil {
		return err
	}
	tok := o.(*api.Token)
	bound, ok := strings.CutPrefix(tok.Spec.User, BootstrapUserPrefix)
	switch {
	case !ok:
		return fmt.Errorf("%w: it is not a bootstrap token", ErrBootstrapToken)
	case bound != node:
		return fmt.Errorf("%w: it is for node %q, not %q", ErrBootstrapToken, bound, node)
	case !a.cfg.Now().Before(tok.Spec.ExpiresAt):
		return fmt.Errorf("%w: it expired at %s", ErrBootstrapToken, tok.Spec.ExpiresAt.Format(time.RFC3339))
	}
	if _, err := a.cfg.Store.Delete(ctx, api.Tokens, "", tok.Name, tok.ResourceVersion); err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: already used", ErrBootstrapToken)
		}
		return err
	}
	return nil
}
