package identity

import (
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store/storetest"
)

// M6: service account tokens get the default lifetime when none is asked
// for, and never more than the maximum; only tokens users asked for
// through the API count towards a project's cap, and expired ones do not.
func TestServiceAccountTokenLifetimesAndCount(t *testing.T) {
	ctx := storetest.Context(t)
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := newAuth(t, Config{Now: c.now})
	project := "sat-" + time.Now().Format("150405000000")
	if err := a.cfg.Store.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
		t.Fatal(err)
	}
	if err := a.cfg.Store.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: "robot", Namespace: project}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ask, want time.Duration }{
		{0, DefaultServiceAccountTTL},
		{-time.Hour, DefaultServiceAccountTTL},
		{time.Minute, time.Minute},
		{MaxServiceAccountTTL, MaxServiceAccountTTL},
		{10 * 365 * 24 * time.Hour, MaxServiceAccountTTL},
	} {
		_, tok, err := a.IssueServiceAccountToken(ctx, project, "robot", tc.ask)
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Spec.ExpiresAt.Sub(c.now()); got != tc.want {
			t.Errorf("IssueServiceAccountToken(ttl %s) lives %s, want %s", tc.ask, got, tc.want)
		}
	}
	count := func() int {
		n, err := a.LiveRequestedTokens(ctx, project)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 0 {
		t.Errorf("LiveRequestedTokens after 5 platform tokens = %d, want 0", n)
	}
	if _, tok, err := a.RequestServiceAccountToken(ctx, project, "robot", time.Hour, "alice"); err != nil {
		t.Fatal(err)
	} else if tok.Labels[RequestedTokenLabel] != "true" || tok.Labels[ProjectLabel] != project {
		t.Errorf("requested token labels = %v, want %s and %s", tok.Labels, RequestedTokenLabel, ProjectLabel)
	}
	if _, _, err := a.RequestServiceAccountToken(ctx, project, "robot", 2*time.Hour, "alice"); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 {
		t.Errorf("LiveRequestedTokens after 2 requested = %d, want 2", n)
	}
	c.add(90 * time.Minute)
	if n := count(); n != 1 {
		t.Errorf("LiveRequestedTokens once one expired = %d, want 1", n)
	}
	if _, err := New(Config{Store: a.cfg.Store, ServiceAccountTTL: 100 * 24 * time.Hour}); err == nil {
		t.Error("New with a default lifetime over the maximum: err = nil, want an error")
	}
}
