// Command apibench measures the Slipway API against the raw etcd client on
// the same etcd, in one run on one machine, and prints a Markdown table of
// ratios for BENCHMARKS.md.
//
//	go run ./bench/apibench [-n 5000] [-c 32] [-runs 5] [-creates]
//
// With -runs N the create row is the median of N rounds that alternate an
// API round and a raw etcd round, each round's ratio printed as it ends;
// within a round the two sides take turns -slices times (API, raw, API,
// raw, ...). -creates stops after that row.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/server"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func main() {
	n := flag.Int("n", 5000, "operations per measurement")
	conc := flag.Int("c", 32, "concurrent clients")
	rate := flag.Int("rate", 1000, "events per second for the watch latency run")
	secs := flag.Int("seconds", 5, "length of the watch latency run")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the API create run here")
	runs := flag.Int("runs", 1, "alternating API and raw create rounds; the create row is their median ratio")
	turns := flag.Int("slices", 5, "the API and raw sides of a create round take turns this many times")
	createsOnly := flag.Bool("creates", false, "measure only creates")
	limit := flag.Int64("limit", 1_000_000, "the platform's cap on service accounts per project during the run (0: none, so creates are not counted)")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "apibench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// The all-in-one as `slipway start` runs it (embedded etcd), and a raw
	// etcd client on the same etcd's client port.
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0", Out: io.Discard,
		// The creates below must not reach the platform's default cap of
		// objects per project; with a cap they are counted as always.
		Limits: store.Limits{ByResource: map[string]int64{"serviceaccounts": *limit}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	raw, err := etcd.ClientTLS(srv.EtcdClientTLS(), srv.EtcdEndpoints()...)
	if err != nil {
		log.Fatal(err)
	}
	cl := adminClient(srv)
	ctx := context.Background()
	if err := cl.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "bench"}}); err != nil {
		log.Fatal(err)
	}

	fmt.Printf("# apibench: %d ops, %d concurrent clients, GOMAXPROCS=%d, %s\n\n", *n, *conc, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | Slipway API | raw etcd client | ratio (API / etcd) |")
	fmt.Println("|---|---|---|---|")

	payload := func(i int) []byte {
		b, _ := json.Marshal(&api.ServiceAccount{
			TypeMeta:   api.TypeMeta{APIVersion: api.APIVersion, Kind: "ServiceAccount"},
			ObjectMeta: api.ObjectMeta{Name: fmt.Sprintf("raw-%d", i), Namespace: "bench", Labels: map[string]string{"bench": "yes"}},
		})
		return b
	}

	// Creates: rounds alternate API and raw, so that a noisy neighbour on
	// the machine weighs on both sides alike.
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
	}
	var apiRounds, rawRounds, ratios []float64
	for round := range max(*runs, 1) {
		// Each round creates into a project of its own, so every round
		// starts from the same state (the per-project cap counts the
		// project's objects on each create).
		project, suffix := "bench", ""
		if round > 0 {
			suffix = fmt.Sprintf("-r%d", round)
			project += suffix
			if err := cl.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
				log.Fatal(err)
			}
		}
		// Within a round the two sides take turns -slices times, so a
		// burst of load from a neighbour lands on both.
		// The profile covers the API side alone: round 0 takes one turn
		// each when profiling.
		var apiDur, rawDur time.Duration
		k := *turns
		if round == 0 && *cpuprofile != "" {
			k = 1
		}
		for sl := range k {
			lo, hi := *n*sl/k, *n*(sl+1)/k
			apiDur += elapsed(hi-lo, *conc, func(i int) error {
				return cl.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{
					Name: fmt.Sprintf("sa-%d", lo+i), Namespace: project, Labels: map[string]string{"bench": "yes"}}})
			})
			if round == 0 && *cpuprofile != "" {
				pprof.StopCPUProfile()
			}
			rawDur += elapsed(hi-lo, *conc, func(i int) error {
				_, err := raw.Put(ctx, fmt.Sprintf("/rawbench/serviceaccounts/bench/raw-%d%s", lo+i, suffix), string(payload(lo+i)))
				return err
			})
		}
		a, r := float64(*n)/apiDur.Seconds(), float64(*n)/rawDur.Seconds()
		apiRounds, rawRounds, ratios = append(apiRounds, a), append(rawRounds, r), append(ratios, a/r)
		if *runs > 1 {
			fmt.Fprintf(os.Stderr, "round %d: API %.0f/s, raw %.0f/s, ratio %.2f\n", round+1, a, r, a/r)
		}
	}
	apiCreate, rawCreate := median(apiRounds), median(rawRounds)
	if *runs > 1 {
		fmt.Printf("| create, median of %d alternating rounds (objects/s) | %.0f | %.0f | %.2f (median of the rounds' ratios; min %.2f, max %.2f) |\n",
			*runs, apiCreate, rawCreate, median(ratios), slices.Min(ratios), slices.Max(ratios))
		if *createsOnly {
			return
		}
	} else {
		row("create (objects/s)", apiCreate, rawCreate)
	}
	if *createsOnly {
		return
	}
	// The same create-if-absent transaction the API does, for context.
	rawTxn := throughput(*n, *conc, func(i int) error {
		key := fmt.Sprintf("/rawbench/txn/bench/raw-%d", i)
		_, err := raw.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(clientv3.OpPut(key, string(payload(i)))).Commit()
		return err
	})
	row("create vs raw create-if-absent txn (objects/s)", apiCreate, rawTxn)

	// Gets.
	apiGet := throughput(*n, *conc, func(i int) error {
		_, err := cl.Get(ctx, api.ServiceAccounts, "bench", fmt.Sprintf("sa-%d", i))
		return err
	})
	rawGet := throughput(*n, *conc, func(i int) error {
		resp, err := raw.Get(ctx, fmt.Sprintf("/rawbench/serviceaccounts/bench/raw-%d", i))
		if err == nil && len(resp.Kvs) == 1 {
			var sa api.ServiceAccount
			err = json.Unmarshal(resp.Kvs[0].Value, &sa)
		}
		return err
	})
	row("get (objects/s)", apiGet, rawGet)

	// Watch delivery throughput: a burst of n writes, delivered to one
	// API watcher and one raw etcd watcher at the same time.
	apiW, rawW := watchThroughput(ctx, cl, raw, *n, *conc)
	row("watch delivery (events/s)", apiW, rawW)

	// Watch latency at a fixed rate.
	apiLat, rawLat := watchLatency(ctx, cl, raw, *rate, *secs)
	fmt.Printf("| watch latency p50 at %d events/s (ms) | %.2f | %.2f | %.2f |\n", *rate, ms(pct(apiLat, 50)), ms(pct(rawLat, 50)), ratio(pct(apiLat, 50), pct(rawLat, 50)))
	fmt.Printf("| watch latency p99 at %d events/s (ms) | %.2f | %.2f | %.2f |\n", *rate, ms(pct(apiLat, 99)), ms(pct(rawLat, 99)), ratio(pct(apiLat, 99), pct(rawLat, 99)))
	fmt.Printf("\nwatch latency is measured from the start of the write to the event's arrival; %d of %d API events and %d raw events arrived.\n", len(apiLat), *rate**secs, len(rawLat))
}

func adminClient(srv *server.Server) *client.Client {
	c, err := srv.AdminClient(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	return c
}

// throughput runs op(0..n-1) on conc workers and returns operations/s.
func throughput(n, conc int, op func(i int) error) float64 {
	return float64(n) / elapsed(n, conc, op).Seconds()
}

// elapsed runs op(0..n-1) on conc workers and returns how long they took.
func elapsed(n, conc int, op func(i int) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		log.Fatalf("benchmark operation failed: %v", err)
	}
	return time.Since(start)
}

func watchThroughput(ctx context.Context, cl *client.Client, raw *clientv3.Client, n, conc int) (float64, float64) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	_, meta, err := cl.List(ctx, api.ServiceAccounts, "bench", client.ListOptions{Limit: 1})
	if err != nil {
		log.Fatal(err)
	}
	apiCh, err := cl.Watch(ctx, api.ServiceAccounts, "bench", meta.ResourceVersion, client.ListOptions{})
	if err != nil {
		log.Fatal(err)
	}
	rawCh := raw.Watch(ctx, "/slipway/serviceaccounts/bench/", clientv3.WithPrefix(), clientv3.WithRev(mustRev(meta.ResourceVersion)+1))
	start := time.Now()
	var apiDur, rawDur time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for got := 0; got < n; {
			ev, ok := <-apiCh
			if !ok || ev.Err != nil {
				log.Fatalf("api watch ended after %d events: %v", got, ev.Err)
			}
			got++
		}
		apiDur = time.Since(start)
	}()
	go func() {
		defer wg.Done()
		for got := 0; got < n; {
			resp := <-rawCh
			if err := resp.Err(); err != nil {
				log.Fatal(err)
			}
			for _, ev := range resp.Events {
				var sa api.ServiceAccount
				_ = json.Unmarshal(ev.Kv.Value, &sa)
				got++
			}
		}
		rawDur = time.Since(start)
	}()
	payload := `{"apiVersion":"slipway.dev/v1","kind":"ServiceAccount","metadata":{"name":"w","namespace":"bench"}}`
	throughput(n, conc, func(i int) error {
		_, err := raw.Put(ctx, fmt.Sprintf("/slipway/serviceaccounts/bench/w-%d", i), payload)
		return err
	})
	wg.Wait()
	return float64(n) / apiDur.Seconds(), float64(n) / rawDur.Seconds()
}

func watchLatency(ctx context.Context, cl *client.Client, raw *clientv3.Client, rate, secs int) ([]time.Duration, []time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	total := rate * secs
	sent := make([]atomic.Int64, total) // unix nanos at write start
	_, meta, err := cl.List(ctx, api.ServiceAccounts, "bench", client.ListOptions{Limit: 1})
	if err != nil {
		log.Fatal(err)
	}
	apiCh, err := cl.Watch(ctx, api.ServiceAccounts, "bench", meta.ResourceVersion, client.ListOptions{LabelSelector: "lat"})
	if err != nil {
		log.Fatal(err)
	}
	rawCh := raw.Watch(ctx, "/slipway/serviceaccounts/bench/", clientv3.WithPrefix(), clientv3.WithRev(mustRev(meta.ResourceVersion)+1))
	var apiLat, rawLat []time.Duration
	var wg sync.WaitGroup
	wg.Add(2)
	idx := func(labels map[string]string) int {
		var i int
		fmt.Sscanf(labels["lat"], "%d", &i)
		return i
	}
	go func() {
		defer wg.Done()
		for ev := range apiCh {
			if ev.Err != nil {
				return
			}
			now := time.Now().UnixNano()
			apiLat = append(apiLat, time.Duration(now-sent[idx(ev.Object.GetObjectMeta().Labels)].Load()))
			if len(apiLat) == total {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for resp := range rawCh {
			now := time.Now().UnixNano()
			for _, ev := range resp.Events {
				var sa api.ServiceAccount
				if json.Unmarshal(ev.Kv.Value, &sa) == nil && sa.Labels["lat"] != "" {
					rawLat = append(rawLat, time.Duration(now-sent[idx(sa.Labels)].Load()))
				}
			}
			if len(rawLat) >= total {
				return
			}
		}
	}()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var writes sync.WaitGroup
	for i := range total {
		<-tick.C
		writes.Add(1)
		go func() {
			defer writes.Done()
			sent[i].Store(time.Now().UnixNano())
			err := cl.Create(ctx, api.ServiceAccounts, &api.ServiceAccount{ObjectMeta: api.ObjectMeta{
				Name: fmt.Sprintf("lat-%d", i), Namespace: "bench", Labels: map[string]string{"lat": fmt.Sprint(i)}}})
			if err != nil {
				log.Fatal(err)
			}
		}()
	}
	writes.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cancel()
		<-done
	}
	return apiLat, rawLat
}

func mustRev(rv string) int64 {
	var n int64
	fmt.Sscanf(rv, "%d", &n)
	return n
}

func row(name string, apiV, rawV float64) {
	fmt.Printf("| %s | %.0f | %.0f | %.2f |\n", name, apiV, rawV, apiV/rawV)
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
