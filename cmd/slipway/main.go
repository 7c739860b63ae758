// Command slipway is the Slipway server and CLI in one binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"slipway.dev/slipway/builders"
	"slipway.dev/slipway/cmd"
)

func main() {
	if filepath.Base(os.Args[0]) == builders.RuncShimName {
		os.Exit(builders.RuncShim(os.Args[1:])) // buildkitd's runc
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.Root().ExecuteContext(ctx); err != nil {
		code := cmd.ExitCode(err)
		if code == 1 {
			fmt.Fprintln(os.Stderr, "error:", cmd.Friendly(err))
		}
		stop()
		os.Exit(code)
	}
}
