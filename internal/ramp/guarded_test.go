package ramp

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/guard"
)

// TestFailingServiceUnderHalfRampIsBackToZero wires a guard to a ramp the
// way the proxy does: the guard's trip callback calls Controller.Trip.
func TestFailingServiceUnderHalfRampIsBackToZero(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := &fakeClock{now: t0}
	store := newFileStore(dir, clock.Now)
	ramps, err := New(Options{Store: store, FlagsFile: filepath.Join(dir, "flags.yaml"), Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ramps.Configure(map[string]Config{"users-migration": {Steps: []float64{1, 5, 25, 50, 100}, Interval: 10 * time.Minute}})
	guardCfg := guard.Config{Window: time.Minute, MinRequests: 50, MaxErrorRate: 0.02}
	var tripErr error
	guards, err := guard.New(guard.Options{Now: clock.Now, OnTrip: func(flag string, tr guard.Trip) {
		tripErr = ramps.Trip(ctx, flag, tr.Reason)
	}})
	if err != nil {
		t.Fatal(err)
	}
	guards.Configure(map[string]guard.Config{"users-migration": guardCfg})
	guards.Tick()
	if err := store.SetPercentage(ctx, "users-migration", 50, "operator"); err != nil {
		t.Fatal(err)
	}
	tick(t, ramps) // the ramp starts its clock at 50 %

	// Every second 40 users ask; the service is asked while the flag is
	// above 0 % (half of them at 50 %), and every answer is a 5xx.
	serviceCalls := func() int {
		p, _ := store.Percentage("users-migration")
		return int(40 * p / 100)
	}
	failingSince := clock.Now()
	var zeroAt time.Time
	for range 3 * 60 {
		for range serviceCalls() {
			guards.Record("users-migration", guard.Outcome{Error: true, Latency: 5 * time.Millisecond})
		}
		clock.Add(time.Second)
		guards.Tick()
		tick(t, ramps)
		if p, _ := store.Percentage("users-migration"); p == 0 && zeroAt.IsZero() {
			zeroAt = clock.Now()
		}
	}
	if tripErr != nil {
		t.Fatalf("Trip: %v", tripErr)
	}
	if zeroAt.IsZero() || zeroAt.Sub(failingSince) > guardCfg.Window {
		t.Fatalf("got back to 0%% at %v after the failures began, want within %s", zeroAt.Sub(failingSince), guardCfg.Window)
	}
	if got := serviceCalls(); got != 0 {
		t.Fatalf("after the trip: got %d service calls a second, want 0 (the monolith serves everyone)", got)
	}
	st, _, err := ramps.State("users-migration")
	if err != nil || !st.Stopped || !strings.HasPrefix(st.StoppedReason, "error rate 1 > 0.02 over 1m0s") {
		t.Fatalf("got ramp state %+v (err %v), want stopped with the guard's reason", st, err)
	}
	if gs, _ := guards.State("users-migration"); !gs.Tripped || gs.Reason != st.StoppedReason {
		t.Fatalf("got guard state %+v, want tripped with reason %q", gs, st.StoppedReason)
	}
	entries := readAudit(t, dir)
	if got := auditPercentages(entries); len(got) != 2 || got[1] != 0 {
		t.Fatalf("got percentages set %v, want [50 0]: the ramp must not move a tripped flag", got)
	}

	// The operator resumes: the proxy rearms the guard and resumes the ramp.
	guards.Rearm("users-migration")
	if err := ramps.Resume(ctx, "users-migration"); err != nil {
		t.Fatal(err)
	}
	tick(t, ramps)
	if p, _ := store.Percentage("users-migration"); p != 1 {
		t.Fatalf("after resume: got %v%%, want 1%%", p)
	}
}
