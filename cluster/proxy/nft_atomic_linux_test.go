package proxy_test

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/nftables"

	"slipway.dev/slipway/cluster/proxy"
)

// C7: every change reaches the kernel as one transaction that replaces
// the table whole: each generation (netlink batch) that deletes the
// proxy's table creates it again with its rules, so no packet ever meets
// a flushed or half-written table. Only the last, at stop, just deletes.
func TestNFTablesChangesAreOneTransactionEach(t *testing.T) {
	if !runInNetns(t) {
		return
	}
	table := proxy.TableFor(netip.MustParsePrefix(nftRange))
	type gen struct {
		delTable, newTable bool
		newRules, delRules int
	}
	var mu sync.Mutex
	var gens []gen
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(1024))
	events, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		t.Fatalf("nftables monitor: %v", err)
	}
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		for evs := range events {
			var g gen
			ours := false
			for _, e := range evs.Changes {
				switch d := e.Data.(type) {
				case *nftables.Table:
					if d.Name == table {
						ours = true
						g.delTable = g.delTable || e.Type == nftables.MonitorEventTypeDelTable
						g.newTable = g.newTable || e.Type == nftables.MonitorEventTypeNewTable
					}
				case *nftables.Rule:
					if d.Table != nil && d.Table.Name == table {
						ours = true
						if e.Type == nftables.MonitorEventTypeNewRule {
							g.newRules++
						} else if e.Type == nftables.MonitorEventTypeDelRule {
							g.delRules++
						}
					}
				}
			}
			if ours {
				mu.Lock()
				gens = append(gens, g)
				mu.Unlock()
			}
		}
	}()

	ctx, st := testContext(t), newStore(t)
	_, stop := nftNode(t, ctx, st)
	podHTTP(t, "a", podA, 8080)
	podHTTP(t, "b", podB, 8080)
	createService(t, ctx, st, "web", "10.43.0.70", 80, "TCP", podSubset(8080, "TCP", podA, podB))
	waitServed(t, "10.43.0.70:80")
	setEndpoints(t, ctx, st, "web", podSubset(8080, "TCP", podA))
	eventually(t, "only a serves", func() error {
		if got := namesOf(t, "10.43.0.70:80", "tcp", 10); got["b"] > 0 {
			return fmt.Errorf("10 new connections reached %v", got)
		}
		return nil
	})
	stop()
	// The table's deletion at stop is the last generation; wait for it.
	eventually(t, "the stop's transaction seen", func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(gens); n == 0 || !gens[n-1].delTable || gens[n-1].newTable {
			return fmt.Errorf("generations so far: %+v", gens)
		}
		return nil
	})
	mon.Close()
	<-monDone

	mu.Lock()
	defer mu.Unlock()
	// The service, the endpoint change and the stop are each awaited
	// above, so each is its own generation. The start's own (empty table)
	// is not always one: when the service is stored before the proxy's
	// first sync, both arrive in the same transaction.
	if len(gens) < 3 {
		t.Fatalf("saw %d transactions on table %s, want at least 3 (service, endpoint change, stop): %+v", len(gens), table, gens)
	}
	for i, g := range gens[:len(gens)-1] {
		if !g.newTable || g.newRules == 0 {
			t.Errorf("transaction %d on table %s = %+v: it leaves the table without rules, want the whole table written", i, table, g)
		}
	}
}
