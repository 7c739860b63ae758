package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server"
)

// TestAuditSurvivesGracefulShutdown: audit lines are buffered, and a
// graceful stop writes every one of them: each create answered before the
// stop has its line in audit.log as soon as Close returns, with no wait.
func TestAuditSurvivesGracefulShutdown(t *testing.T) {
	dir := t.TempDir()
	srv, err := server.Start(context.Background(), server.Config{DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", Out: io.Discard})
	if err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	closed := false
	defer func() {
		if !closed {
			srv.Close()
		}
	}()
	admin, err := srv.AdminClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "audited"}}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- admin.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("sa-%d", i), Namespace: "audited"}})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	srv.Close()
	closed = true

	f, err := os.Open(filepath.Join(dir, "data", "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l struct {
			Verb, Resource, Namespace, Name, Result string
			Code                                    int
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q is not JSON: %v", sc.Text(), err)
		}
		if l.Verb == "create" && l.Resource == "serviceaccounts" && l.Namespace == "audited" && l.Code == 201 && l.Result == "allowed" {
			seen[l.Name] = true
		}
	}
	var missing []string
	for i := range n {
		if name := fmt.Sprintf("sa-%d", i); !seen[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("after a graceful stop, audit.log has no line for %d of %d answered creates: %v", len(missing), n, missing)
	}
}
