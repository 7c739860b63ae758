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

// Login throttling: each client address and each user name has a bucket
// of failed attempts that refills at a steady rate. A login whose bucket is
// empty is answered at once, without spending a bcrypt, so one client can
// neither guess passwords quickly nor burn the server's CPU. The user
// bucket is larger: it bounds guessing spread over many addresses, and one
// address alone cannot empty it faster than it refills, so a single
// guesser cannot lock the victim (or admin) out of password logins; tokens
// are never affected. Buckets live in one server's memory: each API server
// throttles on its own.
type limit struct {
	burst float64       // failures allowed at once
	every time.Duration // one more failure allowed this often
}

var (
	clientLimit = limit{burst: 10, every: 6 * time.Second} // 10 a minute per address
	userLimit   = limit{burst: 30, every: 2 * time.Second} // 30 a minute per name
)

// maxBuckets bounds the names and addresses remembered.
const maxBuckets = 10000

type limitKey struct {
	key string
	limit
}

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
	limit
}

type loginLimiter struct {
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
}

func newLoginLimiter(now func() time.Time) *loginLimiter {
	return &loginLimiter{now: now, buckets: map[string]*bucket{}}
}

// level refills k's bucket up to now and returns it; mu must be held. An
// unknown key's bucket is full and not stored.
func (l *loginLimiter) level(k limitKey, now time.Time) *bucket {
	b, ok := l.buckets[k.key]
	if !ok {
		return &bucket{tokens: k.burst, at: now, limit: k.limit}
	}
	b.tokens = min(b.burst, b.tokens+float64(now.Sub(b.at))/float64(b.every))
	b.at = now
	return b
}

// allow refuses with a *ThrottledError when any key's bucket is empty.
func (l *loginLimiter) allow(keys []limitKey) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var wait time.Duration
	for _, k := range keys {
		b := l.level(k, now)
		if b.tokens < 1 {
			wait = max(wait, time.Duration((1-b.tokens)*float64(b.every)))
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
func (l *loginLimiter) fail(keys []limitKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for _, k := range keys {
		b := l.level(k, now)
		b.tokens--
		l.buckets[k.key] = b
	}
	if len(l.buckets) > maxBuckets {
		l.prune(now)
	}
}

// prune forgets full buckets, which say nothing, and if that is not
// enough, those not throttling anyone now: a flood of names must not grow
// memory without bound.
func (l *loginLimiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if l.level(limitKey{key: k, limit: b.limit}, now).tokens >= b.burst {
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
