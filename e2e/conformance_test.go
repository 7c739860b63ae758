package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var conformanceFails = regexp.MustCompile(`(?m)^\s*FAIL\.+:\s*(\d+)\s*$`)

// TestConformance runs the OCI distribution-spec conformance suite (a tool
// dependency in go.mod) against a fresh Slipway through
// hack/conformance.sh, as a service account with edit in two projects.
func TestConformance(t *testing.T) { runConformance(t) }

// TestConformanceS3 runs the suite against a Slipway whose registry keeps
// its storage in a real S3 server (SeaweedFS) through distribution's s3
// driver.
func TestConformanceS3(t *testing.T) {
	s := startS3(t)
	runConformance(t, "--registry-storage", s.storageFile(t, s3Root))
}

func runConformance(t *testing.T, extra ...string) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "conformance")
	build := exec.Command("go", "build", "-o", conf, "github.com/opencontainers/distribution-spec/conformance")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the conformance suite: %v\n%s", err, out)
	}

	p := startServer(t, t.TempDir(), freePort(t), extra...)
	logIfDied(t, p)
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", p.url(), "-u", "admin", "-p", p.adminPassword(t), "--certificate-authority", p.caFile())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	results := t.TempDir()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "conformance.sh"), conf, results)
	cmd.Dir = root
	cmd.Env = append(os.Environ(),
		"SLIPWAY_CONFIG="+c.config,
		"PATH="+filepath.Dir(binary(t))+string(os.PathListSeparator)+os.Getenv("PATH"),
		"REGISTRY="+p.registry,
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()

	m := conformanceFails.FindStringSubmatch(out.String())
	if runErr == nil && m != nil && m[1] == "0" {
		return
	}
	t.Errorf("hack/conformance.sh: %v; FAIL count line: %q (want FAIL....: 0)", runErr, m)
	if failed := failedConformanceTests(out.String()); failed != "" {
		t.Errorf("failed tests:\n%s", failed)
	} else {
		t.Errorf("output:\n%s", out.String())
	}
}

// failedConformanceTests picks the failing tests out of the suite's output,
// with the detail lines (" - ...") that follow each.
func failedConformanceTests(out string) string {
	var b strings.Builder
	inFailure := false
	for _, line := range strings.Split(out, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasSuffix(trimmed, ": FAIL") || strings.Contains(strings.ToLower(trimmed), "failed test"):
			inFailure = true
			b.WriteString(line + "\n")
		case inFailure && strings.HasPrefix(trimmed, "- "):
			b.WriteString(line + "\n")
		default:
			inFailure = false
		}
	}
	return b.String()
}
