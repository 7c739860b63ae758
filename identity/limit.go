package identity

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"slipway.dev/slipway/api"
)

// Login throttling: each user name and each client address has a bucket of
// failed attempts that refills at a steady rate. A login whose bucket is
// empty is answered at once, without spending a bcrypt, so one client can
// neither guess passwords quickly nor burn the server's CPU. The user
// bucket bounds guessing spread over many addresses. Its price is that a
// guesser also slows down the victim's own password logins (not their
// tokens) while the guessing goes on; a lockout would be worse. Buckets
// live in one server's memory: each API server throttles on its own.
const (
	loginBurst    = 10              // failures allowed at once
	loginInterval = 6 * time.Second // one more failure allowed this often
	maxBuckets    = 10000           // distinct names and addresses remembered
)

// ThrottledError answers a login that came too soon after too many
// failures. It carries a 429 Status for the API to send, with RetryAfter
// as the Retry-After header.
type ThrottledError struct {
	RetryAfter time.Duration
	status     *api.Status
}

func (e *ThrottledError) Error() string { return e.status.Message }

// Unwrap lets api.StatusFor find the 429.
func (e *ThrottledError) Unwrap() error { return e.status }

// RetryAfterSeconds is the Retry-After header value: whole seconds, at
// least 1.
func (e *ThrottledError) RetryAfterSeconds() int {
	return max(1, int(math.Ceil(e.RetryAfter.Seconds())))
}

type bucket struct {
	tokens float64
	at     time.Time
}

type loginLimiter struct {
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{now: now, buckets: map[string]*bucket{}}
}

// level refills b up to now and returns it; mu must be held.
func (l *loginLimiter) level(key string, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok {
		return &bucket{tokens: loginBurst, at: now}
	}
	b.tokens = min(loginBurst, b.tokens+float64(now.Sub(b.at))/float64(loginInterval))
	b.at = now
	return b
}

// allow refuses with a *ThrottledError when any key's bucket is empty.
func (l *loginLimiter) allow(keys []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var wait time.Duration
	for _, k := range keys {
		b := l.level(k, now)
		if b.tokens < 1 {
			wait = max(wait, time.Duration((1-b.tokens)*float64(loginInterval)))
		}
	}
	if wait == 0 {
		return nil
	}
	e := &ThrottledError{RetryAfter: wait}
	e.status = api.NewStatus(http.StatusTooManyRequests, "TooManyRequests", "too many failed logins; try again in %d seconds", e.RetryAfterSeconds())
	return e
}

// fail takes one attempt from each key's bucket.
func (l *loginLimiter) fail(keys []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		b := l.level(k, now)
		b.tokens--
		l.buckets[k] = b
	}
	if len(l.buckets) > maxBuckets {
		l.prune(now)
	}
}

// prune forgets full buckets, which say nothing, and if that is not
// enough, the fullest ones: a flood of names must not grow memory without
// bound, and the emptiest buckets are the ones that throttle someone.
func (l *loginLimiter) prune(now time.Time) {
	for k := range l.buckets {
		if l.level(k, now).tokens >= loginBurst {
			delete(l.buckets, k)
		}
	}
	for k, b := range l.buckets {
		if len(l.buckets) <= maxBuckets*9/10 {
			break
		}
		if b.tokens >= 1 {
			delete(l.buckets, k)
		}
	}
}

type clientKey struct{}

// WithClientAddr returns ctx carrying the address a login comes from (an
// IP, without the port), so Login throttles failures per client too.
func WithClientAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, clientKey{}, addr)
}

func clientAddr(ctx context.Context) string {
	s, _ := ctx.Value(clientKey{}).(string)
	return s
}

func unsupportedHash(user, hash string) error {
	what := "an unsupported hash"
	if strings.HasPrefix(hash, "{SHA}") {
		what = "unsalted SHA-1 ({SHA}), which a leaked file gives up at once"
	}
	return fmt.Errorf("htpasswd entry for %q uses %s; regenerate it with `htpasswd -B`", user, what)
}

// warnHTPasswd logs, at start, every entry that can never log in.
func warnHTPasswd(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if name, hash, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(hash, "$2") {
			slog.Warn("identity: this htpasswd user cannot log in", "file", path, "err", unsupportedHash(name, hash))
		}
	}
}
