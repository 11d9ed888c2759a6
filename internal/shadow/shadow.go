package shadow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a shadow comparison, the values of the result label of
// strangler_shadow_comparisons_total.
const (
	ResultMatch    = "match"
	ResultMismatch = "mismatch"
	ResultError    = "error"
	ResultDropped  = "dropped"
)

// ShadowHeader marks every request the shadower sends, so that a service
// (or the monolith, for the A/A check) can tell copies from real traffic.
const ShadowHeader = "X-Strangler-Shadow"

// Route is one shadowed route as the proxy's config describes it.
type Route struct {
	// Name labels the route in metrics and the mismatch log.
	Name string
	// Config is the route's shadow config.
	Config Config
	// Service is the service's base URL.
	Service *url.URL
	// Monolith is the monolith's base URL (asked again by the noise check).
	Monolith *url.URL
	// StripPrefix, when set, is removed from the path sent to the service,
	// as the route's strip_prefix does.
	StripPrefix string
	// Timeout bounds each shadow exchange (both calls when the noise check
	// runs); zero means 10s.
	Timeout time.Duration
}

// Request is the part of a client's request a shadow copy needs. Only safe
// methods are shadowed, so there is no body.
type Request struct {
	Method   string
	Path     string // as the client sent it, before any strip_prefix
	RawQuery string
	Header   http.Header
}

// Mismatch is one shadow comparison that found differences.
type Mismatch struct {
	At     time.Time `json:"at"`
	Route  string    `json:"route"`
	Method string    `json:"method"`
	// Path is the request's path; the query is left out, as it may carry
	// secrets.
	Path           string `json:"path"`
	MonolithStatus int    `json:"monolith_status"`
	ServiceStatus  int    `json:"service_status"`
	Diffs          []Diff `json:"diffs"`
}

// Options configure a Shadower. Every field may be left zero.
type Options struct {
	// Registerer receives strangler_shadow_comparisons_total; nil
	// registers nothing.
	Registerer prometheus.Registerer
	// Logger gets failed exchanges (debug) and recovered panics; nil discards.
	Logger *slog.Logger
	// Client sends the copies; nil means a client that follows no
	// redirects (a redirect is part of the answer compared).
	Client *http.Client
	// MaxConcurrent bounds the comparisons in flight; a copy submitted
	// while all are busy is dropped. Zero means 16.
	MaxConcurrent int
	// MaxBody bounds each body compared, in bytes; a larger answer is
	// dropped (monolith) or an error (service). Zero means 1 MiB.
	MaxBody int64
	// KeepMismatches is how many mismatches are kept per route; zero means 50.
	KeepMismatches int
	// NoiseSample is the fraction of a noise-checked route's copies that
	// also ask the monolith a second time; zero means 0.1.
	NoiseSample float64
	// NoiseObservations is how many A/A checks a path must differ in to
	// become noise; zero means DefaultNoiseObservations.
	NoiseObservations int
	// OnResult, when set, is called with every comparison's result
	// (dropped ones included), after it was counted; from the goroutine
	// that produced it, so it must be quick.
	OnResult func(route, result string)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Rand returns a number in [0, 1) for sampling; nil means math/rand/v2.
	Rand func() float64
}

// Shadower copies monolith-bound requests of shadowed routes to their
// service in the background and compares the answers.
type Shadower struct {
	opts    Options
	log     *slog.Logger
	client  *http.Client
	results *prometheus.CounterVec

	routes atomic.Pointer[map[string]*route] // read-only once stored
	sem    chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex             // serialises Configure
	states map[string]*routeState // by route name, kept across Configure
}

// route is a configured route with its compiled ignores and its state.
type route struct {
	Route
	ignores ignoreSet
	state   *routeState
}

// routeState is what a route accumulates: recent mismatches and noise.
type routeState struct {
	noise *noise

	mu         sync.Mutex
	mismatches []Mismatch // ring
	next       int
}

// New returns a Shadower with no routes and registers its metric.
func New(opts Options) (*Shadower, error) {
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = 16
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 1 << 20
	}
	if opts.KeepMismatches <= 0 {
		opts.KeepMismatches = 50
	}
	if opts.NoiseSample <= 0 {
		opts.NoiseSample = 0.1
	}
	if opts.NoiseObservations <= 0 {
		opts.NoiseObservations = DefaultNoiseObservations
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	s := &Shadower{opts: opts, log: opts.Logger, client: opts.Client,
		sem: make(chan struct{}, opts.MaxConcurrent), states: map[string]*routeState{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.client == nil {
		s.client = &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				MaxIdleConnsPerHost: opts.MaxConcurrent,
				IdleConnTimeout:     90 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	s.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strangler", Subsystem: "shadow", Name: "comparisons_total",
		Help: "Shadow comparisons of the monolith's and the service's answers, per route and result (match, mismatch, error, dropped).",
	}, []string{"route", "result"})
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(s.results); err != nil {
			return nil, fmt.Errorf("register shadow metrics: %w", err)
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	empty := map[string]*route{}
	s.routes.Store(&empty)
	return s, nil
}

// Configure sets the shadowed routes, e.g. after a config reload. A route
// keeps its mismatches and learned noise across calls while its name stays.
func (s *Shadower) Configure(routes []Route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]*route, len(routes))
	for _, r := range routes {
		st := s.states[r.Name]
		if st == nil {
			st = &routeState{noise: newNoise(s.opts.NoiseObservations)}
			s.states[r.Name] = st
		}
		if r.Timeout <= 0 {
			r.Timeout = 10 * time.Second
		}
		next[r.Name] = &route{Route: r, ignores: r.Config.ignores(), state: st}
		// Every result is exported at 0 from the start, so that an alert
		// on a result's rate also sees its first occurrence.
		for _, res := range [...]string{ResultMatch, ResultMismatch, ResultError, ResultDropped} {
			s.results.WithLabelValues(r.Name, res)
		}
	}
	s.routes.Store(&next)
}

// Wait waits for the comparisons started so far to end. It must not run
// while Submit may be called: it is for tests, and for a shutdown after the
// listener stopped.
func (s *Shadower) Wait() { s.wg.Wait() }

// Close cancels the comparisons in flight, waits for them to end and
// closes idle connections.
func (s *Shadower) Close() {
	s.cancel()
	s.wg.Wait()
	s.client.CloseIdleConnections()
}

// SafeMethod reports whether method may be shadowed: a copy of anything else
// would make the service perform a write the monolith already did.
func SafeMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// Sample decides whether a request of route with method gets a shadow copy:
// the route is shadowed, the method safe, and the request falls in the
// route's percentage. The proxy asks before capturing anything.
func (s *Shadower) Sample(route, method string) bool {
	r := (*s.routes.Load())[route]
	if r == nil || !SafeMethod(method) {
		return false
	}
	p := r.Config.Percentage
	return p >= 100 || (p > 0 && s.opts.Rand()*100 < p)
}

// Submit hands over a request and the monolith's answer to it for a
// background comparison, and returns at once: the comparison never holds up
// the caller. It reports whether the comparison was started; a full pool
// or a body over MaxBody drops it (counted as dropped). Unsafe methods and
// unknown routes are refused uncounted. Submit does not sample: call Sample
// first. It takes ownership of req and mono.
func (s *Shadower) Submit(routeName string, req Request, mono Answer) bool {
	r := (*s.routes.Load())[routeName]
	if r == nil || !SafeMethod(req.Method) {
		return false
	}
	if int64(len(mono.Body)) > s.opts.MaxBody {
		s.count(routeName, ResultDropped)
		return false
	}
	select {
	case s.sem <- struct{}{}:
	default:
		s.count(routeName, ResultDropped)
		return false
	}
	s.wg.Add(1)
	go s.compare(r, req, mono)
	return true
}

func (s *Shadower) count(route, result string) {
	s.results.WithLabelValues(route, result).Inc()
	if s.opts.OnResult != nil {
		s.opts.OnResult(route, result)
	}
}

// compare runs one comparison; it owns a slot of the semaphore.
func (s *Shadower) compare(r *route, req Request, mono Answer) {
	defer s.wg.Done()
	defer func() { <-s.sem }()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("shadow comparison panicked", "route", r.Name, "panic", p, "stack", string(debug.Stack()))
			s.count(r.Name, ResultError)
		}
	}()
	ctx, cancel := context.WithTimeout(s.ctx, r.Timeout)
	defer cancel()

	if r.Config.NoiseCheck && s.opts.Rand() < s.opts.NoiseSample {
		again, err := s.fetch(ctx, r.Monolith, req.Path, req)
		if err != nil {
			s.log.Debug("shadow noise check failed", "route", r.Name, "error", err)
		} else {
			r.state.noise.learn(compareAnswers(mono, again, r.ignores, s.opts.MaxBody))
		}
	}
	path := req.Path
	if r.StripPrefix != "" {
		path = strings.TrimPrefix(path, strings.TrimSuffix(r.StripPrefix, "/"))
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
	}
	svc, err := s.fetch(ctx, r.Service, path, req)
	if err != nil {
		s.log.Debug("shadow request failed", "route", r.Name, "error", err)
		s.count(r.Name, ResultError)
		return
	}
	diffs := compareAnswers(mono, svc, merge(r.ignores, r.state.noise.set()), s.opts.MaxBody)
	if len(diffs) == 0 {
		s.count(r.Name, ResultMatch)
		return
	}
	r.state.add(Mismatch{
		At: s.opts.Now(), Route: r.Name, Method: req.Method, Path: req.Path,
		MonolithStatus: mono.Status, ServiceStatus: svc.Status, Diffs: diffs,
	}, s.opts.KeepMismatches)
	s.count(r.Name, ResultMismatch)
}

var errBodyTooLarge = errors.New("body exceeds the shadow body limit")

// fetch sends a copy of req to base+path and reads the answer.
func (s *Shadower) fetch(ctx context.Context, base *url.URL, path string, req Request) (Answer, error) {
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + path
	u.RawPath = ""
	u.RawQuery = req.RawQuery
	out, err := http.NewRequestWithContext(ctx, req.Method, u.String(), nil)
	if err != nil {
		return Answer{}, fmt.Errorf("shadow request: %w", err)
	}
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	out.Header.Set(ShadowHeader, "true")
	resp, err := s.client.Do(out)
	if err != nil {
		return Answer{}, fmt.Errorf("shadow %s %s: %w", req.Method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, s.opts.MaxBody+1))
	if err != nil {
		return Answer{}, fmt.Errorf("shadow %s %s: read body: %w", req.Method, u.Redacted(), err)
	}
	if int64(len(body)) > s.opts.MaxBody {
		return Answer{}, fmt.Errorf("shadow %s %s: %w (%d bytes)", req.Method, u.Redacted(), errBodyTooLarge, s.opts.MaxBody)
	}
	return Answer{Status: resp.StatusCode, Header: resp.Header, Body: body}, nil
}

func (st *routeState) add(m Mismatch, keep int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.mismatches) < keep {
		st.mismatches = append(st.mismatches, m)
		return
	}
	st.mismatches[st.next%keep] = m
	st.next = (st.next + 1) % keep
}

// recent returns the mismatches, newest first.
func (st *routeState) recent() []Mismatch {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := len(st.mismatches)
	out := make([]Mismatch, 0, n)
	for i := range n {
		// The oldest is at st.next once the ring is full (st.next is 0 before).
		out = append(out, st.mismatches[(st.next+n-1-i)%n])
	}
	return out
}

// Mismatches returns route's recent mismatches, newest first; ok is false
// for a route that is not shadowed.
func (s *Shadower) Mismatches(route string) (ms []Mismatch, ok bool) {
	r := (*s.routes.Load())[route]
	if r == nil {
		return nil, false
	}
	return r.state.recent(), true
}

// Noise returns what route's A/A checks have learned; ok is false for a
// route that is not shadowed.
func (s *Shadower) Noise(route string) (NoiseReport, bool) {
	r := (*s.routes.Load())[route]
	if r == nil {
		return NoiseReport{}, false
	}
	return r.state.noise.report(), true
}
