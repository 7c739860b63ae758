package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
)

// Quota admission lives in the store because every writer goes through it:
// the API server and the controllers that make pods (replication), image
// streams (the registry) and builds alike. A project's ResourceQuotas and
// LimitRanges are its policy; the store caches each project's policy and
// puts a policy key (policyKey) in the transaction of every write of a
// quota or limit range, so each create compares that key's revision with
// the one the cached policy was read at: a create never commits under a
// policy older than the newest (it reads the policy again), and a project
// without a quota pays only that compare.
//
// A create that a quota tracks counts the project's usage and commits only
// if no other tracked create of the project committed since the count: it
// compares and bumps the project's quota fence (quotaFenceKey). Deletes
// and phase changes only lower usage, so they need no fence. Two
// concurrent creates for the last slot cannot both commit; the loser
// counts again and is refused.

// ErrQuota is returned when a write would take a project above a hard
// quota or outside a limit range. The error also carries a 403 api.Status.
var ErrQuota = errors.New("store: quota exceeded")

// errPolicyChanged makes a create read its project's policy again.
var errPolicyChanged = errors.New("store: quota policy changed")

// QuotaError says which quota a create exceeded: its name, the quota
// resource, what the project used, what the create asked for, and the
// hard limit.
type QuotaError struct {
	Project, Quota, Resource string
	Used, Requested, Hard    int64
}

func (e *QuotaError) Error() string {
	f := func(v int64) string { return api.FormatQuota(e.Resource, v) }
	return fmt.Sprintf("exceeded quota %s: %s used %s, requested %s, hard %s (project %s); free some, or ask a cluster admin to raise the quota", e.Quota, e.Resource, f(e.Used), f(e.Requested), f(e.Hard), e.Project)
}

// Unwrap makes the error ErrQuota and a 403 Forbidden Status, as
// Kubernetes answers an exceeded quota.
func (e *QuotaError) Unwrap() []error {
	return []error{ErrQuota, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", e.Error())}
}

// policyError is a refusal by a limit range or a quota that needs the
// object to state something (a compute request).
type policyError struct{ msg string }

func (e *policyError) Error() string { return e.msg }

func (e *policyError) Unwrap() []error {
	return []error{ErrQuota, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%s", e.msg)}
}

// Warnings: a soft quota lets a write through and says so. The API server
// passes a sink in the request's context and turns what it gets into
// Warning headers; controllers pass none.
type warnKey struct{}

// WithWarnings returns a context whose writes report warnings to sink.
func WithWarnings(ctx context.Context, sink func(msg string)) context.Context {
	return context.WithValue(ctx, warnKey{}, sink)
}

func warn(ctx context.Context, msg string) {
	if sink, ok := ctx.Value(warnKey{}).(func(string)); ok {
		sink(msg)
	}
}

// projectPolicy is a project's quotas and limit ranges, read at the
// policy key's revision rev (0: no key).
type projectPolicy struct {
	rev    int64
	quotas []*api.ResourceQuota
	ranges []*api.LimitRange
}

func (s *Store) policyKey(ns string) string     { return s.prefix + "quotapolicy/" + ns }
func (s *Store) quotaFenceKey(ns string) string { return s.prefix + "quotafence/" + ns }

// isPolicy reports whether writes of r change a project's policy.
func isPolicy(r *api.Resource) bool { return r == api.ResourceQuotas || r == api.LimitRanges }

// maxPolicies bounds the cache of project policies; past it the cache
// starts over (a miss costs one read).
const maxPolicies = 10000

func (s *Store) policy(ctx context.Context, ns string) (*projectPolicy, error) {
	s.sh.policyMu.Lock()
	p, ok := s.sh.policies[ns]
	s.sh.policyMu.Unlock()
	if ok {
		return p, nil
	}
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(s.policyKey(ns), clientv3.WithKeysOnly()),
		clientv3.OpGet(s.keyPrefix(api.ResourceQuotas, ns), clientv3.WithPrefix()),
		clientv3.OpGet(s.keyPrefix(api.LimitRanges, ns), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, wrapEtcd(err, api.ResourceQuotas, ns)
	}
	p = &projectPolicy{}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		p.rev = kvs[0].ModRevision
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		q := &api.ResourceQuota{}
		if err := json.Unmarshal(kv.Value, q); err != nil {
			return nil, fmt.Errorf("store: stored ResourceQuota is corrupt: %w", err)
		}
		p.quotas = append(p.quotas, q)
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		lr := &api.LimitRange{}
		if err := json.Unmarshal(kv.Value, lr); err != nil {
			return nil, fmt.Errorf("store: stored LimitRange is corrupt: %w", err)
		}
		p.ranges = append(p.ranges, lr)
	}
	s.sh.policyMu.Lock()
	if s.sh.policies == nil || len(s.sh.policies) >= maxPolicies {
		s.sh.policies = map[string]*projectPolicy{}
	}
	s.sh.policies[ns] = p
	s.sh.policyMu.Unlock()
	return p, nil
}

func (s *Store) dropPolicy(ns string) {
	s.sh.policyMu.Lock()
	delete(s.sh.policies, ns)
	s.sh.policyMu.Unlock()
}

// policyChanged tells, from a failed transaction's read of the policy
// key, whether the policy moved past rev.
func policyChanged(r *etcdserverpb.RangeResponse, rev int64) bool {
	var cur int64
	if len(r.Kvs) > 0 {
		cur = r.Kvs[0].ModRevision
	}
	return cur != rev
}

// applyLimitRanges fills a pod's containers' missing requests and limits
// from the project's limit ranges and refuses a container over a max.
func applyLimitRanges(ranges []*api.LimitRange, p *api.Pod) error {
	for _, lr := range ranges {
		for _, it := range lr.Spec.Limits {
			if it.Type != api.LimitRangeContainer {
				continue
			}
			for i := range p.Spec.Containers {
				c := &p.Spec.Containers[i]
				res := &c.Resources
				fill := func(v *int64, def int64) {
					if *v == 0 && def > 0 {
						*v = def
					}
				}
				fill(&res.Limits.MilliCPU, it.Default.MilliCPU)
				fill(&res.Limits.Memory, it.Default.Memory)
				fill(&res.Requests.MilliCPU, it.DefaultRequest.MilliCPU)
				fill(&res.Requests.Memory, it.DefaultRequest.Memory)
				fill(&res.Requests.MilliCPU, res.Limits.MilliCPU)
				fill(&res.Requests.Memory, res.Limits.Memory)
				check := func(what string, v, maxV int64) error {
					if maxV <= 0 {
						return nil
					}
					unit := api.QuotaLimitsCPU
					if strings.HasSuffix(what, "memory") {
						unit = api.QuotaLimitsMemory
					}
					if v == 0 && strings.HasPrefix(what, "limits") {
						return &policyError{fmt.Sprintf("limit range %s: container %q sets no %s, and the max is %s; set resources.%s (or ask a cluster admin for a default in the limit range)", lr.Name, c.Name, what, api.FormatQuota(unit, maxV), what)}
					}
					if v > maxV {
						return &policyError{fmt.Sprintf("limit range %s: container %q asks for %s %s, above the max %s; ask for less, or ask a cluster admin to raise the limit range", lr.Name, c.Name, what, api.FormatQuota(unit, v), api.FormatQuota(unit, maxV))}
					}
					return nil
				}
				for _, e := range []error{
					check("limits.cpu", res.Limits.MilliCPU, it.Max.MilliCPU),
					check("limits.memory", res.Limits.Memory, it.Max.Memory),
					check("requests.cpu", res.Requests.MilliCPU, it.Max.MilliCPU),
					check("requests.memory", res.Requests.Memory, it.Max.Memory),
				} {
					if e != nil {
						return e
					}
				}
			}
		}
	}
	return nil
}

// podCounts reports whether a pod takes quota: it has not finished.
func podCounts(p *api.Pod) bool {
	return p.Status.Phase != api.PodSucceeded && p.Status.Phase != api.PodFailed
}

// podCompute is a pod's compute, by quota resource name.
func podCompute(p *api.Pod) map[string]int64 {
	out := map[string]int64{}
	for _, c := range p.Spec.Containers {
		out[api.QuotaRequestsCPU] += c.Resources.Requests.MilliCPU
		out[api.QuotaRequestsMemory] += c.Resources.Requests.Memory
		out[api.QuotaLimitsCPU] += c.Resources.Limits.MilliCPU
		out[api.QuotaLimitsMemory] += c.Resources.Limits.Memory
	}
	return out
}

// quotaDelta is what creating obj of r adds to quota resource name (0:
// name does not track it).
func quotaDelta(name string, r *api.Resource, obj api.Object) int64 {
	switch name {
	case api.QuotaPods:
		if r == api.Pods {
			return 1
		}
	case api.QuotaServices:
		if r == api.Services {
			return 1
		}
	case api.QuotaImageStreams:
		if r == api.ImageStreams {
			return 1
		}
	case api.QuotaRequestsCPU, api.QuotaRequestsMemory, api.QuotaLimitsCPU, api.QuotaLimitsMemory:
		if r == api.Pods {
			return podCompute(obj.(*api.Pod))[name]
		}
	case api.QuotaBuilds:
		// Builds are held back at start (StartBuild), not refused.
	default:
		if api.QuotaCountResource(name) == r {
			return 1
		}
	}
	return 0
}

// usageReader reads the usage of a set of quota resource names with a
// few etcd operations, to run in one transaction with others.
type usageReader struct {
	s      *Store
	ns     string
	pods   bool
	builds bool
	counts []string // names counted by key (count-only ranges)
}

func (s *Store) newUsageReader(ns string, names []string) *usageReader {
	u := &usageReader{s: s, ns: ns}
	for _, n := range names {
		switch n {
		case api.QuotaPods, api.QuotaRequestsCPU, api.QuotaRequestsMemory, api.QuotaLimitsCPU, api.QuotaLimitsMemory:
			u.pods = true
		case api.QuotaBuilds:
			u.builds = true
		default:
			if countedResource(n) != nil {
				u.counts = append(u.counts, n)
			}
		}
	}
	sort.Strings(u.counts)
	return u
}

func countedResource(name string) *api.Resource {
	switch name {
	case api.QuotaServices:
		return api.Services
	case api.QuotaImageStreams:
		return api.ImageStreams
	}
	return api.QuotaCountResource(name)
}

func (u *usageReader) ops() []clientv3.Op {
	var ops []clientv3.Op
	if u.pods {
		ops = append(ops, clientv3.OpGet(u.s.keyPrefix(api.Pods, u.ns), clientv3.WithPrefix()))
	}
	if u.builds {
		ops = append(ops, clientv3.OpGet(u.s.keyPrefix(api.Builds, u.ns), clientv3.WithPrefix()))
	}
	for _, n := range u.counts {
		ops = append(ops, clientv3.OpGet(u.s.keyPrefix(countedResource(n), u.ns), clientv3.WithPrefix(), clientv3.WithCountOnly()))
	}
	return ops
}

// parse reads the answers to ops(); skip names a build whose own state
// is not counted (the one being started).
func (u *usageReader) parse(resps []*etcdserverpb.ResponseOp, skip string) (map[string]int64, error) {
	used := map[string]int64{}
	i := 0
	if u.pods {
		for _, kv := range resps[i].GetResponseRange().Kvs {
			p := &api.Pod{}
			if err := json.Unmarshal(kv.Value, p); err != nil {
				return nil, fmt.Errorf("store: stored Pod is corrupt: %w", err)
			}
			if !podCounts(p) {
				continue
			}
			used[api.QuotaPods]++
			for k, v := range podCompute(p) {
				used[k] += v
			}
		}
		i++
	}
	if u.builds {
		for _, kv := range resps[i].GetResponseRange().Kvs {
			b := &api.Build{}
			if err := json.Unmarshal(kv.Value, b); err != nil {
				return nil, fmt.Errorf("store: stored Build is corrupt: %w", err)
			}
			if b.Name != skip && b.Status.Phase == api.BuildRunning {
				used[api.QuotaBuilds]++
			}
		}
		i++
	}
	for _, n := range u.counts {
		used[n] = resps[i].GetResponseRange().Count
		i++
	}
	return used, nil
}

// QuotaUsage reads what project ns uses of each quota resource name, at
// one revision: what the quota controller writes to status.used.
func (s *Store) QuotaUsage(ctx context.Context, ns string, names []string) (map[string]int64, error) {
	u := s.newUsageReader(ns, names)
	resp, err := s.client.Txn(ctx).Then(u.ops()...).Commit()
	if err != nil {
		return nil, wrapEtcd(err, api.ResourceQuotas, ns)
	}
	used, err := u.parse(resp.Responses, "")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, n := range names {
		out[n] = used[n]
		if n == api.QuotaRegistryBytes {
			if out[n], err = s.RegistryBytes(ctx, ns); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// createInProject is Create of a namespaced object under its project's
// policy: limit ranges fill and bound pods, quotas bound what they track.
func (s *Store) createInProject(ctx context.Context, r *api.Resource, obj api.Object, m *api.ObjectMeta, key string) error {
	for {
		pol, err := s.policy(ctx, m.Namespace)
		if err != nil {
			return err
		}
		if p, ok := obj.(*api.Pod); ok && len(pol.ranges) > 0 {
			if err := applyLimitRanges(pol.ranges, p); err != nil {
				return err
			}
		}
		deltas := map[string]int64{}
		for _, q := range pol.quotas {
			for _, n := range q.QuotaNames() {
				if d := quotaDelta(n, r, obj); d > 0 {
					deltas[n] = d
				}
			}
			if p, ok := obj.(*api.Pod); ok {
				if err := requireCompute(q, p); err != nil {
					return err
				}
			}
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return fmt.Errorf("store: encode %s %q: %w", r.Kind, m.Name, err)
		}
		if len(deltas) == 0 {
			err = s.createGuarded(ctx, r, m, key, string(data), pol.rev)
		} else {
			err = s.createWithQuota(ctx, r, m, key, string(data), pol, deltas)
		}
		if errors.Is(err, errPolicyChanged) || err == nil && isPolicy(r) {
			// (After this store's own policy write, the next create
			// need not fail its compare to read the policy again.)
			s.dropPolicy(m.Namespace)
		}
		if errors.Is(err, errPolicyChanged) {
			continue
		}
		return err
	}
}

// requireCompute refuses a pod without a compute request that q tracks,
// as Kubernetes does: otherwise the quota would not bound it.
func requireCompute(q *api.ResourceQuota, p *api.Pod) error {
	for _, n := range api.QuotaCompute {
		if _, ok := q.Spec.Hard[n]; !ok {
			continue
		}
		for _, c := range p.Spec.Containers {
			var v int64
			switch n {
			case api.QuotaRequestsCPU:
				v = c.Resources.Requests.MilliCPU
			case api.QuotaRequestsMemory:
				v = c.Resources.Requests.Memory
			case api.QuotaLimitsCPU:
				v = c.Resources.Limits.MilliCPU
			case api.QuotaLimitsMemory:
				v = c.Resources.Limits.Memory
			}
			if v == 0 {
				return &policyError{fmt.Sprintf("quota %s tracks %s, and container %q sets none: set resources.%s on every container (or ask a cluster admin for a LimitRange with a default)", q.Name, n, c.Name, n)}
			}
		}
	}
	return nil
}

// createGuarded is Create, under the platform's limits, committed only
// while the project's policy is still at rev.
func (s *Store) createGuarded(ctx context.Context, r *api.Resource, m *api.ObjectMeta, key, data string, rev int64) error {
	if limit := s.limits.For(r); limit > 0 {
		return s.createCounted(ctx, r, m, key, data, limit, rev)
	}
	pk := s.policyKey(m.Namespace)
	resp, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.Compare(clientv3.ModRevision(pk), "=", rev)},
		s.putOps(r, m.Namespace, key, data),
		[]clientv3.Op{clientv3.OpGet(key, clientv3.WithCountOnly()), clientv3.OpGet(pk, clientv3.WithKeysOnly())})
	if err != nil {
		return wrapEtcd(err, r, m.Name)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return fmt.Errorf("%s %q: %w", r.Kind, m.Name, ErrExists)
		}
		return errPolicyChanged
	}
	m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return nil
}

// putOps are the operations that store an object: its key, and the
// policy key when the object is part of the policy.
func (s *Store) putOps(r *api.Resource, ns, key, data string) []clientv3.Op {
	ops := []clientv3.Op{clientv3.OpPut(key, data)}
	if isPolicy(r) {
		ops = append(ops, clientv3.OpPut(s.policyKey(ns), ""))
	}
	return ops
}

// createWithQuota counts the usage deltas tracks, refuses a create over a
// hard quota, warns over a soft one, and commits only if the project's
// quota fence did not move since the count.
func (s *Store) createWithQuota(ctx context.Context, r *api.Resource, m *api.ObjectMeta, key, data string, pol *projectPolicy, deltas map[string]int64) error {
	ns := m.Namespace
	names := make([]string, 0, len(deltas))
	for n := range deltas {
		names = append(names, n)
	}
	u := s.newUsageReader(ns, names)
	fence, pk := s.quotaFenceKey(ns), s.policyKey(ns)
	limit := s.limits.For(r)
	for {
		ops := []clientv3.Op{
			clientv3.OpGet(fence, clientv3.WithKeysOnly()),
			clientv3.OpGet(key, clientv3.WithCountOnly()),
			clientv3.OpGet(pk, clientv3.WithKeysOnly()),
		}
		if limit > 0 {
			ops = append(ops, clientv3.OpGet(s.keyPrefix(r, ns), clientv3.WithPrefix(), clientv3.WithCountOnly()), clientv3.OpGet(s.fenceKey(r, ns), clientv3.WithKeysOnly()))
		}
		ops = append(ops, u.ops()...)
		resp, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		rs := resp.Responses
		var fenceRev int64
		if kvs := rs[0].GetResponseRange().Kvs; len(kvs) > 0 {
			fenceRev = kvs[0].ModRevision
		}
		if rs[1].GetResponseRange().Count > 0 {
			return fmt.Errorf("%s %q: %w", r.Kind, m.Name, ErrExists)
		}
		if policyChanged(rs[2].GetResponseRange(), pol.rev) {
			return errPolicyChanged
		}
		cmps := []clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(key), "=", 0),
			clientv3.Compare(clientv3.ModRevision(fence), "=", fenceRev),
			clientv3.Compare(clientv3.ModRevision(pk), "=", pol.rev),
		}
		puts := append(s.putOps(r, ns, key, data), clientv3.OpPut(fence, ""))
		next := 3
		if limit > 0 {
			count := rs[3].GetResponseRange().Count
			if count >= limit {
				return &LimitError{Project: ns, What: r.Name, Limit: limit, Hint: s.limits.Hint}
			}
			puts = append(puts, clientv3.OpPut(s.createsKey(r, ns), ""))
			if count >= limit-fenceMargin {
				var pfRev int64
				if kvs := rs[4].GetResponseRange().Kvs; len(kvs) > 0 {
					pfRev = kvs[0].ModRevision
				}
				cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.fenceKey(r, ns)), "=", pfRev))
				puts = append(puts, clientv3.OpPut(s.fenceKey(r, ns), ""))
			}
			next = 5
		}
		used, err := u.parse(rs[next:], "")
		if err != nil {
			return err
		}
		var warnings []string
		for _, q := range pol.quotas {
			for _, n := range sortedNames(q.Spec.Hard) {
				hard, _ := api.ParseQuota(n, q.Spec.Hard[n])
				if d := deltas[n]; d > 0 && used[n]+d > hard {
					return &QuotaError{Project: ns, Quota: q.Name, Resource: n, Used: used[n], Requested: d, Hard: hard}
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
		txn, err := s.commit(ctx, cmps, puts, nil)
		if err != nil {
			return wrapEtcd(err, r, m.Name)
		}
		if txn.Succeeded {
			m.ResourceVersion = strconv.FormatInt(txn.Header.Revision, 10)
			for _, w := range warnings {
				warn(ctx, w)
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

func sortedNames(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// StartBuild applies start (which moves the build to Running) to the
// status of build ns/name, unless the project's builds quota is taken by
// builds already running: then it returns a *QuotaError and changes
// nothing. Like a create under quota, it commits only if no other tracked
// write of the project committed since it counted.
func (s *Store) StartBuild(ctx context.Context, ns, name string, start func(*api.Build)) error {
	r := api.Builds
	key := s.Key(r, ns, name)
	for {
		pol, err := s.policy(ctx, ns)
		if err != nil {
			return err
		}
		var hard []*api.ResourceQuota
		for _, q := range pol.quotas {
			if _, ok := q.Spec.Hard[api.QuotaBuilds]; ok {
				hard = append(hard, q)
			}
		}
		if len(hard) == 0 {
			_, err := s.GuaranteedUpdate(ctx, r, ns, name, UpdateOptions{Status: true}, func(o api.Object) error {
				start(o.(*api.Build))
				return nil
			})
			return err
		}
		u := s.newUsageReader(ns, []string{api.QuotaBuilds})
		fence, pk := s.quotaFenceKey(ns), s.policyKey(ns)
		resp, err := s.client.Txn(ctx).Then(append([]clientv3.Op{
			clientv3.OpGet(fence, clientv3.WithKeysOnly()),
			clientv3.OpGet(key),
			clientv3.OpGet(pk, clientv3.WithKeysOnly()),
		}, u.ops()...)...).Commit()
		if err != nil {
			return wrapEtcd(err, r, name)
		}
		rs := resp.Responses
		if policyChanged(rs[2].GetResponseRange(), pol.rev) {
			s.dropPolicy(ns)
			continue
		}
		kvs := rs[1].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return fmt.Errorf("%s %q: %w", r.Kind, name, ErrNotFound)
		}
		cur := kvs[0]
		used, err := u.parse(rs[3:], name)
		if err != nil {
			return err
		}
		for _, q := range hard {
			h, _ := api.ParseQuota(api.QuotaBuilds, q.Spec.Hard[api.QuotaBuilds])
			if used[api.QuotaBuilds]+1 > h {
				return &QuotaError{Project: ns, Quota: q.Name, Resource: api.QuotaBuilds, Used: used[api.QuotaBuilds], Requested: 1, Hard: h}
			}
		}
		o, err := decode(r, cur.Value, cur.ModRevision)
		if err != nil {
			return err
		}
		start(o.(*api.Build))
		data, err := s.merge(r, cur.Value, o, UpdateOptions{Status: true})
		if err != nil {
			return err
		}
		var fenceRev int64
		if fk := rs[0].GetResponseRange().Kvs; len(fk) > 0 {
			fenceRev = fk[0].ModRevision
		}
		txn, err := s.commit(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(key), "=", cur.ModRevision),
			clientv3.Compare(clientv3.ModRevision(fence), "=", fenceRev),
			clientv3.Compare(clientv3.ModRevision(pk), "=", pol.rev),
		}, []clientv3.Op{clientv3.OpPut(key, string(data)), clientv3.OpPut(fence, "")}, nil)
		if err != nil {
			return wrapEtcd(err, r, name)
		}
		if txn.Succeeded {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// checkQuota is CheckCreate's look at the project's hard quotas: would a
// create of r named name be refused now? Create counts again.
func (s *Store) checkQuota(ctx context.Context, r *api.Resource, ns, name string) error {
	if !r.Namespaced || ns == "" || r == api.Pods {
		return nil
	}
	pol, err := s.policy(ctx, ns)
	if err != nil {
		return err
	}
	var names []string
	for _, q := range pol.quotas {
		for n := range q.Spec.Hard {
			if quotaDelta(n, r, nil) > 0 {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return nil
	}
	u := s.newUsageReader(ns, names)
	resp, err := s.client.Txn(ctx).Then(append([]clientv3.Op{clientv3.OpGet(s.Key(r, ns, name), clientv3.WithCountOnly())}, u.ops()...)...).Commit()
	if err != nil {
		return wrapEtcd(err, r, name)
	}
	if resp.Responses[0].GetResponseRange().Count > 0 {
		return nil
	}
	used, err := u.parse(resp.Responses[1:], "")
	if err != nil {
		return err
	}
	for _, q := range pol.quotas {
		for _, n := range sortedNames(q.Spec.Hard) {
			hard, _ := api.ParseQuota(n, q.Spec.Hard[n])
			if quotaDelta(n, r, nil) > 0 && used[n]+1 > hard {
				return &QuotaError{Project: ns, Quota: q.Name, Resource: n, Used: used[n], Requested: 1, Hard: hard}
			}
		}
	}
	return nil
}
