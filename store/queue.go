package store

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"slipway.dev/slipway/api"
)

// WorkQueue hands out each key to one worker at a time, merges repeated
// adds of a waiting key, and retries failed keys with exponential backoff
// (1s doubling to 5 minutes by default), so a failing import cannot flood
// the queue.
type WorkQueue struct {
	mu       sync.Mutex
	cond     *sync.Cond
	order    []string
	pending  map[string]bool
	active   map[string]bool
	again    map[string]bool // added while active
	failures map[string]int
	closed   bool
	// base doubles per failure of a key up to max; limiter, if set, also
	// spaces retries over all keys.
	base, max time.Duration
	limiter   *rate.Limiter
}

// NewWorkQueue returns an empty queue whose failed keys wait 1s, doubling
// to 5 minutes.
func NewWorkQueue() *WorkQueue { return NewRateLimitedWorkQueue(time.Second, 5*time.Minute, nil) }

// NewRateLimitedWorkQueue returns an empty queue whose failed keys wait
// base, doubling to max, and no less than limiter (if any) allows across
// all keys.
func NewRateLimitedWorkQueue(base, max time.Duration, limiter *rate.Limiter) *WorkQueue {
	q := &WorkQueue{pending: map[string]bool{}, active: map[string]bool{}, again: map[string]bool{}, failures: map[string]int{},
		base: base, max: max, limiter: limiter}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key unless it is already waiting.
func (q *WorkQueue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed, q.pending[key]:
	case q.active[key]:
		q.again[key] = true
	default:
		q.pending[key] = true
		q.order = append(q.order, key)
		q.cond.Signal()
	}
}

// Len is how many keys wait (not counting those being worked on).
func (q *WorkQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// Get blocks for the next key; false once the queue is shut down.
func (q *WorkQueue) Get() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return "", false
	}
	key := q.order[0]
	q.order = q.order[1:]
	delete(q.pending, key)
	q.active[key] = true
	return key, true
}

// Done finishes key; a non-nil err retries it later with backoff.
func (q *WorkQueue) Done(key string, err error) { q.Finish(key, 0, err != nil) }

// Finish finishes key: when failed, again after its backoff; otherwise
// at once if it was added while being worked on, else after after (if >
// 0). A success forgets the key's failures.
func (q *WorkQueue) Finish(key string, after time.Duration, failed bool) {
	q.mu.Lock()
	delete(q.active, key)
	again := q.again[key]
	delete(q.again, key)
	if failed {
		q.failures[key]++
		after = q.backoff(q.failures[key])
		if q.limiter != nil {
			after = max(after, q.limiter.Reserve().Delay())
		}
	} else {
		delete(q.failures, key)
	}
	q.mu.Unlock()
	if again && !failed {
		q.Add(key)
		return
	}
	if after > 0 {
		time.AfterFunc(after, func() { q.Add(key) })
	}
}

func (q *WorkQueue) backoff(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	return min(q.base<<min(failures-1, 20), q.max)
}

// Failures is how many times in a row key has failed.
func (q *WorkQueue) Failures(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// RetryDelay is how long key waits after its latest failure (0 when its
// last attempt succeeded), not counting the limiter.
func (q *WorkQueue) RetryDelay(key string) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.backoff(q.failures[key])
}

// Waiting says whether key is queued (not being worked on).
func (q *WorkQueue) Waiting(key string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pending[key]
}

// Shutdown wakes every Get with false.
func (q *WorkQueue) Shutdown() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.cond.Broadcast()
}

// Process hands each queued key's cached object to reconcile, one at a
// time, until ctx ends: the worker loop of every controller. A key whose
// object is gone is done (NotFound means done); an error retries the key
// with backoff, and is logged with what.
func (q *WorkQueue) Process(ctx context.Context, inf *Informer, what string, reconcile func(api.Object) error) {
	go func() { <-ctx.Done(); q.Shutdown() }()
	for {
		key, ok := q.Get()
		if !ok {
			return
		}
		ns, name, _ := strings.Cut(key, "/")
		o, found := inf.Get(ns, name)
		var err error
		if found {
			if err = reconcile(o); err != nil && ctx.Err() == nil {
				slog.Warn(what+" failed; will retry", "key", key, "err", err)
			}
		}
		q.Done(key, err)
	}
}
