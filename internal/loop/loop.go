// Package loop runs a component's background work on a ticker.
package loop

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// Every calls fn every period until ctx is done, then returns nil. A panic in
// fn is logged with its stack and ends Every with an error naming the loop.
func Every(ctx context.Context, log *slog.Logger, name string, period time.Duration, fn func(context.Context)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("background loop panicked", "loop", name, "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s loop: panic: %v", name, r)
		}
	}()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			fn(ctx)
		}
	}
}
