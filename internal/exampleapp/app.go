package exampleapp

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Timeouts of the HTTP server and of the health check.
const (
	shutdownTimeout = 15 * time.Second
	healthTimeout   = 2 * time.Second
)

// App describes one example application.
type App struct {
	// Name is sent in the X-Served-By header of every response.
	Name string
	// Summary is one line saying what the app is, for --help.
	Summary string
	// DefaultAddr is the listen address when ADDR is not set.
	DefaultAddr string
	// Migrations holds the app's *.sql schema migrations at its root.
	Migrations fs.FS
	// Routes registers the app's resources.
	Routes func(mux *http.ServeMux, pool *pgxpool.Pool, logger *slog.Logger)
	// Seeds are the sample data the app can create at start.
	Seeds []Seed
}

// Seed creates sample data at start when its environment variable holds a
// row count.
type Seed struct {
	// Env names the variable holding the wanted number of rows, e.g. SEED_USERS.
	Env string
	// Run adds rows until the table holds n of them.
	Run func(ctx context.Context, q Querier, n int) error
}

// Main runs the app until SIGINT or SIGTERM and exits the process: 0 after a
// clean shutdown, 1 on an error, 2 on bad command-line arguments.
func Main(a App) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := a.Run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", a.Name, err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// Run reads its settings from getenv, prepares the database (migrations, then
// seeds) and serves HTTP until ctx is done, then drains in-flight requests.
func (a App) Run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fset := flag.NewFlagSet(a.Name, flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() { a.usage(stderr) }
	if err := fset.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fset.NArg() > 0 {
		a.usage(stderr)
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fset.Args())
	}

	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("app", a.Name)
	dbURL := getenv("DATABASE_URL")
	if dbURL == "" {
		return errors.New("DATABASE_URL is not set: set it to the app's PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/" + a.Name)
	}
	addr := getenv("ADDR")
	if addr == "" {
		addr = a.DefaultAddr
	}
	seeds, err := a.seedCounts(getenv)
	if err != nil {
		return err
	}

	pool, err := newPool(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		return fmt.Errorf("connect to database: %w", err)
	}
	if err := a.Setup(ctx, pool, logger, seeds); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on ADDR %s (is another program using it? set ADDR to a free address): %w", addr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String())
	return Serve(ctx, ln, a.Handler(pool, logger), logger)
}

// defaultMaxConns is the pool size unless DATABASE_URL sets pool_max_conns.
// pgxpool's own default (4 on a small machine) would make the apps, not the
// proxy in front of them, the bottleneck of a load test.
const defaultMaxConns = 16

func newPool(ctx context.Context, dbURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	if !strings.Contains(dbURL, "pool_max_conns") {
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL: %w", err)
	}
	return pool, nil
}

func (a App) usage(w io.Writer) {
	fmt.Fprintf(w, `%s: %s

Usage: %s

Settings come from environment variables:
  DATABASE_URL   PostgreSQL URL of the app's own database (required;
                 pool_max_conns=N in it sets the pool size, default 16)
  ADDR           address to listen on (default %s)
`, a.Name, a.Summary, a.Name, a.DefaultAddr)
	for _, s := range a.Seeds {
		fmt.Fprintf(w, "  %-14s create sample rows at start until the table holds this many\n", s.Env)
	}
	fmt.Fprintf(w, `
The schema is applied at start (idempotently). SIGINT or SIGTERM stops the
server after in-flight requests finish.

Example:
  DATABASE_URL=postgres://postgres@127.0.0.1:5432/%s ADDR=%s %s
`, a.Name, a.DefaultAddr, a.Name)
}

// seedCounts reads the seeds' row counts from the environment.
func (a App) seedCounts(getenv func(string) string) (map[string]int, error) {
	counts := make(map[string]int)
	for _, s := range a.Seeds {
		v := getenv(s.Env)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%s must be a row count (a non-negative integer), got %q", s.Env, v)
		}
		counts[s.Env] = n
	}
	return counts, nil
}

// Setup applies the app's migrations and runs the seeds named in counts (Env
// to row count), under the set-up lock so that instances starting together
// do it one at a time.
func (a App) Setup(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, counts map[string]int) error {
	return WithSetupLock(ctx, pool, func(ctx context.Context, conn *pgx.Conn) error {
		applied, err := Migrate(ctx, conn, a.Migrations)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			logger.Info("migrations applied", "versions", applied)
		}
		for _, s := range a.Seeds {
			n, ok := counts[s.Env]
			if !ok {
				continue
			}
			if err := s.Run(ctx, conn, n); err != nil {
				return err
			}
			logger.Info("seeded", "env", s.Env, "target_rows", n)
		}
		return nil
	})
}

// Handler returns the app's HTTP handler: its routes, GET /health, a request
// log, and the X-Served-By header on every answer.
func (a App) Handler(pool *pgxpool.Pool, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := pool.Ping(ctx); err != nil {
			logger.Warn("health check failed", "err", err)
			WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "database unreachable"})
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if a.Routes != nil {
		a.Routes(mux, pool, logger)
	}
	return servedBy(a.Name, logRequests(logger, jsonMuxErrors(mux)))
}

// jsonMuxErrors serves mux, answering a request that no route matches with
// the app's JSON error shape instead of the mux's plain text: 404, or 405
// with its Allow header when the path exists for other methods.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			w = &muxErrorWriter{ResponseWriter: w}
		}
		mux.ServeHTTP(w, r)
	})
}

// muxErrorWriter replaces the body of http.ServeMux's 404 and 405 answers.
type muxErrorWriter struct {
	http.ResponseWriter
	wrote bool
}

func (m *muxErrorWriter) WriteHeader(code int) {
	if m.wrote {
		return
	}
	m.wrote = true
	msg := strings.ToLower(http.StatusText(code))
	if allow := m.Header().Get("Allow"); allow != "" {
		msg += ": use " + allow
	}
	WriteJSON(m.ResponseWriter, code, errorBody{Error: msg})
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	m.WriteHeader(http.StatusNotFound)
	return len(b), nil
}

func servedBy(name string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		next.ServeHTTP(w, r)
	})
}

// statusRecorder remembers the status a handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func logRequests(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		logger.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"duration_ms", float64(time.Since(start).Microseconds())/1000)
	})
}

// Serve serves h on ln until ctx is done, then stops accepting connections and
// waits (up to a bound) for in-flight requests to finish.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, logger *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-errc
	return nil
}
