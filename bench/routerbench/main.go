// Command routerbench measures HTTP through the edge router against the
// same HTTP straight to the backend (the pod), in one run on one machine,
// and the time from a route's creation to its first answer. HAProxy, the
// router OpenShift 3 ships, is measured alongside as a reference when it
// is installed (Debian's haproxy; make bench installs it). It prints
// Markdown tables for BENCHMARKS.md.
//
// Two layouts, each alternating direct, router and HAProxy over rounds:
//   - shared: the client and the backend (one process), the router and
//     HAProxy (a process each) share every core. Any user-space HTTP
//     proxy does about the client's and the backend's work again per
//     request here, so the ratio is bounded near 0.5x by the CPU, not by
//     the proxy's design.
//   - split (needs 2 cores and taskset): the router (or HAProxy) runs in
//     a process pinned to core 0, as a router on a node of its own; the
//     client and the backend share core 1 in every measurement, so the
//     direct and routed rows get the same CPU for the client and the pod.
//
// The router watches a real embedded etcd; the backend is a net/http
// server on 127.0.0.1 (so the router's endpoint guard is set to allow
// loopback).
//
//	go run ./bench/routerbench [-n 20000] [-n-new 5000] [-c 16] [-rounds 5] [-changes 50] [-layout shared,split]
package main

import (
	"bufio"
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
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/router"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

// pinnedEnv marks the process that already runs under taskset.
const pinnedEnv = "ROUTERBENCH_PINNED"

func main() {
	n := flag.Int("n", 20000, "requests per keep-alive measurement")
	nNew := flag.Int("n-new", 5000, "requests per new-connection measurement")
	conc := flag.Int("c", 16, "concurrent clients")
	rounds := flag.Int("rounds", 5, "rounds per measurement, alternating direct, router and HAProxy")
	changes := flag.Int("changes", 50, "routes created one at a time, each timed until it answers")
	layouts := flag.String("layout", "shared,split", "layouts to measure: shared, split or both")
	haproxyBin := flag.String("haproxy", "haproxy", "HAProxy binary for the reference rows (none to skip)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the shared layout's request measurements here (ROUTERBENCH_ROUTER_PROFILE=FILE profiles the split layout's router process)")
	serveRouter := flag.String("serve-router", "", "internal: run only a router for the backend at this address and print its address")
	flag.Parse()
	log.SetFlags(0)
	slog.SetLogLoggerLevel(slog.LevelWarn)

	if *serveRouter != "" {
		serveRouterOnly(*serveRouter)
		return
	}
	for _, l := range strings.Split(*layouts, ",") {
		switch l {
		case "shared":
			shared(*n, *nNew, *conc, *rounds, *changes, *haproxyBin, *cpuprofile)
		case "split":
			if err := split(*n, *nNew, *conc, *rounds, *haproxyBin); err != nil {
				fmt.Printf("\nsplit layout not measured: %v\n", err)
			}
		default:
			log.Fatalf("-layout %q: want shared, split or both, comma-separated", l)
		}
	}
}

// startRouter runs a router on a fresh embedded etcd with one route,
// www.bench.test, to the backend, and waits until it serves.
func startRouter(ctx context.Context, backend string) (routerAddr string, st store.Interface, stop func()) {
	dir, err := os.MkdirTemp("", "routerbench")
	if err != nil {
		log.Fatal(err)
	}
	member, err := etcd.Start(etcd.Config{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	st = store.New(member.InProcessClient())
	ctx, cancel := context.WithCancel(ctx)
	// With a metrics registry, as slipway start and slipway router run
	// it: per-route metrics are part of every request's cost.
	r, err := router.New(router.Config{Store: st, HTTPListen: "127.0.0.1:0", Endpoints: proxy.AnyEndpoint, Metrics: prometheus.NewRegistry()})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	httpAddr, _ := r.Addrs()
	routerAddr = httpAddr.String()

	_, bport, _ := net.SplitHostPort(backend)
	bp, _ := strconv.Atoi(bport)
	ep := &api.Endpoints{ObjectMeta: api.ObjectMeta{Namespace: "bench", Name: "web"},
		Subsets: []api.EndpointSubset{{Addresses: []api.EndpointAddress{{IP: "127.0.0.1"}}, Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: int32(bp)}}}}}
	if err := st.Create(ctx, api.EndpointsResource, ep); err != nil {
		log.Fatal(err)
	}
	mkRoute(ctx, st, "www.bench.test")
	waitServing(routerAddr, "www.bench.test", 30*time.Second)
	return routerAddr, st, func() { cancel(); <-done; member.Close(); os.RemoveAll(dir) }
}

func mkRoute(ctx context.Context, st store.Interface, host string) {
	rt := &api.Route{ObjectMeta: api.ObjectMeta{Namespace: "bench", Name: host[:len(host)-len(".bench.test")]},
		Spec: api.RouteSpec{Host: host, To: api.RouteTargetReference{Kind: "Service", Name: "web"}}}
	if err := st.Create(ctx, api.Routes, rt); err != nil {
		log.Fatal(err)
	}
}

// serveRouterOnly is the router process of the split layout: it prints
// "ROUTER addr" once serving and runs until its standard input closes.
func serveRouterOnly(backend string) {
	addr, _, stop := startRouter(context.Background(), backend)
	if f := os.Getenv("ROUTERBENCH_ROUTER_PROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(out)
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("ROUTER %s\n", addr)
	io.Copy(io.Discard, os.Stdin)
	stop()
}

// target is one side of a measurement; pid is the proxy process's (0:
// none, direct).
type target struct {
	name, addr, host string
	pid              int
}

// shared measures with everything on every core, then route changes.
func shared(n, nNew, conc, rounds, changes int, haproxyBin, cpuprofile string) {
	ctx := context.Background()
	backend := startBackend()
	// The router in a process of its own, as HAProxy is and as it is in
	// production (in slipway start or slipway router), not in the
	// client's and the backend's process and Go scheduler.
	routerAddr, routerPid, stopRouter, err := startRouterProcess(backend, "")
	if err != nil {
		log.Fatal(err)
	}
	defer stopRouter()
	targets := []target{{"direct", backend, "", 0}, {"router", routerAddr, "www.bench.test", routerPid}}
	if hp, hpPid, stopHP, err := startHAProxy(haproxyBin, backend, 2, ""); err != nil {
		fmt.Printf("\n(no HAProxy reference: %v)\n", err)
	} else {
		defer stopHP()
		targets = append(targets, target{"haproxy", hp, "www.bench.test", hpPid})
	}
	if cpuprofile != "" {
		f, err := os.Create(cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
	}
	fmt.Printf("\n# routerbench, shared layout: client and backend (one process, GOMAXPROCS=%d), router and HAProxy (processes of their own) on all %d cores, %d keep-alive and %d new-connection requests, %d concurrent clients, %s\n\n",
		runtime.GOMAXPROCS(0), runtime.NumCPU(), n, nNew, conc, time.Now().UTC().Format(time.RFC3339))
	measure(targets, n, nNew, conc, rounds)
	if cpuprofile != "" {
		pprof.StopCPUProfile()
	}

	// Route change to serving, on an in-process router whose store this
	// process writes: create a route, poll its host until 200.
	localAddr, st, stop := startRouter(ctx, backend)
	defer stop()
	var lat []time.Duration
	for i := range changes {
		host := fmt.Sprintf("r%d.bench.test", i)
		start := time.Now()
		mkRoute(ctx, st, host)
		waitServing(localAddr, host, 30*time.Second)
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	fmt.Printf("\nRoute created → first 200 through the router, %d routes one at a time (polling every 1ms): p50 %.1f ms, p99 %.1f ms.\n",
		changes, ms(lat[len(lat)*50/100]), ms(lat[len(lat)*99/100]))
}

// split measures with the proxy on core 0 and the client and backend
// on core 1. The process re-runs itself under taskset to pin itself.
func split(n, nNew, conc, rounds int, haproxyBin string) error {
	if runtime.NumCPU() < 2 && os.Getenv(pinnedEnv) == "" {
		return errors.New("it needs 2 cores")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return errors.New("taskset (util-linux) is not installed")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if os.Getenv(pinnedEnv) == "" {
		// Run this measurement again as a process pinned to core 1.
		args := []string{"-c", "1", exe, "-layout", "split", "-n", strconv.Itoa(n), "-n-new", strconv.Itoa(nNew),
			"-c", strconv.Itoa(conc), "-rounds", strconv.Itoa(rounds), "-haproxy", haproxyBin}
		cmd := exec.Command(taskset, args...)
		cmd.Env = append(os.Environ(), pinnedEnv+"=1")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	backend := startBackend()
	routerAddr, routerPid, stopRouter, err := startRouterProcess(backend, "0")
	if err != nil {
		return err
	}
	defer stopRouter()
	targets := []target{{"direct", backend, "", 0}, {"router", routerAddr, "www.bench.test", routerPid}}
	if hp, hpPid, stopHP, err := startHAProxy(haproxyBin, backend, 1, "0"); err != nil {
		fmt.Printf("\n(no HAProxy reference: %v)\n", err)
	} else {
		defer stopHP()
		targets = append(targets, target{"haproxy", hp, "www.bench.test", hpPid})
	}
	fmt.Printf("\n# routerbench, split layout: router (GOMAXPROCS=1) and HAProxy (1 thread) pinned to core 0; client and backend pinned to core 1 (GOMAXPROCS=%d) in every row; %d keep-alive and %d new-connection requests, %d concurrent clients, %s\n\n",
		runtime.GOMAXPROCS(0), n, nNew, conc, time.Now().UTC().Format(time.RFC3339))
	measure(targets, n, nNew, conc, rounds)
	return nil
}

// startRouterProcess runs this program again as a router for backend
// (-serve-router), pinned to the cores in cpus (taskset syntax; empty:
// not pinned), and returns the address it serves.
func startRouterProcess(backend, cpus string) (string, int, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(exe, "-serve-router", backend)
	if cpus != "" {
		cmd = exec.Command("taskset", "-c", cpus, exe, "-serve-router", backend)
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() { in.Close(); cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ROUTER ")
	if err != nil || !ok {
		stop()
		return "", 0, nil, fmt.Errorf("router process: %q %v", line, err)
	}
	return addr, cmd.Process.Pid, stop, nil
}

// startHAProxy runs HAProxy in front of backend with nbthread threads,
// pinned to the cores in cpus (taskset syntax; empty: not pinned).
func startHAProxy(bin, backend string, nbthread int, cpus string) (string, int, func(), error) {
	if bin == "none" {
		return "", 0, nil, errors.New("-haproxy none")
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", 0, nil, fmt.Errorf("%s is not installed (apt-get install haproxy)", bin)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", 0, nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	dir, err := os.MkdirTemp("", "routerbench-haproxy")
	if err != nil {
		return "", 0, nil, err
	}
	// A host rule as the router has, HTTP keep-alive on both sides.
	cfg := fmt.Sprintf(`global
  nbthread %d
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind %s
  use_backend be if { hdr(host) -i www.bench.test }
backend be
  http-reuse always
  server pod %s
`, nbthread, addr, backend)
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		return "", 0, nil, err
	}
	args := []string{"-db", "-f", file}
	if cpus != "" {
		args = append([]string{"-c", cpus, path}, args...)
		path = "taskset"
	}
	cmd := exec.Command(path, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	waitServing(addr, "www.bench.test", 10*time.Second)
	return addr, cmd.Process.Pid, stop, nil
}

// measure alternates the targets over rounds, keep-alive and then new
// connections, and prints each target's rate and latency with its ratio
// to the first (direct).
func measure(targets []target, n, nNew, conc, rounds int) {
	keepAlive := func() *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}}
	}
	newConn := func() *http.Client { return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}} }
	clients := make([]*http.Client, len(targets))
	for i, t := range targets {
		clients[i] = keepAlive()
		run(clients[i], t.addr, t.host, 2000, conc) // warm up
	}
	cpu := make([]time.Duration, len(targets)) // each proxy's CPU time in the keep-alive rounds
	ka := compare(len(targets), rounds, func(i int) result {
		c0 := procCPU(targets[i].pid)
		r := run(clients[i], targets[i].addr, targets[i].host, n/rounds, conc)
		cpu[i] += procCPU(targets[i].pid) - c0
		return r
	})
	nc := compare(len(targets), rounds, func(i int) result { return run(newConn(), targets[i].addr, targets[i].host, nNew/rounds, conc) })
	fmt.Printf("| measurement |")
	for _, t := range targets {
		fmt.Printf(" %s |", t.name)
	}
	for _, t := range targets[1:] {
		fmt.Printf(" %s / direct |", t.name)
	}
	fmt.Printf("\n|---|%s\n", strings.Repeat("---|", 2*len(targets)-1))
	row := func(what string, rs []result, f func(result) float64, format string) {
		fmt.Printf("| %s |", what)
		for _, r := range rs {
			fmt.Printf(" "+format+" |", f(r))
		}
		for _, r := range rs[1:] {
			fmt.Printf(" %.2f |", f(r)/f(rs[0]))
		}
		fmt.Println()
	}
	rate := func(r result) float64 { return r.rate }
	p50 := func(r result) float64 { return ms(r.p50) }
	p99 := func(r result) float64 { return ms(r.p99) }
	row("keep-alive (requests/s)", ka, rate, "%.0f")
	row("keep-alive p50 (ms)", ka, p50, "%.3f")
	row("keep-alive p99 (ms)", ka, p99, "%.3f")
	fmt.Printf("| keep-alive proxy CPU per request (µs) | |")
	for i := range targets[1:] {
		fmt.Printf(" %.1f |", float64(cpu[i+1].Microseconds())/float64(ka[i+1].n))
	}
	fmt.Printf("%s\n", strings.Repeat(" |", len(targets)-1))
	row("new connection (requests/s)", nc, rate, "%.0f")
	row("new connection p50 (ms)", nc, p50, "%.3f")
	row("new connection p99 (ms)", nc, p99, "%.3f")
	fmt.Printf("\nEach measurement alternates the targets over %d rounds; latency is per request as the client sees it, with %d clients in flight.\n", rounds, conc)
}

// procCPU is the user and system CPU time process pid has used so far
// (0 for pid 0), from /proc/PID/stat in clock ticks (USER_HZ, 100 a
// second on Linux).
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 14th and 15th of the line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
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

// compare runs once(i) for each of k targets in turn, rounds times, and
// sums each target's rounds.
func compare(k, rounds int, once func(i int) result) []result {
	rs := make([]result, k)
	for range rounds {
		for i := range k {
			rs[i] = rs[i].add(once(i))
		}
	}
	for i := range rs {
		rs[i] = rs[i].finish()
	}
	return rs
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
