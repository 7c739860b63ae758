package etcd_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// M5: a member started with a small quota and then filled raises NOSPACE;
// CheckSpace reports it, over the network and in process, with what to
// do; the metrics show the alarm, size and quota; and the store says
// that etcd is full instead of an internal error.
func TestSpaceReportsNoSpaceAlarm(t *testing.T) {
	const quota = 16 << 20
	m, err := etcd.Start(etcd.Config{Dir: t.TempDir(), QuotaBackendBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	remote, err := etcd.Client(m.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	ctx := t.Context()

	sp, err := etcd.CheckSpace(ctx, remote)
	if err != nil {
		t.Fatal(err)
	}
	if msg, fatal := sp.Problem(); msg != "" || fatal || len(sp.Members) != 1 || sp.Members[0].Quota != quota {
		t.Fatalf("fresh member: Problem() = %q, %v; members %+v; want no problem and quota %d", msg, fatal, sp.Members, quota)
	}

	s := store.New(remote)
	big := strings.Repeat("x", 1<<20)
	var werr error
	for i := 0; i < 64 && werr == nil; i++ {
		werr = s.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Namespace: "fill", Name: "sa" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Annotations: map[string]string{"fill": big}}})
	}
	if !errors.Is(werr, store.ErrNoSpace) {
		t.Fatalf("filling a %d MiB etcd: last error %v, want ErrNoSpace", quota>>20, werr)
	}
	if st, ok := api.StatusFor(werr); !ok || st.Code != http.StatusInsufficientStorage || !strings.Contains(st.Message, "alarm disarm") {
		t.Errorf("store error status %+v, want 507 saying what to do", st)
	}

	for name, cl := range map[string]*clientv3.Client{"remote": remote, "in process": m.InProcessClient()} {
		sp, err := etcd.CheckSpace(ctx, cl)
		if err != nil {
			t.Fatalf("%s: CheckSpace = %v", name, err)
		}
		msg, fatal := sp.Problem()
		if !fatal || len(sp.Alarms) != 1 || sp.Alarms[0].Type != "NOSPACE" {
			t.Errorf("%s: after filling: alarms %+v, fatal %v; want NOSPACE, fatal", name, sp.Alarms, fatal)
		}
		for _, want := range []string{"NOSPACE", "defrag", "etcdctl alarm disarm", "--etcd-quota-backend-bytes"} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: Problem() = %q, does not say %q", name, msg, want)
			}
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(etcd.NewSpaceCollector(m.InProcessClient()))
	want := `
# HELP slipway_etcd_alarms Members with an active etcd alarm, by alarm (NOSPACE, CORRUPT).
# TYPE slipway_etcd_alarms gauge
slipway_etcd_alarms{alarm="CORRUPT"} 0
slipway_etcd_alarms{alarm="NOSPACE"} 1
# HELP slipway_etcd_db_quota_bytes etcd's backend quota: at it, etcd raises NOSPACE and refuses every write.
# TYPE slipway_etcd_db_quota_bytes gauge
slipway_etcd_db_quota_bytes{endpoint=""} 1.6777216e+07
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "slipway_etcd_alarms", "slipway_etcd_db_quota_bytes"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "slipway_etcd_db_size_bytes", "slipway_etcd_db_size_in_use_bytes"); err != nil || n != 2 {
		t.Errorf("size gauges: %d, %v; want 2", n, err)
	}
}

// Problem is fatal only for an alarm; a database past WarnFraction of its
// quota is a warning that says what to do.
func TestSpaceProblem(t *testing.T) {
	const q = 100 << 20
	tests := []struct {
		name      string
		sp        etcd.Space
		wantFatal bool
		wants     []string
	}{
		{"healthy", etcd.Space{Members: []etcd.MemberSpace{{DBSize: 10 << 20, Quota: q}}}, false, nil},
		{"nearly full", etcd.Space{Members: []etcd.MemberSpace{{Endpoint: "https://e1:2379", DBSize: 85 << 20, DBInUse: 80 << 20, Quota: q}}}, false,
			[]string{"at https://e1:2379", "85.0 MiB of its 100.0 MiB quota", "etcdctl defrag", "--etcd-quota-backend-bytes"}},
		{"corrupt", etcd.Space{Members: []etcd.MemberSpace{{MemberID: 7, DBSize: 1, Quota: q}}, Alarms: []etcd.Alarm{{MemberID: 7, Type: "CORRUPT"}}}, true,
			[]string{"CORRUPT on member 7", "snapshot", "etcdctl alarm disarm"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, fatal := tt.sp.Problem()
			if fatal != tt.wantFatal || (len(tt.wants) == 0) != (msg == "") {
				t.Errorf("Problem() = %q, %v; want fatal %v and a message %v", msg, fatal, tt.wantFatal, len(tt.wants) > 0)
			}
			for _, w := range tt.wants {
				if !strings.Contains(msg, w) {
					t.Errorf("Problem() = %q, does not say %q", msg, w)
				}
			}
		})
	}
}
