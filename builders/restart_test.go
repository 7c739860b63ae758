package builders

import (
	"context"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store/storetest"
)

// TestBuildRunningElsewhereRunsAgain: a build recorded Running that this
// controller is not running (the controller that ran it stopped: a lost
// leader, a crash) goes back to Pending to run again, counted, up to
// MaxBuildRestarts; then it ends as an Error saying to start it again.
// Before, it ended as an Error at once, and its trigger never fired again.
func TestBuildRunningElsewhereRunsAgain(t *testing.T) {
	s := storetest.New(t)
	ctx := storetest.Context(t)
	if err := s.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	c := &Controller{Store: s, running: map[string]context.CancelFunc{}, waiting: map[string]bool{}}
	b := &api.Build{ObjectMeta: api.ObjectMeta{Name: "web-1", Namespace: "p"}}
	if err := s.Create(ctx, api.Builds, b); err != nil {
		t.Fatal(err)
	}
	get := func() *api.Build {
		o, err := s.Get(ctx, api.Builds, "p", "web-1")
		if err != nil {
			t.Fatal(err)
		}
		return o.(*api.Build)
	}
	for i := 1; i <= MaxBuildRestarts+1; i++ {
		if err := c.setStatus(ctx, get(), func(s *api.BuildStatus) { s.Phase = api.BuildRunning }); err != nil {
			t.Fatal(err)
		}
		if err := c.reconcile(ctx, get()); err != nil {
			t.Fatal(err)
		}
		st := get().Status
		if i <= MaxBuildRestarts {
			if st.Phase != api.BuildPending || st.Restarts != i || st.Reason != "ControllerRestarted" {
				t.Fatalf("after the controller running it stopped %d times: %s/%s %q restarts=%d, want Pending/ControllerRestarted restarts=%d", i, st.Phase, st.Reason, st.Message, st.Restarts, i)
			}
			continue
		}
		if st.Phase != api.BuildError || !strings.Contains(st.Message, "start it again") {
			t.Fatalf("after the controller running it stopped %d times: %s %q, want Error saying to start it again", i, st.Phase, st.Message)
		}
	}
}
