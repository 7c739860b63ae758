package api

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Containers contain (issue 14): every pod runs restricted unless an admin
// granted its service account the privileged exception. Restricted is a
// UID from its project's range (never 0), no capabilities, no new
// privileges, the engine's default seccomp profile, and nothing of the
// node's: no host network, PID or IPC namespace, no host path.

// PodSecurityContext holds what applies to every container of a pod; a
// container's own SecurityContext wins field by field.
type PodSecurityContext struct {
	RunAsUser    *int64 `json:"runAsUser,omitempty"`
	RunAsGroup   *int64 `json:"runAsGroup,omitempty"`
	RunAsNonRoot *bool  `json:"runAsNonRoot,omitempty"`
}

// SecurityContext is how one container runs.
type SecurityContext struct {
	RunAsUser                *int64        `json:"runAsUser,omitempty"`
	RunAsGroup               *int64        `json:"runAsGroup,omitempty"`
	RunAsNonRoot             *bool         `json:"runAsNonRoot,omitempty"`
	Privileged               *bool         `json:"privileged,omitempty"`
	AllowPrivilegeEscalation *bool         `json:"allowPrivilegeEscalation,omitempty"`
	Capabilities             *Capabilities `json:"capabilities,omitempty"`
}

// Capabilities adds or drops Linux capabilities ("NET_ADMIN", "ALL").
// Restricted pods run with all dropped whatever Drop says.
type Capabilities struct {
	Add  []string `json:"add,omitempty"`
	Drop []string `json:"drop,omitempty"`
}

// HostPathVolumeSource mounts a directory of the node. No pod may have
// one: the field exists so that a manifest asking for it is refused with
// a reason rather than as an unknown field.
type HostPathVolumeSource struct {
	Path string `json:"path"`
}

// FieldValueNotSupported marks what RestrictPodSpec refuses even to a
// privileged pod: the node's network and IPC namespaces, host paths.
const FieldValueNotSupported = "FieldValueNotSupported"

// UIDRangeAnnotation on a Project is its range of UIDs, "FIRST/SIZE" as
// in OpenShift's openshift.io/sa.scc.uid-range. The API server allocates
// it when the project is made, unique across projects, and keeps it: no
// one edits it through the API. Restricted pods run as a UID from it.
const UIDRangeAnnotation = "slipway.dev/uid-range"

// PodSecurityAnnotation on a pod, or on a pod template, is the policy the
// API server admitted it under: PodSecurityPrivileged for a pod whose
// service account holds the privileged exception and that asks for more
// than restricted; absent (or anything else) means restricted. Only the
// API server's admission sets it; a value a writer gives is replaced. The
// node runs anything without it restricted.
const PodSecurityAnnotation = "slipway.dev/pod-security"

// PodSecurityPrivileged is the value of PodSecurityAnnotation for an
// admitted privileged pod.
const PodSecurityPrivileged = "privileged"

// UID ranges: blocks of UIDRangeSize from UIDRangeBase, as OpenShift's
// default 1000000000-1999999999/10000.
const (
	UIDRangeBase  int64 = 1000000000
	UIDRangeSize  int64 = 10000
	UIDRangeCount int64 = 100000
)

// UIDRange is a project's UIDs: First to First+Size-1.
type UIDRange struct {
	First, Size int64
}

func (r UIDRange) String() string { return fmt.Sprintf("%d/%d", r.First, r.Size) }

// Contains reports whether uid is in the range.
func (r UIDRange) Contains(uid int64) bool { return uid >= r.First && uid < r.First+r.Size }

// UIDRangeBlock is the range of allocation block n.
func UIDRangeBlock(n int64) UIDRange {
	return UIDRange{First: UIDRangeBase + n*UIDRangeSize, Size: UIDRangeSize}
}

// ParseUIDRange reads "FIRST/SIZE".
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "/")
	first, err1 := strconv.ParseInt(a, 10, 64)
	size, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || first <= 0 || size <= 0 || first+size > 1<<31 {
		return UIDRange{}, fmt.Errorf("UID range %q is not FIRST/SIZE within 1-2147483647", s)
	}
	return UIDRange{First: first, Size: size}, nil
}

// ProjectUIDRange is a project's range from its annotation.
func ProjectUIDRange(p *Project) (UIDRange, error) {
	v, ok := p.Annotations[UIDRangeAnnotation]
	if !ok {
		return UIDRange{}, fmt.Errorf("project %s has no UID range (%s); it was made before pods ran restricted: a cluster admin restarts the API server, which assigns one", p.Name, UIDRangeAnnotation)
	}
	r, err := ParseUIDRange(v)
	if err != nil {
		return UIDRange{}, fmt.Errorf("project %s: %w", p.Name, err)
	}
	return r, nil
}

// UIDRangeReservation records that a block of UIDs is a project's; its
// name is the block's first UID, so two projects cannot take the same
// block (the second create fails). Written only by the API server.
type UIDRangeReservation struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Project    string `json:"project"`
}

// UIDRangeReservations are hidden: the API never serves them.
var UIDRangeReservations = Register(&Resource{
	Name: "uidrangereservations", Kind: "UIDRangeReservation", Hidden: true,
	New: func() Object { return &UIDRangeReservation{} },
	ValidateName: func(s string) []string {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return []string{"must be a number"}
		}
		return nil
	},
})

// PrivilegeGrant is how an admin grants the exception, for error
// messages.
const PrivilegeGrant = "a cluster admin grants a service account the exception with a ClusterRoleBinding of the ClusterRole " + PrivilegedPodsRole + " to it (slipway adm policy add-scc-to-user privileged -z SA -n PROJECT), and the pod names that account in spec.serviceAccountName"

// PrivilegedPodsRole is the ClusterRole whose cluster-wide binding lets a
// service account's pods run privileged. A RoleBinding in a project does
// not count, so a project's admin cannot grant it.
const PrivilegedPodsRole = "privileged-pods"

// RestrictPodSpec checks spec (a pod's, or a template's at path) against
// the restricted policy for a project with range r, and with setDefaults
// fills spec.securityContext.runAsUser (and runAsGroup) with the range's
// first UID when no container sets its own. It returns what the pod asks
// for beyond restricted, one error per field; empty means it may run
// restricted.
func RestrictPodSpec(path string, spec *PodSpec, r UIDRange, setDefaults bool) FieldErrors {
	var errs FieldErrors
	beyond := func(field, format string, args ...any) {
		errs.Add(field, FieldValueForbidden, "%s; pods run restricted unless %s", fmt.Sprintf(format, args...), PrivilegeGrant)
	}
	if spec.HostNetwork {
		errs.Add(path+".hostNetwork", FieldValueNotSupported, "pods never share the node's network namespace, privileged or not; reach them through a Service")
	}
	if spec.HostPID {
		beyond(path+".hostPID", "the node's PID namespace is not for a project's pods")
	}
	if spec.HostIPC {
		errs.Add(path+".hostIPC", FieldValueNotSupported, "pods never share the node's IPC namespace, privileged or not")
	}
	for i, v := range spec.Volumes {
		if v.HostPath != nil {
			errs.Add(fieldIndex(path+".volumes", i, "hostPath"), FieldValueNotSupported, "host paths are never mounted into pods, privileged or not; use emptyDir, or a persistent volume for data that outlives the pod")
		}
	}
	checkID := func(field string, id *int64) {
		switch {
		case id == nil:
		case *id == 0:
			beyond(field, "UID/GID 0 is root")
		case !r.Contains(*id):
			beyond(field, "%d is outside the project's range %s (%s)", *id, r, UIDRangeAnnotation)
		}
	}
	psc := spec.SecurityContext
	if psc != nil {
		checkID(path+".securityContext.runAsUser", psc.RunAsUser)
		checkID(path+".securityContext.runAsGroup", psc.RunAsGroup)
	}
	allSet := len(spec.Containers) > 0
	for i := range spec.Containers {
		sc := spec.Containers[i].SecurityContext
		if sc == nil || sc.RunAsUser == nil {
			allSet = false
		}
		if sc == nil {
			continue
		}
		cp := fieldIndex(path+".containers", i, "securityContext.")
		checkID(cp+"runAsUser", sc.RunAsUser)
		checkID(cp+"runAsGroup", sc.RunAsGroup)
		if sc.Privileged != nil && *sc.Privileged {
			beyond(cp+"privileged", "a privileged container is root on the node")
		}
		if sc.AllowPrivilegeEscalation != nil && *sc.AllowPrivilegeEscalation {
			beyond(cp+"allowPrivilegeEscalation", "setuid programs would gain privileges")
		}
		if sc.Capabilities != nil && len(sc.Capabilities.Add) > 0 {
			beyond(cp+"capabilities.add", "restricted pods run with every capability dropped, so %v cannot be added", sc.Capabilities.Add)
		}
	}
	if setDefaults && len(errs) == 0 && !allSet {
		if spec.SecurityContext == nil {
			spec.SecurityContext = &PodSecurityContext{}
		} else {
			cp := *spec.SecurityContext
			spec.SecurityContext = &cp
		}
		if spec.SecurityContext.RunAsUser == nil {
			uid := r.First
			spec.SecurityContext.RunAsUser = &uid
		}
	}
	return errs
}

// EffectiveUser is the UID and GID a container runs as: its own, else the
// pod's; the GID defaults to the UID. ok is false when neither sets a UID
// (the image's user).
func EffectiveUser(spec *PodSpec, c *Container) (uid, gid int64, ok bool) {
	var u, g *int64
	if p := spec.SecurityContext; p != nil {
		u, g = p.RunAsUser, p.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			u = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			g = sc.RunAsGroup
		}
	}
	if u == nil {
		return 0, 0, false
	}
	if g == nil {
		g = u
	}
	return *u, *g, true
}

// validateSecurity checks the shape of a pod spec's security fields.
func validateSecurity(path string, s *PodSpec) FieldErrors {
	var errs FieldErrors
	neg := func(field string, id *int64) {
		if id != nil && (*id < 0 || *id > 1<<31-1) {
			errs.Add(field, FieldValueInvalid, "must be 0-2147483647")
		}
	}
	if s.ServiceAccountName != "" {
		if msgs := validation.IsDNS1123Label(s.ServiceAccountName); len(msgs) > 0 {
			errs.Add(path+".serviceAccountName", FieldValueInvalid, "%s", msgs[0])
		}
	}
	nonRoot := func(field string, want *bool, uid *int64) {
		if want != nil && *want && uid != nil && *uid == 0 {
			errs.Add(field, FieldValueInvalid, "runAsNonRoot is set and runAsUser is 0")
		}
	}
	if p := s.SecurityContext; p != nil {
		neg(path+".securityContext.runAsUser", p.RunAsUser)
		neg(path+".securityContext.runAsGroup", p.RunAsGroup)
		nonRoot(path+".securityContext.runAsUser", p.RunAsNonRoot, p.RunAsUser)
	}
	for i, c := range s.Containers {
		sc := c.SecurityContext
		if sc == nil {
			continue
		}
		cp := fieldIndex(path+".containers", i, "securityContext.")
		neg(cp+"runAsUser", sc.RunAsUser)
		neg(cp+"runAsGroup", sc.RunAsGroup)
		uid, _, _ := EffectiveUser(s, &s.Containers[i])
		want := sc.RunAsNonRoot
		if want == nil && s.SecurityContext != nil {
			want = s.SecurityContext.RunAsNonRoot
		}
		if _, _, set := EffectiveUser(s, &s.Containers[i]); set {
			nonRoot(cp+"runAsUser", want, &uid)
		}
		if sc.Capabilities != nil {
			for j, c := range slicesConcat(sc.Capabilities.Add, sc.Capabilities.Drop) {
				if !validCapability(c) {
					errs.Add(fmt.Sprintf("%scapabilities[%d]", cp, j), FieldValueInvalid, "%q is not a capability name such as NET_BIND_SERVICE or ALL", c)
				}
			}
		}
	}
	return errs
}

func slicesConcat(a, b []string) []string { return append(append([]string(nil), a...), b...) }

func validCapability(c string) bool {
	c = strings.TrimPrefix(c, "CAP_")
	if c == "" || len(c) > 32 {
		return false
	}
	for _, r := range c {
		if !(r >= 'A' && r <= 'Z' || r == '_' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// RestrictPod is the check the controllers and the node make on a pod
// about to be created or run: unless it carries the privileged marker
// (PodSecurityAnnotation, set only by the API server's admission), it
// must fit the restricted policy of project, and gets runAsUser defaulted
// to the project's first UID. It returns the pod's fields beyond
// restricted as an error.
func RestrictPod(pod *Pod, project *Project) error {
	if pod.Annotations[PodSecurityAnnotation] == PodSecurityPrivileged {
		return nil
	}
	r, err := ProjectUIDRange(project)
	if err != nil {
		return err
	}
	if errs := RestrictPodSpec("spec", &pod.Spec, r, true); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = e.Field + ": " + e.Detail
		}
		return fmt.Errorf("pod %s/%s was not admitted as privileged and asks for more than restricted: %s", pod.Namespace, pod.Name, strings.Join(msgs, "; "))
	}
	return nil
}

// AssumesRoot reports whether an image config's User runs as root: none
// given, or user 0 / root with any group. Restricted pods run such an
// image as their project's UID instead.
func AssumesRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "" || u == "0" || u == "root"
}

// RootImageWarning is what a build says of an image whose config runs
// as root, or "" for one that does not.
func RootImageWarning(user string) string {
	if !AssumesRoot(user) {
		return ""
	}
	given := "sets no USER"
	if user != "" {
		given = fmt.Sprintf("sets USER %q", user)
	}
	return "the image runs as root (its config " + given + "), but pods run restricted, as a UID from the project's range: " +
		"what it writes outside a volume at run time fails unless the image makes those paths writable by any user " +
		"(as OpenShift images do: chgrp -R 0 DIR && chmod -R g=u DIR). Give it a non-root numeric USER, such as USER 1001, " +
		"or ask a cluster admin for the privileged exception (" + PrivilegedPodsRole + ")"
}
