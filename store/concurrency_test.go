package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

const counterKey = "slipway.dev/counter"

// increment adds one to the counter annotation of o and returns the new
// value.
func increment(o api.Object) (int, error) {
	m := o.GetObjectMeta()
	n := 0
	if v, ok := m.Annotations[counterKey]; ok {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			return 0, fmt.Errorf("counter %q: %w", v, err)
		}
	}
	n++
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[counterKey] = strconv.Itoa(n)
	return n, nil
}

func counter(t *testing.T, o api.Object) int {
	t.Helper()
	n, err := strconv.Atoi(o.GetObjectMeta().Annotations[counterKey])
	if err != nil {
		t.Fatalf("counter annotation %q: %v", o.GetObjectMeta().Annotations[counterKey], err)
	}
	return n
}

// checkNoLostUpdate asserts that n writers produced exactly the counter
// values 1..n, each at its own revision, and that the stored value is n.
func checkNoLostUpdate(t *testing.T, ctx context.Context, s *store.Store, n int, values []int, revs []int64) {
	t.Helper()
	got := mustGet(t, ctx, s, api.ServiceAccounts, "team-a", "counter")
	if c := counter(t, got); c != n {
		t.Errorf("counter after %d concurrent increments = %d, want %d", n, c, n)
	}
	sort.Ints(values)
	want := make([]int, n)
	for i := range want {
		want[i] = i + 1
	}
	if diff := cmp.Diff(want, values); diff != "" {
		t.Errorf("values written by the %d writers (-want +got):\n%s", n, diff)
	}
	seen := map[int64]bool{}
	for _, r := range revs {
		if seen[r] {
			t.Errorf("two writers reported resourceVersion %d", r)
		}
		seen[r] = true
	}
	if last := slicesMax(revs); strconv.FormatInt(last, 10) != got.GetObjectMeta().ResourceVersion {
		t.Errorf("stored resourceVersion = %s, want the last writer's %d", got.GetObjectMeta().ResourceVersion, last)
	}
}

func slicesMax(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// backOff is randomised exponential back-off for one writer.
type backOff struct {
	rng  *rand.Rand
	wait time.Duration
}

func newBackOff(seed int, first time.Duration) *backOff {
	return &backOff{rng: rand.New(rand.NewPCG(uint64(seed), 1)), wait: first}
}

// sleep waits a random time up to the current bound, then doubles it.
func (b *backOff) sleep(ctx context.Context) error {
	select {
	case <-time.After(time.Duration(b.rng.Int64N(int64(b.wait)))):
	case <-ctx.Done():
		return ctx.Err()
	}
	b.wait = min(2*b.wait, 4*time.Second)
	return nil
}

// errBackOff makes a writer leave GuaranteedUpdate and wait before trying
// again. Without it a thousand writers hammering one key cost O(n²) etcd
// requests; with it the test still has a thousand concurrent writers, each
// going through GuaranteedUpdate's own retry loop a few times.
var errBackOff = errors.New("back off")

func TestGuaranteedUpdateConcurrent(t *testing.T) {
	const n = 1000
	const callsBeforeBackOff = 2
	const firstWait = 100 * time.Millisecond
	// Not testContext's 45 s: a thousand writers backing off on one key
	// took 40 s on a loaded machine, and 4 runs in 10 under two CPU hogs
	// ran out of the 45. The deadline only bounds a hang.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	s := newStore(t)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "counter", nil))

	values := make([]int, n)
	revs := make([]int64, n)
	errs := make([]error, n)
	var retried, backedOff atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			bo := newBackOff(i, firstWait)
			for {
				calls, last := 0, 0
				obj, err := s.GuaranteedUpdate(ctx, api.ServiceAccounts, "team-a", "counter", store.UpdateOptions{}, func(o api.Object) error {
					calls++
					if calls > callsBeforeBackOff {
						return errBackOff
					}
					v, err := increment(o)
					last = v
					return err
				})
				if calls > 1 && err == nil {
					retried.Add(1)
				}
				if errors.Is(err, errBackOff) {
					backedOff.Add(1)
					if err := bo.sleep(ctx); err != nil {
						errs[i] = err
						return
					}
					continue
				}
				if err != nil {
					errs[i] = err
					return
				}
				values[i], _ = strconv.Atoi(obj.GetObjectMeta().Annotations[counterKey])
				if values[i] != last {
					errs[i] = fmt.Errorf("returned counter %d, but fn last wrote %d", values[i], last)
				}
				revs[i], _ = strconv.ParseInt(obj.GetObjectMeta().ResourceVersion, 10, 64)
				return
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("GuaranteedUpdate failed: %v", err)
	}
	checkNoLostUpdate(t, ctx, s, n, values, revs)
	t.Logf("%d writers succeeded after an internal retry; %d back-offs", retried.Load(), backedOff.Load())
}

func TestCompareAndSwapRetryConcurrent(t *testing.T) {
	const n = 200
	const casWait = 20 * time.Millisecond
	ctx := testContext(t)
	s := newStore(t)
	mustCreate(t, ctx, s, api.ServiceAccounts, newSA("team-a", "counter", nil))

	values := make([]int, n)
	revs := make([]int64, n)
	errs := make([]error, n)
	var conflicts sync.Map
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			bo := newBackOff(i, casWait)
			for attempt := 0; ; attempt++ {
				if attempt > 10*n {
					errs[i] = errors.New("no success after many attempts")
					return
				}
				obj, err := s.Get(ctx, api.ServiceAccounts, "team-a", "counter")
				if err != nil {
					errs[i] = err
					return
				}
				v, err := increment(obj)
				if err != nil {
					errs[i] = err
					return
				}
				err = s.Update(ctx, api.ServiceAccounts, obj, store.UpdateOptions{})
				if errors.Is(err, store.ErrConflict) {
					conflicts.Store(i, true)
					if attempt >= 1 {
						if err := bo.sleep(ctx); err != nil {
							errs[i] = err
							return
						}
					}
					continue
				}
				if err != nil {
					errs[i] = err
					return
				}
				values[i] = v
				revs[i], _ = strconv.ParseInt(obj.GetObjectMeta().ResourceVersion, 10, 64)
				return
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("CAS loop failed: %v", err)
	}
	checkNoLostUpdate(t, ctx, s, n, values, revs)
	nc := 0
	conflicts.Range(func(any, any) bool { nc++; return true })
	t.Logf("%d of %d writers saw at least one conflict", nc, n)
}
