package api

import (
	"strings"
	"testing"
)

// TestRestrictPodSpec: the restricted policy defaults the pod's UID to the
// range's first, keeps a UID in the range, and refuses, one field each,
// what a restricted pod may not ask for; host paths and the node's
// network and IPC namespaces are not supported at all.
func TestRestrictPodSpec(t *testing.T) {
	r := UIDRangeBlock(3)
	i64 := func(v int64) *int64 { return &v }
	yes := true
	spec := func() PodSpec { return PodSpec{Containers: []Container{{Name: "c", Image: "i"}}} }

	s := spec()
	if errs := RestrictPodSpec("spec", &s, r, true); len(errs) > 0 || s.SecurityContext == nil || *s.SecurityContext.RunAsUser != r.First {
		t.Errorf("plain pod: %v, securityContext %+v; want runAsUser %d defaulted", errs, s.SecurityContext, r.First)
	}
	s = spec()
	s.Containers[0].SecurityContext = &SecurityContext{RunAsUser: i64(r.First + 5)}
	if errs := RestrictPodSpec("spec", &s, r, true); len(errs) > 0 || s.SecurityContext != nil {
		t.Errorf("every container sets a UID in range: %v, %+v; want admitted as is", errs, s.SecurityContext)
	}
	for _, tc := range []struct {
		field, typ string
		change     func(*PodSpec)
	}{
		{"spec.securityContext.runAsUser", FieldValueForbidden, func(s *PodSpec) { s.SecurityContext = &PodSecurityContext{RunAsUser: i64(0)} }},
		{"spec.securityContext.runAsGroup", FieldValueForbidden, func(s *PodSpec) { s.SecurityContext = &PodSecurityContext{RunAsGroup: i64(0)} }},
		{"spec.containers[0].securityContext.runAsUser", FieldValueForbidden, func(s *PodSpec) {
			s.Containers[0].SecurityContext = &SecurityContext{RunAsUser: i64(r.First - 1)}
		}},
		{"spec.containers[0].securityContext.privileged", FieldValueForbidden, func(s *PodSpec) { s.Containers[0].SecurityContext = &SecurityContext{Privileged: &yes} }},
		{"spec.containers[0].securityContext.allowPrivilegeEscalation", FieldValueForbidden, func(s *PodSpec) {
			s.Containers[0].SecurityContext = &SecurityContext{AllowPrivilegeEscalation: &yes}
		}},
		{"spec.containers[0].securityContext.capabilities.add", FieldValueForbidden, func(s *PodSpec) {
			s.Containers[0].SecurityContext = &SecurityContext{Capabilities: &Capabilities{Add: []string{"CHOWN"}}}
		}},
		{"spec.hostPID", FieldValueForbidden, func(s *PodSpec) { s.HostPID = true }},
		{"spec.hostNetwork", FieldValueNotSupported, func(s *PodSpec) { s.HostNetwork = true }},
		{"spec.hostIPC", FieldValueNotSupported, func(s *PodSpec) { s.HostIPC = true }},
		{"spec.volumes[0].hostPath", FieldValueNotSupported, func(s *PodSpec) { s.Volumes = []Volume{{Name: "h", HostPath: &HostPathVolumeSource{Path: "/"}}} }},
	} {
		s := spec()
		tc.change(&s)
		errs := RestrictPodSpec("spec", &s, r, true)
		if len(errs) != 1 || errs[0].Field != tc.field || errs[0].Type != tc.typ {
			t.Errorf("%s: errors %+v; want one %s on it", tc.field, errs, tc.typ)
			continue
		}
		if tc.typ == FieldValueForbidden && !strings.Contains(errs[0].Detail, "add-scc-to-user privileged") {
			t.Errorf("%s: %q does not say how an admin grants the exception", tc.field, errs[0].Detail)
		}
	}
}

func TestParseUIDRange(t *testing.T) {
	if r, err := ParseUIDRange("1000010000/10000"); err != nil || r != UIDRangeBlock(1) {
		t.Errorf("ParseUIDRange = %v, %v; want block 1", r, err)
	}
	for _, bad := range []string{"", "5", "0/10", "10/0", "-1/5", "2147483000/10000", "a/b"} {
		if _, err := ParseUIDRange(bad); err == nil {
			t.Errorf("ParseUIDRange(%q) succeeded; want an error", bad)
		}
	}
}

func TestAssumesRoot(t *testing.T) {
	for user, want := range map[string]bool{"": true, "0": true, "root": true, "0:0": true, "root:wheel": true, "1001": false, "1001:0": false, "app": false} {
		if got := AssumesRoot(user); got != want {
			t.Errorf("AssumesRoot(%q) = %v, want %v", user, got, want)
		}
		if w := RootImageWarning(user); (w != "") != want {
			t.Errorf("RootImageWarning(%q) = %q, want a warning: %v", user, w, want)
		}
	}
}
