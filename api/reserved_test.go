package api

import (
	"strings"
	"testing"
)

func TestCheckProjectName(t *testing.T) {
	for _, tc := range []struct {
		row   string
		name  string
		admin bool
		want  string // "" allowed
	}{
		{"M1 a user cannot create the vulndb project", "vulndb", false, "project vulndb is the platform's"},
		{"M1 a cluster admin can", "vulndb", true, ""},
		{"reserved prefix slipway-", "slipway-system", false, "reserved for the platform"},
		{"reserved prefix kube-", "kube-system", false, "reserved for the platform"},
		{"other names are free", "vulndb2", false, ""},
		{"other names are free", "my-slipway-app", false, ""},
	} {
		t.Run(tc.row, func(t *testing.T) {
			err := CheckProjectName(tc.name, tc.admin)
			if tc.want == "" {
				if err != nil {
					t.Errorf("CheckProjectName(%q, %v) = %v, want nil", tc.name, tc.admin, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !IsReason(err, ReasonForbidden) {
				t.Errorf("CheckProjectName(%q, %v) = %v, want Forbidden saying %q", tc.name, tc.admin, err, tc.want)
			}
		})
	}
}
