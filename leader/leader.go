// Package leader elects one process among many to run the controllers,
// through an etcd election (concurrency.Election on a lease), and fences
// the leader's writes: the leader gets a view of the store whose every
// write carries a compare on its election key's create revision, so a
// leader that was paused past its lease (and has not yet noticed) cannot
// land a write after another one took over.
package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"slipway.dev/slipway/store"
)

// DefaultLease is how long a leader that stopped renewing (killed,
// paused, cut off from etcd) keeps the role before another may take it.
const DefaultLease = 15 * time.Second

// Config configures an Elector.
type Config struct {
	// Store is the store to fence; the election's keys live under its
	// prefix, at Store.Prefix()+"leader/"+Name.
	Store *store.Store
	// Name is the election: every process campaigning under the same
	// name competes for one role. Default "controllers".
	Name string
	// Identity is what this process announces as leader (host, pid,
	// address), for operators and tests.
	Identity string
	// Lease is the election lease; whole seconds, at least 1s (etcd
	// itself raises very short leases to its minimum). Default
	// DefaultLease.
	Lease time.Duration
	// Dead, if set, says whether the process that announced identity is
	// known to be gone (on this machine, its pid is free): a campaign
	// then revokes that key's lease rather than wait it out, so a
	// process restarted after kill -9 leads at once. It must never say
	// so of a live process; if it is wrong, fencing still holds.
	Dead func(identity string) bool
	// Lead runs while this process leads, with a store fenced on the
	// term's election key. ctx ends the moment leadership is lost (the
	// lease expired or could not be renewed, the key was deleted) or the
	// elector stops; Lead must then return promptly.
	Lead func(ctx context.Context, fenced *store.Store)
}

// Elector campaigns, leads and campaigns again, until its context ends.
type Elector struct {
	cfg Config

	mu      sync.Mutex
	leading bool
	terms   int
}

// New checks cfg and returns an elector; call Run.
func New(cfg Config) (*Elector, error) {
	if cfg.Store == nil || cfg.Lead == nil {
		return nil, errors.New("leader: Store and Lead are required")
	}
	if cfg.Name == "" {
		cfg.Name = "controllers"
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < time.Second {
		return nil, fmt.Errorf("leader: --leader-lease %s is too short: give at least 1s (etcd counts leases in seconds)", cfg.Lease)
	}
	return &Elector{cfg: cfg}, nil
}

// Prefix is the etcd prefix of the election called name on st: each
// campaign's key is PREFIX/LEASE.
func Prefix(st *store.Store, name string) string { return st.Prefix() + "leader/" + name }

// Leading reports whether this process leads now.
func (e *Elector) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// Terms is how many times this process has become the leader.
func (e *Elector) Terms() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.terms
}

// Run campaigns until ctx ends. When ctx ends while leading, Lead's
// context ends, Run waits for Lead to return and then resigns (revokes
// its lease), so a graceful stop hands over at once rather than after the
// lease.
func (e *Elector) Run(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for ctx.Err() == nil {
		err := e.term(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			slog.Warn("leader: campaign failed; trying again", "election", e.cfg.Name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 200 * time.Millisecond
	}
}

// term is one session: campaign, lead until lost, resign.
func (e *Elector) term(ctx context.Context) error {
	client := e.cfg.Store.Client()
	ttl := int(math.Ceil(e.cfg.Lease.Seconds()))
	sess, err := concurrency.NewSession(client, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer func() {
		// Revoke the lease, if it is still ours: the next campaigner
		// need not wait for it to expire.
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = client.Revoke(rctx, sess.Lease())
		sess.Orphan()
	}()
	// The campaign ends with the session: a key whose lease expired
	// while waiting must not be taken for a win.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	if e.cfg.Dead != nil {
		e.reapDead(cctx)
	}
	el := concurrency.NewElection(sess, Prefix(e.cfg.Store, e.cfg.Name))
	if err := el.Campaign(cctx, e.cfg.Identity); err != nil {
		return err
	}
	key, rev := el.Key(), el.Rev()
	// The key must still be this campaign's: the lease may have
	// expired between the last wait and now.
	resp, err := client.Get(cctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != rev {
		return fmt.Errorf("leader: election key %s was lost before the campaign ended", key)
	}
	// Leadership ends when the session does (the lease could not be
	// renewed in time, or expired) or the key goes, whichever is seen
	// first.
	lctx, lost := context.WithCancel(cctx)
	defer lost()
	go func() {
		defer lost()
		for wr := range client.Watch(lctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
			if wr.Err() != nil {
				return
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return
				}
			}
		}
	}()
	e.set(true)
	start := time.Now()
	slog.Info("leader: became the leader; starting the controllers", "election", e.cfg.Name, "identity", e.cfg.Identity, "key", key, "revision", rev)
	e.cfg.Lead(lctx, e.cfg.Store.Fenced(key, rev))
	e.set(false)
	if ctx.Err() == nil {
		slog.Warn("leader: lost the leadership; the controllers stopped", "election", e.cfg.Name, "identity", e.cfg.Identity, "led", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// reapDead revokes the leases of campaigns whose process Dead says is
// gone.
func (e *Elector) reapDead(ctx context.Context) {
	client := e.cfg.Store.Client()
	resp, err := client.Get(ctx, Prefix(e.cfg.Store, e.cfg.Name)+"/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	for _, kv := range resp.Kvs {
		if id := string(kv.Value); id != e.cfg.Identity && e.cfg.Dead(id) {
			if _, err := client.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
				slog.Info("leader: revoked the election lease of a process that is gone", "election", e.cfg.Name, "identity", id)
			}
		}
	}
}

func (e *Elector) set(leading bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.leading = leading
	if leading {
		e.terms++
	}
}

// Current is the identity of the leader of the election at prefix (see
// Prefix) now, and its key; "" when no one leads.
func Current(ctx context.Context, client *clientv3.Client, prefix string) (identity, key string, err error) {
	resp, err := client.Get(ctx, prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", "", err
	}
	if len(resp.Kvs) == 0 {
		return "", "", nil
	}
	return string(resp.Kvs[0].Value), string(resp.Kvs[0].Key), nil
}
