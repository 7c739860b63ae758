package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/cluster/endpoints"
	"slipway.dev/slipway/cluster/proxy"
	"slipway.dev/slipway/cluster/replication"
	"slipway.dev/slipway/cluster/scheduler"
	"slipway.dev/slipway/deploy"
	"slipway.dev/slipway/leader"
	"slipway.dev/slipway/promote"
	"slipway.dev/slipway/quota"
	"slipway.dev/slipway/registry"
	"slipway.dev/slipway/scan"
	"slipway.dev/slipway/store"
)

// startControllers checks the controllers' configuration, supervises
// buildkitd, and campaigns for the leadership: only the elected process of
// all those sharing the etcd runs the controllers and the scheduler, with
// a store fenced on its election key.
func (s *Server) startControllers(ctx context.Context) error {
	// Fail at start on bad configuration, not at the first term.
	if _, err := proxy.NewAllocator(s.cfg.Node.ServiceCIDR); err != nil {
		return fmt.Errorf("server: --service-cidr: %w", err)
	}
	if _, err := scheduler.New(scheduler.Config{Store: s.Store}); err != nil {
		return err
	}
	if _, err := scheduler.NewNodeLifecycle(scheduler.LifecycleConfig{Store: s.Store, GracePeriod: s.cfg.NodeGracePeriod, EvictionTimeout: s.cfg.PodEvictionTimeout}); err != nil {
		return err
	}
	host, _ := os.Hostname()
	el, err := leader.New(leader.Config{
		Store:    s.Store,
		Identity: fmt.Sprintf("%s pid %d api %s", host, os.Getpid(), s.URL),
		Lease:    s.cfg.LeaderLease,
		Dead:     deadHere(host),
		Lead:     s.lead,
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.Elector = el
	s.buildDaemon = s.startBuildkitd(ctx)
	s.leaderDone = make(chan struct{})
	go func() {
		defer close(s.leaderDone)
		el.Run(ctx)
	}()
	return nil
}

// deadHere says whether an election identity ("HOST pid N api URL")
// names a process of this machine that no longer exists.
func deadHere(host string) func(string) bool {
	return func(id string) bool {
		var h string
		var pid int
		if _, err := fmt.Sscanf(id, "%s pid %d ", &h, &pid); err != nil || h != host || host == "" || pid <= 0 || pid == os.Getpid() {
			return false
		}
		return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}
}

// scanYield bounds how long each scan waits for the registry to be idle
// (scan.Controller.Yield): under a steady load, scans still go on, about
// one a second.
const scanYield = time.Second

// lead runs every controller and the scheduler on the fenced store until
// ctx ends (leadership lost, or shutdown), and returns once they all have.
func (s *Server) lead(ctx context.Context, st *store.Store) {
	var wg sync.WaitGroup
	run := func(f func(context.Context)) { wg.Go(func() { f(ctx) }) }
	s.runBuildControllers(run, st)
	if !s.cfg.NoScanner {
		sc := &scan.Controller{Store: st, Registry: scanRegistry{s.trust}, RegistryHost: s.RegistryHost}
		if reg := s.Registry; reg != nil {
			// Scans yield to the registry's own requests for up to a
			// second each (pushes, pulls): a burst of pushes is scanned
			// right after, not in its way.
			sc.Yield = func(ctx context.Context) { reg.WaitQuiet(ctx, scanYield) }
		}
		run(sc.Run)
	}
	pc := &promote.Controller{Store: st, Registry: s.RegistryHost, Tokens: s.API.Authenticator(), Authz: s.API.Authorizer(), Policies: s.trust.checker}
	if s.Registry != nil {
		pc.Copier = s.Registry
	}
	run(pc.Run)
	if sch, err := scheduler.New(scheduler.Config{Store: st}); err == nil {
		run(sch.Run)
	} else {
		slog.Error("scheduler: not running", "err", err)
	}
	if lc, err := scheduler.NewNodeLifecycle(scheduler.LifecycleConfig{Store: st, GracePeriod: s.cfg.NodeGracePeriod, EvictionTimeout: s.cfg.PodEvictionTimeout}); err == nil {
		run(lc.Run)
	} else {
		slog.Error("node lifecycle: not running", "err", err)
	}
	run((&replication.Manager{Store: st}).Run)
	run((&quota.Controller{Store: st}).Run)
	if ips, err := proxy.NewAllocator(s.cfg.Node.ServiceCIDR); err == nil {
		run((&endpoints.Controller{Store: st, IPs: ips}).Run)
	}
	run((&deploy.Controller{Store: st, Registry: s.RegistryHost, Authz: s.API.Authorizer()}).Run)
	<-ctx.Done()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		// Their writes are fenced: a straggler cannot land one.
		slog.Warn("leader: some controllers are still stopping after 30s; campaigning again anyway")
	}
}

// startBuildkitd supervises buildkitd for the build controller. Without a
// buildkitd the server still starts; builds then fail with a reason that
// says what to do.
func (s *Server) startBuildkitd(ctx context.Context) *builders.Daemon {
	bin := s.cfg.Buildkitd
	if bin == "none" {
		// No BuildKit: rebases still run; builds fail saying why.
		bin = ""
	} else if bin == "" {
		var err error
		if bin, err = builders.FindBuildkitd(); err != nil {
			slog.Warn("builds are off", "err", err)
		}
	}
	d := &builders.Daemon{Binary: bin, Root: filepath.Join(s.cfg.DataDir, "buildkit"), DenyCIDRs: s.buildDenyCIDRs()}
	if bin != "" {
		s.buildsDone = make(chan struct{})
		go func() {
			defer close(s.buildsDone)
			d.Run(ctx)
		}()
	}
	return d
}

// runBuildControllers runs the build controller and the build triggers.
func (s *Server) runBuildControllers(run func(func(context.Context)), st *store.Store) {
	c := &builders.Controller{Store: st, Daemon: s.buildDaemon, Tokens: s.API.Authenticator(), Authz: s.API.Authorizer(), Registry: s.RegistryHost, LogDir: filepath.Join(s.cfg.DataDir, "builds"),
		GitTransport: registry.GuardedTransport(s.cfg.Import, false), Sign: s.trust.signBuild}
	if s.Registry != nil {
		c.Rebaser = s.Registry
	}
	run(c.Run)
	run((&builders.Triggers{Store: st, Authz: s.API.Authorizer()}).Run)
}
