package toggles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config wires the rollout pieces together for a proxy.
type Config struct {
	// FlagsFile is the flags file's path (already resolved against the
	// config file's folder). A missing file means no flags yet.
	FlagsFile string
	// Identity and Anonymous are the proxy config's identity list and
	// anonymous mode.
	Identity  []IdentitySource
	Anonymous AnonymousMode
	// BaseDir resolves relative key files: the config file's folder.
	BaseDir string
	// Getenv reads secrets. Nil means os.Getenv.
	Getenv func(string) string
	// Registerer receives the rollout metrics. Nil means no metrics.
	Registerer prometheus.Registerer
	// Logger receives audit lines, reloads and rejections. Nil discards.
	Logger *slog.Logger
	// OnReload is called after each reload attempt of changed flags file
	// content: nil error when it is in force, else the old flags stay.
	OnReload func(error)
	// Audit is called after each change made through the admin API.
	Audit func(AuditEvent)
	// OnChange, when set, sees every snapshot put in force: the first one
	// before Start returns, then the one of each reload and Update. The
	// place to configure what reads the flags file's guards and ramps.
	OnChange func(*Snapshot)
	// PollInterval is how often the flags file is looked at. Zero means
	// one second.
	PollInterval time.Duration
	// Fleet, when set, keeps the flags in PostgreSQL, shared by every
	// replica (fleet mode); FlagsFile then only seeds an empty store
	// (FleetOptions.SeedFile).
	Fleet *FleetOptions
}

// Rollout is the running rollout state of a proxy: the flags store and
// its watcher, the identity resolver, the OpenFeature client and decider,
// and the metrics.
type Rollout struct {
	store    *Store
	provider *Provider
	decider  *Decider
	metrics  *Metrics
	resolver atomic.Pointer[Resolver]
	onJWT    func(string)

	shutdown func(context.Context) error
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Start opens the flags file, sets up identity, the OpenFeature client and
// the metrics, and starts watching the flags file until Close. Config
// problems are a *ValidationError naming their fields.
func Start(ctx context.Context, cfg Config) (*Rollout, error) {
	r := &Rollout{}
	if cfg.Registerer != nil {
		// Registered last, so a failed Start leaves the registry as it was.
		r.metrics = newMetrics()
		r.onJWT = r.metrics.JWTFailure
	}
	resolver, err := r.newResolver(cfg.Identity, cfg.Anonymous, cfg.BaseDir, cfg.Getenv)
	if err != nil {
		return nil, fmt.Errorf("start rollout: %w", err)
	}
	r.resolver.Store(resolver)
	open := func(so StoreOptions) (*Store, error) { return OpenStore(cfg.FlagsFile, so) }
	if cfg.Fleet != nil {
		open = func(so StoreOptions) (*Store, error) { return OpenFleetStore(ctx, *cfg.Fleet, so) }
	}
	store, err := open(StoreOptions{
		Logger:   cfg.Logger,
		OnReload: cfg.OnReload,
		Audit:    cfg.Audit,
		OnChange: func(s *Snapshot) {
			if r.metrics != nil {
				r.metrics.SetPercentages(s)
			}
			r.provider.ConfigurationChanged(s)
			if cfg.OnChange != nil {
				cfg.OnChange(s)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("start rollout: %w", err)
	}
	r.store = store
	if r.metrics != nil {
		r.metrics.SetPercentages(store.Snapshot())
	}
	if cfg.OnChange != nil {
		cfg.OnChange(store.Snapshot())
	}
	r.provider = NewProvider(store)
	client, shutdown, err := newClientFor(ctx, r.provider)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("start rollout: %w", err)
	}
	r.shutdown = shutdown
	r.decider = NewDecider(client, store, r.metrics)
	if r.metrics != nil {
		if err := r.metrics.register(cfg.Registerer); err != nil {
			_ = shutdown(ctx)
			store.Close()
			return nil, fmt.Errorf("start rollout: %w", err)
		}
	}
	if fl, ok := store.Fleet(); ok && cfg.Registerer != nil {
		if err := registerFleetMetrics(cfg.Registerer, store, fl); err != nil {
			_ = shutdown(ctx)
			store.Close()
			return nil, fmt.Errorf("start rollout: %w", err)
		}
	}

	interval := cfg.PollInterval
	if interval <= 0 {
		interval = time.Second
	}
	watchCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	r.wg.Go(func() { store.Watch(watchCtx, interval) })
	return r, nil
}

func (r *Rollout) newResolver(sources []IdentitySource, anon AnonymousMode, baseDir string, getenv func(string) string) (*Resolver, error) {
	return NewResolver(ResolverConfig{
		Sources: sources, Anonymous: anon, BaseDir: baseDir, Getenv: getenv, OnJWTFailure: r.onJWT,
	})
}

// SetIdentity replaces the identity sources, e.g. after the proxy config
// was reloaded. On error the sources in force stay.
func (r *Rollout) SetIdentity(sources []IdentitySource, anon AnonymousMode, baseDir string, getenv func(string) string) error {
	resolver, err := r.newResolver(sources, anon, baseDir, getenv)
	if err != nil {
		return fmt.Errorf("set identity: %w", err)
	}
	r.resolver.Store(resolver)
	return nil
}

// Decide finds the request's user and evaluates flagKey for them. When
// the returned identity carries a new sticky cookie, set it on the
// response (Identity.SetCookie or Identity.Cookie) before writing headers.
func (r *Rollout) Decide(req *http.Request, flagKey string) (Decision, Identity) {
	id := r.resolver.Load().Resolve(req)
	return r.decider.Decide(req.Context(), flagKey, id, req.Header), id
}

// Explain evaluates flagKey for the request without the OpenFeature client
// and without counting, for the explain command.
func (r *Rollout) Explain(req *http.Request, flagKey string) (Result, Identity) {
	id := r.resolver.Load().Resolve(req)
	return r.store.Snapshot().EvaluateFor(flagKey, id, req.Header), id
}

// Store returns the flags store (for Reload on SIGHUP, or Update).
func (r *Rollout) Store() *Store { return r.store }

// AdminHandler serves /admin/flags over the store; see NewAdminHandler.
func (r *Rollout) AdminHandler(opts AdminOptions) http.Handler {
	return NewAdminHandler(r.store, opts)
}

// Close stops the watcher and shuts the OpenFeature API down.
func (r *Rollout) Close(ctx context.Context) error {
	r.cancel()
	r.wg.Wait()
	r.store.Close()
	if err := r.shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("close rollout: %w", err)
	}
	return nil
}
