// Package store keeps every Slipway resource in etcd: get, list, create,
// compare-and-swap update, delete, and watch with resume.
//
// One Store serves every resource; the api.Resource says where objects live
// and how to decode them. An object's resourceVersion is the etcd revision
// of its last change, so a watch can resume from any resourceVersion a client
// has seen, until etcd compacts that revision away (then ErrGone).
package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
)

// Errors returned by the store. They are wrapped with the object's name; test
// them with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	ErrExists   = errors.New("store: already exists")
	ErrConflict = errors.New("store: resourceVersion conflict")
	ErrGone     = errors.New("store: resourceVersion compacted")
	ErrTooLarge = errors.New("store: object too large")
	ErrInvalid  = errors.New("store: invalid request")
)

// DefaultPrefix is where Slipway's keys live in etcd.
const DefaultPrefix = "/slipway/"

// Store is the generic resource store. It is safe for concurrent use and
// holds no state of its own beyond the etcd client, so any number of API
// servers may share one etcd.
type Store struct {
	client *clientv3.Client
	prefix string
	now    func() time.Time
	limits Limits

	// sh is what a store and its fenced views share: the cache of
	// create counts and the process's informers.
	sh *shared
	// fence, when set, guards every write: see Fenced.
	fence *fence
}

// shared is the state a Store shares with its fenced views.
type shared struct {
	boundsMu sync.Mutex
	bounds   map[string]countBound // by createsKey: see createCounted

	policyMu sync.Mutex
	policies map[string]*projectPolicy // by project: see quota.go

	informersMu sync.Mutex
	informers   map[string]*informerCore // by resource name: see NewInformer
}

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the etcd key prefix. Default DefaultPrefix.
func WithPrefix(p string) Option {
	return func(s *Store) { s.prefix = strings.TrimSuffix(p, "/") + "/" }
}

// New returns a Store over an etcd client.
func New(c *clientv3.Client, opts ...Option) *Store {
	s := &Store{client: c, prefix: DefaultPrefix, now: func() time.Time { return time.Now().UTC().Truncate(time.Second) }, sh: &shared{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Prefix is the etcd key prefix of this store. Packages that keep an
// internal index next to the resources (such as the registry's referrers)
// put it under Prefix.
func (s *Store) Prefix() string { return s.prefix }

// Client returns the underlying etcd client.
func (s *Store) Client() *clientv3.Client { return s.client }

// Key is the etcd key of one object.
func (s *Store) Key(r *api.Resource, ns, name string) string {
	if r.Namespaced {
		return s.prefix + r.Name + "/" + ns + "/" + name
	}
	return s.prefix + r.Name + "/" + name
}

// keyPrefix is the prefix under which List and Watch look. An empty ns on a
// namespaced resource means every project.
func (s *Store) keyPrefix(r *api.Resource, ns string) string {
	if r.Namespaced && ns != "" {
		return s.prefix + r.Name + "/" + ns + "/"
	}
	return s.prefix + r.Name + "/"
}

// Create stores a new object. It sets uid, creationTimestamp, generation and
// resourceVersion on obj. ErrExists if the name is taken.
func (s *Store) Create(ctx context.Context, r *api.Resource, obj api.Object) error {
	m := obj.GetObjectMeta()
	*obj.GetTypeMeta() = api.TypeMeta{APIVersion: api.APIVersion, Kind: r.Kind}
	now := s.now()
	m.UID = uuid.NewString()
	m.CreationTimestamp = &now
	m.Generation = 1
	m.ResourceVersion = ""
	m.DeletionTimestamp = nil
	key := s.Key(r, m.Namespace, m.Name)
	if r.Namespaced && m.Namespace != "" {
		return s.createInProject(ctx, r, obj, m, key)
	}
	data, err := json.Marshal(obj)
	if err != nil {
		return fmt.Errorf("store: encode %s %q: %w", r.Kind, m.Name, err)
	}
	if limit := s.limits.For(r); limit > 0 {
		return s.createCounted(ctx, r, m, key, string(data), limit, 0)
	}
	resp, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, []clientv3.Op{clientv3.OpPut(key, string(data))}, nil)
	if err != nil {
		return wrapEtcd(err, r, m.Name)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%s %q: %w", r.Kind, m.Name, ErrExists)
	}
	m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return nil
}

// Get reads one object.
func (s *Store) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	if isStreams(r) {
		return s.getStream(ctx, ns, name)
	}
	resp, err := s.client.Get(ctx, s.Key(r, ns, name))
	if err != nil {
		return nil, wrapEtcd(err, r, name)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s %q: %w", r.Kind, name, ErrNotFound)
	}
	return decode(r, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

// Exists reports whether an object exists, reading its key's count only
// (linearizable, as Get).
func (s *Store) Exists(ctx context.Context, r *api.Resource, ns, name string) (bool, error) {
	resp, err := s.client.Get(ctx, s.Key(r, ns, name), clientv3.WithCountOnly())
	if err != nil {
		return false, wrapEtcd(err, r, name)
	}
	return resp.Count > 0, nil
}

// UpdateOptions control Update.
type UpdateOptions struct {
	// Status writes only the status of a resource with a status
	// subresource; otherwise status is kept as stored.
	Status bool
	// MarkDeleted lets the update set metadata.deletionTimestamp, which is
	// otherwise the server's: clients can never set or clear it.
	MarkDeleted bool
	// WithStatus writes status together with the rest of the object, in
	// one compare-and-swap, for a controller that must change both at once
	// (the scheduler's bind sets spec.nodeName and PodScheduled=True).
	// Status takes precedence over it. The API never sets it: clients
	// write status through the status subresource.
	WithStatus bool
}

// Update replaces an object. When obj carries a resourceVersion the update
// is compare-and-swap and fails with ErrConflict if the object changed since;
// without one it applies to whatever is current. Immutable metadata (uid,
// creationTimestamp) is kept, generation increases when anything outside
// metadata and status changes, and obj is refreshed with what was stored.
func (s *Store) Update(ctx context.Context, r *api.Resource, obj api.Object, opts UpdateOptions) error {
	if isStreams(r) {
		return s.updateStream(ctx, obj, opts)
	}
	m := obj.GetObjectMeta()
	want := m.ResourceVersion
	key := s.Key(r, m.Namespace, m.Name)
	*obj.GetTypeMeta() = api.TypeMeta{APIVersion: api.APIVersion, Kind: r.Kind}
	for {
		resp, err := s.client.Get(ctx, key)
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("%s %q: %w", r.Kind, m.Name, ErrNotFound)
		}
		cur := resp.Kvs[0]
		if want != "" && want != strconv.FormatInt(cur.ModRevision, 10) {
			return conflict(r, m.Name)
		}
		data, err := s.merge(r, cur.Value, obj, opts)
		if err != nil {
			return err
		}
		if bytes.Equal(data, cur.Value) {
			// Nothing changed: no new revision, no watch event.
			reflect.ValueOf(obj).Elem().SetZero()
			if err := json.Unmarshal(data, obj); err != nil {
				return fmt.Errorf("store: decode %s %q: %w", r.Kind, m.Name, err)
			}
			obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(cur.ModRevision, 10)
			return nil
		}
		ops := []clientv3.Op{clientv3.OpPut(key, string(data))}
		if isPolicy(r) && !opts.Status {
			ops = s.putOps(r, m.Namespace, key, string(data))
		}
		txn, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision)}, ops, nil)
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		if !txn.Succeeded {
			if want != "" {
				return conflict(r, m.Name)
			}
			continue
		}
		reflect.ValueOf(obj).Elem().SetZero()
		if err := json.Unmarshal(data, obj); err != nil {
			return fmt.Errorf("store: decode %s %q: %w", r.Kind, m.Name, err)
		}
		obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(txn.Header.Revision, 10)
		return nil
	}
}

// merge computes the bytes to store when obj replaces old.
func (s *Store) merge(r *api.Resource, old []byte, obj api.Object, opts UpdateOptions) ([]byte, error) {
	if opts.Status {
		if data, ok, err := mergeStatus(r, old, obj); ok {
			return data, err
		}
	}
	return mergeJSON(r, old, obj, opts)
}

// mergeStatus is merge for a status write, on the types: the stored
// object decoded once, its status set to obj's, encoded once, where
// mergeJSON takes eight passes of JSON (the writes of every controller,
// and a rebase's tag moves). ok is false for a type without a Status
// field; mergeJSON then merges.
func mergeStatus(r *api.Resource, old []byte, obj api.Object) (data []byte, ok bool, err error) {
	cur := r.NewObject()
	nv, cv := reflect.ValueOf(obj), reflect.ValueOf(cur)
	if nv.Kind() != reflect.Pointer || nv.Type() != cv.Type() || nv.IsNil() {
		return nil, false, nil
	}
	st, cst := nv.Elem().FieldByName("Status"), cv.Elem().FieldByName("Status")
	if !st.IsValid() || !cst.CanSet() {
		return nil, false, nil
	}
	if err := json.Unmarshal(old, cur); err != nil {
		return nil, true, fmt.Errorf("store: stored %s %q is corrupt: %w", r.Kind, obj.GetObjectMeta().Name, err)
	}
	// A status left out of obj's JSON (a nil pointer) keeps the stored one.
	if st.Kind() != reflect.Pointer || !st.IsNil() {
		cst.Set(st)
	}
	cur.GetObjectMeta().ResourceVersion = ""
	data, err = json.Marshal(cur)
	return data, true, err
}

// mergeJSON merges obj into the stored object old as merge says, on the
// JSON.
func mergeJSON(r *api.Resource, old []byte, obj api.Object, opts UpdateOptions) ([]byte, error) {
	name := obj.GetObjectMeta().Name
	newData, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("store: encode %s %q: %w", r.Kind, name, err)
	}
	var o, n map[string]json.RawMessage
	if err := json.Unmarshal(old, &o); err != nil {
		return nil, fmt.Errorf("store: stored %s %q is corrupt: %w", r.Kind, name, err)
	}
	if err := json.Unmarshal(newData, &n); err != nil {
		return nil, fmt.Errorf("store: encode %s %q: %w", r.Kind, name, err)
	}
	var oldMeta, newMeta api.ObjectMeta
	if err := json.Unmarshal(o["metadata"], &oldMeta); err != nil {
		return nil, fmt.Errorf("store: stored %s %q is corrupt: %w", r.Kind, name, err)
	}
	if err := json.Unmarshal(n["metadata"], &newMeta); err != nil {
		return nil, fmt.Errorf("store: encode %s %q: %w", r.Kind, name, err)
	}
	var out map[string]json.RawMessage
	if opts.Status {
		out = o
		if st, ok := n["status"]; ok {
			out["status"] = st
		}
		newMeta = oldMeta
	} else {
		out = n
		if r.HasStatus && !opts.WithStatus {
			if st, ok := o["status"]; ok {
				out["status"] = st
			} else {
				delete(out, "status")
			}
		}
		newMeta.UID = oldMeta.UID
		newMeta.CreationTimestamp = oldMeta.CreationTimestamp
		newMeta.Generation = oldMeta.Generation
		if !opts.MarkDeleted || oldMeta.DeletionTimestamp != nil {
			newMeta.DeletionTimestamp = oldMeta.DeletionTimestamp
		}
		if specChanged(o, out) {
			newMeta.Generation++
		}
	}
	newMeta.ResourceVersion = ""
	mb, err := json.Marshal(newMeta)
	if err != nil {
		return nil, err
	}
	out["metadata"] = mb
	merged, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	// Re-encode through the type so bytes are canonical (field order as
	// Create writes them) and an update that changes nothing is detected.
	canon := r.NewObject()
	if err := json.Unmarshal(merged, canon); err != nil {
		return nil, fmt.Errorf("store: encode %s %q: %w", r.Kind, name, err)
	}
	return json.Marshal(canon)
}

func specChanged(old, cur map[string]json.RawMessage) bool {
	for k, v := range cur {
		if k == "metadata" || k == "status" {
			continue
		}
		if !bytes.Equal(old[k], v) {
			return true
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok && k != "metadata" && k != "status" {
			return true
		}
	}
	return false
}

// UpdateStatusFrom writes obj's status over old, the object as stored at
// revision rev (from a cache, say), in one compare-and-swap and with no
// read: ErrConflict if the object changed since rev. obj is refreshed
// with what was stored.
func (s *Store) UpdateStatusFrom(ctx context.Context, r *api.Resource, obj api.Object, old []byte, rev int64) error {
	if isStreams(r) {
		// Stored in parts (streamtags.go): a compare-and-swap on the
		// whole stream at rev.
		obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
		return s.updateStream(ctx, obj, UpdateOptions{Status: true})
	}
	m := obj.GetObjectMeta()
	key := s.Key(r, m.Namespace, m.Name)
	*obj.GetTypeMeta() = api.TypeMeta{APIVersion: api.APIVersion, Kind: r.Kind}
	data, err := s.merge(r, old, obj, UpdateOptions{Status: true})
	if err != nil {
		return err
	}
	stored := rev
	if !bytes.Equal(data, old) {
		txn, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", rev)}, []clientv3.Op{clientv3.OpPut(key, string(data))}, nil)
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		if !txn.Succeeded {
			return conflict(r, m.Name)
		}
		stored = txn.Header.Revision
	}
	reflect.ValueOf(obj).Elem().SetZero()
	if err := json.Unmarshal(data, obj); err != nil {
		return fmt.Errorf("store: decode %s %q: %w", r.Kind, m.Name, err)
	}
	obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(stored, 10)
	return nil
}

// GuaranteedUpdate reads the current object, applies fn and writes the
// result with compare-and-swap, retrying from a fresh read when another
// writer got there first. fn must be safe to call more than once.
func (s *Store) GuaranteedUpdate(ctx context.Context, r *api.Resource, ns, name string, opts UpdateOptions, fn func(api.Object) error) (api.Object, error) {
	for {
		obj, err := s.Get(ctx, r, ns, name)
		if err != nil {
			return nil, err
		}
		if err := fn(obj); err != nil {
			return nil, err
		}
		err = s.Update(ctx, r, obj, opts)
		if errors.Is(err, ErrConflict) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			continue
		}
		return obj, err
	}
}

// Delete removes an object and returns it as it was last stored, with the
// revision of the deletion as its resourceVersion. A non-empty
// precondition is a resourceVersion the object must still have.
func (s *Store) Delete(ctx context.Context, r *api.Resource, ns, name, precondition string) (api.Object, error) {
	if isStreams(r) {
		return s.deleteStream(ctx, ns, name, precondition)
	}
	key := s.Key(r, ns, name)
	for {
		resp, err := s.client.Get(ctx, key)
		if err != nil {
			return nil, wrapEtcd(err, r, name)
		}
		if len(resp.Kvs) == 0 {
			return nil, fmt.Errorf("%s %q: %w", r.Kind, name, ErrNotFound)
		}
		cur := resp.Kvs[0]
		if precondition != "" && precondition != strconv.FormatInt(cur.ModRevision, 10) {
			return nil, fmt.Errorf("%s %q changed since resourceVersion %s: %w", r.Kind, name, precondition, ErrConflict)
		}
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		if isPolicy(r) {
			ops = append(ops, clientv3.OpPut(s.policyKey(ns), ""))
		}
		txn, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision)}, ops, nil)
		if err != nil {
			return nil, wrapEtcd(err, r, name)
		}
		if !txn.Succeeded {
			continue
		}
		return decode(r, cur.Value, txn.Header.Revision)
	}
}

// DeleteAll removes every object of a namespaced resource in one project, in
// one etcd request, and reports how many were removed.
func (s *Store) DeleteAll(ctx context.Context, r *api.Resource, ns string) (int64, error) {
	if !r.Namespaced || ns == "" {
		return 0, fmt.Errorf("store: DeleteAll needs a namespaced resource and a project: %w", ErrInvalid)
	}
	resp, err := s.commit(ctx, nil, s.deleteAllOps(r, ns), nil)
	if err != nil {
		return 0, wrapEtcd(err, r, ns)
	}
	return resp.Responses[0].GetResponseDeleteRange().Deleted, nil
}

// deleteAllOps delete every object of r in ns with the keys kept next to
// them: the platform's fence and count, and, with the project's last
// quota or limit range, the project's quota fence (and the policy key moves).
func (s *Store) deleteAllOps(r *api.Resource, ns string) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpDelete(s.keyPrefix(r, ns), clientv3.WithPrefix()), clientv3.OpDelete(s.fenceKey(r, ns)), clientv3.OpDelete(s.createsKey(r, ns))}
	if isStreams(r) {
		ops = append(ops, clientv3.OpDelete(s.streamTagsPrefix(ns), clientv3.WithPrefix()))
	}
	if isPolicy(r) {
		// The policy key is bumped, not deleted: deleting it twice (quotas,
		// then limit ranges) would leave its revision at 0 the second
		// time, and a cache read in between would not see the change.
		ops = append(ops, clientv3.OpPut(s.policyKey(ns), ""), clientv3.OpDelete(s.quotaFenceKey(ns)))
	}
	return ops
}

// Owner names one incarnation of an object: an operation guarded by it
// happens only while that very object exists, not another of the same
// name made since. (etcd keeps a key's create revision for as long as the
// key lives, so the guard is a compare on it, checked in the same
// transaction as the operation.)
type Owner struct {
	Resource        *api.Resource
	Namespace, Name string
	UID             string
}

// ownerRevision is the create revision of owner's key, if the object
// there is owner (same UID).
func (s *Store) ownerRevision(ctx context.Context, o Owner) (string, int64, error) {
	key := s.Key(o.Resource, o.Namespace, o.Name)
	resp, err := s.client.Get(ctx, key)
	if err != nil {
		return "", 0, wrapEtcd(err, o.Resource, o.Name)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, fmt.Errorf("%s %q: %w", o.Resource.Kind, o.Name, ErrNotFound)
	}
	cur, err := decode(o.Resource, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
	if err != nil {
		return "", 0, err
	}
	if cur.GetObjectMeta().UID != o.UID {
		return "", 0, fmt.Errorf("%s %q is another object (uid %s) than %s: %w", o.Resource.Kind, o.Name, cur.GetObjectMeta().UID, o.UID, ErrConflict)
	}
	return key, resp.Kvs[0].CreateRevision, nil
}

// DeleteAllOwned is DeleteAll, done only while owner exists (in the same
// etcd transaction). It fails with ErrNotFound or ErrConflict, and deletes
// nothing, when owner is gone or was replaced by another object of its
// name: a project's finalizer never deletes what a project made again
// under the same name holds.
func (s *Store) DeleteAllOwned(ctx context.Context, r *api.Resource, ns string, owner Owner) (int64, error) {
	if !r.Namespaced || ns == "" {
		return 0, fmt.Errorf("store: DeleteAllOwned needs a namespaced resource and a project: %w", ErrInvalid)
	}
	key, rev, err := s.ownerRevision(ctx, owner)
	if err != nil {
		return 0, err
	}
	txn, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", rev)}, s.deleteAllOps(r, ns), nil)
	if err != nil {
		return 0, wrapEtcd(err, r, ns)
	}
	if !txn.Succeeded {
		return 0, fmt.Errorf("%s %q was replaced: %w", owner.Resource.Kind, owner.Name, ErrConflict)
	}
	return txn.Responses[0].GetResponseDeleteRange().Deleted, nil
}

// DeleteOwned deletes owner itself, if it is still that object.
func (s *Store) DeleteOwned(ctx context.Context, owner Owner) error {
	key, rev, err := s.ownerRevision(ctx, owner)
	if err != nil {
		return err
	}
	txn, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", rev)}, []clientv3.Op{clientv3.OpDelete(key)}, nil)
	if err != nil {
		return wrapEtcd(err, owner.Resource, owner.Name)
	}
	if !txn.Succeeded {
		return fmt.Errorf("%s %q was replaced: %w", owner.Resource.Kind, owner.Name, ErrConflict)
	}
	return nil
}

// ListOptions narrow and page a List.
type ListOptions struct {
	Selector labels.Selector // nil means everything
	// Name, if set, limits the list or watch to that one object.
	Name string
	// Limit is the most items to return; 0 means all. When more remain,
	// the result carries a Continue token.
	Limit int64
	// Continue resumes a paged list at the revision of its first page.
	Continue string
	// Keep, if set, is asked about each object before it counts towards
	// Limit, as Selector is: a page is filled with kept objects only, so
	// its Continue token names an object the caller was given, never
	// one Keep refused (the API server's cross-project lists filter by
	// the caller's rights here). In-process only: the Go client's List
	// ignores it.
	Keep func(api.Object) bool
}

type continueToken struct {
	Rev int64  `json:"rev"`
	Key string `json:"start"`
}

// List returns the objects of one resource in one project (or in all
// projects when ns is empty), in key order, with the revision they were
// read at.
func (s *Store) List(ctx context.Context, r *api.Resource, ns string, opts ListOptions) ([]api.Object, api.ListMeta, error) {
	if !isStreams(r) {
		return s.list(ctx, r, ns, opts, 0, nil)
	}
	sts, meta, err := s.listStreams(ctx, ns, opts, 0)
	if err != nil {
		return nil, meta, err
	}
	items := make([]api.Object, len(sts))
	for i, st := range sts {
		items[i] = st.assemble(st.maxRev)
	}
	return items, meta, nil
}

// listStreams lists image streams with their keyed tags at rev (0: now).
func (s *Store) listStreams(ctx context.Context, ns string, opts ListOptions, rev int64) ([]*streamState, api.ListMeta, error) {
	var kvs []*mvccpb.KeyValue
	_, meta, err := s.list(ctx, api.ImageStreams, ns, opts, rev, &kvs)
	if err != nil {
		return nil, meta, err
	}
	at, _ := strconv.ParseInt(meta.ResourceVersion, 10, 64)
	if opts.Limit == 0 && opts.Continue == "" && opts.Name == "" {
		// The whole project (or cluster): its tag keys in one range.
		sts, err := s.streamStatesIn(ctx, ns, kvs, at)
		return sts, meta, err
	}
	sts, err := s.streamStates(ctx, kvs, at)
	return sts, meta, err
}

// list is List at revision at (0: now, or the continue token's); when
// kvs is set, the stored key-values of the items are appended to it.
func (s *Store) list(ctx context.Context, r *api.Resource, ns string, opts ListOptions, at int64, kvs *[]*mvccpb.KeyValue) ([]api.Object, api.ListMeta, error) {
	prefix := s.keyPrefix(r, ns)
	end := clientv3.GetPrefixRangeEnd(prefix)
	start := prefix
	rev := at
	if opts.Continue != "" {
		raw, err := base64.RawURLEncoding.DecodeString(opts.Continue)
		var tok continueToken
		if err == nil {
			err = json.Unmarshal(raw, &tok)
		}
		if err != nil || tok.Rev <= 0 || strings.Contains(tok.Key, "\x00") {
			return nil, api.ListMeta{}, fmt.Errorf("continue token is malformed; start the list again without it: %w", ErrInvalid)
		}
		rev = tok.Rev
		start = prefix + tok.Key + "\x00"
	}
	// A name in every project is a scan of the resource, filtered.
	nameFilter := ""
	if opts.Name != "" && r.Namespaced && ns == "" {
		nameFilter = opts.Name
	} else if opts.Name != "" {
		start, end = s.Key(r, ns, opts.Name), ""
	}
	batch := int64(500)
	if opts.Limit > 0 && opts.Selector == nil && opts.Keep == nil && opts.Limit+1 < batch {
		batch = opts.Limit + 1
	}
	var items []api.Object
	for {
		ops := []clientv3.OpOption{clientv3.WithLimit(batch), clientv3.WithRev(rev)}
		if end != "" {
			ops = append(ops, clientv3.WithRange(end))
		}
		resp, err := s.client.Get(ctx, start, ops...)
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				return nil, api.ListMeta{}, fmt.Errorf("the continue token has expired; start the list again: %w", ErrGone)
			}
			if errors.Is(err, rpctypes.ErrFutureRev) {
				return nil, api.ListMeta{}, fmt.Errorf("continue token is malformed; start the list again without it: %w", ErrInvalid)
			}
			return nil, api.ListMeta{}, wrapEtcd(err, r, "")
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for i, kv := range resp.Kvs {
			obj, err := decode(r, kv.Value, kv.ModRevision)
			if err != nil {
				return nil, api.ListMeta{}, err
			}
			if opts.Selector != nil && !opts.Selector.Matches(labels.Set(obj.GetObjectMeta().Labels)) {
				continue
			}
			if nameFilter != "" && obj.GetObjectMeta().Name != nameFilter {
				continue
			}
			if opts.Keep != nil && !opts.Keep(obj) {
				continue
			}
			items = append(items, obj)
			if kvs != nil {
				*kvs = append(*kvs, kv)
			}
			if opts.Limit > 0 && int64(len(items)) == opts.Limit && (i < len(resp.Kvs)-1 || resp.More) {
				tok, _ := json.Marshal(continueToken{Rev: rev, Key: strings.TrimPrefix(string(kv.Key), prefix)})
				return items, api.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10), Continue: base64.RawURLEncoding.EncodeToString(tok)}, nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return items, api.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)}, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func decode(r *api.Resource, data []byte, rev int64) (api.Object, error) {
	obj := r.NewObject()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("store: stored %s is corrupt: %w", r.Kind, err)
	}
	obj.GetObjectMeta().ResourceVersion = strconv.FormatInt(rev, 10)
	return obj, nil
}

func wrapEtcd(err error, r *api.Resource, name string) error {
	switch {
	case errors.Is(err, ErrFenced):
		return fmt.Errorf("%s %q: %w", r.Kind, name, err)
	case errors.Is(err, rpctypes.ErrRequestTooLarge), strings.Contains(err.Error(), "request is too large"),
		strings.Contains(err.Error(), "trying to send message larger than max"),
		strings.Contains(err.Error(), "received message larger than max"):
		return fmt.Errorf("%s %q: %w", r.Kind, name, ErrTooLarge)
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("%s: %w", r.Kind, ErrGone)
	case errors.Is(err, rpctypes.ErrNoSpace), strings.Contains(err.Error(), rpctypes.ErrNoSpace.Error()):
		return fmt.Errorf("%s %q: %w", r.Kind, name, noSpaceError{})
	}
	return fmt.Errorf("store: etcd: %s %q: %w", r.Kind, name, err)
}

// ParseResourceVersion reads a resourceVersion; "" and "0" mean none.
func ParseResourceVersion(rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("resourceVersion %q is not a revision number: %w", rv, ErrInvalid)
	}
	return n, nil
}

// conflict is the error for a write based on an old version of r's
// object name.
func conflict(r *api.Resource, name string) error {
	return fmt.Errorf("%s %q: the object has been modified; read it again and apply your change to the latest version: %w", r.Kind, name, ErrConflict)
}
