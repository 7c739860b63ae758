package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// nodeJoinArgs are the arguments of `slipway node` that join node name to
// c through its API only: its URL and CA, and a fresh one-use bootstrap
// token for name in a file.
func nodeJoinArgs(t *testing.T, c *cluster, name string) []string {
	t.Helper()
	tr, err := c.admin.CreateBootstrapToken(context.Background(), name, 10*time.Minute)
	if err != nil {
		t.Fatalf("bootstrap token for %s: %v", name, err)
	}
	f := filepath.Join(t.TempDir(), name+".token")
	if err := os.WriteFile(f, []byte(tr.Status.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"node", "--server", c.p.url(), "--certificate-authority", c.p.caFile(), "--bootstrap-token-file", f}
}

// syncWriter is a buffer a process writes to while a test reads it.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

func (s *syncWriter) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Len()
}
