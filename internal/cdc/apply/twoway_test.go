package apply

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// newTwoWayPair starts a cluster of the test's own with
// track_commit_timestamp on, which two-way sync needs, and creates the
// source and target databases in it (as in the demo, where both live in
// one cluster and origins and slots are shared).
func newTwoWayPair(tb testing.TB, srcSchema, dstSchema string) pair {
	tb.Helper()
	c := pgtest.NewCluster(tb)
	admin, err := pgxpool.New(testCtx(tb), c.URL("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	execAll(tb, admin, `ALTER SYSTEM SET track_commit_timestamp = on`)
	admin.Close()
	if err := c.Restart(); err != nil {
		tb.Fatal(err)
	}
	p := pair{src: c.NewDB(tb), dst: c.NewDB(tb)}
	execAll(tb, p.src.Pool, srcSchema)
	execAll(tb, p.dst.Pool, dstSchema)
	return p
}

func (p pair) twoWay(name, policy string, tables ...mapping.TableSpec) Config {
	cfg := p.config(name, tables...)
	cfg.TwoWay, cfg.Conflicts = true, policy
	return cfg
}

// logRecorder collects log records for assertions.
type logRecorder struct {
	mu  sync.Mutex
	got []slog.Record
}

func (l *logRecorder) logger() *slog.Logger {
	return slog.New(hookHandler{fn: func(r slog.Record) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.got = append(l.got, r)
	}})
}

// messages returns the records with message msg.
func (l *logRecorder) messages(msg string) []slog.Record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []slog.Record
	for _, r := range l.got {
		if r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

const accountsSchema = `CREATE TABLE accounts (id bigint PRIMARY KEY, email text UNIQUE, name text, n int)`

const accountsQuery = `SELECT id, email, name, n FROM accounts ORDER BY id`

// catchUp runs the two-way sync until both directions have applied
// everything committed before it started, with fresh metrics, and returns
// them.
func catchUp(tb testing.TB, cfg Config) *Metrics {
	tb.Helper()
	cfg.UntilCaughtUp = true
	cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	if err := Run(testCtx(tb), cfg); err != nil {
		tb.Fatalf("sync --until-caught-up: %v", err)
	}
	return cfg.Metrics
}

// TestTwoWayNoEcho writes on both sides and checks that every change
// reaches the other side once and never comes back: each direction applies
// exactly the transactions of its own side, and a later catch-up run
// applies nothing (an echo would be applied there, being new to the
// checkpoint of the direction that carries it).
func TestTwoWayNoEcho(t *testing.T) {
	p := newTwoWayPair(t, accountsSchema+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1)`, accountsSchema)
	cfg := p.twoWay("echo", "", mapping.TableSpec{Source: "accounts"})
	reg := prometheus.NewRegistry()
	cfg.Metrics = NewMetrics(reg)
	r := startSync(t, cfg)
	waitSame(t, p, r, accountsQuery, accountsQuery)

	for i := 0; i < 5; i++ {
		execAll(t, p.src.Pool, `INSERT INTO accounts SELECT max(id) + 1, 's' || max(id) + 1, 'S', 0 FROM accounts`)
	}
	waitSame(t, p, r, accountsQuery, accountsQuery)
	for i := 0; i < 3; i++ {
		execAll(t, p.dst.Pool, `INSERT INTO accounts SELECT max(id) + 1, 't' || max(id) + 1, 'T', 0 FROM accounts`)
	}
	execAll(t, p.dst.Pool, `UPDATE accounts SET n = n + 10 WHERE id = 1`, `DELETE FROM accounts WHERE id = 2`)
	waitSame(t, p, r, accountsQuery, accountsQuery)
	execAll(t, p.src.Pool, `UPDATE accounts SET name = 'A2' WHERE id = 1`)
	waitSame(t, p, r, accountsQuery, accountsQuery)
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: got %v, want nil", err)
	}
	if got := testutil.ToFloat64(cfg.Metrics.Transactions); got != 6 {
		t.Errorf("source → target transactions: got %v, want 6", got)
	}
	if got := testutil.ToFloat64(cfg.Metrics.reverse.Transactions); got != 5 {
		t.Errorf("target → source transactions: got %v, want 5", got)
	}
	if got := testutil.ToFloat64(cfg.Metrics.reverse.AppliedChanges.WithLabelValues("public.accounts", "insert")); got != 3 {
		t.Errorf("target → source inserts: got %v, want 3", got)
	}
	if n, err := testutil.GatherAndCount(reg, "datasync_sync_conflicts_total"); err != nil || n != 0 {
		t.Errorf("conflicts: got %d series (%v), want none", n, err)
	}

	m := catchUp(t, cfg)
	if got := testutil.ToFloat64(m.Transactions) + testutil.ToFloat64(m.reverse.Transactions); got != 0 {
		t.Errorf("transactions applied by a catch-up run after everything was applied: got %v, want 0 (an echo came back)", got)
	}
	if s, d := dump(t, p.src.Pool, accountsQuery), dump(t, p.dst.Pool, accountsQuery); s != d {
		t.Fatalf("sides differ after the catch-up run\nsource:\n%s\ntarget:\n%s", s, d)
	}
	// Origins, slots and the reverse checkpoint are where they are said to
	// be.
	for _, q := range []struct {
		pool *pgxpool.Pool
		sql  string
	}{
		{p.src.Pool, `SELECT count(*) FROM pg_replication_origin WHERE roname IN ('datasync_echo_to_target', 'datasync_echo_to_source')`},
		{p.src.Pool, `SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('datasync_echo', 'datasync_echo_to_source')`},
		{p.src.Pool, `SELECT count(*) FROM datasync.sync_state WHERE name = 'echo_to_source'`},
	} {
		var n int
		if err := q.pool.QueryRow(testCtx(t), q.sql).Scan(&n); err != nil || n == 0 {
			t.Errorf("%s: got %d (%v), want at least 1", q.sql, n, err)
		}
	}
}

// TestTwoWayRefusesWithoutCommitTimestamps checks the preflight: without
// track_commit_timestamp the sync exits with a preflight error naming the
// setting, and creates nothing.
func TestTwoWayRefusesWithoutCommitTimestamps(t *testing.T) {
	p := newPair(t, accountsSchema, accountsSchema)
	err := Run(testCtx(t), p.twoWay("nocts", "", mapping.TableSpec{Source: "accounts"}))
	if !errors.Is(err, mapping.ErrPreflight) || !strings.Contains(err.Error(), "track_commit_timestamp") {
		t.Fatalf("got %v, want a preflight error naming track_commit_timestamp", err)
	}
	for _, db := range []*pgtest.DB{p.src, p.dst} {
		var n int
		if err := db.Pool.QueryRow(testCtx(t), `SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())
			+ (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_namespace WHERE nspname = 'datasync')
			+ (SELECT count(*) FROM pg_class WHERE relname = 'accounts' AND relreplident = 'f')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: %d things created or changed, want none", db.Name, n)
		}
	}
}

var _ = context.Background
var _ = time.Second
