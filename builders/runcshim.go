package builders

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// RUN steps get no CAP_NET_RAW. BuildKit gives every step containerd's
// default capability set, which has it (containerd pkg/oci/spec.go), and
// neither buildkitd's configuration nor an entitlement can take one away:
// the only knob is the OCI runtime it runs ([worker.oci] binary). So
// buildkitd runs Slipway itself as its runtime, under the name RuncShimName,
// and RuncShim removes the capability from the container's spec (and from
// the process of an exec into it) before it hands over to the real runc.
// With a raw socket a step could forge or read frames on the build bridge
// that its ordinary sockets cannot. What it costs: ping in a RUN step
// fails (the step's network namespace keeps the default
// net.ipv4.ping_group_range, so no ICMP datagram sockets either).

// RuncShimName is the name Slipway's binary answers to as buildkitd's OCI
// runtime; main dispatches on it.
const RuncShimName = "slipway-runc"

// droppedCaps are removed from every set of every build container.
var droppedCaps = []string{"CAP_NET_RAW"}

// RuncShim is Slipway run as buildkitd's runc: it edits the spec that
// `run` or `create` (--bundle) or `exec` (--process) is about to use, and
// execs the real runc with the same arguments. It returns only on error,
// with an exit code.
func RuncShim(args []string) int {
	if err := dropCaps(args); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", RuncShimName, err)
		return 1
	}
	real, err := realRunc()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", RuncShimName, err)
		return 1
	}
	err = syscall.Exec(real, append([]string{real}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "%s: exec %s: %v\n", RuncShimName, real, err)
	return 1
}

// shim makes ROOT/RuncShimName, a link to this executable, for
// buildkitd's [worker.oci] binary.
func (d *Daemon) shim() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("builders: finding this executable, to run as buildkitd's runc: %w", err)
	}
	link := filepath.Join(d.Root, RuncShimName)
	_ = os.Remove(link)
	if err := os.Symlink(exe, link); err != nil {
		return "", fmt.Errorf("builders: %w", err)
	}
	return link, nil
}

// realRunc is the runtime buildkitd would have run: buildkit-runc, then
// runc, on PATH.
func realRunc() (string, error) {
	for _, name := range []string{"buildkit-runc", "runc"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("runc is not on PATH (install runc)")
}

// dropCaps edits the spec file the runc command line args will read.
func dropCaps(args []string) error {
	cmd, rest := runcCommand(args)
	switch cmd {
	case "run", "create":
		bundle := flagValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		return editJSON(filepath.Join(bundle, "config.json"), func(spec map[string]any) {
			if p, ok := spec["process"].(map[string]any); ok {
				dropFromProcess(p)
			}
		})
	case "exec":
		if f := flagValue(rest, "--process", "-p"); f != "" {
			return editJSON(f, dropFromProcess)
		}
	}
	return nil
}

// runcCommand is runc's subcommand and the arguments after it; global
// flags that take a value are skipped with it.
func runcCommand(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case slices.Contains([]string{"--root", "--log", "--log-format", "--criu"}, a):
			i++
		case strings.HasPrefix(a, "-"):
		default:
			return a, args[i+1:]
		}
	}
	return "", nil
}

func flagValue(args []string, names ...string) string {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v
			}
		}
	}
	return ""
}

// dropFromProcess removes droppedCaps from an OCI process's capability
// sets. The spec is edited as a map, so fields this code does not know
// pass through untouched.
func dropFromProcess(p map[string]any) {
	caps, ok := p["capabilities"].(map[string]any)
	if !ok {
		return
	}
	for set, v := range caps {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := list[:0:0]
		for _, c := range list {
			if s, _ := c.(string); !slices.Contains(droppedCaps, s) {
				kept = append(kept, c)
			}
		}
		caps[set] = kept
	}
}

func editJSON(path string, edit func(map[string]any)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.UseNumber() // uids, limits and masks stay exact
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	edit(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, fi.Mode().Perm())
}
