package apiserver_test

import (
	"net/http"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
)

// TestQuotaAdmission: quotas and limit ranges are the cluster admin's to
// write, even in a project whose admin holds every verb; a soft limit
// answers a Warning header; a pod cannot grow after its create.
func TestQuotaAdmission(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	s := newSuite(t, env)
	s.setupTeam(t, "qa")
	alice, admin := s.as("alice"), s.as("admin")
	q := map[string]any{"metadata": map[string]any{"name": "compute"}, "spec": map[string]any{
		"hard": map[string]string{"pods": "2", "services": "2"}, "soft": map[string]string{"services": "1"}}}
	lr := map[string]any{"metadata": map[string]any{"name": "limits"}, "spec": map[string]any{
		"limits": []any{map[string]any{"type": "Container", "max": map[string]any{"cpu": 500}}}}}
	const denied = "ResourceQuotas in project qa are set by cluster admins"
	checkStatus(t, "alice (project admin) creates a quota", alice.post(t, nsPath("qa", "resourcequotas"), q), http.StatusForbidden, api.ReasonForbidden, denied)
	checkStatus(t, "alice creates a limit range", alice.post(t, nsPath("qa", "limitranges"), lr), http.StatusForbidden, api.ReasonForbidden, "LimitRanges in project qa are set by cluster admins")
	mustCode(t, "admin creates the quota", admin.post(t, nsPath("qa", "resourcequotas"), q), http.StatusCreated)
	mustCode(t, "admin creates the limit range", admin.post(t, nsPath("qa", "limitranges"), lr), http.StatusCreated)
	mustCode(t, "alice reads the quota", alice.get(t, nsPath("qa", "resourcequotas", "compute")), http.StatusOK)
	raised := map[string]any{"spec": map[string]any{"hard": map[string]string{"pods": "200"}}}
	checkStatus(t, "alice raises the quota", alice.patch(t, nsPath("qa", "resourcequotas", "compute"), raised), http.StatusForbidden, api.ReasonForbidden, denied)
	checkStatus(t, "alice deletes the quota", alice.del(t, nsPath("qa", "resourcequotas", "compute")), http.StatusForbidden, api.ReasonForbidden, denied)
	checkStatus(t, "carol (edit) deletes the quota", s.as("carol").del(t, nsPath("qa", "resourcequotas", "compute")), http.StatusForbidden, api.ReasonForbidden, denied)

	svc := func(n string) map[string]any {
		return map[string]any{"metadata": map[string]any{"name": n}, "spec": map[string]any{"selector": map[string]string{"a": "b"}, "ports": []any{map[string]any{"port": 80}}}}
	}
	r := alice.post(t, nsPath("qa", "services"), svc("one"))
	mustCode(t, "first service", r, http.StatusCreated)
	if w := r.Header.Get("Warning"); w != "" {
		t.Errorf("first service: Warning %q, want none", w)
	}
	r = alice.post(t, nsPath("qa", "services"), svc("two"))
	mustCode(t, "second service", r, http.StatusCreated)
	if w, want := r.Header.Get("Warning"), `299 - "over the soft limit of quota compute: services used 1, requested 1, soft 1"`; w != want {
		t.Errorf("second service: Warning %q, want %q", w, want)
	}
	checkStatus(t, "third service", alice.post(t, nsPath("qa", "services"), svc("three")), http.StatusForbidden, api.ReasonForbidden, "exceeded quota compute: services used 2, requested 1, hard 2")

	pod := func(n string, cpu int) map[string]any {
		return map[string]any{"metadata": map[string]any{"name": n}, "spec": map[string]any{"containers": []any{
			map[string]any{"name": "app", "image": "busybox", "resources": map[string]any{"limits": map[string]any{"cpu": cpu}}}}}}
	}
	checkStatus(t, "a pod over the limit range", alice.post(t, nsPath("qa", "pods"), pod("big", 900)), http.StatusForbidden, api.ReasonForbidden,
		`limit range limits: container "app" asks for limits.cpu 900m, above the max 500m`)
	mustCode(t, "a pod within it", alice.post(t, nsPath("qa", "pods"), pod("small", 100)), http.StatusCreated)
	grow := map[string]any{"spec": map[string]any{"containers": []any{
		map[string]any{"name": "app", "image": "busybox", "resources": map[string]any{"limits": map[string]any{"cpu": 900}}}}}}
	r = alice.patch(t, nsPath("qa", "pods", "small"), grow)
	if r.Code != http.StatusBadRequest || !strings.Contains(r.String(), "cannot change once it is made") {
		t.Errorf("growing a pod: %d %s, want 400 saying resources cannot change", r.Code, r)
	}
}
