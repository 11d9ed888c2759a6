// Command strangler-proxy is a reverse proxy for strangler-fig migrations:
// it sends path prefixes of a legacy app (the monolith) to new services, falls
// back to the monolith when a service fails, and never replays a write that
// may have landed. See "strangler-proxy --help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}
