package builders

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestDropCaps: run, create and exec lose CAP_NET_RAW from every set and
// keep everything else of the spec, fields this code does not know and
// large numbers included; other commands touch nothing.
func TestDropCaps(t *testing.T) {
	const spec = `{"ociVersion":"1.2.0","process":{"args":["sh"],"user":{"uid":4294967294,"gid":0},
"capabilities":{"bounding":["CAP_CHOWN","CAP_NET_RAW","CAP_KILL"],"effective":["CAP_NET_RAW"],"permitted":["CAP_CHOWN","CAP_NET_RAW"]}},
"linux":{"futureField":{"x":1}}}`
	const process = `{"args":["sh"],"capabilities":{"bounding":["CAP_NET_RAW","CAP_CHOWN"],"effective":["CAP_CHOWN","CAP_NET_RAW"]}}`
	for _, tc := range []struct {
		name    string
		file    string
		args    func(dir string) []string
		content string
		dropped bool
	}{
		{"run", "config.json", func(dir string) []string {
			return []string{"--root", "/run/x", "--log", "/tmp/log.json", "--log-format", "json", "run", "--bundle", dir, "--pid-file", "p", "id"}
		}, spec, true},
		{"create", "config.json", func(dir string) []string { return []string{"create", "--bundle=" + dir, "id"} }, spec, true},
		{"exec", "process.json", func(dir string) []string {
			return []string{"--log", "l", "exec", "--process", filepath.Join(dir, "process.json"), "--detach", "id"}
		}, process, true},
		{"delete", "config.json", func(dir string) []string { return []string{"delete", "--force", "id"} }, spec, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, tc.file)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := dropCaps(tc.args(dir)); err != nil {
				t.Fatalf("dropCaps: %v", err)
			}
			data, _ := os.ReadFile(path)
			if got := strings.Contains(string(data), "CAP_NET_RAW"); got == tc.dropped {
				t.Errorf("after %s the file still has CAP_NET_RAW: %v, want %v\n%s", tc.name, got, !tc.dropped, data)
			}
			if !strings.Contains(string(data), "CAP_CHOWN") {
				t.Errorf("CAP_CHOWN went too: %s", data)
			}
			if tc.file == "config.json" && (!strings.Contains(string(data), `"futureField":{"x":1}`) || !strings.Contains(string(data), "4294967294")) {
				t.Errorf("the spec lost a field or a number's precision: %s", data)
			}
			if tc.file == "config.json" && tc.dropped {
				var s struct {
					Process struct{ Capabilities map[string][]string }
				}
				if err := json.Unmarshal(data, &s); err != nil {
					t.Fatal(err)
				}
				if got := s.Process.Capabilities["bounding"]; !slices.Equal(got, []string{"CAP_CHOWN", "CAP_KILL"}) {
					t.Errorf("bounding = %v, want [CAP_CHOWN CAP_KILL]", got)
				}
			}
		})
	}
}
