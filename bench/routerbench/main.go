// Command routerbench measures HTTP through the edge router against the
// same HTTP straight to the backend, in one run on one machine, and the
// time from a route's creation to its first answer. It prints a Markdown
// table for BENCHMARKS.md.
//
// The router watches a real embedded etcd; the backend is a net/http
// server on 127.0.0.1 (so the router's endpoint guard is set to allow
// loopback). Client, router and backend share the machine's cores.
//
//	go run ./bench/routerbench [-n 20000] [-n-new 5000] [-c 16] [-rounds 5] [-changes 50]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/router"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func main() {
	n := flag.Int("n", 20000, "requests per keep-alive measurement")
	nNew := flag.Int("n-new", 5000, "requests per new-connection measurement")
	conc := flag.Int("c", 16, "concurrent clients")
	rounds := flag.Int("rounds", 5, "rounds per measurement, alternating router and direct")
	changes := flag.Int("changes", 50, "routes created one at a time, each timed until it answers")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the request measurements (client, router and backend) here")
	flag.Parse()
	log.SetFlags(0)
	slog.SetLogLoggerLevel(slog.LevelWarn)

	dir, err := os.MkdirTemp("", "routerbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	member, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer member.Close()
	st := store.New(member.InProcessClient())
	ctx, cancel := context.WithCancel(context.Background())

	backend := startBackend()
	r, err := router.New(router.Config{Store: st, HTTPListen: "127.0.0.1:0", Endpoints: proxy.AnyEndpoint})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	httpAddr, _ := r.Addrs()
	routerAddr := httpAddr.String()

	_, bport, _ := net.SplitHostPort(backend)
	bp, _ := strconv.Atoi(bport)
	ep := &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "bench", Name: "web"},
		Subsets: []api.EndpointSubset{{Addresses: []api.EndpointAddress{{IP: "127.0.0.1"}}, Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: int32(bp)}}}}}
	if err := st.Create(ctx, api.EndpointsResource, ep); err != nil {
		log.Fatal(err)
	}
	mkRoute := func(host string) {
		rt := &api.Route{ObjectMeta: api.ObjectMeta{Namespace: "bench", Name: host[:len(host)-len(".bench.test")]},
			Spec: api.RouteSpec{Host: host, To: api.RouteTargetReference{Kind: "Service", Name: "web"}}}
		if err := st.Create(ctx, api.Routes, rt); err != nil {
			log.Fatal(err)
		}
	}
	mkRoute("www.bench.test")
	waitServing(routerAddr, "www.bench.test", 30*time.Second)

	fmt.Printf("# routerbench: %d keep-alive and %d new-connection requests, %d concurrent clients, GOMAXPROCS=%d, %s\n\n",
		*n, *nNew, *conc, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | through the router | direct | ratio (router / direct) |")
	fmt.Println("|---|---|---|---|")
	keepAlive := func() *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc}}
	}
	newConn := func() *http.Client { return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} }
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
	}
	rkc, dkc := keepAlive(), keepAlive()
	run(rkc, routerAddr, "www.bench.test", 2000, *conc)
	run(dkc, backend, "", 2000, *conc)
	rk, dk := compare(*rounds, func() (result, result) {
		return run(rkc, routerAddr, "www.bench.test", *n / *rounds, *conc), run(dkc, backend, "", *n / *rounds, *conc)
	})
	rn, dn := compare(*rounds, func() (result, result) {
		return run(newConn(), routerAddr, "www.bench.test", *nNew / *rounds, *conc), run(newConn(), backend, "", *nNew / *rounds, *conc)
	})
	if *cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	row("keep-alive (requests/s)", rk.rate, dk.rate, "%.0f")
	row("keep-alive p50 (ms)", ms(rk.p50), ms(dk.p50), "%.3f")
	row("keep-alive p99 (ms)", ms(rk.p99), ms(dk.p99), "%.3f")
	row("new connection (requests/s)", rn.rate, dn.rate, "%.0f")
	row("new connection p50 (ms)", ms(rn.p50), ms(dn.p50), "%.3f")
	row("new connection p99 (ms)", ms(rn.p99), ms(dn.p99), "%.3f")

	// Route change to serving: create a route, poll its host until 200.
	var lat []time.Duration
	for i := range *changes {
		host := fmt.Sprintf("r%d.bench.test", i)
		start := time.Now()
		mkRoute(host)
		waitServing(routerAddr, host, 30*time.Second)
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	fmt.Printf("\nRoute created → first 200 through the router, %d routes one at a time (polling every 1ms): p50 %.1f ms, p99 %.1f ms.\n",
		*changes, ms(lat[len(lat)*50/100]), ms(lat[len(lat)*99/100]))
	fmt.Printf("Each measurement alternates router and direct over %d rounds; latency is per request as the client sees it, with %d clients in flight.\n", *rounds, *conc)
}

func startBackend() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	return ln.Addr().String()
}

func get(c *http.Client, addr, host string) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	if host != "" {
		req.Host = host
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

var pollClient = &http.Client{Timeout: 2 * time.Second}

func waitServing(addr, host string, timeout time.Duration) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(time.Millisecond) {
		if code, err := get(pollClient, addr, host); err == nil && code == 200 {
			return
		}
		if time.Now().After(deadline) {
			log.Fatalf("the router did not serve %s within %s", host, timeout)
		}
	}
}

type result struct {
	n        int
	elapsed  time.Duration
	lat      []time.Duration
	rate     float64
	p50, p99 time.Duration
}

func compare(rounds int, once func() (routed, direct result)) (result, result) {
	var p, d result
	for range rounds {
		pr, dr := once()
		p, d = p.add(pr), d.add(dr)
	}
	return p.finish(), d.finish()
}

func (r result) add(o result) result {
	r.n += o.n
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	return r
}

func (r result) finish() result {
	r.rate = float64(r.n) / r.elapsed.Seconds()
	if len(r.lat) > 0 {
		slices.Sort(r.lat)
		r.p50, r.p99 = r.lat[len(r.lat)*50/100], r.lat[len(r.lat)*99/100]
	}
	return r
}

// run makes n GETs on conc workers; any failure or non-200 aborts.
func run(c *http.Client, addr, host string, n, conc int) result {
	var next atomic.Int64
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				code, err := get(c, addr, host)
				if err != nil || code != 200 {
					log.Fatalf("GET %s (Host %s): %d %v", addr, host, code, err)
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	return result{n: n, elapsed: time.Since(start), lat: lat}
}

func row(what string, routed, direct float64, format string) {
	fmt.Printf("| %s | "+format+" | "+format+" | %.2f |\n", what, routed, direct, routed/direct)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
