package identity

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(storetest.Main(m)) }

// clock is a settable time for the login throttle.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newAuth(t *testing.T, cfg Config) *Authenticator {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = storetest.New(t)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func login(t *testing.T, a *Authenticator, user, pw string) string {
	t.Helper()
	secret, _, err := a.Login(storetest.Context(t), user, pw)
	if err != nil {
		t.Fatalf("Login(%s) = %v", user, err)
	}
	return secret
}

// M6: deleting a User is how an admin cuts them off; the token dies with
// the User, and a new User of the same name does not revive it.
func TestTokenOfDeletedUser(t *testing.T) {
	ctx := storetest.Context(t)
	a := newAuth(t, Config{})
	user := "m6-" + time.Now().Format("150405.000000")
	if err := a.SetPassword(ctx, user, "pw"); err != nil {
		t.Fatal(err)
	}
	old := login(t, a, user, "pw")
	if got, err := a.AuthenticateToken(ctx, old); err != nil || got.Name != user {
		t.Fatalf("AuthenticateToken(fresh) = %v, %v; want %s", got, err, user)
	}
	if _, err := a.cfg.Store.Delete(ctx, api.Users, "", user, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AuthenticateToken(ctx, old); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("AuthenticateToken(token of deleted user) = %v, want ErrUnauthenticated", err)
	}
	if _, err := a.cfg.Store.Get(ctx, api.Tokens, "", TokenName(old)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused token is still stored: %v", err)
	}
	fresh := login(t, a, user, "pw") // makes a new User
	if _, err := a.AuthenticateToken(ctx, old); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("AuthenticateToken(old token, user re-created) = %v, want ErrUnauthenticated", err)
	}
	if _, err := a.AuthenticateToken(ctx, fresh); err != nil {
		t.Errorf("AuthenticateToken(new token) = %v", err)
	}
}

// The bootstrap admin keeps working without its User, so nobody is locked
// out; its User comes back at the next start.
func TestAdminTokenWithoutUser(t *testing.T) {
	ctx := storetest.Context(t)
	a := newAuth(t, Config{})
	secret, _, err := a.issue(ctx, AdminUser, "login", time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.AuthenticateToken(ctx, secret); err != nil || got.Name != AdminUser {
		t.Errorf("AuthenticateToken(admin, no User) = %v, %v; want admin", got, err)
	}
}

// Deleting a User deletes its tokens, through the Users cache's events;
// tokens of another user stay.
func TestUserDeletionDeletesTokens(t *testing.T) {
	ctx := storetest.Context(t)
	s := storetest.New(t)
	users := store.NewInformer(s, api.Users)
	a := newAuth(t, Config{Store: s, Users: users})
	go users.Run(ctx)
	stamp := time.Now().Format("150405.000000")
	gone, stay := "gone-"+stamp, "stay-"+stamp
	for _, u := range []string{gone, stay} {
		if err := a.SetPassword(ctx, u, "pw"); err != nil {
			t.Fatal(err)
		}
	}
	t1, t2, t3 := login(t, a, gone, "pw"), login(t, a, gone, "pw"), login(t, a, stay, "pw")
	storetest.Eventually(t, ctx, "the cache has both users", func() bool {
		_, ok1 := users.Get("", gone)
		_, ok2 := users.Get("", stay)
		return ok1 && ok2
	})
	if _, err := s.Delete(ctx, api.Users, "", gone, ""); err != nil {
		t.Fatal(err)
	}
	storetest.Eventually(t, ctx, "the deleted user's tokens are deleted", func() bool {
		_, e1 := s.Get(ctx, api.Tokens, "", TokenName(t1))
		_, e2 := s.Get(ctx, api.Tokens, "", TokenName(t2))
		return errors.Is(e1, store.ErrNotFound) && errors.Is(e2, store.ErrNotFound)
	})
	if _, err := a.AuthenticateToken(ctx, t3); err != nil {
		t.Errorf("another user's token: %v", err)
	}
}

func TestRevokeUserTokens(t *testing.T) {
	ctx := storetest.Context(t)
	a := newAuth(t, Config{})
	user := "rev-" + time.Now().Format("150405.000000")
	if err := a.SetPassword(ctx, user, "pw"); err != nil {
		t.Fatal(err)
	}
	s1, s2 := login(t, a, user, "pw"), login(t, a, user, "pw")
	other, _, err := a.issue(ctx, AdminUser, "login", time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	n, rev, err := a.RevokeUserTokens(ctx, user)
	if err != nil || n != 2 || rev == 0 {
		t.Fatalf("RevokeUserTokens = %d, %d, %v; want 2 tokens and a revision", n, rev, err)
	}
	for _, s := range []string{s1, s2} {
		if _, err := a.AuthenticateToken(ctx, s); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("AuthenticateToken(revoked) = %v, want ErrUnauthenticated", err)
		}
	}
	if _, err := a.AuthenticateToken(ctx, other); err != nil {
		t.Errorf("another user's token after the revocation: %v", err)
	}
	if n, _, err := a.RevokeUserTokens(ctx, user); err != nil || n != 0 {
		t.Errorf("RevokeUserTokens again = %d, %v; want 0, nil", n, err)
	}
}

// L6: failed logins are throttled per user and per client; a throttled
// login is answered without checking the password, with a 429.
func TestLoginThrottle(t *testing.T) {
	ctx := storetest.Context(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	a := newAuth(t, Config{Now: c.now})
	user := "l6-" + time.Now().Format("150405.000000")
	if err := a.SetPassword(ctx, user, "right"); err != nil {
		t.Fatal(err)
	}
	from := WithClientAddr(ctx, "192.0.2.7")
	for i := 0; i < int(clientLimit.burst); i++ {
		if _, _, err := a.Login(from, user, "wrong"); !errors.Is(err, ErrBadPassword) {
			t.Fatalf("failure %d: Login = %v, want ErrBadPassword", i+1, err)
		}
	}
	_, _, err := a.Login(from, user, "right")
	var te *ThrottledError
	if !errors.As(err, &te) {
		t.Fatalf("Login after %v failures = %v, want a ThrottledError", clientLimit.burst, err)
	}
	if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusTooManyRequests {
		t.Errorf("throttled login's status = %+v, want 429", st)
	}
	if got := te.RetryAfterSeconds(); got != int(clientLimit.every/time.Second) {
		t.Errorf("RetryAfterSeconds = %d, want %d", got, int(clientLimit.every/time.Second))
	}
	// Another user from the same client is throttled too: the client's
	// bucket is empty.
	if _, _, err := a.Login(from, "someone-else", "x"); !errors.As(err, &te) {
		t.Errorf("another user from the throttled client: %v, want a ThrottledError", err)
	}
	// After Retry-After, one more attempt is allowed.
	c.add(clientLimit.every)
	if _, _, err := a.Login(from, user, "right"); err != nil {
		t.Errorf("Login after waiting Retry-After = %v, want success", err)
	}
}

// One guessing address cannot lock a user out for everybody: the user's
// bucket outlasts any one client's.
func TestLoginThrottleOneClientNoLockout(t *testing.T) {
	ctx := storetest.Context(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	a := newAuth(t, Config{Now: c.now})
	user := "l6b-" + time.Now().Format("150405.000000")
	if err := a.SetPassword(ctx, user, "right"); err != nil {
		t.Fatal(err)
	}
	guesser := WithClientAddr(ctx, "192.0.2.66")
	// A steady guesser: every failure its bucket allows, for three minutes.
	for i := 0; i < 3*60/int(clientLimit.every/time.Second)+int(clientLimit.burst); i++ {
		if _, _, err := a.Login(guesser, user, "wrong"); errors.As(err, new(*ThrottledError)) {
			c.add(clientLimit.every)
		}
	}
	if _, _, err := a.Login(WithClientAddr(ctx, "198.51.100.1"), user, "right"); err != nil {
		t.Errorf("the user's own login from elsewhere during the guessing = %v, want success", err)
	}
}

// The throttle forgets names and addresses rather than grow without bound.
func TestLoginThrottleBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newLoginLimiter(c.now)
	for i := 0; i < maxBuckets*2; i++ {
		l.fail([]limitKey{{"user:" + time.Duration(i).String(), userLimit}})
	}
	if len(l.buckets) > maxBuckets {
		t.Errorf("buckets = %d, want at most %d", len(l.buckets), maxBuckets)
	}
}

// L6: an unsalted {SHA} entry is refused.
func TestHTPasswdRefusesSHA(t *testing.T) {
	sum := sha1.Sum([]byte("pw"))
	f := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(f, []byte("sha:{SHA}"+base64.StdEncoding.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if ok, found, err := checkHTPasswd(f, "sha", "pw"); ok || !found || err == nil {
		t.Errorf("checkHTPasswd({SHA} entry) = %v, %v, %v; want refused with an error", ok, found, err)
	}
}
