package identity

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/bcrypt"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// Config configures an Authenticator.
type Config struct {
	Store *store.Store
	// Tokens, ServiceAccounts and Users are caches of those resources;
	// when nil, every lookup reads etcd.
	Tokens, ServiceAccounts, Users *store.Informer
	// HTPasswd is an optional htpasswd file (bcrypt or {SHA} entries). It
	// is read on every login, so edits take effect without a restart.
	HTPasswd string
	// LoginTTL is the lifetime of a login token. Default 24h, as in
	// OpenShift.
	LoginTTL time.Duration
	// ServiceAccountTTL is the default lifetime of a service account
	// token. Default DefaultServiceAccountTTL.
	ServiceAccountTTL time.Duration
	// MaxServiceAccountTTL is the longest a service account token may
	// live; longer requests are shortened to it. Default
	// MaxServiceAccountTTL.
	MaxServiceAccountTTL time.Duration
	Now                  func() time.Time
}

// Validate fills defaults and checks what is required.
func (c *Config) Validate() error {
	if c.Store == nil {
		return errors.New("identity: a store is required")
	}
	if c.LoginTTL == 0 {
		c.LoginTTL = 24 * time.Hour
	}
	if c.MaxServiceAccountTTL == 0 {
		c.MaxServiceAccountTTL = MaxServiceAccountTTL
	}
	if c.ServiceAccountTTL == 0 {
		c.ServiceAccountTTL = min(DefaultServiceAccountTTL, c.MaxServiceAccountTTL)
	}
	if c.ServiceAccountTTL > c.MaxServiceAccountTTL {
		return fmt.Errorf("identity: the default service account token lifetime %s is over the maximum %s", c.ServiceAccountTTL, c.MaxServiceAccountTTL)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.HTPasswd != "" {
		if _, err := os.Stat(c.HTPasswd); err != nil {
			return fmt.Errorf("identity: htpasswd file: %w", err)
		}
	}
	return nil
}

// Authenticator turns tokens and passwords into subjects.
type Authenticator struct {
	cfg     Config
	limiter *loginLimiter
}

// New returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{cfg: cfg, limiter: newLoginLimiter(cfg.Now)}
	if cfg.Users != nil {
		cfg.Users.AddHandler(func(ev store.Event) {
			if ev.Type == api.Deleted {
				go a.userDeleted(ev.Object)
			}
		})
	}
	if cfg.HTPasswd != "" {
		warnHTPasswd(cfg.HTPasswd)
	}
	return a, nil
}

func (a *Authenticator) passwordKey(user string) string {
	return store.DefaultPrefix + "passwords/" + user
}

// AuthenticateToken returns the subject of a bearer token. A malformed,
// unknown, revoked or expired token is ErrUnauthenticated-wrapped, and so is
// the token of a service account that no longer exists.
func (a *Authenticator) AuthenticateToken(ctx context.Context, secret string) (Info, error) {
	if !wellFormed(secret) {
		return Info{}, fmt.Errorf("%w: %w", ErrUnauthenticated, ErrTokenUnknown)
	}
	name := TokenName(secret)
	obj, err := a.lookup(ctx, a.cfg.Tokens, api.Tokens, "", name)
	if err != nil {
		return Info{}, err
	}
	tok := obj.(*api.Token)
	if !constantTimeEqual(tok.Name, name) {
		return Info{}, fmt.Errorf("%w: %w", ErrUnauthenticated, ErrTokenUnknown)
	}
	if !a.cfg.Now().Before(tok.Spec.ExpiresAt) {
		return Info{}, fmt.Errorf("%w: %w at %s; log in again", ErrUnauthenticated, ErrTokenExpired, tok.Spec.ExpiresAt.Format(time.RFC3339))
	}
	if strings.HasPrefix(tok.Spec.User, BootstrapUserPrefix) {
		return Info{}, fmt.Errorf("%w: a bootstrap token only joins its node (slipway node --bootstrap-token-file)", ErrUnauthenticated)
	}
	if p, sa, ok := api.SplitServiceAccountUser(tok.Spec.User); ok {
		o, err := a.lookup(ctx, a.cfg.ServiceAccounts, api.ServiceAccounts, p, sa)
		if err != nil || o.GetObjectMeta().UID != tok.Spec.ServiceAccountUID {
			return Info{}, fmt.Errorf("%w: service account %s/%s no longer exists", ErrUnauthenticated, p, sa)
		}
		return infoFor(tok.Spec.User, nil), nil
	}
	u, err := a.user(ctx, tok)
	if err != nil {
		return Info{}, err
	}
	var extra []string
	if u != nil {
		extra = u.Groups
	}
	return infoFor(tok.Spec.User, extra), nil
}

// user returns the User a login token belongs to. A token whose User was
// deleted, or replaced by a new User of the same name, is refused and
// deleted: deleting a User is how an admin revokes their tokens. The
// bootstrap admin is the exception, so that deleting the admin User cannot
// lock everybody out; its User is made again at the next start.
func (a *Authenticator) user(ctx context.Context, tok *api.Token) (*api.User, error) {
	want := tok.Labels[UserUIDLabel] // empty on tokens issued before users were bound
	var u *api.User
	if a.cfg.Users != nil {
		if o, ok := a.cfg.Users.Get("", tok.Spec.User); ok && (want == "" || o.GetObjectMeta().UID == want) {
			u = o.(*api.User)
		}
	}
	if u == nil {
		// A cache miss or a different UID: the cache may be behind.
		o, err := a.cfg.Store.Get(ctx, api.Users, "", tok.Spec.User)
		switch {
		case err == nil && (want == "" || o.GetObjectMeta().UID == want):
			u = o.(*api.User)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
	}
	if u != nil || tok.Spec.User == AdminUser {
		return u, nil
	}
	// Best effort: the holder presented it, so it is not needed again.
	if _, err := a.cfg.Store.Delete(ctx, api.Tokens, "", tok.Name, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
		slog.Warn("identity: deleting the token of a deleted user", "user", tok.Spec.User, "err", err)
	}
	return nil, fmt.Errorf("%w: user %q no longer exists; log in again", ErrUnauthenticated, tok.Spec.User)
}

// UserUIDLabel on a login token binds it to its User: a new User of the
// same name does not revive tokens of the one deleted.
const UserUIDLabel = "slipway.dev/user-uid"

// RevokeUserTokens deletes every token of user, a user name or
// system:serviceaccount:PROJECT:NAME, and returns how many it deleted and
// the revision of the last deletion, so callers can wait for caches to see
// it. It is for admins who must cut someone off without deleting them;
// deleting a User (or a service account) also kills its tokens.
func (a *Authenticator) RevokeUserTokens(ctx context.Context, user string) (n int, rev int64, err error) {
	return a.revokeTokens(ctx, func(t *api.Token) bool { return t.Spec.User == user })
}

func (a *Authenticator) revokeTokens(ctx context.Context, match func(*api.Token) bool) (n int, rev int64, err error) {
	// Read etcd, not the cache: a token issued a moment ago must go too.
	toks, _, err := a.cfg.Store.List(ctx, api.Tokens, "", store.ListOptions{})
	if err != nil {
		return 0, 0, err
	}
	for _, o := range toks {
		t := o.(*api.Token)
		if !match(t) {
			continue
		}
		d, err := a.cfg.Store.Delete(ctx, api.Tokens, "", t.Name, "")
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return n, rev, fmt.Errorf("identity: revoke tokens: %w", err)
		}
		n++
		if r, err := strconv.ParseInt(d.GetObjectMeta().ResourceVersion, 10, 64); err == nil && r > rev {
			rev = r
		}
	}
	return n, rev, nil
}

// userDeleted deletes the tokens of a deleted User. Tokens bound to a newer
// User of the same name stay.
func (a *Authenticator) userDeleted(u api.Object) {
	m := u.GetObjectMeta()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, _, err := a.revokeTokens(ctx, func(t *api.Token) bool {
		uid := t.Labels[UserUIDLabel]
		return t.Spec.User == m.Name && (uid == "" || uid == m.UID)
	})
	if err != nil {
		slog.Warn("identity: deleting the tokens of a deleted user; they are refused anyway", "user", m.Name, "err", err)
		return
	}
	if n > 0 {
		slog.Info("identity: deleted the tokens of a deleted user", "user", m.Name, "tokens", n)
	}
}

// lookup reads the cache and falls back to etcd on a miss, because another
// API server may have written the object a moment ago.
func (a *Authenticator) lookup(ctx context.Context, inf *store.Informer, r *api.Resource, ns, name string) (api.Object, error) {
	if inf != nil {
		if o, ok := inf.Get(ns, name); ok {
			return o, nil
		}
	}
	o, err := a.cfg.Store.Get(ctx, r, ns, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrUnauthenticated, ErrTokenUnknown)
	}
	return o, err
}

// Login checks a user's password and issues a token. Users in the htpasswd
// file get a User object on their first login.
//
// Failed logins are throttled per user name and per client address (see
// WithClientAddr): past a burst, Login answers a *ThrottledError, without
// checking the password, until the caller has waited.
func (a *Authenticator) Login(ctx context.Context, user, password string) (secret string, tok *api.Token, err error) {
	// User names are at most 63 characters; longer ones share a bucket
	// rather than fill memory.
	keys := []limitKey{{"user:" + user[:min(len(user), 64)], userLimit}}
	if c := clientAddr(ctx); c != "" {
		keys = append(keys, limitKey{"client:" + c, clientLimit})
	}
	if err := a.limiter.allow(keys); err != nil {
		return "", nil, err
	}
	identity, err := a.checkPassword(ctx, user, password)
	if errors.Is(err, ErrBadPassword) {
		a.limiter.fail(keys)
	}
	if err != nil {
		return "", nil, err
	}
	u := &api.User{ObjectMeta: api.ObjectMeta{Name: user}, Identities: []string{identity}}
	if err := api.Users.ValidateObject(u); err != nil {
		return "", nil, fmt.Errorf("%w: user name %q cannot be used: %v", ErrBadPassword, user, err)
	}
	err = a.cfg.Store.Create(ctx, api.Users, u)
	if errors.Is(err, store.ErrExists) {
		var o api.Object
		if o, err = a.cfg.Store.Get(ctx, api.Users, "", user); err == nil {
			u = o.(*api.User)
		}
	}
	if err != nil {
		return "", nil, err
	}
	return a.issueFor(ctx, user, "login", a.cfg.LoginTTL, "", u.UID)
}

// Service account token lifetimes (M6). Like Kubernetes' bound tokens,
// a token has a default lifetime and a maximum the server enforces. The
// default equals a login's, so a robot's token outlives a person's session
// only when asked to; the maximum means a token minted and forgotten
// (pasted into a CI system, say, by an editor who has since left the
// project) dies within a quarter, and long-lived robots rotate their
// token at least that often.
const (
	DefaultServiceAccountTTL = 24 * time.Hour
	MaxServiceAccountTTL     = 90 * 24 * time.Hour
)

// ServiceAccountTTL is the lifetime a service account token asked to live
// ttl gets: the default for 0, at most the maximum.
func (a *Authenticator) ServiceAccountTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return a.cfg.ServiceAccountTTL
	}
	return min(ttl, a.cfg.MaxServiceAccountTTL)
}

// MaxServiceAccountTTL is the longest a service account token lives.
func (a *Authenticator) MaxServiceAccountTTL() time.Duration { return a.cfg.MaxServiceAccountTTL }

// IssueServiceAccountToken makes a token for an existing service account,
// for the platform's own use (pulls, builds, promotions, scans), with the
// lifetime of ServiceAccountTTL(ttl). These tokens are not counted
// against a project's RequestedTokenLabel cap.
func (a *Authenticator) IssueServiceAccountToken(ctx context.Context, project, sa string, ttl time.Duration) (string, *api.Token, error) {
	return a.issueServiceAccountToken(ctx, project, sa, ttl, "")
}

// RequestServiceAccountToken makes a token that user asked for through
// the API; it carries RequestedTokenLabel, so LiveRequestedTokens counts
// it.
func (a *Authenticator) RequestServiceAccountToken(ctx context.Context, project, sa string, ttl time.Duration, user string) (string, *api.Token, error) {
	return a.issueServiceAccountToken(ctx, project, sa, ttl, user)
}

func (a *Authenticator) issueServiceAccountToken(ctx context.Context, project, sa string, ttl time.Duration, requester string) (string, *api.Token, error) {
	o, err := a.cfg.Store.Get(ctx, api.ServiceAccounts, project, sa)
	if err != nil {
		return "", nil, err
	}
	user := api.ServiceAccountUser(project, sa)
	secret, name := NewToken()
	tok := tokenObject(name, user, "service account token", a.ServiceAccountTTL(ttl), a.cfg.Now())
	tok.Spec.ServiceAccountUID = o.GetObjectMeta().UID
	if requester != "" {
		tok.Spec.Description = "service account token requested by " + requester
		tok.Labels[RequestedTokenLabel] = "true"
	}
	if err := a.cfg.Store.Create(ctx, api.Tokens, tok); err != nil {
		return "", nil, fmt.Errorf("identity: issue token for %s: %w", describe(user), err)
	}
	return secret, tok, nil
}

// RequestedTokenLabel marks service account tokens that users asked for
// through the API (POST serviceaccounts/NAME/token), which a project may
// hold only so many of; the platform's own short-lived tokens do not
// carry it.
const RequestedTokenLabel = "slipway.dev/token-requested"

// LiveRequestedTokens counts the unexpired tokens users asked for in
// project. It reads the token cache when there is one.
func (a *Authenticator) LiveRequestedTokens(ctx context.Context, project string) (int, error) {
	var toks []api.Object
	if a.cfg.Tokens != nil {
		toks = a.cfg.Tokens.List("")
	} else {
		var err error
		if toks, _, err = a.cfg.Store.List(ctx, api.Tokens, "", store.ListOptions{}); err != nil {
			return 0, err
		}
	}
	now, n := a.cfg.Now(), 0
	for _, o := range toks {
		t := o.(*api.Token)
		if t.Labels[ProjectLabel] == project && t.Labels[RequestedTokenLabel] == "true" && now.Before(t.Spec.ExpiresAt) {
			n++
		}
	}
	return n, nil
}

func (a *Authenticator) issue(ctx context.Context, user, desc string, ttl time.Duration, saUID string) (string, *api.Token, error) {
	return a.issueFor(ctx, user, desc, ttl, saUID, "")
}

func (a *Authenticator) issueFor(ctx context.Context, user, desc string, ttl time.Duration, saUID, userUID string) (string, *api.Token, error) {
	secret, name := NewToken()
	tok := tokenObject(name, user, desc, ttl, a.cfg.Now())
	tok.Spec.ServiceAccountUID = saUID
	if userUID != "" {
		if tok.Labels == nil {
			tok.Labels = map[string]string{}
		}
		tok.Labels[UserUIDLabel] = userUID
	}
	if err := a.cfg.Store.Create(ctx, api.Tokens, tok); err != nil {
		return "", nil, fmt.Errorf("identity: issue token for %s: %w", describe(user), err)
	}
	return secret, tok, nil
}

// Revoke deletes a token, and returns the deletion's revision so callers can
// wait for caches to see it.
func (a *Authenticator) Revoke(ctx context.Context, secret string) (int64, error) {
	obj, err := a.cfg.Store.Delete(ctx, api.Tokens, "", TokenName(secret), "")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(obj.GetObjectMeta().ResourceVersion, 10, 64)
}

// SetPassword stores a bcrypt hash of a built-in user's password, outside
// the API's reach.
func (a *Authenticator) SetPassword(ctx context.Context, user, password string) error {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	_, err = a.cfg.Store.Client().Put(ctx, a.passwordKey(user), string(h))
	return err
}

func (a *Authenticator) checkPassword(ctx context.Context, user, password string) (identity string, err error) {
	if user == "" || password == "" {
		return "", ErrBadPassword
	}
	if a.cfg.HTPasswd != "" {
		ok, found, err := checkHTPasswd(a.cfg.HTPasswd, user, password)
		if err != nil {
			slog.Error("identity: reading htpasswd file", "file", a.cfg.HTPasswd, "err", err)
		}
		if found {
			if !ok {
				return "", ErrBadPassword
			}
			return "htpasswd:" + user, nil
		}
	}
	resp, err := a.cfg.Store.Client().Get(ctx, a.passwordKey(user))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		// Spend the same time as a real check so user names can't be
		// probed by timing.
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return "", ErrBadPassword
	}
	if bcrypt.CompareHashAndPassword(resp.Kvs[0].Value, []byte(password)) != nil {
		return "", ErrBadPassword
	}
	return "builtin:" + user, nil
}

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost)

// checkHTPasswd looks user up in an htpasswd file. Only bcrypt ($2y$, $2a$,
// $2b$) entries are accepted; others are refused with a log line. {SHA} is
// one unsalted SHA-1: a leaked file gives up its passwords to a lookup
// table, so it is refused like MD5-crypt and crypt(3).
func checkHTPasswd(path, user, password string) (ok, found bool, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, false, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, okLine := strings.Cut(line, ":")
		if !okLine || name != user {
			continue
		}
		switch {
		case strings.HasPrefix(hash, "$2"):
			return bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) == nil, true, nil
		default:
			// Spend a bcrypt anyway, so refused entries can't be told
			// from wrong passwords by timing.
			_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
			return false, true, unsupportedHash(user, hash)
		}
	}
	return false, false, sc.Err()
}

// AdminUser is the user created at first start.
const AdminUser = "admin"

// Bootstrap creates the admin user on first start: a random password,
// printed once through announce and saved with mode 0600 at
// dataDir/admin-password. Later starts change nothing.
func (a *Authenticator) Bootstrap(ctx context.Context, dataDir string, announce func(password, file string)) error {
	key := a.passwordKey(AdminUser)
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	password := base64.RawURLEncoding.EncodeToString(b)
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	file := filepath.Join(dataDir, "admin-password")
	tmp := file + ".tmp"
	resp, err := a.cfg.Store.Client().Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) > 0 {
		// A crash between the etcd write and the rename below leaves the
		// password only in tmp; finish the rename if it matches.
		if old, err := os.ReadFile(tmp); err == nil {
			if bcrypt.CompareHashAndPassword(resp.Kvs[0].Value, bytes.TrimSpace(old)) == nil {
				_ = os.Rename(tmp, file)
			}
		}
		return a.ensureAdminUser(ctx)
	}
	// Write the file before etcd accepts the password: otherwise a crash in
	// between would leave an admin nobody can log in as.
	if err := os.WriteFile(tmp, []byte(password+"\n"), 0o600); err != nil {
		return fmt.Errorf("identity: write %s: %w", tmp, err)
	}
	txn, err := a.cfg.Store.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(h))).Commit()
	if err != nil {
		return err
	}
	if txn.Succeeded {
		if err := os.Rename(tmp, file); err != nil {
			return err
		}
		announce(password, file)
	} else {
		os.Remove(tmp)
	}
	return a.ensureAdminUser(ctx)
}

func (a *Authenticator) ensureAdminUser(ctx context.Context) error {
	u := &api.User{ObjectMeta: api.ObjectMeta{Name: AdminUser}, FullName: "Cluster administrator", Identities: []string{"builtin:admin"}}
	if err := a.cfg.Store.Create(ctx, api.Users, u); err != nil && !errors.Is(err, store.ErrExists) {
		return err
	}
	return nil
}
