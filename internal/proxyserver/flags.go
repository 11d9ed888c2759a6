package proxyserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/strangler-fig/strangler/internal/admin"
	"github.com/strangler-fig/strangler/internal/guard"
	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/ramp"
	"github.com/strangler-fig/strangler/internal/routing"
	"github.com/strangler-fig/strangler/internal/toggles"
)

// flagRollout is the routing.Rollout of a proxy with a flags_file: rollout
// flags evaluated by the toggles package for the request's user, guarded
// and ramped as the flags file says.
type flagRollout struct {
	tr     *toggles.Rollout
	guards *guard.Set
	ramps  *ramp.Controller
	next   routing.Observer // Options.Observer, nil for none
	log    *slog.Logger

	cancel context.CancelFunc // stops the guard and ramp loops
	wg     sync.WaitGroup
}

var (
	_ routing.Rollout  = (*flagRollout)(nil)
	_ routing.Observer = (*flagRollout)(nil)
	_ ramp.Store       = rampStore{}
)

// startFlags starts the rollout machinery for cfg: the flags store and its
// watcher, identity, the OpenFeature client, the rollout metrics, and the
// guard and ramp loops configured from the flags file.
func startFlags(ctx context.Context, cfg *proxyconfig.Config, opts Options) (*flagRollout, error) {
	f := &flagRollout{next: opts.Observer, log: opts.Logger}
	var err error
	f.guards, err = guard.New(guard.Options{
		Registerer: opts.Registry,
		Logger:     opts.Logger.With("component", "guard"),
		OnTrip:     f.onTrip,
		TickEvery:  opts.GuardTick,
	})
	if err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	// The ramp needs the store, which toggles.Start opens: it is set
	// before the first snapshot reaches configure, through the adapter.
	store := &rampStore{}
	var fleetOpts *toggles.FleetOptions
	var rampState ramp.StateStore
	fleetState := &fleetRampState{}
	if cfg.FlagsStore != nil {
		url, err := cfg.FlagsStoreURL(opts.Getenv)
		if err != nil {
			return nil, fmt.Errorf("flags: %w", err)
		}
		fleetOpts = &toggles.FleetOptions{
			URL:       url,
			CacheFile: cfg.FlagsCachePath(),
			Replica:   cfg.FlagsStore.ReplicaName,
			SeedFile:  cfg.FlagsPath(),
		}
		rampState = fleetState
	}
	f.ramps, err = ramp.New(ramp.Options{
		Store:     store,
		State:     rampState,
		FlagsFile: cfg.FlagsPath(),
		Holding:   f.guards.Holding,
		Logger:    opts.Logger.With("component", "ramp"),
		TickEvery: opts.RampTick,
	})
	if err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	f.tr, err = toggles.Start(ctx, toggles.Config{
		FlagsFile:  cfg.FlagsPath(),
		Identity:   IdentitySources(cfg),
		Anonymous:  toggles.AnonymousMode(cfg.Anonymous),
		BaseDir:    cfg.Dir(),
		Getenv:     opts.Getenv,
		Registerer: opts.Registry,
		Logger:     opts.Logger,
		OnChange:   f.configure,
		Fleet:      fleetOpts,
	})
	if err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	store.s = f.tr.Store()
	if fl, ok := store.s.Fleet(); ok {
		fleetState.s = fl.RampState()
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	f.wg.Go(func() {
		if err := f.guards.Run(loopCtx); err != nil {
			f.log.Error("guard loop stopped", "err", err)
		}
	})
	f.wg.Go(func() {
		if err := f.ramps.Run(loopCtx); err != nil {
			f.log.Error("ramp loop stopped", "err", err)
		}
	})
	if fleetOpts != nil {
		every := opts.RampTick
		if every <= 0 {
			every = 5 * time.Second
		}
		f.wg.Go(func() { f.followResumes(loopCtx, every) })
	}
	return f, nil
}

// followResumes rearms, every interval, this replica's tripped guards
// that were resumed through another replica since they tripped (fleet
// mode: rollout resume reaches one replica; the store records when).
func (f *flagRollout) followResumes(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, key := range f.tr.Store().Snapshot().FlagKeys() {
			g, ok := f.guards.State(key)
			if !ok || !g.Tripped {
				continue
			}
			st, ok, err := f.ramps.State(key)
			if err != nil || !ok || st.Stopped || !st.ResumedAt.After(g.At) {
				continue
			}
			if f.guards.Rearm(key) {
				f.log.Info("guard rearmed: the flag was resumed through another replica", "flag", key, "resumed_at", st.ResumedAt)
			}
		}
	}
}

// configure gives the guards and ramps the flags file's settings; it runs
// on each snapshot put in force.
func (f *flagRollout) configure(s *toggles.Snapshot) {
	guards := make(map[string]guard.Config)
	ramps := make(map[string]ramp.Config)
	for key, fl := range s.File().Flags {
		if fl.Guard != nil {
			guards[key] = *fl.Guard
		}
		if fl.Ramp != nil {
			ramps[key] = *fl.Ramp
		}
	}
	f.guards.Configure(guards)
	f.ramps.Configure(ramps)
}

// onTrip sets the flag to 0 %, persisted through the flags store like a
// manual change, and stops its ramp for every replica.
func (f *flagRollout) onTrip(flag string, t guard.Trip) {
	// Bounded: a replica stuck with the ramp lock must not stall the
	// guard loop (the percentage is set before the lock is taken).
	ctx, cancel := context.WithTimeout(context.Background(), tripTimeout)
	defer cancel()
	if err := f.ramps.Trip(ctx, flag, t.Reason); err != nil {
		f.log.Error("guard trip: could not set the flag to 0", "flag", flag, "reason", t.Reason, "err", err)
	}
}

// tripTimeout bounds the ramp stop of a guard trip.
const tripTimeout = 30 * time.Second

// rampStore is the flags store as the ramp controller sees it.
type rampStore struct{ s *toggles.Store }

// Percentage implements ramp.Store.
func (r rampStore) Percentage(flag string) (float64, bool) {
	fl, ok := r.s.Snapshot().Flag(flag)
	return fl.Percentage, ok
}

// SetPercentage implements ramp.Store: an Update with reason as the actor
// of the audit line.
func (r rampStore) SetPercentage(_ context.Context, flag string, p float64, reason string) error {
	if _, err := r.s.Update(flag, toggles.Patch{Percentage: &p}, reason); err != nil {
		return fmt.Errorf("set %s to %v%%: %w", flag, p, err)
	}
	return nil
}

// fleetRampState is the fleet store's ramp state, set once the store is
// open (the ramp controller is made before).
type fleetRampState struct{ s ramp.StateStore }

// UpdateState implements ramp.StateStore.
func (r *fleetRampState) UpdateState(ctx context.Context, fn func(map[string]*ramp.FlagState)) error {
	return r.s.UpdateState(ctx, fn)
}

// ReadState implements ramp.StateStore.
func (r *fleetRampState) ReadState(ctx context.Context) (map[string]*ramp.FlagState, error) {
	return r.s.ReadState(ctx)
}

// IdentitySources converts the config's identity list to the toggles type
// (the same keys, decoded by proxyconfig).
func IdentitySources(cfg *proxyconfig.Config) []toggles.IdentitySource {
	out := make([]toggles.IdentitySource, 0, len(cfg.Identity))
	for _, id := range cfg.Identity {
		s := toggles.IdentitySource{Header: id.Header, Cookie: id.Cookie}
		if j := id.JWT; j != nil {
			s.JWT = &toggles.JWTSource{Header: j.Header, Claim: j.Claim, HS256SecretEnv: j.HS256SecretEnv, RS256PublicKeyFile: j.RS256PublicKeyFile}
		}
		out = append(out, s)
	}
	return out
}

// apply takes the identity part of a reloaded configuration; an error
// rejects the reload.
func (f *flagRollout) apply(cfg *proxyconfig.Config, getenv func(string) string) error {
	return f.tr.SetIdentity(IdentitySources(cfg), toggles.AnonymousMode(cfg.Anonymous), cfg.Dir(), getenv)
}

// Decide implements routing.Rollout: a route without flag goes to its
// service; a flagged one where the flag sends this user.
func (f *flagRollout) Decide(r *http.Request, route *routing.Route) routing.Decision {
	if route.Flag == "" {
		return routing.Decision{Backend: routing.BackendService, Reason: routing.DecisionNoFlag}
	}
	d, id := f.tr.Decide(r, route.Flag)
	b := routing.BackendMonolith
	if d.Service {
		b = routing.BackendService
	}
	return routing.Decision{Backend: b, Reason: d.Reason, SetCookie: id.Cookie()}
}

// Observe implements routing.Observer: what a flagged route sent to its
// service feeds the flag's guard.
func (f *flagRollout) Observe(r *http.Request, route *routing.Route, res routing.Result) {
	if o, ok := guardOutcome(r, route, res); ok {
		f.guards.Record(route.Flag, o)
	}
	if f.next != nil {
		f.next.Observe(r, route, res)
	}
}

// guardOutcome is what a request tells its flag's guard; ok is false when it
// tells nothing: no flag, sent to the monolith by the rollout, or a client
// that went away. A 5xx answer of the service and every fallback are
// errors.
func guardOutcome(r *http.Request, route *routing.Route, res routing.Result) (o guard.Outcome, ok bool) {
	if route.Flag == "" || res.Decision.Backend != routing.BackendService || r.Context().Err() != nil {
		return guard.Outcome{}, false
	}
	o = guard.Outcome{
		Error:   res.Fallback != routing.ReasonNone || res.Failure != routing.ReasonNone || res.Status >= 500,
		Latency: res.Duration,
	}
	if res.Fallback == routing.ReasonBreakerOpen || res.Fallback == routing.ReasonConnectError {
		o.Latency = 0 // never answered: no service latency to judge
	}
	return o, true
}

// state is a flag's guard and ramp state for the admin API.
func (f *flagRollout) state(key string) *toggles.RunState {
	st := &toggles.RunState{}
	if g, ok := f.guards.State(key); ok {
		st.Guard, st.GuardSummary = &g, g.String()
	}
	r, ok, err := f.ramps.State(key)
	if err != nil {
		f.log.Warn("read ramp state", "flag", key, "err", err)
	}
	if ok {
		st.Ramp = &r
	}
	if st.Guard == nil && st.Ramp == nil {
		return nil
	}
	return st
}

// mount adds the flag endpoints to the admin API; changes need the token.
func (f *flagRollout) mount(s *Server) {
	opts := toggles.AdminOptions{Logger: s.opts.Logger, State: f.state}
	h := f.tr.AdminHandler(opts)
	s.admin.Handle("GET /admin/flags", h)
	s.admin.Handle("GET /admin/flags/{key}", h)
	s.admin.HandleWrite("PUT /admin/flags/{key}", h)
	s.admin.HandleWrite("POST /admin/flags/{key}/resume", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.resume(w, r, opts)
	}))
	if fl, ok := f.tr.Store().Fleet(); ok {
		s.admin.Handle("GET /admin/replicas", replicasHandler(fl, f.tr.Store()))
	}
}

// resume serves POST /admin/flags/{key}/resume: it rearms the flag's guard
// and lets its stopped ramp go on. 404 for an unknown flag, 409 when there
// is nothing to resume.
func (f *flagRollout) resume(w http.ResponseWriter, r *http.Request, opts toggles.AdminOptions) {
	key := r.PathValue("key")
	if _, ok := f.tr.Store().Snapshot().Flag(key); !ok {
		admin.WriteJSON(w, http.StatusNotFound, toggles.APIError{Error: fmt.Sprintf("flag %q is not in the flags file", key)})
		return
	}
	wasTripped := !f.guards.Holding(key)
	rearmed := f.guards.Rearm(key)
	err := f.ramps.Resume(r.Context(), key)
	switch {
	case errors.Is(err, ramp.ErrNotStopped) && !wasTripped:
		admin.WriteJSON(w, http.StatusConflict, toggles.APIError{Error: fmt.Sprintf("flag %q has no tripped guard and no stopped ramp: nothing to resume", key)})
		return
	case errors.Is(err, toggles.ErrStoreUnavailable):
		admin.WriteJSON(w, http.StatusServiceUnavailable, toggles.APIError{Error: "the shared flags store (PostgreSQL) is unreachable: the ramp was not resumed; retry when the store is back (" + err.Error() + ")"})
		return
	case err != nil && !errors.Is(err, ramp.ErrNotStopped):
		f.log.Error("resume ramp", "flag", key, "err", err)
		admin.WriteJSON(w, http.StatusInternalServerError, toggles.APIError{Error: err.Error()})
		return
	}
	f.log.Info("flag resumed", "flag", key, "guard_rearmed", rearmed, "actor", r.RemoteAddr)
	fl, _ := f.tr.Store().Snapshot().Flag(key)
	admin.WriteJSON(w, http.StatusOK, opts.View(key, fl))
}

// close stops the guard and ramp loops and the flags watcher.
func (f *flagRollout) close(ctx context.Context) error {
	f.cancel()
	f.wg.Wait()
	return f.tr.Close(ctx)
}
