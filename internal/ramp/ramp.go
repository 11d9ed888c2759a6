package ramp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/strangler-fig/strangler/internal/atomicfile"
	"github.com/strangler-fig/strangler/internal/loop"
	"github.com/strangler-fig/strangler/internal/problem"
)

// Config is a flag's ramp as written in the flags file.
type Config struct {
	// Steps are the percentages to step through, increasing.
	Steps []float64 `yaml:"steps" json:"steps"`
	// Interval is the time between two steps.
	Interval time.Duration `yaml:"interval" json:"interval"`
}

// configJSON is Config as the admin API writes it: the interval as text.
type configJSON struct {
	Steps    []float64 `json:"steps"`
	Interval string    `json:"interval"`
}

// MarshalJSON writes the interval as text ("10m0s"), as in the flags file.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(configJSON{Steps: c.Steps, Interval: c.Interval.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *Config) UnmarshalJSON(b []byte) error {
	var j configJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("ramp: %w", err)
	}
	d, err := time.ParseDuration(j.Interval)
	if err != nil {
		return fmt.Errorf("ramp interval: %w", err)
	}
	*c = Config{Steps: j.Steps, Interval: d}
	return nil
}

// Validate returns every problem of c, with field paths below path.
func (c Config) Validate(path string) []problem.Problem {
	var ps problem.List
	if len(c.Steps) == 0 {
		ps.Add(problem.Join(path, "steps"), "is empty: list the percentages to step through, e.g. [1, 5, 25, 50, 100]")
	}
	for i, s := range c.Steps {
		p := fmt.Sprintf("%s[%d]", problem.Join(path, "steps"), i)
		switch {
		case math.IsNaN(s) || s <= 0 || s > 100:
			ps.Add(p, "%s is out of range: a percentage above 0 and at most 100", fmtPct(s))
		case math.Abs(s*100-math.Round(s*100)) > 1e-9:
			ps.Add(p, "%s has more than two decimals", fmtPct(s))
		case i > 0 && s <= c.Steps[i-1]:
			ps.Add(p, "%s is not above the step before it: steps must increase", fmtPct(s))
		}
	}
	if c.Interval < time.Second {
		ps.Add(problem.Join(path, "interval"), "%s is shorter than 1s: write a duration such as 10m", c.Interval)
	}
	return ps
}

// Store reads and sets rollout percentages: the proxy's flags store.
type Store interface {
	// Percentage returns flag's percentage now in force; ok is false when
	// the flags file has no such flag.
	Percentage(flag string) (percentage float64, ok bool)
	// SetPercentage sets and persists flag's percentage like a manual
	// change; reason goes to the audit log.
	SetPercentage(ctx context.Context, flag string, percentage float64, reason string) error
}

// StateStore keeps the ramp state of every flag where every replica sees
// it, in place of the state file: the fleet's PostgreSQL store.
type StateStore interface {
	// UpdateState runs fn on every flag's state, by flag (never nil),
	// under a lock that excludes every other replica's UpdateState, and
	// saves what fn changed.
	UpdateState(ctx context.Context, fn func(flags map[string]*FlagState)) error
	// ReadState returns every flag's state.
	ReadState(ctx context.Context) (map[string]*FlagState, error)
}

// FlagState is one flag's entry in the shared state file.
type FlagState struct {
	// StartedAt is when a controller first saw the ramp.
	StartedAt time.Time `json:"started_at,omitzero"`
	// LastAdvancedAt is when the ramp last took a step (or StartedAt);
	// zero after Resume, so the next tick takes a step.
	LastAdvancedAt time.Time `json:"last_advanced_at,omitzero"`
	// LastStep is the percentage the ramp last set; 0 before its first step.
	LastStep float64 `json:"last_step,omitempty"`
	// Done is true once the flag is at the last step.
	Done bool `json:"done,omitempty"`
	// Stopped is true from a trip (or a percentage lowered by hand) until
	// Resume.
	Stopped       bool      `json:"stopped,omitempty"`
	StoppedReason string    `json:"stopped_reason,omitempty"`
	StoppedAt     time.Time `json:"stopped_at,omitzero"`
	// ResumedAt is when Resume last let the ramp go on: a replica whose
	// guard tripped before it rearms that guard (fleet mode).
	ResumedAt time.Time `json:"resumed_at,omitzero"`
}

// stateFile is the state file's content.
type stateFile struct {
	Flags map[string]*FlagState `json:"flags"`
}

// stateSuffix names the shared state file: the flags file's name plus it.
const stateSuffix = ".ramp.json"

// Options configure a Controller. Store and FlagsFile are required.
type Options struct {
	// Store reads and sets percentages.
	Store Store
	// FlagsFile is the flags file's path; the lock and state files go
	// beside it (FlagsFile+".lock", FlagsFile+".ramp.json").
	FlagsFile string
	// State, when set, keeps the ramp state instead of the files beside
	// FlagsFile (which may then be empty): several replicas on several
	// hosts share it (fleet mode).
	State StateStore
	// Holding, when set, is asked before each step; false (e.g. the
	// replica's own guard is tripped) skips the step.
	Holding func(flag string) bool
	// Logger gets a line per step and stop; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// TickEvery is Run's ticker period; zero means 5s.
	TickEvery time.Duration
}

// Controller runs the ramps of one proxy replica.
type Controller struct {
	opts      Options
	log       *slog.Logger
	now       func() time.Time
	lockPath  string
	statePath string

	mu    sync.Mutex
	ramps map[string]Config
}

// New returns a controller with no ramps.
func New(opts Options) (*Controller, error) {
	if opts.Store == nil {
		return nil, errors.New("ramp: a Store is required")
	}
	if opts.FlagsFile == "" && opts.State == nil {
		return nil, errors.New("ramp: the flags file's path (or a StateStore) is required")
	}
	c := &Controller{
		opts: opts, log: opts.Logger, now: opts.Now,
		lockPath: opts.FlagsFile + ".lock", statePath: opts.FlagsFile + stateSuffix,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Configure sets the ramps in force, e.g. after the flags file was loaded.
func (c *Controller) Configure(ramps map[string]Config) {
	m := make(map[string]Config, len(ramps))
	for k, v := range ramps {
		v.Steps = slices.Clone(v.Steps)
		m[k] = v
	}
	c.mu.Lock()
	c.ramps = m
	c.mu.Unlock()
}

// Tick takes every step that is due, under the shared lock.
func (c *Controller) Tick(ctx context.Context) error {
	c.mu.Lock()
	ramps := c.ramps
	c.mu.Unlock()
	if len(ramps) == 0 {
		return nil
	}
	return c.update(ctx, func(st *stateFile, now time.Time) {
		flags := make([]string, 0, len(ramps))
		for f := range ramps {
			flags = append(flags, f)
		}
		slices.Sort(flags)
		for _, flag := range flags {
			c.step(ctx, st, flag, ramps[flag], now)
		}
	})
}

// step advances flag when its step is due; it changes st in place.
func (c *Controller) step(ctx context.Context, st *stateFile, flag string, cfg Config, now time.Time) {
	fl := st.Flags[flag]
	if fl == nil {
		st.Flags[flag] = &FlagState{StartedAt: now, LastAdvancedAt: now}
		c.log.Info("ramp started", "flag", flag, "first_step_at", now.Add(cfg.Interval))
		return
	}
	if fl.Stopped || now.Sub(fl.LastAdvancedAt) < cfg.Interval {
		return
	}
	if c.opts.Holding != nil && !c.opts.Holding(flag) {
		return
	}
	cur, ok := c.opts.Store.Percentage(flag)
	if !ok {
		return
	}
	if fl.LastStep > 0 && cur < fl.LastStep {
		fl.Stopped, fl.StoppedAt = true, now
		fl.StoppedReason = fmt.Sprintf("percentage lowered by hand from %s to %s", fmtPct(fl.LastStep), fmtPct(cur))
		c.log.Warn("ramp stopped", "flag", flag, "reason", fl.StoppedReason)
		return
	}
	i := slices.IndexFunc(cfg.Steps, func(s float64) bool { return s > cur })
	if i < 0 {
		fl.Done = true
		return
	}
	next := cfg.Steps[i]
	reason := fmt.Sprintf("ramp step %d of %d: %s → %s", i+1, len(cfg.Steps), fmtPct(cur), fmtPct(next))
	if err := c.opts.Store.SetPercentage(ctx, flag, next, reason); err != nil {
		c.log.Error("ramp step failed", "flag", flag, "error", err)
		return
	}
	fl.LastAdvancedAt, fl.LastStep, fl.Done = now, next, i == len(cfg.Steps)-1
	c.log.Info("ramp advanced", "flag", flag, "percentage", next, "step", i+1, "steps", len(cfg.Steps))
}

// Stop stops flag's ramp, for every replica, until Resume. The proxy calls
// it when the flag's guard trips, with the trip's reason.
func (c *Controller) Stop(ctx context.Context, flag, reason string) error {
	return c.update(ctx, func(st *stateFile, now time.Time) {
		fl := st.Flags[flag]
		if fl == nil {
			fl = &FlagState{StartedAt: now, LastAdvancedAt: now}
			st.Flags[flag] = fl
		}
		fl.Stopped, fl.StoppedReason, fl.StoppedAt = true, reason, now
	})
}

// Trip is what the proxy does when flag's guard trips: it sets the flag's
// percentage to 0 through the Store (persisted like a manual change, with
// the reason in the audit log) and stops the flag's ramp for every replica.
// It does both even when one fails, and returns the errors joined.
func (c *Controller) Trip(ctx context.Context, flag, reason string) error {
	var errs []error
	if err := c.opts.Store.SetPercentage(ctx, flag, 0, "guard tripped: "+reason); err != nil {
		errs = append(errs, fmt.Errorf("set %s to 0%%: %w", flag, err))
	}
	if err := c.Stop(ctx, flag, reason); err != nil {
		errs = append(errs, fmt.Errorf("stop ramp of %s: %w", flag, err))
	}
	return errors.Join(errs...)
}

// ErrNotStopped is returned by Resume for a flag whose ramp is not stopped;
// nothing was changed.
var ErrNotStopped = errors.New("ramp is not stopped")

// Resume lets flag's ramp continue: the next tick of any replica takes the
// step above the flag's current percentage, then one step per interval. The
// proxy calls it for `rollout resume FLAG`, with the guard's Rearm.
func (c *Controller) Resume(ctx context.Context, flag string) error {
	stopped := false
	err := c.update(ctx, func(st *stateFile, now time.Time) {
		fl := st.Flags[flag]
		if fl == nil || !fl.Stopped {
			return
		}
		stopped = true
		fl.Stopped, fl.StoppedReason, fl.StoppedAt = false, "", time.Time{}
		fl.LastAdvancedAt, fl.LastStep, fl.Done = time.Time{}, 0, false
		fl.ResumedAt = now
		c.log.Info("ramp resumed", "flag", flag)
	})
	if err == nil && !stopped {
		return fmt.Errorf("resume %s: %w", flag, ErrNotStopped)
	}
	return err
}

// State returns flag's ramp state as the state file holds it; ok is false
// when the file has no entry for flag.
func (c *Controller) State(flag string) (st FlagState, ok bool, err error) {
	sf, err := c.read()
	if err != nil {
		return FlagState{}, false, err
	}
	fl := sf.Flags[flag]
	if fl == nil {
		return FlagState{}, false, nil
	}
	return *fl, true, nil
}

// Run calls Tick every TickEvery until ctx is done; errors are logged. A
// panic in a tick is logged with its stack and ends Run with an error.
func (c *Controller) Run(ctx context.Context) error {
	every := c.opts.TickEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	return loop.Every(ctx, c.log, "ramp", every, func(ctx context.Context) {
		if err := c.Tick(ctx); err != nil {
			c.log.Error("ramp tick failed", "error", err)
		}
	})
}

// update runs fn on the state file's content under the exclusive lock and
// writes the result back when it changed.
func (c *Controller) update(ctx context.Context, fn func(st *stateFile, now time.Time)) error {
	if c.opts.State != nil {
		return c.opts.State.UpdateState(ctx, func(flags map[string]*FlagState) {
			fn(&stateFile{Flags: flags}, c.now())
		})
	}
	unlock, err := lockFile(ctx, c.lockPath)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := c.read()
	if err != nil {
		return err
	}
	before, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode ramp state: %w", err)
	}
	fn(st, c.now())
	after, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode ramp state: %w", err)
	}
	if compact, _ := json.Marshal(st); string(compact) == string(before) {
		return nil
	}
	return writeAtomic(c.statePath, append(after, '\n'))
}

func (c *Controller) read() (*stateFile, error) {
	if c.opts.State != nil {
		flags, err := c.opts.State.ReadState(context.Background())
		if err != nil {
			return nil, err
		}
		return &stateFile{Flags: flags}, nil
	}
	return readStateFile(c.statePath)
}

// ReadState returns flag's ramp state from the state file beside flagsFile,
// without a controller (for the explain command); ok is false when the file
// has no entry for flag.
func ReadState(flagsFile, flag string) (st FlagState, ok bool, err error) {
	sf, err := readStateFile(flagsFile + stateSuffix)
	if err != nil {
		return FlagState{}, false, err
	}
	if fl := sf.Flags[flag]; fl != nil {
		return *fl, true, nil
	}
	return FlagState{}, false, nil
}

// String summarises st in one line for `rollout get` and `explain`.
func (st FlagState) String() string {
	switch {
	case st.Stopped:
		return fmt.Sprintf("stopped at %s: %s (rollout resume lets it go on)", st.StoppedAt.UTC().Format(time.RFC3339), st.StoppedReason)
	case st.Done:
		return "done at " + fmtPct(st.LastStep) + "%"
	case st.LastStep > 0:
		return fmt.Sprintf("at step %s%% since %s", fmtPct(st.LastStep), st.LastAdvancedAt.UTC().Format(time.RFC3339))
	}
	return "waiting for its first step"
}

func readStateFile(path string) (*stateFile, error) {
	st := &stateFile{}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read ramp state: %w", err)
	default:
		if err := json.Unmarshal(data, st); err != nil {
			return nil, fmt.Errorf("read ramp state %s: %w", path, err)
		}
	}
	if st.Flags == nil {
		st.Flags = map[string]*FlagState{}
	}
	return st, nil
}

// lockRetry is how often lockFile tries again while another holds the lock.
const lockRetry = 5 * time.Millisecond

// lockFile takes an exclusive flock on path, creating the file, and returns
// the function that releases it. It gives up when ctx is done.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open ramp lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(lockRetry):
		}
	}
}

// writeAtomic replaces path with data, so that a crash leaves the old
// state or the new one (see atomicfile).
func writeAtomic(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o644); err != nil {
		return fmt.Errorf("write ramp state %s: %w", path, err)
	}
	return nil
}

func fmtPct(p float64) string { return strconv.FormatFloat(p, 'f', -1, 64) }
