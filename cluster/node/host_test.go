package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostWarnings(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    string // a part of the one warning; "" for none
	}{
		{"0\n", "sysctl -w net.ipv4.ip_forward=1"},
		{"1\n", ""},
	} {
		f := filepath.Join(dir, "ip_forward")
		if err := os.WriteFile(f, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got := hostWarnings(f)
		if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)) {
			t.Errorf("hostWarnings(ip_forward=%q) = %q, want a warning containing %q", tc.content, got, tc.want)
		}
	}
	if got := hostWarnings(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("hostWarnings(no such file) = %q, want none (not Linux, or no /proc)", got)
	}
}
