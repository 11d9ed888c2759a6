package reconcile

import (
	"context"
	"errors"
	"testing"
)

// When one side fails, the other is cancelled; the caller must see the
// failure, not the cancellation it caused, whichever side failed.
func TestBothReportsTheCauseNotTheCancellation(t *testing.T) {
	cause := errors.New("session TimeZone is Europe/Paris")
	failing := func(context.Context) error { return cause }
	waiting := func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	}
	for name, run := range map[string]func() error{
		"first fails":  func() error { return both(context.Background(), failing, waiting) },
		"second fails": func() error { return both(context.Background(), waiting, failing) },
	} {
		for range 50 {
			if err := run(); err != cause {
				t.Fatalf("%s: got %v, want %v", name, err, cause)
			}
		}
	}
	if err := both(context.Background(), func(context.Context) error { return nil }, func(context.Context) error { return nil }); err != nil {
		t.Fatalf("both succeeding: got %v, want nil", err)
	}
}
