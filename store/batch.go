package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
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
	// creates are the batch's creates by project, for its quotas.
	creates map[string][]batchCreate
}

type batchCreate struct {
	r   *api.Resource
	obj api.Object
}

type countGroup struct {
	r  *api.Resource
	ns string
}

// NewBatch starts an empty batch.
func (s *Store) NewBatch() *Batch {
	return &Batch{s: s, keys: map[string]bool{}, counted: map[countGroup]int64{}, creates: map[string][]batchCreate{}}
}

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Has reports whether the batch writes key already.
func (b *Batch) Has(r *api.Resource, ns, name string) bool {
	return b.keys[b.s.Key(r, ns, name)]
}

// Create adds the create of obj, which must not exist when the batch
// commits. Metadata is set as Store.Create sets it. Pods and the
// project's policy (quotas, limit ranges) are not batched: limit ranges
// change a pod as it is created, and a policy write changes what the
// batch is checked against; create those with Store.Create.
func (b *Batch) Create(r *api.Resource, obj api.Object) error {
	m := obj.GetObjectMeta()
	key := b.s.Key(r, m.Namespace, m.Name)
	if b.keys[key] {
		return fmt.Errorf("store: %s %q twice in one batch: %w", r.Kind, m.Name, ErrInvalid)
	}
	if r == api.Pods || isPolicy(r) {
		return fmt.Errorf("store: %s %q in a batch: create it with Store.Create: %w", r.Kind, m.Name, ErrInvalid)
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
	if r.Namespaced && m.Namespace != "" {
		b.creates[m.Namespace] = append(b.creates[m.Namespace], batchCreate{r, obj})
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
	if isStreams(r) {
		// Stored in parts (streamtags.go); old is as GetMany assembled it.
		st, err := streamStateOf(old, rev)
		if err != nil {
			return err
		}
		cmps, ops, err := b.s.splitStream(st, data)
		if err != nil {
			return err
		}
		b.keys[key] = true
		b.cmps = append(b.cmps, cmps...)
		b.ops = append(b.ops, ops...)
		return nil
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
	if isStreams(r) {
		return s.getManyStreams(ctx, names)
	}
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
// It holds every check a Create holds, in that transaction:
//
//   - the store's fence (Fenced): a batch through a leader's view commits
//     only while the leader's election key holds, else a *FenceError;
//   - the project limits: creates of kinds under a limit are counted
//     first, and the batch commits only if no other create of those kinds
//     in those projects committed since the count (the createsKey's
//     version is compared); it removes the createsKey, so every cached
//     count bound is dropped and the next create counts again;
//   - the projects' hard quotas: the creates of each project are summed
//     per quota resource (count/images, count/builds, imagestreams, …) and
//     refused whole with a *QuotaError over a hard limit; the batch
//     compares and bumps the project's quota fence, as a create under
//     quota does, and compares its policy key, so a quota made since the
//     policy was cached is read and applied.
//
// Soft quotas warn (WithWarnings). Status updates are not counted: no
// quota counts what a status write changes, except builds running, and a
// build starts only through StartBuild. ErrConflict means some compare
// failed: an object changed, or one to create exists now.
func (b *Batch) Commit(ctx context.Context) (int64, error) {
	if len(b.ops) == 0 {
		return 0, nil
	}
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
	for {
		rev, again, err := b.commit(ctx)
		if !again {
			return rev, err
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// commit is one attempt at Commit; again says the project's policy or
// usage moved while it counted, and it should count again.
func (b *Batch) commit(ctx context.Context) (rev int64, again bool, err error) {
	cmps, ops := slices.Clone(b.cmps), slices.Clone(b.ops)
	for g, n := range b.counted {
		limit := b.s.limits.For(g.r)
		count, fenceRev, _, bound, err := b.s.count(ctx, g.r, g.ns, b.s.createsKey(g.r, g.ns))
		if err != nil {
			return 0, false, wrapEtcd(err, g.r, "")
		}
		if count+n > limit {
			return 0, false, &LimitError{Project: g.ns, What: g.r.Name, Limit: limit, Hint: b.s.limits.Hint}
		}
		creates, fence := b.s.createsKey(g.r, g.ns), b.s.fenceKey(g.r, g.ns)
		cmps = append(cmps,
			clientv3.Compare(clientv3.CreateRevision(creates), "=", bound.createRev),
			clientv3.Compare(clientv3.Version(creates), "=", bound.version),
			clientv3.Compare(clientv3.ModRevision(fence), "=", fenceRev))
		ops = append(ops, clientv3.OpDelete(creates), clientv3.OpPut(fence, ""))
		b.s.setBound(creates, countBound{}, false)
	}
	// The projects' policies: each project's policy key is compared, and
	// its quota fence when its quotas count what the batch creates. els
	// reads them back when the transaction fails, to tell a moved policy
	// or usage (count again) from a conflict.
	var els []clientv3.Op
	type watched struct {
		ns, key string
		rev     int64
		policy  bool
	}
	var seen []watched
	var warnings []string
	for _, ns := range slices.Sorted(maps.Keys(b.creates)) {
		pol, err := b.s.policy(ctx, ns)
		if err != nil {
			return 0, false, err
		}
		deltas := b.quotaDeltas(ns, pol)
		pk := b.s.policyKey(ns)
		if len(deltas) == 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(pk), "=", pol.rev))
			els = append(els, clientv3.OpGet(pk, clientv3.WithKeysOnly()))
			seen = append(seen, watched{ns, pk, pol.rev, true})
			continue
		}
		fenceRev, w, err := b.checkQuota(ctx, ns, pol, deltas)
		if errors.Is(err, errPolicyChanged) {
			b.s.dropPolicy(ns)
			return 0, true, nil
		}
		if err != nil {
			return 0, false, err
		}
		warnings = append(warnings, w...)
		qf := b.s.quotaFenceKey(ns)
		cmps = append(cmps,
			clientv3.Compare(clientv3.ModRevision(pk), "=", pol.rev),
			clientv3.Compare(clientv3.ModRevision(qf), "=", fenceRev))
		ops = append(ops, clientv3.OpPut(qf, ""))
		els = append(els, clientv3.OpGet(pk, clientv3.WithKeysOnly()), clientv3.OpGet(qf, clientv3.WithKeysOnly()))
		seen = append(seen, watched{ns, pk, pol.rev, true}, watched{ns, qf, fenceRev, false})
	}
	resp, err := b.s.commit(ctx, cmps, ops, els)
	if err != nil {
		return 0, false, wrapEtcd(err, api.Images, "batch")
	}
	if !resp.Succeeded {
		for i, w := range seen {
			if !policyChanged(resp.Responses[i].GetResponseRange(), w.rev) {
				continue
			}
			if w.policy {
				b.s.dropPolicy(w.ns)
			}
			again = true
		}
		if again {
			return 0, true, nil
		}
		return 0, false, fmt.Errorf("store: batch of %d writes: something changed since it was read: %w", len(b.ops), ErrConflict)
	}
	for _, w := range warnings {
		warn(ctx, w)
	}
	return resp.Header.Revision, false, nil
}

// quotaDeltas is what the batch's creates in project ns add to each
// quota resource pol tracks.
func (b *Batch) quotaDeltas(ns string, pol *projectPolicy) map[string]int64 {
	deltas := map[string]int64{}
	for _, q := range pol.quotas {
		for _, n := range q.QuotaNames() {
			if _, done := deltas[n]; done {
				continue
			}
			var d int64
			for _, c := range b.creates[ns] {
				d += quotaDelta(n, c.r, c.obj)
			}
			if d > 0 {
				deltas[n] = d
			}
		}
	}
	return deltas
}

// checkQuota counts project ns's usage of what deltas adds to and refuses
// the batch over a hard quota; it returns the quota fence's revision at
// the count, and the soft quotas' warnings.
func (b *Batch) checkQuota(ctx context.Context, ns string, pol *projectPolicy, deltas map[string]int64) (int64, []string, error) {
	u := b.s.newUsageReader(ns, slices.Sorted(maps.Keys(deltas)))
	resp, err := b.s.client.Txn(ctx).Then(append([]clientv3.Op{
		clientv3.OpGet(b.s.quotaFenceKey(ns), clientv3.WithKeysOnly()),
		clientv3.OpGet(b.s.policyKey(ns), clientv3.WithKeysOnly()),
	}, u.ops()...)...).Commit()
	if err != nil {
		return 0, nil, wrapEtcd(err, api.ResourceQuotas, ns)
	}
	rs := resp.Responses
	var fenceRev int64
	if kvs := rs[0].GetResponseRange().Kvs; len(kvs) > 0 {
		fenceRev = kvs[0].ModRevision
	}
	if policyChanged(rs[1].GetResponseRange(), pol.rev) {
		return 0, nil, errPolicyChanged
	}
	used, err := u.parse(rs[2:], "")
	if err != nil {
		return 0, nil, err
	}
	var warnings []string
	for _, q := range pol.quotas {
		for _, n := range sortedNames(q.Spec.Hard) {
			hard, _ := api.ParseQuota(n, q.Spec.Hard[n])
			if d := deltas[n]; d > 0 && used[n]+d > hard {
				return 0, nil, &QuotaError{Project: ns, Quota: q.Name, Resource: n, Used: used[n], Requested: d, Hard: hard}
			}
		}
		for _, n := range sortedNames(q.Spec.Soft) {
			soft, _ := api.ParseQuota(n, q.Spec.Soft[n])
			if d := deltas[n]; d > 0 && used[n]+d > soft {
				f := func(v int64) string { return api.FormatQuota(n, v) }
				warnings = append(warnings, fmt.Sprintf("over the soft limit of quota %s: %s used %s, requested %s, soft %s", q.Name, n, f(used[n]), f(d), f(soft)))
			}
		}
	}
	return fenceRev, warnings, nil
}

// batchLocks serializes counted batches by createsKey.
var batchLocks sync.Map

// RevisionString is a revision as a resourceVersion.
func RevisionString(rev int64) string { return strconv.FormatInt(rev, 10) }
