package apiserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server"
	"slipway.dev/slipway/server/servertest"
	"slipway.dev/slipway/store/etcd"
)

// TestAPI runs the API suite against an all-in-one server with embedded
// etcd.
func TestAPI(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	runSuite(t, env)
}

// TestAPIExternalEtcdCluster runs the same suite against a server whose
// store is an external three-member etcd cluster, then stops one member and
// shows that the API keeps working.
func TestAPIExternalEtcdCluster(t *testing.T) {
	members, err := etcd.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatalf("etcd.StartCluster: %v", err)
	}
	closers := make([]func(), len(members))
	var urls []string
	for i, m := range members {
		closers[i] = sync.OnceFunc(m.Close)
		t.Cleanup(closers[i]) // runs after the server's own cleanup
		urls = append(urls, m.ClientURL)
	}
	env := servertest.Start(t, servertest.WithEtcd(urls...), anyRegistryPort)
	runSuite(t, env)

	t.Run("OneMemberDown", func(t *testing.T) {
		s := newSuite(t, env)
		// Open a watch before the member goes, to show it survives too.
		s.createProject(t, "alice", "survivor")
		alice := s.as("alice")
		before := alice.get(t, nsPath("survivor", "serviceaccounts"))
		mustCode(t, "list before", before, http.StatusOK)
		beforeRV := listRV(t, before)
		early := alice.watch(t, nsPath("survivor", "serviceaccounts"), url.Values{"resourceVersion": {beforeRV}})
		mustCode(t, "watch before", early.result, http.StatusOK)

		closers[0]()
		waitHealthy(t, s)

		mustCode(t, "create project with a member down", alice.post(t, projectPath(""), project("after")), http.StatusCreated)
		list := alice.get(t, nsPath("after", "serviceaccounts"))
		mustCode(t, "list with a member down", list, http.StatusOK)
		w := alice.watch(t, nsPath("after", "serviceaccounts"), url.Values{"resourceVersion": {listRV(t, list)}})
		mustCode(t, "new watch with a member down", w.result, http.StatusOK)
		mustCode(t, "create sa with a member down", alice.post(t, nsPath("after", "serviceaccounts"), serviceAccount("late")), http.StatusCreated)
		mustCode(t, "get sa with a member down", alice.get(t, nsPath("after", "serviceaccounts", "late")), http.StatusOK)
		if got := alice.listNames(t, nsPath("after", "serviceaccounts")); len(got) != 1 || got[0] != "late" {
			t.Errorf("list with a member down: got %v, want [late]", got)
		}
		if ev := w.next(t); ev.Type != "ADDED" || ev.name(t) != "late" {
			t.Errorf("new watch: got %s %s, want ADDED late", ev.Type, ev.name(t))
		}
		mustCode(t, "create sa in survivor", alice.post(t, nsPath("survivor", "serviceaccounts"), serviceAccount("still-here")), http.StatusCreated)
		ev := early.next(t)
		if ev.Type == "ERROR" {
			// The stream may end when its member goes (when it was the
			// leader, say). A client then watches again from the last
			// resourceVersion it saw, and must miss nothing.
			var st api.Status
			_ = json.Unmarshal(ev.Object, &st)
			t.Logf("the watch opened before the member stopped ended: %d %s; watching again from %s", st.Code, st.Message, beforeRV)
			again := alice.watch(t, nsPath("survivor", "serviceaccounts"), url.Values{"resourceVersion": {beforeRV}})
			mustCode(t, "watch again from before", again.result, http.StatusOK)
			ev = again.next(t)
		}
		if ev.Type != "ADDED" || ev.name(t) != "still-here" {
			t.Errorf("watch from before the member stopped: got %s %s, want ADDED still-here", ev.Type, ev.name(t))
		}
		// Authorization still answers from caches fed by the survivors.
		checkStatus(t, "dave in after", s.as("dave").get(t, nsPath("after", "serviceaccounts")), http.StatusForbidden, "Forbidden", "")
		checkStatus(t, "no token", s.as("").get(t, nsPath("after", "serviceaccounts")), http.StatusUnauthorized, "Unauthorized", "")
	})
}

// anyRegistryPort moves the integrated registry off its default port 5000,
// which a running slipway (or a parallel test binary) may hold.
func anyRegistryPort(c *server.Config) { c.RegistryListen = "127.0.0.1:0" }

// waitHealthy waits until /healthz answers 200, which needs an etcd
// leader: stopping a member may start an election.
func waitHealthy(t *testing.T, s *suite) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	for {
		r := s.as("").get(t, "/healthz")
		if r.Code == http.StatusOK {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/healthz never answered 200; last: %d %s", r.Code, r)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runSuite is the API test suite. It needs a fresh server, and runs its
// parts in order since some of them depend on the shared project "pa".
func runSuite(t *testing.T, env *servertest.Env) {
	s := newSuite(t, env)
	s.setupTeam(t, "pa")
	s.setupPlatformAccounts(t)
	t.Run("RBACMatrix", s.testRBACMatrix)
	t.Run("PlatformMatrix", s.testPlatformMatrix)
	t.Run("StatusMatrix", s.testStatusMatrix)
	t.Run("Tenancy", s.testTenancy)
	t.Run("Authentication", s.testAuthentication)
	t.Run("Escalation", s.testEscalation)
	t.Run("ServiceAccountSubject", s.testServiceAccountSubject)
	t.Run("CompareAndSwap", s.testCompareAndSwap)
	t.Run("ServerOwnedFields", s.testServerOwnedFields)
	t.Run("BadInput", s.testBadInput)
	t.Run("Watch", s.testWatch)
	t.Run("Paging", s.testPaging)
	t.Run("WatchCompacted", s.testWatchCompacted)
	t.Run("WatchAcrossProjects", s.testWatchAcrossProjects)
	t.Run("ProjectDeletion", s.testProjectDeletion)
	t.Run("ProjectDeletionVisible", s.testDeleteVisible)
	t.Run("Audit", s.testAudit)
	t.Run("HealthAndMetrics", s.testHealthAndMetrics)
}
