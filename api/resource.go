package api

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Resource describes one kind of object to the store, the REST handler, RBAC
// and the CLI.
type Resource struct {
	Name       string   // plural, lower case, as in URLs and RBAC rules: "projects"
	Kind       string   // "Project"
	ShortNames []string // CLI aliases: "proj"
	Namespaced bool     // lives inside a project
	// HasStatus splits writes: the main resource ignores status, and the
	// "status" subresource changes only status.
	HasStatus bool
	// Hidden resources are not served by the generic REST handler; only
	// their owning package writes them (tokens, for example).
	Hidden bool
	// New returns an empty object of this kind.
	New func() Object
	// Validate checks an object before it is written. Name and namespace
	// are already checked. May be nil.
	Validate func(Object) FieldErrors
	// ValidateName overrides the default DNS-label rule for names.
	ValidateName func(string) []string
	// Columns are extra columns for `slipway get`, as JSON paths.
	Columns []Column
}

// Column is one column of `slipway get` output.
type Column struct {
	Header string
	Path   string // dotted JSON path, such as "status.phase"
	Wide   bool   // only in -o wide
}

var (
	mu        sync.RWMutex
	byName    = map[string]*Resource{}
	byKind    = map[string]*Resource{}
	resources []*Resource
)

// Register adds a resource to the registry. It panics on a duplicate, which
// is a programming error.
func Register(r *Resource) *Resource {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := byName[r.Name]; dup {
		panic("api: resource registered twice: " + r.Name)
	}
	byName[r.Name] = r
	byKind[strings.ToLower(r.Kind)] = r
	resources = append(resources, r)
	sort.Slice(resources, func(i, j int) bool { return resources[i].Name < resources[j].Name })
	return r
}

// Lookup finds a resource by plural name, kind or short name, in any case.
func Lookup(name string) (*Resource, bool) {
	mu.RLock()
	defer mu.RUnlock()
	n := strings.ToLower(name)
	if r, ok := byName[n]; ok {
		return r, true
	}
	if r, ok := byKind[n]; ok {
		return r, true
	}
	for _, r := range resources {
		for _, s := range r.ShortNames {
			if s == n {
				return r, true
			}
		}
	}
	return nil, false
}

// ForKind finds a resource by its kind.
func ForKind(kind string) (*Resource, bool) {
	mu.RLock()
	defer mu.RUnlock()
	r, ok := byKind[strings.ToLower(kind)]
	return r, ok
}

// Resources lists every registered resource, sorted by name.
func Resources() []*Resource {
	mu.RLock()
	defer mu.RUnlock()
	return append([]*Resource(nil), resources...)
}

// NewObject returns an empty object with its TypeMeta filled in.
func (r *Resource) NewObject() Object {
	o := r.New()
	*o.GetTypeMeta() = TypeMeta{APIVersion: APIVersion, Kind: r.Kind}
	return o
}

// ValidateObject checks an object's metadata and then its own rules.
func (r *Resource) ValidateObject(o Object) error {
	var errs FieldErrors
	m := o.GetObjectMeta()
	if t := o.GetTypeMeta(); t.Kind != "" && t.Kind != r.Kind {
		errs.Add("kind", FieldValueInvalid, "kind %q does not match resource %q, which holds %s", t.Kind, r.Name, r.Kind)
	}
	if t := o.GetTypeMeta(); t.APIVersion != "" && t.APIVersion != APIVersion {
		errs.Add("apiVersion", FieldValueInvalid, "apiVersion %q is not served; use %q", t.APIVersion, APIVersion)
	}
	validName := r.ValidateName
	if validName == nil {
		validName = validation.IsDNS1123Label
	}
	if m.Name == "" {
		errs.Add("metadata.name", FieldValueRequired, "a name is required")
	} else if msgs := validName(m.Name); len(msgs) > 0 {
		errs.Add("metadata.name", FieldValueInvalid, "%q is not a valid name: %s", truncate(m.Name), strings.Join(msgs, "; "))
	}
	if r.Namespaced {
		if m.Namespace == "" {
			errs.Add("metadata.namespace", FieldValueRequired, "a project is required")
		} else if msgs := validation.IsDNS1123Label(m.Namespace); len(msgs) > 0 {
			errs.Add("metadata.namespace", FieldValueInvalid, "%q is not a valid project name: %s", truncate(m.Namespace), strings.Join(msgs, "; "))
		}
	} else if m.Namespace != "" {
		errs.Add("metadata.namespace", FieldValueForbidden, "%s is not namespaced; remove metadata.namespace", r.Kind)
	}
	for k, v := range m.Labels {
		for _, msg := range validation.IsQualifiedName(k) {
			errs.Add("metadata.labels", FieldValueInvalid, "label key %q: %s", truncate(k), msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs.Add("metadata.labels", FieldValueInvalid, "label %q value %q: %s", truncate(k), truncate(v), msg)
		}
	}
	for k := range m.Annotations {
		for _, msg := range validation.IsQualifiedName(k) {
			errs.Add("metadata.annotations", FieldValueInvalid, "annotation key %q: %s", truncate(k), msg)
		}
	}
	if len(errs) == 0 && r.Validate != nil {
		errs = append(errs, r.Validate(o)...)
	}
	return errs.Invalid(r.Kind, truncate(m.Name))
}

func truncate(s string) string {
	if len(s) > 70 {
		return s[:70] + "…"
	}
	return s
}

var userName = regexp.MustCompile(`^[a-z0-9]([a-z0-9._@-]*[a-z0-9])?$`)

// ValidateUserName accepts lower-case names that may contain dots, dashes,
// underscores and an @, up to 63 characters, so e-mail-like names from an
// htpasswd file work but nothing path-like does.
func ValidateUserName(name string) []string {
	if len(name) > 63 {
		return []string{fmt.Sprintf("must be no more than 63 characters, not %d", len(name))}
	}
	if !userName.MatchString(name) || strings.Contains(name, "..") {
		return []string{"must be lower-case letters, digits, '.', '-', '_' or '@', and start and end with a letter or digit"}
	}
	return nil
}
