package api

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// ResourceQuota is a cluster admin's limit on what one project may hold,
// as Kubernetes' v1 ResourceQuota, with a soft level that only warns. It
// sits below the platform's own per-project object caps (the store's
// Limits), which no quota can raise. Writes of it need the verb on
// resourcequotas cluster-wide (a ClusterRoleBinding, as cluster-admin
// has): a project's admin reads the quota but cannot raise it.
type ResourceQuota struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ResourceQuotaSpec   `json:"spec"`
	Status     ResourceQuotaStatus `json:"status,omitempty"`
}

// ResourceQuotaSpec maps quota resource names (QuotaPods, ...,
// "count/KIND") to quantities: counts as integers, cpu as cores ("2",
// "500m"), memory as bytes with a suffix ("1Gi", "512Mi").
type ResourceQuotaSpec struct {
	// Hard refuses a create that would take usage above it.
	Hard map[string]string `json:"hard,omitempty"`
	// Soft lets the create through with a warning (the HTTP Warning
	// header, which the CLI prints) when usage goes above it.
	Soft map[string]string `json:"soft,omitempty"`
}

// ResourceQuotaStatus is written by the quota controller.
type ResourceQuotaStatus struct {
	Hard map[string]string `json:"hard,omitempty"`
	Soft map[string]string `json:"soft,omitempty"`
	Used map[string]string `json:"used,omitempty"`
}

// Quota resource names. Pods and compute count pods that have not
// finished (phase neither Succeeded nor Failed); builds counts builds
// running at once, and a build over it waits in Pending (reason
// WaitingForQuota) instead of being refused; count/RESOURCE counts every
// object of a kind ("count/secrets", "count/configmaps").
const (
	QuotaPods           = "pods"
	QuotaServices       = "services"
	QuotaImageStreams   = "imagestreams"
	QuotaBuilds         = "builds"
	QuotaRequestsCPU    = "requests.cpu"
	QuotaRequestsMemory = "requests.memory"
	QuotaLimitsCPU      = "limits.cpu"
	QuotaLimitsMemory   = "limits.memory"
	QuotaCountPrefix    = "count/"
	// QuotaRegistryBytes is the bytes of the distinct blobs (layers,
	// configs, manifests) the project's images reference, each counted
	// once per project; the registry enforces it at upload.
	QuotaRegistryBytes = "registry.bytes"
)

// QuotaCompute are the quota resources summed over pods' containers.
var QuotaCompute = []string{QuotaRequestsCPU, QuotaRequestsMemory, QuotaLimitsCPU, QuotaLimitsMemory}

// BuildWaitingForQuota is the reason of a Pending build held back by its
// project's builds quota.
const BuildWaitingForQuota = "WaitingForQuota"

// QuotaCountResource is the resource a count/ name counts ("count/svc" →
// services), or nil when name is not a count/ name of a known resource.
func QuotaCountResource(name string) *Resource {
	kind, ok := strings.CutPrefix(name, QuotaCountPrefix)
	if !ok {
		return nil
	}
	r, found := Lookup(kind)
	if !found || !r.Namespaced || r.Hidden {
		return nil
	}
	return r
}

// ParseQuota reads a quota quantity in its resource's unit: millicores for
// cpu, bytes for memory, a count otherwise.
func ParseQuota(name, value string) (int64, error) {
	q, err := resource.ParseQuantity(value)
	if err != nil {
		return 0, fmt.Errorf("%q is not a quantity (use 10, 500m, 2Gi): %v", value, err)
	}
	if q.Sign() < 0 {
		return 0, fmt.Errorf("%q must not be negative", value)
	}
	if strings.HasSuffix(name, ".cpu") {
		return q.MilliValue(), nil
	}
	if strings.HasSuffix(name, ".memory") || name == QuotaRegistryBytes {
		return q.Value(), nil
	}
	if q.MilliValue()%1000 != 0 {
		return 0, fmt.Errorf("%q must be a whole number", value)
	}
	return q.Value(), nil
}

// FormatQuota writes v, in name's unit, as a quantity ParseQuota reads.
func FormatQuota(name string, v int64) string {
	switch {
	case strings.HasSuffix(name, ".cpu"):
		if v%1000 == 0 {
			return strconv.FormatInt(v/1000, 10)
		}
		return strconv.FormatInt(v, 10) + "m"
	case strings.HasSuffix(name, ".memory"), name == QuotaRegistryBytes:
		return resource.NewQuantity(v, resource.BinarySI).String()
	}
	return strconv.FormatInt(v, 10)
}

func validQuotaName(name string) bool {
	switch name {
	case QuotaPods, QuotaServices, QuotaImageStreams, QuotaBuilds,
		QuotaRequestsCPU, QuotaRequestsMemory, QuotaLimitsCPU, QuotaLimitsMemory, QuotaRegistryBytes:
		return true
	}
	return QuotaCountResource(name) != nil
}

// QuotaNames lists the names in a quota's hard and soft maps, sorted.
func (q *ResourceQuota) QuotaNames() []string {
	seen := map[string]bool{}
	for k := range q.Spec.Hard {
		seen[k] = true
	}
	for k := range q.Spec.Soft {
		seen[k] = true
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// LimitRange sets, per container, the requests and limits a pod gets when
// it names none, and the most it may ask for. Admission (every writer of
// pods, API and controllers alike) fills the defaults and refuses a
// container over a max, naming the limit range. Writes need the verb
// cluster-wide, as for ResourceQuota. Units are the pod's: cpu in
// millicores, memory in bytes.
type LimitRange struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       LimitRangeSpec `json:"spec"`
}

// LimitRangeSpec holds the limits, one item per type.
type LimitRangeSpec struct {
	Limits []LimitRangeItem `json:"limits"`
}

// LimitRangeItem applies to every container of a pod (Type "Container",
// the only type).
type LimitRangeItem struct {
	Type string `json:"type"`
	// Default is the limits a container without them gets.
	Default ResourceList `json:"default,omitempty"`
	// DefaultRequest is the requests a container without them gets;
	// when unset, a container's limits (given or defaulted) are its
	// requests, as in Kubernetes.
	DefaultRequest ResourceList `json:"defaultRequest,omitempty"`
	// Max bounds a container's requests and limits.
	Max ResourceList `json:"max,omitempty"`
}

// LimitRangeContainer is the only LimitRangeItem type.
const LimitRangeContainer = "Container"

// The quota resources.
var (
	ResourceQuotas = Register(&Resource{
		Name: "resourcequotas", Kind: "ResourceQuota", ShortNames: []string{"quota"}, Namespaced: true, HasStatus: true,
		New: func() Object { return &ResourceQuota{} },
		Validate: func(o Object) FieldErrors {
			q := o.(*ResourceQuota)
			var errs FieldErrors
			if len(q.Spec.Hard) == 0 && len(q.Spec.Soft) == 0 {
				errs.Add("spec.hard", FieldValueRequired, "a quota needs spec.hard or spec.soft, such as {pods: \"10\"}")
			}
			for _, part := range []struct {
				field string
				m     map[string]string
			}{{"spec.hard", q.Spec.Hard}, {"spec.soft", q.Spec.Soft}} {
				for _, k := range sortedKeys(part.m) {
					if !validQuotaName(k) {
						errs.Add(part.field+"."+k, FieldValueInvalid, "%q is not a quota resource: use pods, services, imagestreams, builds, requests.cpu, requests.memory, limits.cpu, limits.memory, registry.bytes or count/RESOURCE (a namespaced resource of `slipway api-resources`)", k)
						continue
					}
					if _, err := ParseQuota(k, part.m[k]); err != nil {
						errs.Add(part.field+"."+k, FieldValueInvalid, "%v", err)
					}
				}
			}
			for k, sv := range q.Spec.Soft {
				hv, ok := q.Spec.Hard[k]
				if !ok {
					continue
				}
				s, err1 := ParseQuota(k, sv)
				h, err2 := ParseQuota(k, hv)
				if err1 == nil && err2 == nil && s > h {
					errs.Add("spec.soft."+k, FieldValueInvalid, "soft %s is above hard %s: a soft limit warns before the hard one refuses", sv, hv)
				}
			}
			return errs
		},
		Columns: []Column{
			{Header: "HARD", Path: "spec.hard"},
			{Header: "USED", Path: "status.used"},
		},
	})
	LimitRanges = Register(&Resource{
		Name: "limitranges", Kind: "LimitRange", ShortNames: []string{"limits"}, Namespaced: true,
		New: func() Object { return &LimitRange{} },
		Validate: func(o Object) FieldErrors {
			lr := o.(*LimitRange)
			var errs FieldErrors
			if len(lr.Spec.Limits) == 0 {
				errs.Add("spec.limits", FieldValueRequired, "a limit range needs at least one item, such as {type: Container, max: {cpu: 1000}}")
			}
			for i, it := range lr.Spec.Limits {
				if it.Type != LimitRangeContainer {
					errs.Add(fieldIndex("spec.limits", i, "type"), FieldValueInvalid, "type %q is not supported: use Container", it.Type)
				}
				for _, l := range []ResourceList{it.Default, it.DefaultRequest, it.Max} {
					if l.MilliCPU < 0 || l.Memory < 0 || l.Pods != 0 {
						errs.Add(fieldIndex("spec.limits", i, ""), FieldValueInvalid, "quantities are cpu (millicores) and memory (bytes), not negative")
						break
					}
				}
				over := func(what string, v, m int64) {
					if m > 0 && v > m {
						errs.Add(fieldIndex("spec.limits", i, what), FieldValueInvalid, "%s %d is above max %d", what, v, m)
					}
				}
				over("default.cpu", it.Default.MilliCPU, it.Max.MilliCPU)
				over("default.memory", it.Default.Memory, it.Max.Memory)
				over("defaultRequest.cpu", it.DefaultRequest.MilliCPU, it.Max.MilliCPU)
				over("defaultRequest.memory", it.DefaultRequest.Memory, it.Max.Memory)
			}
			return errs
		},
	})
)

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
