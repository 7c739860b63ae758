// Command proxybench measures HTTP through the service proxy against the
// same HTTP straight to the backend, in one run on one machine, and prints
// a Markdown table of ratios for BENCHMARKS.md.
//
// The proxy watches a real embedded etcd; the backend is a net/http server
// on 127.0.0.1 (with -client pod, in a network namespace of its own).
// Client, proxy and backend share the machine's cores.
//
// -mode userspace (the default) serves a cluster IP from the loopback
// range with the userspace proxy. -mode nftables needs root: the command
// re-executes itself in a fresh network namespace (the host's rules are
// never touched), where the proxy in its nftables mode serves a cluster IP
// of 10.43.0.0/24 on the slipway0 interface and the kernel DNATs it to
// the backend.
//
// -client pod (nftables mode) runs the client in a network namespace
// behind a veth, as a pod, and the backend in another: a pod's connection
// to a service is DNATed in the node's prerouting hook and forwarded,
// against the same two namespaces talking directly.
//
//	go run ./bench/proxybench [-mode userspace|nftables] [-client host|pod] [-n 20000] [-n-new 10000] [-c 16] [-bulk 1024] [-rounds 5]
package main

import (
	"context"
	"errors"
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
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func main() {
	n := flag.Int("n", 20000, "requests per keep-alive measurement")
	nNew := flag.Int("n-new", 10000, "requests per new-connection measurement")
	conc := flag.Int("c", 16, "concurrent clients")
	bulk := flag.Int("bulk", 1024, "MiB in the bulk transfer")
	rounds := flag.Int("rounds", 5, "rounds per measurement, alternating proxy and direct, so drift in a noisy machine hits both")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (client, proxy and backend) here")
	mode := flag.String("mode", "userspace", "proxy mode: userspace, or nftables (as root, in a fresh network namespace)")
	client := flag.String("client", "host", "with -mode nftables, where the client runs: host (connections the node makes itself: the output hook DNATs and masquerades them) or pod (a network namespace behind a veth, as a pod, reaching a backend in another: prerouting DNAT, then forwarding, as pods' connections to services go; direct is the same two namespaces without the service)")
	flag.Parse()
	log.SetFlags(0)
	slog.SetLogLoggerLevel(slog.LevelWarn)
	m, err := proxy.ParseMode(*mode)
	if err != nil || m == proxy.ModeAuto {
		log.Fatalf("-mode %q: want userspace or nftables", *mode)
	}
	if *client != "host" && (*client != "pod" || m != proxy.ModeNFTables) {
		log.Fatalf("-client %q: want host, or pod with -mode nftables", *client)
	}
	if m == proxy.ModeNFTables && !inNetns() {
		os.Exit(reexecInNetns())
	}

	dir, err := os.MkdirTemp("", "proxybench")
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

	listen, epIP := net.Listen, "127.0.0.1"
	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	if *client == "pod" {
		cl, bk := newPodNet("vcl", "10.98.0"), newPodNet("vbk", "10.97.0")
		dial, epIP = cl.dial, bk.ip
		listen = func(network, addr string) (ln net.Listener, err error) {
			bk.do(func() { ln, err = net.Listen(network, addr) })
			return ln, err
		}
	}
	backend := startBackend(listen, epIP)
	ctx, cancel := context.WithCancel(context.Background())
	// The backend is on loopback, which a node's default endpoint policy
	// refuses (it has done so since the policy came; the benchmark did
	// not say).
	cfg := proxy.Config{Store: st, VIPs: proxy.Loopback{}, ServiceCIDR: "127.0.0.0/8", Mode: m, Endpoints: proxy.AnyEndpoint}
	clusterIP, port := "127.0.77.1", 0
	if m == proxy.ModeNFTables {
		vips, err := proxy.NewDummy("")
		if err != nil {
			log.Fatal(err)
		}
		cfg.VIPs, cfg.ServiceCIDR = vips, "10.43.0.0/24"
		clusterIP, port = "10.43.0.10", 80
	}
	p, err := proxy.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	svcAddr := serve(ctx, st, clusterIP, port, backend, dial)

	fmt.Printf("# proxybench, %s mode, client on the %s: %d keep-alive and %d new-connection requests, %d concurrent clients, %d MiB bulk, GOMAXPROCS=%d, %s\n\n",
		p.Mode(), *client, *n, *nNew, *conc, *bulk, runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.RFC3339))
	fmt.Println("| measurement | through the proxy | direct | ratio (proxy / direct) | median of the rounds' ratios |")
	fmt.Println("|---|---|---|---|---|")

	keepAlive := func() *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc, DialContext: dial}}
	}
	newConn := func() *http.Client {
		return &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	// Warm both paths (and the connection pools) before measuring.
	pkc, dkc := keepAlive(), keepAlive()
	run(pkc, svcAddr, 2000, *conc)
	run(dkc, backend, 2000, *conc)

	pk, dk := compare(*rounds, func() (result, result) {
		return run(pkc, svcAddr, *n / *rounds, *conc), run(dkc, backend, *n / *rounds, *conc)
	})
	pn, dn := compare(*rounds, func() (result, result) {
		return run(newConn(), svcAddr, *nNew / *rounds, *conc), run(newConn(), backend, *nNew / *rounds, *conc)
	})
	rateRow("keep-alive (requests/s)", pk, dk)
	row("keep-alive p50 (ms)", ms(pk.p50), ms(dk.p50), "%.3f")
	row("keep-alive p99 (ms)", ms(pk.p99), ms(dk.p99), "%.3f")
	rateRow("new connection (requests/s)", pn, dn)
	row("new connection p50 (ms)", ms(pn.p50), ms(dn.p50), "%.3f")
	row("new connection p99 (ms)", ms(pn.p99), ms(dn.p99), "%.3f")
	pbr, dbr := compare(*rounds, func() (result, result) {
		return bulkRate(svcAddr, *bulk / *rounds, dial), bulkRate(backend, *bulk / *rounds, dial)
	})
	rateRow(fmt.Sprintf("bulk GET of %d MiB, one connection (MiB/s)", *bulk), pbr, dbr)
	fmt.Printf("\nEach measurement alternates proxy and direct over %d rounds. Latency is per request as the client sees it, with %d clients in flight.\n", *rounds, *conc)
}

// startBackend serves "/" (a 2-byte body) and "/bulk?mib=N" on ip, on a
// listener from listen.
func startBackend(listen func(network, addr string) (net.Listener, error), ip string) string {
	ln, err := listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		log.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/bulk", func(w http.ResponseWriter, r *http.Request) {
		mib, _ := strconv.Atoi(r.URL.Query().Get("mib"))
		w.Header().Set("Content-Length", strconv.Itoa(mib<<20))
		for range mib {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	go http.Serve(ln, mux)
	return ln.Addr().String()
}

// serve creates a Service on clusterIP:port (a free port when 0) in front
// of backend and returns its address once a request through it is
// answered.
func serve(ctx context.Context, st *store.Store, clusterIP string, port int, backend string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) string {
	if port == 0 {
		l, err := net.Listen("tcp", clusterIP+":0")
		if err != nil {
			log.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	epIP, bport, _ := net.SplitHostPort(backend)
	bp, _ := strconv.Atoi(bport)
	svc := &api.Service{
		ObjectMeta: api.ObjectMeta{Namespace: "bench", Name: "web"},
		Spec:       api.ServiceSpec{ClusterIP: clusterIP, Ports: []api.ServicePort{{Name: "http", Port: int32(port), TargetPort: int32(bp)}}},
	}
	eps := &api.Endpoints{
		ObjectMeta: api.ObjectMeta{Namespace: "bench", Name: "web"},
		Subsets: []api.EndpointSubset{{
			Addresses: []api.EndpointAddress{{IP: epIP}},
			Ports:     []api.ServicePort{{Name: "http", Port: int32(bp)}},
		}},
	}
	if err := errors.Join(st.Create(ctx, api.Services, svc), st.Create(ctx, api.EndpointsResource, eps)); err != nil {
		log.Fatal(err)
	}
	addr := net.JoinHostPort(clusterIP, strconv.Itoa(port))
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := c.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			return addr
		}
		if time.Now().After(deadline) {
			log.Fatalf("the proxy did not serve %s within 30s: %v", addr, err)
		}
	}
}

// result is one measurement: a rate over its whole duration, and the
// latencies of its requests (sorted by compare).
type result struct {
	n        int
	elapsed  time.Duration
	lat      []time.Duration
	rate     float64
	p50, p99 time.Duration
	ratio    float64 // median of the rounds' proxied / direct rates (compare)
}

// compare runs both sides of a measurement in alternating rounds and pools
// them: the rate is all work over all time, the percentiles are over every
// request.
//
// Each round's own ratio (proxied rate / direct rate) is kept too: their
// median, in the proxied result's ratio, is what a loaded machine moves
// least.
func compare(rounds int, once func() (proxied, direct result)) (result, result) {
	var p, d result
	var ratios []float64
	for range rounds {
		pr, dr := once()
		p, d = p.add(pr), d.add(dr)
		ratios = append(ratios, (float64(pr.n)/pr.elapsed.Seconds())/(float64(dr.n)/dr.elapsed.Seconds()))
	}
	slices.Sort(ratios)
	p = p.finish()
	p.ratio = ratios[len(ratios)/2]
	return p, d.finish()
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

// run makes n GETs of "/" on conc workers and returns requests/s and the
// latency percentiles. Any failed request aborts the benchmark.
func run(c *http.Client, addr string, n, conc int) result {
	url := "http://" + addr + "/"
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
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					log.Fatalf("GET %s: %v", url, err)
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	return result{n: n, elapsed: time.Since(start), lat: lat}
}

// bulkRate downloads mib MiB on one connection; its n is MiB.
func bulkRate(addr string, mib int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) result {
	c := &http.Client{Transport: &http.Transport{DisableCompression: true, DialContext: dial}}
	start := time.Now()
	resp, err := c.Get(fmt.Sprintf("http://%s/bulk?mib=%d", addr, mib))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != int64(mib)<<20 {
		log.Fatalf("bulk GET from %s: %d bytes, %v", addr, got, err)
	}
	return result{n: mib, elapsed: time.Since(start)}
}

func row(what string, proxied, direct float64, format string) {
	fmt.Printf("| %s | "+format+" | "+format+" | %.2f | |\n", what, proxied, direct, proxied/direct)
}

func rateRow(what string, proxied, direct result) {
	fmt.Printf("| %s | %.0f | %.0f | %.2f | %.2f |\n", what, proxied.rate, direct.rate, proxied.rate/direct.rate, proxied.ratio)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
