package builders

import (
	"context"
	"testing"
)

// TestMayStartShares: one project cannot take every slot, and a project
// with fewer builds running goes first.
func TestMayStartShares(t *testing.T) {
	c := &Controller{MaxRunning: 4, MaxRunningPerProject: 2, running: map[string]context.CancelFunc{}, waiting: map[string]bool{}}
	run := func(keys ...string) {
		for _, k := range keys {
			c.running[k] = func() {}
		}
	}
	if ok, _ := c.mayStartLocked("a"); !ok {
		t.Fatal("an idle controller refuses a build")
	}
	run("a/1", "a/2")
	if ok, _ := c.mayStartLocked("a"); ok {
		t.Error("project a takes a third slot of four; its share is two")
	}
	if ok, _ := c.mayStartLocked("b"); !ok {
		t.Error("project b waits while slots are free and it runs nothing")
	}
	run("b/1")
	c.waiting["c/1"] = true
	if ok, first := c.mayStartLocked("b"); ok || len(first) != 1 || first[0] != "c/1" {
		t.Errorf("b (1 running) starts before c (0 running, waiting): ok=%v first=%v", ok, first)
	}
	if ok, _ := c.mayStartLocked("c"); !ok {
		t.Error("c, waiting with nothing running, may not start")
	}
	run("c/1", "b/2")
	if ok, _ := c.mayStartLocked("d"); ok {
		t.Error("a build starts with every slot taken")
	}
}
