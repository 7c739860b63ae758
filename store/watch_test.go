package store_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// recorder performs writes and remembers the events a watch of one
// namespace must report for them.
type recorder struct {
	t    *testing.T
	ctx  context.Context
	s    *store.Store
	ns   string // events outside this namespace are not recorded
	want []ev
}

func (w *recorder) create(ns, name string, lbls map[string]string) *api.ServiceAccount {
	w.t.Helper()
	o := mustCreate(w.t, w.ctx, w.s, api.ServiceAccounts, newSA(ns, name, lbls)).(*api.ServiceAccount)
	w.record(ns, evOf(api.Added, o))
	return o
}

func (w *recorder) relabel(ns, name string, lbls map[string]string) *api.ServiceAccount {
	w.t.Helper()
	o := mustGet(w.t, w.ctx, w.s, api.ServiceAccounts, ns, name).(*api.ServiceAccount)
	o.Labels = lbls
	mustUpdate(w.t, w.ctx, w.s, api.ServiceAccounts, o, store.UpdateOptions{})
	w.record(ns, evOf(api.Modified, o))
	return o
}

func (w *recorder) delete(ns, name string) api.Object {
	w.t.Helper()
	o := mustDelete(w.t, w.ctx, w.s, api.ServiceAccounts, ns, name)
	w.record(ns, evOf(api.Deleted, o))
	return o
}

func (w *recorder) record(ns string, e ev) {
	if w.ns == "" || w.ns == ns {
		w.want = append(w.want, e)
	}
}

func TestWatchResume(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	w := &recorder{t: t, ctx: ctx, s: s, ns: "team-a"}
	w.create("team-a", "a0", nil)
	from := w.want[0].RV
	w.want = nil
	fromRV, _ := strconv.ParseInt(from, 10, 64)

	wctx, disconnect := context.WithCancel(ctx)
	ch, err := s.Watch(wctx, api.ServiceAccounts, "team-a", fromRV, store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch(rv %d) = %v", fromRV, err)
	}
	w.create("team-a", "a1", nil)
	w.relabel("team-a", "a1", map[string]string{"v": "2"})
	w.create("team-ab", "other", nil) // a namespace sharing a prefix
	w.create("team-b", "other", nil)
	w.create("team-a", "a2", nil)
	got := collect(t, ch, len(w.want))
	if diff := cmp.Diff(w.want, got); diff != "" {
		t.Fatalf("Watch(rv %d) events (-want +got):\n%s", fromRV, diff)
	}
	last := got[len(got)-1].RV
	disconnect()
	drain(t, ch)

	// While disconnected.
	seen := len(w.want)
	w.create("team-a", "a3", nil)
	w.relabel("team-a", "a1", map[string]string{"v": "3"})
	w.delete("team-a", "a2")
	w.create("team-b", "b1", nil)
	w.relabel("team-a", "a0", map[string]string{"v": "1"})
	w.create("team-a", "a2", map[string]string{"reborn": "true"})
	w.delete("team-b", "b1")
	missed := w.want[seen:]

	lastRV, _ := strconv.ParseInt(last, 10, 64)
	ch, err = s.Watch(ctx, api.ServiceAccounts, "team-a", lastRV, store.ListOptions{})
	if err != nil {
		t.Fatalf("Watch(rv %d) after reconnect = %v", lastRV, err)
	}
	got = collect(t, ch, len(missed))
	if diff := cmp.Diff(missed, got); diff != "" {
		t.Errorf("events after reconnecting at rv %d (-want +got):\n%s", lastRV, diff)
	}
	// A new change must be the very next event: nothing duplicated or
	// left over.
	w.create("team-a", "sentinel", nil)
	if got, want := evOf(nextEvent(t, ch).Type, nextEventObject(t, w, ch)), w.want[len(w.want)-1]; got != want {
		t.Errorf("event after the missed ones = %v, want %v", got, want)
	}

	// Resuming from any resourceVersion seen yields exactly the rest.
	for i := range len(w.want) - 1 {
		t.Run("from "+w.want[i].String(), func(t *testing.T) {
			rv, _ := strconv.ParseInt(w.want[i].RV, 10, 64)
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			ch, err := s.Watch(wctx, api.ServiceAccounts, "team-a", rv, store.ListOptions{})
			if err != nil {
				t.Fatalf("Watch(rv %d) = %v", rv, err)
			}
			rest := w.want[i+1:]
			if diff := cmp.Diff(rest, collect(t, ch, len(rest))); diff != "" {
				t.Errorf("Watch(rv %d) (-want +got):\n%s", rv, diff)
			}
		})
	}
}

// nextEventObject pairs with nextEvent in a single expression: the event was
// already read, so this returns the object recorded for it. It exists only
// to keep the call site above readable.
func nextEventObject(t *testing.T, w *recorder, _ <-chan store.Event) api.Object {
	t.Helper()
	return lastObject
}

var lastObject api.Object
