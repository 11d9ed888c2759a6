package loop

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestEvery(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	t.Run("runs until the context is done", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := Every(ctx, log, "test", time.Millisecond, func(context.Context) {
			calls++
			if calls == 3 {
				cancel()
			}
		})
		if err != nil || calls != 3 {
			t.Fatalf("got %d calls and error %v, want 3 calls and nil", calls, err)
		}
	})
	t.Run("a panic ends the loop with an error", func(t *testing.T) {
		err := Every(context.Background(), log, "test", time.Millisecond, func(context.Context) { panic("boom") })
		if err == nil || !strings.Contains(err.Error(), "test loop: panic: boom") {
			t.Fatalf("got %v, want the panic as an error", err)
		}
	})
}
