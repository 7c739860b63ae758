package api

import (
	"strings"
	"testing"
)

// registry.bytes is a quota resource in bytes, with a suffix as memory.
func TestRegistryBytesQuotaName(t *testing.T) {
	q := &ResourceQuota{ObjectMeta: ObjectMeta{Name: "registry", Namespace: "p"},
		Spec: ResourceQuotaSpec{Hard: map[string]string{QuotaRegistryBytes: "50Mi"}, Soft: map[string]string{QuotaRegistryBytes: "40Mi"}}}
	if errs := ResourceQuotas.Validate(q); len(errs) > 0 {
		t.Fatalf("registry.bytes 50Mi: %v", errs)
	}
	if v, err := ParseQuota(QuotaRegistryBytes, "50Mi"); err != nil || v != 50<<20 {
		t.Errorf("ParseQuota(registry.bytes, 50Mi) = %d, %v; want %d", v, err, 50<<20)
	}
	if got := FormatQuota(QuotaRegistryBytes, 3<<20); got != "3Mi" {
		t.Errorf("FormatQuota(registry.bytes, 3Mi) = %q", got)
	}
	q.Spec.Soft[QuotaRegistryBytes] = "60Mi"
	if errs := ResourceQuotas.Validate(q); len(errs) == 0 || !strings.Contains(errs[0].Detail, "above hard") {
		t.Errorf("soft above hard: %v, want refused", errs)
	}
}
