package node

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/runtime"
)

// startProbes starts a goroutine per probe of the pod's containers, once;
// they end when the pod is forgotten or finished, or Run ends.
func (a *Agent) startProbes(pod *api.Pod, ps *podState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ps.stopProbes != nil {
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	ps.stopProbes = cancel
	key := pod.Namespace + "/" + pod.Name
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := ps.container(c.Name)
		if p := c.LivenessProbe; p != nil {
			a.probing.Go(func() {
				a.probeLoop(ctx, key, pod.UID, c.Name, p, func(id string, ok bool) {
					if !ok {
						a.setProbeResult(key, &cs.unhealthyID, id)
					}
				})
			})
		}
		if p := c.ReadinessProbe; p != nil {
			a.probing.Go(func() {
				a.probeLoop(ctx, key, pod.UID, c.Name, p, func(id string, ok bool) {
					if !ok {
						id = ""
					}
					a.setProbeResult(key, &cs.readyID, id)
				})
			})
		}
	}
}

// setProbeResult sets a probe's field and syncs the pod if it changed.
func (a *Agent) setProbeResult(key string, field *string, id string) {
	a.mu.Lock()
	changed := *field != id
	*field = id
	a.mu.Unlock()
	if changed {
		a.queue.Add(key)
	}
}

// probeLoop probes one container every period from initialDelaySeconds
// after it started, and reports to result: success at once, failure
// after failureThreshold failures in a row. A new container (a restart)
// starts the count over.
func (a *Agent) probeLoop(ctx context.Context, key, uid, name string, p *api.Probe, result func(id string, ok bool)) {
	period := seconds(p.PeriodSeconds, 10)
	delay := seconds(p.InitialDelaySeconds, 0)
	threshold := int(cmp.Or(p.FailureThreshold, 3))
	t := time.NewTicker(period)
	defer t.Stop()
	var id string
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rp := a.snapshot().find(key, uid)
		var rc *runtime.ContainerStatus
		if rp != nil {
			rc = rp.Container(name)
		}
		if rc == nil || rc.State != runtime.StateRunning || time.Since(rc.StartedAt) < delay {
			continue
		}
		if rc.ID != id {
			id, failures = rc.ID, 0
		}
		if a.probe(ctx, p, rp.IP, uid, name) {
			failures = 0
			result(id, true)
			continue
		}
		if failures++; failures >= threshold {
			failures = 0
			result(id, false)
		}
	}
}

// probe runs one check within timeoutSeconds (default 1): an HTTP GET to
// the pod's IP answering 200–399, a TCP connect, or a command exiting 0.
func (a *Agent) probe(ctx context.Context, p *api.Probe, ip, uid, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, seconds(p.TimeoutSeconds, 1))
	defer cancel()
	switch {
	case p.Exec != nil:
		code, err := a.rt.Exec(ctx, uid, name, p.Exec.Command, nil, nil)
		return err == nil && code == 0
	case ip == "":
		return false
	case p.HTTPGet != nil:
		path := p.HTTPGet.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		url := "http://" + net.JoinHostPort(ip, strconv.Itoa(int(p.HTTPGet.Port))) + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		req.Header.Set("User-Agent", "slipway-probe/1")
		resp, err := a.probes.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case p.TCPSocket != nil:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(int(p.TCPSocket.Port))))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return false
}

// newProbeClient makes the HTTP probes' client: no proxy, no kept
// connections, and redirects not followed (a 3xx is a success), so a
// probe never leaves the pod.
func newProbeClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func seconds(n, def int32) time.Duration {
	if n <= 0 {
		n = def
	}
	return time.Duration(n) * time.Second
}
