// Package proxyserver runs strangler-proxy: the proxy listener, the admin
// listener, configuration reloads (on request and when the file changes) and
// graceful shutdown.
package proxyserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-fig/strangler/internal/admin"
	"github.com/strangler-fig/strangler/internal/h1serve"
	"github.com/strangler-fig/strangler/internal/proxyconfig"
	"github.com/strangler-fig/strangler/internal/routing"
	"github.com/strangler-fig/strangler/internal/statuspage"
)

// Options configure a Server. ConfigPath and Logger are required.
type Options struct {
	// ConfigPath is the configuration file; it is re-read on Reload and
	// whenever its content changes.
	ConfigPath string
	// Logger receives the server's events, as JSON lines in production.
	Logger *slog.Logger
	// AccessLog receives one line per request when access_log is on.
	AccessLog *slog.Logger
	// Registry receives every metric and serves /metrics; nil means a new,
	// empty one.
	Registry *prometheus.Registry
	// Rollout is the rollout seam (see routing.Rollout); nil means
	// routing.DefaultRollout.
	Rollout routing.Rollout
	// Observer sees the outcome of every routed request (see
	// routing.Observer); nil means none.
	Observer routing.Observer
	// OnConfig, when set, sees every valid configuration before it is put in
	// force, at start and on each reload: the place for components that read
	// their own part of the file (identity, flags_file) to prepare it. An
	// error rejects the configuration like a validation problem would.
	OnConfig func(*proxyconfig.Config) error
	// Getenv reads environment variables (the admin token); nil means
	// os.Getenv.
	Getenv func(string) string
	// PollInterval is how often the config file is checked for changes;
	// 0 means every second, a negative value turns watching off.
	PollInterval time.Duration
	// GuardTick is how often rollout guards evaluate their windows; 0
	// means every second.
	GuardTick time.Duration
	// RampTick is how often ramps look for a step that is due; 0 means
	// every 5 seconds.
	RampTick time.Duration
}

// Server is a running strangler-proxy.
type Server struct {
	opts    Options
	proxy   *routing.Proxy
	admin   *admin.Server
	reloads *prometheus.CounterVec

	flags   *flagRollout // nil without flags_file, or with Options.Rollout
	mu      sync.Mutex   // serializes reloads
	content []byte       // the config file as last loaded

	ready    chan struct{} // closed once both listeners listen
	addr     net.Addr
	adminAdr net.Addr
}

// New loads the configuration and builds the proxy and admin handlers. It
// does not listen yet: see Run.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil || opts.ConfigPath == "" {
		return nil, errors.New("new server: ConfigPath and Logger are required")
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.PollInterval == 0 {
		opts.PollInterval = time.Second
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	content, cfg, err := load(opts.ConfigPath)
	if err == nil && opts.OnConfig != nil {
		err = opts.OnConfig(cfg)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, content: content, ready: make(chan struct{})}
	if opts.Rollout == nil && (cfg.FlagsFile != "" || cfg.FlagsStore != nil) {
		s.flags, err = startFlags(context.Background(), cfg, opts)
		if err != nil {
			return nil, err
		}
		opts.Rollout = s.flags
		opts.Observer = s.flags // feeds the guards, then Options.Observer
	}
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "strangler", Name: "config_reloads_total",
		Help: "Configuration reloads, by result (success or failure).",
	}, []string{"result"})
	if err := opts.Registry.Register(s.reloads); err != nil {
		s.closeFlags()
		return nil, fmt.Errorf("new server: register metrics: %w", err)
	}
	s.reloads.WithLabelValues("success")
	s.reloads.WithLabelValues("failure")
	s.proxy, err = routing.New(cfg, routing.Options{
		Logger:    opts.Logger,
		AccessLog: opts.AccessLog,
		Registry:  opts.Registry,
		Rollout:   opts.Rollout,
		Observer:  opts.Observer,
	})
	if err != nil {
		s.closeFlags()
		return nil, fmt.Errorf("new server: %w", err)
	}
	s.admin = admin.New(admin.Options{
		Gatherer:    opts.Registry,
		Ready:       s.proxy.Ready,
		Logger:      opts.Logger,
		TokenSource: tokenSource(cfg),
	})
	s.admin.SetToken(s.token(cfg))
	s.admin.Handle("GET /admin/{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admin.WriteJSON(w, http.StatusOK, s.proxy.Status())
	}))
	s.admin.Handle("GET /admin/shadow/mismatches", s.proxy.Shadower().Handler())
	if s.flags != nil {
		s.flags.mount(s)
	}
	page, err := statuspage.New(statuspage.Options{Admin: s.admin, Gatherer: opts.Registry, Logger: opts.Logger})
	if err != nil {
		s.closeFlags()
		return nil, fmt.Errorf("new server: %w", err)
	}
	page.Mount(s.admin.Handle)
	s.admin.HandleWrite("POST /admin/reload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.Reload(); err != nil {
			s.logRejected(err)
			admin.WriteError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		admin.WriteJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	}))
	return s, nil
}

func load(path string) ([]byte, *proxyconfig.Config, error) {
	content, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load config: %w", err)
	}
	cfg, err := proxyconfig.Parse(bytes.NewReader(content), dirOf(path))
	var verr *proxyconfig.ValidationError
	if errors.As(err, &verr) {
		verr.File = path
	}
	if err != nil {
		return content, nil, err
	}
	return content, cfg, nil
}

func dirOf(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if os.IsPathSeparator(path[i]) {
			return path[:i]
		}
	}
	return "."
}

func tokenSource(cfg *proxyconfig.Config) string {
	if cfg.Admin.TokenEnv == "" {
		return "admin.token_env in the config and that environment variable"
	}
	return "$" + cfg.Admin.TokenEnv + " (admin.token_env)"
}

func (s *Server) token(cfg *proxyconfig.Config) string {
	if cfg.Admin.TokenEnv == "" {
		return ""
	}
	return s.opts.Getenv(cfg.Admin.TokenEnv)
}

// Proxy is the request handler, for packages that need its state.
func (s *Server) Proxy() *routing.Proxy { return s.proxy }

// Admin is the admin handler, on which other packages mount endpoints.
func (s *Server) Admin() *admin.Server { return s.admin }

// Addrs waits until Run listens and returns the proxy and admin addresses.
func (s *Server) Addrs(ctx context.Context) (proxy, adm net.Addr, err error) {
	select {
	case <-s.ready:
		return s.addr, s.adminAdr, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// Reload re-reads the configuration file. A valid file is swapped in; an
// invalid one is rejected with its problems, and the configuration in force
// stays. Either way strangler_config_reloads_total counts it.
func (s *Server) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *Server) reloadLocked() error {
	content, cfg, err := load(s.opts.ConfigPath)
	if content != nil {
		// Remember what was read, valid or not, so that the watcher does
		// not reload the same content again.
		s.content = content
	}
	if err == nil {
		old := s.proxy.Config()
		if cfg.Listen != old.Listen || cfg.Admin.Listen != old.Admin.Listen || cfg.Server != old.Server {
			s.opts.Logger.Warn("listen addresses and server limits change only on restart", "listen", old.Listen, "admin_listen", old.Admin.Listen)
		}
		if s.opts.OnConfig != nil {
			err = s.opts.OnConfig(cfg)
		}
		if err == nil && s.flags != nil {
			if cfg.FlagsPath() != old.FlagsPath() {
				s.opts.Logger.Warn("flags_file changes only on restart", "flags_file", old.FlagsPath())
			}
			err = s.flags.apply(cfg, s.opts.Getenv)
		}
		if err == nil {
			err = s.proxy.Apply(cfg)
		}
	}
	if err != nil {
		s.reloads.WithLabelValues("failure").Inc()
		return fmt.Errorf("reload: %w", err)
	}
	s.admin.SetToken(s.token(cfg))
	s.reloads.WithLabelValues("success").Inc()
	s.opts.Logger.Info("config reloaded", "file", s.opts.ConfigPath, "routes", len(cfg.Routes), "services", len(cfg.Services))
	return nil
}

// reloadIfChanged reloads when the file's content differs from the last one
// read (a rejected file is not retried until its content changes again).
func (s *Server) reloadIfChanged() {
	content, err := os.ReadFile(s.opts.ConfigPath)
	if err != nil {
		return // being replaced, or gone: keep what is in force
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(content, s.content) {
		return
	}
	if err := s.reloadLocked(); err != nil {
		s.logRejected(err)
	}
}

// logRejected logs a reload that kept the old configuration.
func (s *Server) logRejected(err error) {
	s.opts.Logger.Error("config reload rejected; the configuration in force stays", "file", s.opts.ConfigPath, "err", err)
}

// Run listens, serves and reloads until ctx is done (SIGTERM), then stops
// accepting connections and lets requests in flight finish for up to
// shutdown_timeout. reload delivers reload requests (SIGHUP); it may be nil.
func (s *Server) Run(ctx context.Context, reload <-chan struct{}) error {
	defer s.proxy.Close()
	defer s.closeFlags()
	cfg := s.proxy.Config()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	aln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen admin: %w", err)
	}
	s.addr, s.adminAdr = ln.Addr(), aln.Addr()
	errLog := slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelWarn)
	// h1serve serves both settings of http1_fast_path: without it every
	// connection goes to its net/http server, still behind the limits and
	// the body timeouts (issue 16).
	srv := &h1serve.Server{
		Handler:           s.proxy,
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
		ErrorLog:          errLog,
		Limits: h1serve.Limits{
			MaxURIBytes:        int(cfg.Server.MaxURIBytes),
			MaxHeaderLineBytes: int(cfg.Server.MaxHeaderLineBytes),
			MaxHeaderCount:     cfg.Server.MaxHeaderCount,
		},
		BodyReadTimeout: cfg.Server.BodyReadTimeout.D(),
		RequestTimeout:  cfg.Server.RequestTimeout.D(),
		DisableFastPath: !cfg.Server.HTTP1FastPath,
	}
	asrv := &http.Server{
		Handler:           s.admin,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          errLog,
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- asrv.Serve(aln) }()
	close(s.ready)
	s.opts.Logger.Info("strangler-proxy listening", "listen", s.addr.String(), "admin", s.adminAdr.String(), "routes", len(cfg.Routes))

	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watch(watchCtx, reload)
	}()
	defer func() {
		stopWatch()
		wg.Wait()
	}()

	select {
	case err := <-errc:
		srv.Close()
		asrv.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	timeout := s.proxy.Config().ShutdownTimeout.D()
	s.opts.Logger.Info("shutting down: draining requests in flight", "timeout", timeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var wgs sync.WaitGroup
	var drainErr error
	wgs.Add(1)
	go func() {
		defer wgs.Done()
		asrv.Shutdown(sctx)
	}()
	if err := srv.Shutdown(sctx); err != nil {
		drainErr = err
		srv.Close()
	}
	wgs.Wait()
	asrv.Close()
	if drainErr != nil {
		s.opts.Logger.Warn("shutdown timeout passed; remaining connections closed", "timeout", timeout.String())
	} else {
		s.opts.Logger.Info("shut down cleanly")
	}
	return nil
}

// closeFlags stops the flags watcher, if there is one.
func (s *Server) closeFlags() {
	if s.flags == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.flags.close(ctx); err != nil {
		s.opts.Logger.Warn("stop flags", "err", err)
	}
}

// watch reloads on each reload request and whenever the file changes.
func (s *Server) watch(ctx context.Context, reload <-chan struct{}) {
	defer func() {
		if v := recover(); v != nil {
			s.opts.Logger.Error("config watcher panicked", "panic", v, "stack", string(debug.Stack()))
		}
	}()
	var tick <-chan time.Time
	if s.opts.PollInterval > 0 {
		t := time.NewTicker(s.opts.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-reload:
			if !ok {
				reload = nil
				continue
			}
			s.opts.Logger.Info("reload requested")
			if err := s.Reload(); err != nil {
				s.logRejected(err)
			}
			if s.flags != nil {
				// The flags file is watched on its own; SIGHUP reads it now.
				if _, err := s.flags.tr.Store().Reload(); err != nil {
					s.opts.Logger.Error("flags file reload rejected; the flags in force stay", "err", err)
				}
			}
		case <-tick:
			s.reloadIfChanged()
		}
	}
}
