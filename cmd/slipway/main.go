// Command slipway is the Slipway server and CLI in one binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"slipway.dev/slipway/cmd"
)

func main() {
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
