package guard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-fig/strangler/internal/loop"
)

// Outcome is what happened to one request a guarded flag sent to its service.
type Outcome struct {
	// Error is true for a 5xx answer from the service and for every
	// fallback to the monolith, whatever its reason.
	Error bool
	// Latency is how long the service took to answer (zero when the
	// request was never sent, e.g. breaker_open).
	Latency time.Duration
}

// Trip describes why and when a guard tripped.
type Trip struct {
	// Reason is readable, e.g. "error rate 0.307 > 0.02 over 1m0s (212 requests)".
	Reason string
	// At is when the window that breached was evaluated.
	At time.Time
	// Window holds the figures of that window.
	Window WindowStats
}

// WindowStats are the figures of one evaluated window.
type WindowStats struct {
	// End is when the window closed.
	End time.Time
	// Span is the window's length.
	Span time.Duration
	// Requests counts the outcomes in the window.
	Requests uint64
	// Errors counts the erroneous outcomes in the window.
	Errors uint64
	// P99 is the histogram estimate of the window's p99 latency.
	P99 time.Duration
}

// ErrorRate returns Errors/Requests, 0 for an empty window.
func (w WindowStats) ErrorRate() float64 {
	if w.Requests == 0 {
		return 0
	}
	return float64(w.Errors) / float64(w.Requests)
}

// windowJSON is WindowStats as the admin API writes it.
type windowJSON struct {
	End       time.Time `json:"end"`
	Span      string    `json:"span"`
	Requests  uint64    `json:"requests"`
	Errors    uint64    `json:"errors"`
	ErrorRate float64   `json:"error_rate"`
	P99       string    `json:"p99"`
}

// MarshalJSON writes durations as text ("1m0s") for the admin API.
func (w WindowStats) MarshalJSON() ([]byte, error) {
	return json.Marshal(windowJSON{w.End, w.Span.String(), w.Requests, w.Errors, w.ErrorRate(), w.P99.String()})
}

// UnmarshalJSON reads what MarshalJSON writes, for admin API clients.
func (w *WindowStats) UnmarshalJSON(b []byte) error {
	var j windowJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("window stats: %w", err)
	}
	span, err := parseDuration(j.Span)
	if err != nil {
		return fmt.Errorf("window stats span: %w", err)
	}
	p99, err := parseDuration(j.P99)
	if err != nil {
		return fmt.Errorf("window stats p99: %w", err)
	}
	*w = WindowStats{End: j.End, Span: span, Requests: j.Requests, Errors: j.Errors, P99: p99}
	return nil
}

// parseDuration is time.ParseDuration with "" meaning zero.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// State is a guard's state as `rollout get`, `explain` and
// GET /admin/flags/{key} show it.
type State struct {
	// Config is the guard in force.
	Config Config `json:"-"`
	// Tripped is true from a trip until Rearm.
	Tripped bool `json:"tripped"`
	// Reason and At describe the trip, when Tripped.
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at,omitzero"`
	// LastWindow is the last window evaluated, nil before the first.
	LastWindow *WindowStats `json:"last_window,omitempty"`
}

// String summarises st for `rollout get` and `explain`, e.g. "tripped at
// 2026-01-01T12:00:36Z: error rate 0.307 > 0.02 over 1m0s (212 requests)"
// or "holding (last window: 212 requests, error rate 0.00472, p99 36ms)".
func (st State) String() string {
	if st.Tripped {
		return fmt.Sprintf("tripped at %s: %s", st.At.UTC().Format(time.RFC3339), st.Reason)
	}
	if w := st.LastWindow; w != nil {
		return fmt.Sprintf("holding (last window: %d requests, error rate %s, p99 %s)", w.Requests, fmtRate(w.ErrorRate()), w.P99)
	}
	return "holding (no window evaluated yet)"
}

// Options configure a Set. Every field may be left zero.
type Options struct {
	// Registerer receives strangler_guard_trips_total; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger gets a line per trip and the stack of a recovered panic; nil discards.
	Logger *slog.Logger
	// OnTrip is called once per trip, from the goroutine that runs Tick.
	OnTrip func(flag string, t Trip)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// TickEvery is Run's ticker period; zero means one second.
	TickEvery time.Duration
}

// Set holds the guards of every guarded flag.
type Set struct {
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	trips *prometheus.CounterVec

	monitors atomic.Pointer[map[string]*Monitor] // read-only once stored

	mu sync.Mutex // serialises Configure, Tick and Rearm
}

// New returns a Set with no guards and registers its metric.
func New(opts Options) (*Set, error) {
	s := &Set{opts: opts, log: opts.Logger, now: opts.Now}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.trips = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strangler", Subsystem: "guard", Name: "trips_total",
		Help: "Guard trips that set a flag's percentage back to 0, per flag.",
	}, []string{"flag"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.trips); err != nil {
			return nil, fmt.Errorf("register guard metrics: %w", err)
		}
	}
	empty := map[string]*Monitor{}
	s.monitors.Store(&empty)
	return s, nil
}

// Configure sets the guarded flags, e.g. after the flags file was loaded. A
// flag whose config is unchanged keeps its windows; a changed config starts
// empty windows but keeps the trip state; a flag left out loses its guard.
func (s *Set) Configure(guards map[string]Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.monitors.Load()
	next := make(map[string]*Monitor, len(guards))
	for flag, cfg := range guards {
		// The counter is exported at 0 from the start, so that an alert on
		// its increase also sees the first trip.
		s.trips.WithLabelValues(flag)
		if m, ok := old[flag]; ok && m.cfg == cfg {
			next[flag] = m
			continue
		}
		m := newMonitor(flag, cfg)
		// Its windows start now: the outcomes recorded before the first
		// Tick go into the slot of their time, not into one that a late
		// first Tick would judge as recent.
		m.advance(s.now())
		if prev, ok := old[flag]; ok {
			m.tripped, m.trip, m.last = prev.tripped, prev.trip, prev.last
		}
		next[flag] = m
	}
	s.monitors.Store(&next)
}

// Monitor returns flag's monitor, nil when the flag has no guard. A caller
// that keeps it (per route, per config) saves Record's map lookup.
func (s *Set) Monitor(flag string) *Monitor { return (*s.monitors.Load())[flag] }

// Record adds one outcome of flag's routes; a flag without a guard is
// ignored. It takes no lock and does not allocate.
func (s *Set) Record(flag string, o Outcome) {
	if m := (*s.monitors.Load())[flag]; m != nil {
		m.Record(o)
	}
}

// State returns flag's guard state; ok is false when the flag has no guard.
func (s *Set) State(flag string) (st State, ok bool) {
	m := s.Monitor(flag)
	if m == nil {
		return State{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return m.state(), true
}

// Holding reports whether flag's guard holds: true for a flag without a
// guard or with one that has not tripped. It fits ramp.Options.Holding.
func (s *Set) Holding(flag string) bool {
	st, ok := s.State(flag)
	return !ok || !st.Tripped
}

// Rearm clears flag's trip and empties its windows, so the guard judges
// only what happens from now on. The proxy calls it when an operator
// resumes the flag. It reports whether the flag has a guard.
func (s *Set) Rearm(flag string) bool {
	m := s.Monitor(flag)
	if m == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m.tripped, m.trip = false, Trip{}
	for i := range m.slots {
		m.slots[i].reset()
	}
	return true
}

// Tick closes the slots that ended by now, evaluates the windows that moved
// and fires the trips they cause. Run calls it on a ticker; tests call it
// with a fake clock.
func (s *Set) Tick() {
	now := s.now()
	type fired struct {
		flag string
		trip Trip
	}
	var trips []fired
	s.mu.Lock()
	for flag, m := range *s.monitors.Load() {
		if t, ok := m.advance(now); ok {
			trips = append(trips, fired{flag, t})
		}
	}
	s.mu.Unlock()
	for _, f := range trips {
		s.trips.WithLabelValues(f.flag).Inc()
		s.log.Warn("guard tripped: rollout set to 0", "flag", f.flag, "reason", f.trip.Reason)
		if s.opts.OnTrip != nil {
			s.opts.OnTrip(f.flag, f.trip)
		}
	}
}

// Run calls Tick every TickEvery until ctx is done. A panic in a tick is
// logged with its stack and ends Run with an error.
func (s *Set) Run(ctx context.Context) error {
	every := s.opts.TickEvery
	if every <= 0 {
		every = time.Second
	}
	return loop.Every(ctx, s.log, "guard", every, func(context.Context) { s.Tick() })
}

// slotsPerWindow is how many slots make a window.
const slotsPerWindow = 10

type slot struct {
	total, errors, slow atomic.Uint64
	hist                [numBuckets]atomic.Uint64
}

func (sl *slot) reset() {
	sl.total.Store(0)
	sl.errors.Store(0)
	sl.slow.Store(0)
	for i := range sl.hist {
		sl.hist[i].Store(0)
	}
}

// Monitor is one flag's guard.
type Monitor struct {
	flag    string
	cfg     Config
	slotLen time.Duration

	slots [slotsPerWindow + 1]slot // the current slot and the window's
	cur   atomic.Pointer[slot]

	// Below: owned by the Set's mutex.
	started bool
	curIdx  int64 // number of the current slot: time since the epoch / slotLen
	tripped bool
	trip    Trip
	last    *WindowStats
}

func newMonitor(flag string, cfg Config) *Monitor {
	m := &Monitor{flag: flag, cfg: cfg, slotLen: cfg.Window / slotsPerWindow}
	if m.slotLen <= 0 {
		m.slotLen = time.Millisecond
	}
	m.cur.Store(&m.slots[0])
	return m
}

// Record adds one outcome to the current slot.
func (m *Monitor) Record(o Outcome) {
	sl := m.cur.Load()
	sl.total.Add(1)
	if o.Error {
		sl.errors.Add(1)
	}
	if m.cfg.MaxP99 > 0 && o.Latency > m.cfg.MaxP99 {
		sl.slow.Add(1)
	}
	sl.hist[bucketOf(o.Latency)].Add(1)
}

func (m *Monitor) pos(idx int64) *slot {
	n := int64(len(m.slots))
	return &m.slots[((idx%n)+n)%n]
}

// advance moves the current slot to now's and, when it moved, evaluates the
// window of the slots that closed last. It returns a trip when that window
// tripped a guard that was not tripped.
func (m *Monitor) advance(now time.Time) (Trip, bool) {
	idx := now.UnixNano() / int64(m.slotLen)
	if !m.started {
		m.started, m.curIdx = true, idx
		m.cur.Store(m.pos(idx))
		return Trip{}, false
	}
	if idx <= m.curIdx {
		return Trip{}, false
	}
	from := m.curIdx + 1
	if gap := idx - int64(len(m.slots)); from < gap+1 {
		from = gap + 1 // every slot gets emptied once
	}
	for k := from; k <= idx; k++ {
		sl := m.pos(k)
		sl.reset()
		m.cur.Store(sl)
	}
	m.curIdx = idx

	var w WindowStats
	var hist [numBuckets]uint64
	var slow uint64
	for k := idx - slotsPerWindow; k < idx; k++ {
		sl := m.pos(k)
		w.Requests += sl.total.Load()
		w.Errors += sl.errors.Load()
		slow += sl.slow.Load()
		for i := range sl.hist {
			hist[i] += sl.hist[i].Load()
		}
	}
	w.End = time.Unix(0, idx*int64(m.slotLen))
	w.Span = m.slotLen * slotsPerWindow
	w.P99 = quantile(&hist, w.Requests, 0.99)
	m.last = &w

	if m.tripped || w.Requests < uint64(m.cfg.MinRequests) || w.Requests == 0 {
		return Trip{}, false
	}
	var reason string
	switch {
	case m.cfg.MaxErrorRate > 0 && w.ErrorRate() > m.cfg.MaxErrorRate:
		reason = fmt.Sprintf("error rate %s > %s over %s (%d requests)",
			fmtRate(w.ErrorRate()), fmtRate(m.cfg.MaxErrorRate), w.Span, w.Requests)
	case m.cfg.MaxP99 > 0 && slow > w.Requests/100:
		// The nearest-rank p99 is above MaxP99 exactly when more than
		// floor(n/100) outcomes are; the histogram only names the figure.
		// Bucket upper bounds are above every latency in the bucket, so
		// the figure printed is above MaxP99 too.
		reason = fmt.Sprintf("p99 %s > %s over %s (%d requests, %d slower)",
			w.P99, m.cfg.MaxP99, w.Span, w.Requests, slow)
	default:
		return Trip{}, false
	}
	m.tripped = true
	m.trip = Trip{Reason: reason, At: now, Window: w}
	return m.trip, true
}

func (m *Monitor) state() State {
	st := State{Config: m.cfg, Tripped: m.tripped}
	if m.tripped {
		st.Reason, st.At = m.trip.Reason, m.trip.At
	}
	if m.last != nil {
		w := *m.last
		st.LastWindow = &w
	}
	return st
}

func fmtRate(r float64) string { return strconv.FormatFloat(r, 'g', 3, 64) }
