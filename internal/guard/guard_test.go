package guard

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/problem"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type tripRecorder struct {
	mu    sync.Mutex
	trips []string
	at    []time.Time
}

func (r *tripRecorder) onTrip(flag string, t Trip) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trips = append(r.trips, flag+": "+t.Reason)
	r.at = append(r.at, t.At)
}

func (r *tripRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.trips)
}

type harness struct {
	set   *Set
	clock *fakeClock
	trips *tripRecorder
	reg   *prometheus.Registry
}

func newHarness(tb testing.TB, guards map[string]Config) *harness {
	tb.Helper()
	h := &harness{clock: newFakeClock(), trips: &tripRecorder{}, reg: prometheus.NewRegistry()}
	set, err := New(Options{Registerer: h.reg, OnTrip: h.trips.onTrip, Now: h.clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	set.Configure(guards)
	set.Tick() // at Configure's time: moves nothing
	h.set = set
	return h
}

// second records n outcomes of flag produced by mk, then moves the clock one
// second and ticks.
func (h *harness) second(flag string, n int, mk func(i int) Outcome) {
	for i := range n {
		h.set.Record(flag, mk(i))
	}
	h.clock.Add(time.Second)
	h.set.Tick()
}

var usersGuard = Config{Window: 60 * time.Second, MinRequests: 50, MaxErrorRate: 0.02, MaxP99: 800 * time.Millisecond}

func healthy(int) Outcome { return Outcome{Latency: 20 * time.Millisecond} }

func TestErrorsUnderHalfRampTripWithinOneWindow(t *testing.T) {
	h := newHarness(t, map[string]Config{"users-migration": usersGuard})
	// 40 requests a second at a 50 % rollout: 20 reach the service.
	for range 120 {
		h.second("users-migration", 20, healthy)
	}
	if got := h.trips.count(); got != 0 {
		t.Fatalf("healthy service: got %d trips, want 0: %v", got, h.trips.trips)
	}
	failingSince := h.clock.Now()
	for range 120 {
		h.second("users-migration", 20, func(i int) Outcome {
			// Half are 5xx answers, half are timeouts that fell back.
			return Outcome{Error: true, Latency: time.Duration(i%2) * 2 * time.Second}
		})
	}
	if got := h.trips.count(); got != 1 {
		t.Fatalf("got %d trips, want 1: %v", got, h.trips.trips)
	}
	if took := h.trips.at[0].Sub(failingSince); took > usersGuard.Window {
		t.Fatalf("tripped %s after the service started failing, want within %s", took, usersGuard.Window)
	}
	if got := h.trips.trips[0]; !strings.HasPrefix(got, "users-migration: error rate ") || !strings.Contains(got, "> 0.02 over 1m0s") {
		t.Fatalf("got reason %q, want the error rate over the window", got)
	}
	st, ok := h.set.State("users-migration")
	if !ok || !st.Tripped || st.Reason == "" || st.At.IsZero() {
		t.Fatalf("got state %+v (ok %v), want tripped with a reason and a time", st, ok)
	}
	if got, want := st.String(), "tripped at "+st.At.Format(time.RFC3339)+": "+st.Reason; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := testutil.ToFloat64(h.set.trips.WithLabelValues("users-migration")); got != 1 {
		t.Fatalf("got strangler_guard_trips_total %v, want 1", got)
	}
}

func TestWindowsBelowMinRequestsDecideNothing(t *testing.T) {
	h := newHarness(t, map[string]Config{"f": usersGuard})
	// 48 failing requests per window, every one slow: under min_requests.
	for range 600 {
		h.second("f", 1, func(int) Outcome { return Outcome{Error: true, Latency: 5 * time.Second} })
		h.clock.Add(250 * time.Millisecond) // 48 per 60s: one every 1.25s
		h.set.Tick()
	}
	if got := h.trips.count(); got != 0 {
		t.Fatalf("got %d trips, want 0: %v", got, h.trips.trips)
	}
	st, _ := h.set.State("f")
	if st.LastWindow == nil || st.LastWindow.Requests >= 50 || st.LastWindow.Errors != st.LastWindow.Requests {
		t.Fatalf("got last window %+v, want fewer than 50 requests, all errors", st.LastWindow)
	}
	if got, want := st.String(), fmt.Sprintf("holding (last window: %d requests, error rate 1, p99 5.24288s)", st.LastWindow.Requests); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestP99(t *testing.T) {
	for _, tc := range []struct {
		name     string
		slowEach int // one slow outcome per slowEach
		wantTrip bool
	}{
		{name: "2% above max_p99 trips", slowEach: 50, wantTrip: true},
		{name: "exactly 1% above max_p99 holds", slowEach: 100, wantTrip: false},
		{name: "none above max_p99 holds", slowEach: 0, wantTrip: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Window: 10 * time.Second, MinRequests: 100, MaxP99: 800 * time.Millisecond}
			h := newHarness(t, map[string]Config{"f": cfg})
			n := 0
			for range 10 {
				h.second("f", 100, func(int) Outcome {
					n++
					if tc.slowEach > 0 && n%tc.slowEach == 0 {
						return Outcome{Latency: 1200 * time.Millisecond}
					}
					return Outcome{Latency: 100 * time.Millisecond}
				})
			}
			if got := h.trips.count() == 1; got != tc.wantTrip {
				t.Fatalf("got tripped %v, want %v (trips %v)", got, tc.wantTrip, h.trips.trips)
			}
			if !tc.wantTrip {
				return
			}
			if got := h.trips.trips[0]; !strings.HasPrefix(got, "f: p99 ") || !strings.Contains(got, "> 800ms over 10s (100 requests, 2 slower)") {
				t.Fatalf("got reason %q, want the p99 breach", got)
			}
		})
	}
}

func TestRearmJudgesOnlyNewOutcomes(t *testing.T) {
	h := newHarness(t, map[string]Config{"f": usersGuard})
	failing := func(int) Outcome { return Outcome{Error: true} }
	for range 70 {
		h.second("f", 5, failing)
	}
	if got := h.trips.count(); got != 1 {
		t.Fatalf("got %d trips, want 1", got)
	}
	if h.set.Holding("f") || !h.set.Holding("unguarded") {
		t.Fatalf("got Holding %v for the tripped flag and %v for an unguarded one, want false and true",
			h.set.Holding("f"), h.set.Holding("unguarded"))
	}
	if !h.set.Rearm("f") {
		t.Fatal("Rearm: got false for a guarded flag, want true")
	}
	if st, _ := h.set.State("f"); st.Tripped || !h.set.Holding("f") {
		t.Fatalf("after Rearm got state %+v, want not tripped", st)
	}
	for range 70 {
		h.second("f", 5, healthy)
	}
	if got := h.trips.count(); got != 1 {
		t.Fatalf("healthy after rearm: got %d trips, want 1", got)
	}
	for range 70 {
		h.second("f", 5, failing)
	}
	if got := h.trips.count(); got != 2 {
		t.Fatalf("failing again after rearm: got %d trips, want 2", got)
	}
}

func TestConfigure(t *testing.T) {
	h := newHarness(t, map[string]Config{"f": usersGuard})
	for range 70 {
		h.second("f", 5, func(int) Outcome { return Outcome{Error: true} })
	}
	t.Run("unchanged config keeps the monitor", func(t *testing.T) {
		m := h.set.Monitor("f")
		h.set.Configure(map[string]Config{"f": usersGuard})
		if h.set.Monitor("f") != m {
			t.Fatal("got a new monitor, want the same one")
		}
	})
	t.Run("changed config keeps the trip", func(t *testing.T) {
		changed := usersGuard
		changed.MaxErrorRate = 0.5
		h.set.Configure(map[string]Config{"f": changed})
		if st, _ := h.set.State("f"); !st.Tripped || st.Config != changed {
			t.Fatalf("got state %+v, want tripped with the new config", st)
		}
	})
	t.Run("a flag left out loses its guard", func(t *testing.T) {
		h.set.Configure(nil)
		if _, ok := h.set.State("f"); ok {
			t.Fatal("got a state, want none")
		}
		h.set.Record("f", Outcome{Error: true}) // must not panic
	})
}

// TestTripsCounterStartsAtZero pins that strangler_guard_trips_total is
// exported for every guarded flag before its first trip: a series that
// appears at 1 is missed by increase() and rate().
// TestWindowsStartAtConfigure pins that outcomes recorded before the first
// Tick count at their time: a burst of errors right after Configure, with
// the first Tick only several windows later, has left every window by then
// and trips nothing. Configure runs at each slot offset in turn, so that
// its slot is, and is not, the monitor's first in its slot array.
func TestWindowsStartAtConfigure(t *testing.T) {
	slot := usersGuard.Window / slotsPerWindow
	for offset := range slotsPerWindow + 1 {
		clock, trips := newFakeClock(), &tripRecorder{}
		set, err := New(Options{OnTrip: trips.onTrip, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Duration(offset) * slot)
		set.Configure(map[string]Config{"users-migration": usersGuard})
		for range 200 {
			set.Record("users-migration", Outcome{Error: true})
		}
		clock.Add(3 * usersGuard.Window)
		set.Tick()
		clock.Add(slot)
		set.Tick()
		if got := trips.count(); got != 0 {
			t.Fatalf("offset %d: errors three windows old: got %d trips, want 0: %v", offset, got, trips.trips)
		}
		// Errors that are recent still trip.
		for range 200 {
			set.Record("users-migration", Outcome{Error: true})
		}
		clock.Add(slot)
		set.Tick()
		if got := trips.count(); got != 1 {
			t.Fatalf("offset %d: recent errors: got %d trips, want 1", offset, got)
		}
	}
}

func TestTripsCounterStartsAtZero(t *testing.T) {
	h := newHarness(t, map[string]Config{"f": usersGuard, "g": usersGuard})
	const want = `
# HELP strangler_guard_trips_total Guard trips that set a flag's percentage back to 0, per flag.
# TYPE strangler_guard_trips_total counter
strangler_guard_trips_total{flag="f"} 0
strangler_guard_trips_total{flag="g"} 0
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "strangler_guard_trips_total"); err != nil {
		t.Fatal(err)
	}
}

func TestUnguardedFlagIsIgnored(t *testing.T) {
	h := newHarness(t, map[string]Config{"f": usersGuard})
	for range 70 {
		h.second("other", 10, func(int) Outcome { return Outcome{Error: true} })
	}
	if got := h.trips.count(); got != 0 {
		t.Fatalf("got %d trips, want 0", got)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	set, err := New(Options{TickEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	set.Configure(map[string]Config{"f": usersGuard})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- set.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("got %v, want nil", err)
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Options{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Registerer: reg}); err == nil {
		t.Fatal("got nil error registering the metric twice, want one")
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for d := time.Duration(0); d < 40*time.Hour; d = d*9/8 + time.Microsecond {
		b := bucketOf(d)
		if b < prev {
			t.Fatalf("bucketOf(%s) = %d, below bucketOf of a shorter latency (%d)", d, b, prev)
		}
		prev = b
		if b >= numBuckets {
			t.Fatalf("bucketOf(%s) = %d, want < %d", d, b, numBuckets)
		}
		if b == numBuckets-1 {
			continue
		}
		upper := bucketUpper(b)
		if upper <= d.Truncate(time.Microsecond) {
			t.Fatalf("bucket %d of %s: got upper bound %s, want above it", b, d, upper)
		}
		if d >= 8*time.Microsecond && float64(upper) > float64(d)*1.126+float64(time.Microsecond) {
			t.Fatalf("bucket %d of %s: upper bound %s is more than 12.5%% above", b, d, upper)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h [numBuckets]uint64
	h[bucketOf(10*time.Millisecond)] = 98
	h[bucketOf(3*time.Second)] = 2
	got := quantile(&h, 100, 0.99)
	if got < 3*time.Second || got > 3*time.Second*9/8 {
		t.Fatalf("got p99 %s, want within 12.5%% above 3s", got)
	}
	h[bucketOf(3*time.Second)] = 1
	h[bucketOf(10*time.Millisecond)] = 99
	if got := quantile(&h, 100, 0.99); got > 11*time.Millisecond {
		t.Fatalf("got p99 %s with one slow outcome in 100, want about 10ms", got)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "valid", cfg: usersGuard},
		{name: "only p99", cfg: Config{Window: time.Minute, MinRequests: 1, MaxP99: time.Second}},
		{name: "everything wrong", cfg: Config{Window: 10 * time.Millisecond, MinRequests: 0, MaxErrorRate: 1.5, MaxP99: -1},
			want: []string{"g.window", "g.min_requests", "g.max_error_rate", "g.max_p99"}},
		{name: "cannot trip", cfg: Config{Window: time.Minute, MinRequests: 10},
			want: []string{"g"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problem.Paths(tc.cfg.Validate("g"))
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("got problems at %v, want at %v", tc.cfg.Validate("g"), tc.want)
			}
		})
	}
}

func BenchmarkRecord(b *testing.B) {
	set, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	set.Configure(map[string]Config{"users-migration": usersGuard, "products": usersGuard})
	set.Tick()
	b.ReportAllocs()
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			set.Record("users-migration", Outcome{Error: i%50 == 0, Latency: time.Duration(i%1000) * time.Millisecond})
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				set.Record("users-migration", Outcome{Error: i%50 == 0, Latency: time.Duration(i%1000) * time.Millisecond})
			}
		})
	})
}
