package store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
)

// ErrLimit is returned when a project already holds as many objects of a
// kind as the platform allows. The error also carries a 403 api.Status, so
// the API answers it without a mapping of its own.
var ErrLimit = errors.New("store: project limit reached")

// Limits caps how many objects of each namespaced kind one project may
// hold, so that no project can fill etcd, whose space every project shares
// (once etcd's backend quota is reached, every write of the platform
// fails). It is a platform guard, not a quota users manage: one cap for
// every kind, with overrides per kind. Cluster-scoped kinds are not
// counted.
type Limits struct {
	// PerKind is the cap for a namespaced kind not in ByResource; 0 means
	// no cap.
	PerKind int64
	// ByResource overrides PerKind by resource name ("images"); 0 there
	// means no cap for that kind.
	ByResource map[string]int64
	// TagsPerStream caps the tags of one ImageStream and HistoryPerTag
	// the history kept per tag (older entries are dropped). The store
	// cannot see inside a stream: imagestreams.Recorder, which moves
	// every tag, reads them here. 0 means that package's default.
	TagsPerStream, HistoryPerTag int
	// Hint tells the user who may raise the limit and how, as the last
	// part of the error. Default "ask a cluster admin to raise the
	// platform's limit".
	Hint string
}

// For is the cap on r per project; 0 means none.
func (l Limits) For(r *api.Resource) int64 {
	if !r.Namespaced {
		return 0
	}
	if n, ok := l.ByResource[r.Name]; ok {
		return n
	}
	return l.PerKind
}

// WithLimits caps objects per project and kind on every Create. Default:
// no caps.
func WithLimits(l Limits) Option { return func(s *Store) { s.limits = l } }

// LimitError says which limit a write hit, in which project, and what to
// do about it. errors.Is(err, ErrLimit) holds for it.
type LimitError struct {
	Project string
	// What is counted: "images", or "tags in image stream app".
	What  string
	Limit int64
	// Hint is Limits.Hint.
	Hint string
}

func (e *LimitError) Error() string {
	hint := e.Hint
	if hint == "" {
		hint = "ask a cluster admin to raise the platform's limit"
	}
	return fmt.Sprintf("project %q already holds %d %s, the most the platform allows; delete those it no longer needs, or %s", e.Project, e.Limit, e.What, hint)
}

// Unwrap makes the error ErrLimit and a 403 Forbidden Status, as
// Kubernetes answers an exceeded quota.
func (e *LimitError) Unwrap() []error {
	return []error{ErrLimit, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", e.Error())}
}

// fenceKey is bumped by every create of r in ns that commits near the
// cap, in the same transaction, so two such creates that counted the same
// objects cannot both commit: the loser counts again. It is deleted with
// the project's objects (DeleteAll, DeleteAllOwned).
func (s *Store) fenceKey(r *api.Resource, ns string) string {
	return s.prefix + "createfence/" + r.Name + "/" + ns
}

// fenceMargin is how far below its cap a project's count must be for a
// create to commit without the fence. Far from the cap, creates commit as
// plain creates, concurrently (fencing every one made 32 concurrent
// creates of one kind in one project retry each other into a crawl); only
// within the margin do they serialize on the fence. The cap holds exactly
// unless more than fenceMargin creates of one kind in one project are in
// flight at once, and then it is overshot by at most the excess.
const fenceMargin = 64

// createsKey is put by every counted create of r in ns, in the create's
// transaction, so its Version counts those creates: a count read together
// with the key's Version and CreateRevision bounds the count at any later
// commit (count + Version growth; deletes only lower it). It is deleted
// with the project's objects, like the fence; a new incarnation has a new
// CreateRevision, which invalidates every bound read from the old one.
// A write that creates objects of a capped kind some other way than
// through createCounted must put this key in its transaction too, or the
// bounds of other creates would not see its objects.
func (s *Store) createsKey(r *api.Resource, ns string) string {
	return s.prefix + "createcount/" + r.Name + "/" + ns
}

// countBound is a count of r's objects in one project read at one
// revision, with the createsKey's Version and CreateRevision at that
// revision.
type countBound struct {
	count, version, createRev int64
}

// maxCountBounds bounds the process's cache of counts; past it the cache
// starts over (a miss only costs a count).
const maxCountBounds = 10000

func (s *Store) cachedBound(k string) (countBound, bool) {
	s.sh.boundsMu.Lock()
	defer s.sh.boundsMu.Unlock()
	b, ok := s.sh.bounds[k]
	return b, ok
}

func (s *Store) setBound(k string, b countBound, ok bool) {
	s.sh.boundsMu.Lock()
	defer s.sh.boundsMu.Unlock()
	if !ok {
		delete(s.sh.bounds, k)
		return
	}
	if s.sh.bounds == nil || len(s.sh.bounds) >= maxCountBounds {
		s.sh.bounds = map[string]countBound{}
	}
	s.sh.bounds[k] = b
}

// createCounted is Create under a limit. Counting is an index-only range
// (WithCountOnly: etcd reads no values), which costs etcd a walk over the
// project's objects of the kind. Near the cap the create commits only if
// no other create of the kind in the project committed near the cap since
// the count (the fence). Deletes do not touch the fence: they only lower
// the count.
//
// Far from the cap a create need not count again: after one count, the
// create's transaction itself checks, on the createsKey, that fewer creates
// committed since (by any process) than would bring the project within
// the fence margin, so the count at commit is below limit-fenceMargin,
// where the counted path would also commit a plain create. When that
// check fails (the margin is near, or the project was deleted and made
// again) the create counts again.
//
// In a project (m.Namespace set) the create also commits only while the
// project's quota policy key is at policyRev (quota.go), and returns
// errPolicyChanged when it moved.
func (s *Store) createCounted(ctx context.Context, r *api.Resource, m *api.ObjectMeta, key, data string, limit, policyRev int64) error {
	fence := s.fenceKey(r, m.Namespace)
	creates := s.createsKey(r, m.Namespace)
	pk := s.policyKey(m.Namespace)
	guard := clientv3.Compare(clientv3.ModRevision(pk), "=", policyRev)
	puts := func(extra ...clientv3.Op) []clientv3.Op {
		return append(append(s.putOps(r, m.Namespace, key, data), clientv3.OpPut(creates, "")), extra...)
	}
	if b, ok := s.cachedBound(creates); ok && b.count < limit-fenceMargin {
		budget := limit - fenceMargin - b.count
		resp, err := s.commit(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(creates), "=", b.createRev),
			clientv3.Compare(clientv3.Version(creates), "<", b.version+budget),
			guard,
		}, puts(),
			[]clientv3.Op{clientv3.OpGet(key, clientv3.WithCountOnly()), clientv3.OpGet(pk, clientv3.WithKeysOnly())})
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		if resp.Succeeded {
			m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
			return nil
		}
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("%s %q: %w", r.Kind, m.Name, ErrExists)
		}
		if policyChanged(resp.Responses[1].GetResponseRange(), policyRev) {
			return errPolicyChanged
		}
		// The bound no longer proves the project far from its cap.
		s.setBound(creates, countBound{}, false)
	}
	for {
		count, fenceRev, exists, bound, err := s.count(ctx, r, m.Namespace, key)
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		s.setBound(creates, bound, true)
		if exists {
			return fmt.Errorf("%s %q: %w", r.Kind, m.Name, ErrExists)
		}
		if count >= limit {
			return &LimitError{Project: m.Namespace, What: r.Name, Limit: limit, Hint: s.limits.Hint}
		}
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0), guard}
		ops := puts()
		if count >= limit-fenceMargin {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(fence), "=", fenceRev))
			ops = append(ops, clientv3.OpPut(fence, ""))
		}
		resp, err := s.commit(ctx, cmps, ops, []clientv3.Op{clientv3.OpGet(pk, clientv3.WithKeysOnly())})
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		if resp.Succeeded {
			m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
			return nil
		}
		if policyChanged(resp.Responses[0].GetResponseRange(), policyRev) {
			return errPolicyChanged
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// count reads, at one revision, how many objects of r project ns holds,
// the fence's revision, whether key exists, and the count with the
// createsKey's state as a bound for later creates.
func (s *Store) count(ctx context.Context, r *api.Resource, ns, key string) (count, fenceRev int64, exists bool, bound countBound, err error) {
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(s.keyPrefix(r, ns), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		clientv3.OpGet(s.fenceKey(r, ns)),
		clientv3.OpGet(key, clientv3.WithCountOnly()),
		clientv3.OpGet(s.createsKey(r, ns), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return 0, 0, false, countBound{}, err
	}
	count = resp.Responses[0].GetResponseRange().Count
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		fenceRev = kvs[0].ModRevision
	}
	exists = resp.Responses[2].GetResponseRange().Count > 0
	bound.count = count
	if kvs := resp.Responses[3].GetResponseRange().Kvs; len(kvs) > 0 {
		bound.version, bound.createRev = kvs[0].Version, kvs[0].CreateRevision
	}
	return count, fenceRev, exists, bound, nil
}

// CheckCreate reports whether a Create of r named name in ns would be
// refused by the limits: a *LimitError when the project is at its cap
// and name does not exist yet, nil otherwise. Writers that store other
// things before the object (the registry stores the manifest before its
// Image record) call it first, so a refused push leaves nothing behind.
// Create checks again.
//
// It checks the project's hard quotas on r too (a *QuotaError), for a
// kind whose quota needs no more than the count (not pods).
func (s *Store) CheckCreate(ctx context.Context, r *api.Resource, ns, name string) error {
	if err := s.checkQuota(ctx, r, ns, name); err != nil {
		return err
	}
	limit := s.limits.For(r)
	if limit <= 0 {
		return nil
	}
	// With a bound from an earlier count (createsKey), one key read
	// shows most checks far from the cap: the count now is at most the
	// bound's count plus the creates committed since. Only a check that
	// could be near the cap counts again, a walk over the project's keys
	// of r (every push counted its project's images).
	creates := s.createsKey(r, ns)
	if b, ok := s.cachedBound(creates); ok && b.count < limit {
		resp, err := s.client.Get(ctx, creates, clientv3.WithKeysOnly())
		if err != nil {
			return wrapEtcd(err, r, name)
		}
		var version, createRev int64
		if len(resp.Kvs) > 0 {
			version, createRev = resp.Kvs[0].Version, resp.Kvs[0].CreateRevision
		}
		if createRev == b.createRev && b.count+(version-b.version) < limit {
			return nil
		}
	}
	count, _, exists, bound, err := s.count(ctx, r, ns, s.Key(r, ns, name))
	if err != nil {
		return wrapEtcd(err, r, name)
	}
	s.setBound(creates, bound, true)
	if !exists && count >= limit {
		return &LimitError{Project: ns, What: r.Name, Limit: limit, Hint: s.limits.Hint}
	}
	return nil
}

// Limits are the limits the store was made with.
func (s *Store) Limits() Limits { return s.limits }

// ErrNoSpace is returned when etcd refuses writes because its database
// reached its quota (the NOSPACE alarm): every write of the platform
// fails until an operator frees space. The error also carries a 507
// api.Status.
var ErrNoSpace = errors.New("store: etcd is out of space")

type noSpaceError struct{}

const noSpaceMessage = "etcd's database is full (NOSPACE alarm) and refuses every write of the platform; a cluster admin must free space: see /readyz for the sizes and the steps (delete objects, compact, defrag, `etcdctl alarm disarm`)"

func (noSpaceError) Error() string { return noSpaceMessage }

func (noSpaceError) Unwrap() []error {
	return []error{ErrNoSpace, api.NewStatus(http.StatusInsufficientStorage, api.ReasonUnavailable, "%s", noSpaceMessage)}
}
