package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrFenced is a write refused because the fence of the store it went
// through no longer holds: the process lost the election that let it
// write (its election key is gone, or was made again by another
// campaign), and another leader may already be acting.
var ErrFenced = errors.New("store: write refused: this process is no longer the leader")

// fencedWrites counts the writes of this process the fence refused.
var fencedWrites atomic.Int64

// FencedWrites is how many writes of this process a fence has refused:
// writes a leader tried after it lost the election (paused, cut off from
// etcd) and etcd did not let land.
func FencedWrites() int64 { return fencedWrites.Load() }

// fence is a key whose create revision must be unchanged for a write to
// land.
type fence struct {
	key string
	rev int64
}

// Fenced returns a view of the store whose every write (create, update,
// delete) commits only while key exists with create revision rev, checked
// in the write's own etcd transaction. A leader passes its election key
// and revision (concurrency.Election's Key and Rev): once its lease
// expires, etcd deletes the key and every later write through the view
// fails with ErrFenced, even from a process that was paused and has not
// yet noticed that it lost. Reads and watches are not fenced. The view
// shares the store's informers.
func (s *Store) Fenced(key string, rev int64) *Store {
	v := *s
	v.fence = &fence{key: key, rev: rev}
	return &v
}

// FenceError says which fence refused a write.
type FenceError struct {
	Key string
	Rev int64
	// Now is the create revision the key has now; 0 when it is gone.
	Now int64
}

func (e *FenceError) Error() string {
	if e.Now == 0 {
		return fmt.Sprintf("%v: its election key %s (revision %d) is gone; the lease expired and another process may lead now", ErrFenced, e.Key, e.Rev)
	}
	return fmt.Sprintf("%v: its election key %s was revision %d and is now %d", ErrFenced, e.Key, e.Rev, e.Now)
}

func (e *FenceError) Unwrap() error { return ErrFenced }

// commit runs one write transaction: cmps, then ops when they hold, else
// els. Under a fence, the fence is one more compare, and a transaction
// that failed while the fence did not hold is a *FenceError, whatever else
// failed: the caller must not retry it.
func (s *Store) commit(ctx context.Context, cmps []clientv3.Cmp, ops, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	if s.fence != nil {
		cmps = append(cmps[:len(cmps):len(cmps)], clientv3.Compare(clientv3.CreateRevision(s.fence.key), "=", s.fence.rev))
		els = append(els[:len(els):len(els)], clientv3.OpGet(s.fence.key, clientv3.WithKeysOnly()))
	}
	txn := s.client.Txn(ctx)
	if len(cmps) > 0 {
		txn = txn.If(cmps...)
	}
	resp, err := txn.Then(ops...).Else(els...).Commit()
	if err != nil || resp.Succeeded || s.fence == nil {
		return resp, err
	}
	var now int64
	if kvs := resp.Responses[len(resp.Responses)-1].GetResponseRange().Kvs; len(kvs) > 0 {
		now = kvs[0].CreateRevision
	}
	if now != s.fence.rev {
		fencedWrites.Add(1)
		return nil, &FenceError{Key: s.fence.key, Rev: s.fence.rev, Now: now}
	}
	resp.Responses = resp.Responses[:len(resp.Responses)-1]
	return resp, nil
}
