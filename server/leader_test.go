package server

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestDeadHere: only an identity of this host whose pid is free is dead.
func TestDeadHere(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	gone := cmd.Process.Pid
	dead := deadHere("h")
	for id, want := range map[string]bool{
		fmt.Sprintf("h pid %d api https://x", gone):         true,
		fmt.Sprintf("h pid %d api https://x", os.Getppid()): false, // alive
		fmt.Sprintf("h pid %d api https://x", os.Getpid()):  false, // this process
		fmt.Sprintf("other pid %d api https://x", gone):     false, // another machine
		"h":         false,
		"h pid x y": false,
	} {
		if got := dead(id); got != want {
			t.Errorf("dead(%q) = %v, want %v", id, got, want)
		}
	}
}
