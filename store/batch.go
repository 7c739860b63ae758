package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/google/uuid"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
)

// A Batch is many creates and status updates written in one etcd
// transaction: all of them commit, or none does. It is for writers that
// change thousands of objects at once (a server-side rebase moves a tag,
// records an Image and a Build per image) and want one durability point,
// not one per object. A failed compare fails the whole batch with
// ErrConflict; the caller reads again and builds a new one.
type Batch struct {
	s       *Store
	cmps    []clientv3.Cmp
	ops     []clientv3.Op
	keys    map[string]bool
	counted map[countGroup]int64
}

type countGroup struct {
	r  *api.Resource
	ns string
}

// NewBatch starts an empty batch.
func (s *Store) NewBatch() *Batch {
	return &Batch{s: s, keys: map[string]bool{}, counted: map[countGroup]int64{}}
}

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Has reports whether the batch writes key already.
func (b *Batch) Has(r *api.Resource, ns, name string) bool {
	return b.keys[b.s.Key(r, ns, name)]
}

// Create adds the create of obj, which must not exist when the batch
// commits. Metadata is set as Store.Create sets it.
func (b *Batch) Create(r *api.Resource, obj api.Object) error {
	m := obj.GetObjectMeta()
	key := b.s.Key(r, m.Namespace, m.Name)
	if b.keys[key] {
		return fmt.Errorf("store: %s %q twice in one batch: %w", r.Kind, m.Name, ErrInvalid)
	}
	*obj.GetTypeMeta() = api.TypeMeta{APIVersion: api.APIVersion, Kind: r.Kind}
	now := b.s.now()
	m.UID = uuid.NewString()
	m.CreationTimestamp = &now
	m.Generation = 1
	m.ResourceVersion = ""
	m.DeletionTimestamp = nil
	data, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("store: encode %s %q: %w", r.Kind, m.Name, err)
	}
	b.keys[key] = true
	b.cmps = append(b.cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	b.ops = append(b.ops, clientv3.OpPut(key, string(data)))
	if b.s.limits.For(r) > 0 {
		b.counted[countGroup{r, m.Namespace}]++
	}
	return nil
}

// UpdateStatus adds a status write of obj over old, the bytes stored at
// revision rev (from Raw); the batch fails if the object changed since.
func (b *Batch) UpdateStatus(r *api.Resource, obj api.Object, old []byte, rev int64) error {
	m := obj.GetObjectMeta()
	key := b.s.Key(r, m.Namespace, m.Name)
	if b.keys[key] {
		return fmt.Errorf("store: %s %q twice in one batch: %w", r.Kind, m.Name, ErrInvalid)
	}
	*obj.GetTypeMeta() = api.TypeMeta{APIVersion: api.APIVersion, Kind: r.Kind}
	data, err := b.s.merge(r, old, obj, UpdateOptions{Status: true})
	if err != nil {
		return err
	}
	b.keys[key] = true
	b.cmps = append(b.cmps, clientv3.Compare(clientv3.ModRevision(key), "=", rev))
	b.ops = append(b.ops, clientv3.OpPut(key, string(data)))
	return nil
}

// Raw is one object as stored: its bytes and revision, for UpdateStatus.
type Raw struct {
	Object api.Object
	Data   []byte
	Rev    int64
}

// GetMany reads objects of r in one request, at one revision. Objects that
// do not exist are missing from the map, which is keyed by ns/name.
func (s *Store) GetMany(ctx context.Context, r *api.Resource, names [][2]string) (map[string]Raw, error) {
	out := make(map[string]Raw, len(names))
	for start := 0; start < len(names); start += 100 {
		end := min(start+100, len(names))
		var ops []clientv3.Op
		for _, n := range names[start:end] {
			ops = append(ops, clientv3.OpGet(s.Key(r, n[0], n[1])))
		}
		resp, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, wrapEtcd(err, r, "")
		}
		for i, rr := range resp.Responses {
			kvs := rr.GetResponseRange().Kvs
			if len(kvs) == 0 {
				continue
			}
			obj, err := decode(r, kvs[0].Value, kvs[0].ModRevision)
			if err != nil {
				return nil, err
			}
			n := names[start+i]
			out[n[0]+"/"+n[1]] = Raw{Object: obj, Data: kvs[0].Value, Rev: kvs[0].ModRevision}
		}
	}
	return out, nil
}

// Commit writes the batch in one transaction and returns its revision.
// Creates of kinds under a project limit are counted first: the batch
// commits only if no other create of those kinds in those projects
// committed since the count (the createsKey's version is compared), and
// it removes the createsKey, so every cached count bound is dropped and
// the next create counts again. ErrConflict means some compare failed:
// an object changed, or one to create exists now.
func (b *Batch) Commit(ctx context.Context) (int64, error) {
	if len(b.ops) == 0 {
		return 0, nil
	}
	cmps, ops := b.cmps, b.ops
	// Counted batches of one project and kind commit one at a time in
	// this process: each compares the exact count it read, so two at
	// once would fail each other.
	var keys []string
	for g := range b.counted {
		keys = append(keys, b.s.createsKey(g.r, g.ns))
	}
	slices.Sort(keys)
	for _, k := range keys {
		mu, _ := batchLocks.LoadOrStore(k, &sync.Mutex{})
		mu.(*sync.Mutex).Lock()
		defer mu.(*sync.Mutex).Unlock()
	}
	for g, n := range b.counted {
		limit := b.s.limits.For(g.r)
		count, fenceRev, _, bound, err := b.s.count(ctx, g.r, g.ns, b.s.createsKey(g.r, g.ns))
		if err != nil {
			return 0, wrapEtcd(err, g.r, "")
		}
		if count+n > limit {
			return 0, &LimitError{Project: g.ns, What: g.r.Name, Limit: limit, Hint: b.s.limits.Hint}
		}
		creates, fence := b.s.createsKey(g.r, g.ns), b.s.fenceKey(g.r, g.ns)
		cmps = append(cmps,
			clientv3.Compare(clientv3.CreateRevision(creates), "=", bound.createRev),
			clientv3.Compare(clientv3.Version(creates), "=", bound.version),
			clientv3.Compare(clientv3.ModRevision(fence), "=", fenceRev))
		ops = append(ops, clientv3.OpDelete(creates), clientv3.OpPut(fence, ""))
		b.s.setBound(creates, countBound{}, false)
	}
	resp, err := b.s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, wrapEtcd(err, api.Images, "batch")
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("store: batch of %d writes: something changed since it was read: %w", len(b.ops), ErrConflict)
	}
	return resp.Header.Revision, nil
}

// batchLocks serializes counted batches by createsKey.
var batchLocks sync.Map

// RevisionString is a revision as a resourceVersion.
func RevisionString(rev int64) string { return strconv.FormatInt(rev, 10) }
