// Command datasync moves a table from the monolith's PostgreSQL database to a
// service's own database: backfill, sync, verify, status and cleanup.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/strangler-fig/strangler/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], cli.System())
	stop()
	os.Exit(code)
}
