package apply

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func execAll(tb testing.TB, pool *pgxpool.Pool, sqls ...string) {
	tb.Helper()
	for _, sql := range sqls {
		if _, err := pool.Exec(testCtx(tb), sql); err != nil {
			tb.Fatalf("%s: %v", sql, err)
		}
	}
}

// pair is a source and a target database.
type pair struct {
	src, dst *pgtest.DB
}

func newPair(tb testing.TB, srcSchema, dstSchema string) pair {
	tb.Helper()
	p := pair{src: pgtest.NewDB(tb), dst: pgtest.NewDB(tb)}
	execAll(tb, p.src.Pool, srcSchema)
	execAll(tb, p.dst.Pool, dstSchema)
	return p
}

func (p pair) config(name string, tables ...mapping.TableSpec) Config {
	return Config{
		Name: name, Source: p.src.URL, Target: p.dst.URL, Tables: tables,
		StatusInterval: 50 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(testLogOut, nil)),
	}
}

// running is a sync running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func startSync(tb testing.TB, cfg Config) *running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- Run(ctx, cfg) }()
	tb.Cleanup(func() { r.stop(tb) })
	return r
}

// stop ends the sync as SIGTERM would and returns its error.
func (r *running) stop(tb testing.TB) error {
	tb.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(30 * time.Second):
		tb.Fatal("sync did not stop within 30s of cancel")
		return nil
	}
}

func dump(tb testing.TB, pool *pgxpool.Pool, query string) string {
	tb.Helper()
	return cdctest.Dump(tb, pool, query)
}

// waitSame polls until srcQuery on the source and dstQuery on the target
// return the same rows, failing with both after 2 minutes. r, if not
// nil, fails the wait early when the sync stops.
func waitSame(tb testing.TB, p pair, r *running, srcQuery, dstQuery string) {
	tb.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		s, d := dump(tb, p.src.Pool, srcQuery), dump(tb, p.dst.Pool, dstQuery)
		if s == d && !copyUnrecorded(tb, p.dst.Pool) {
			return
		}
		if r != nil {
			select {
			case err := <-r.done:
				r.done <- err
				tb.Fatalf("sync stopped: %v\ntarget:\n%s\nwant (source):\n%s", err, d, s)
			default:
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("target never matched the source\ngot (target):\n%s\nwant (source):\n%s", d, s)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// copyUnrecorded reports whether a first copy has batches in the target
// but is not recorded yet: its rows may already match the source while the
// sync has not reached the stream.
func copyUnrecorded(tb testing.TB, pool *pgxpool.Pool) bool {
	tb.Helper()
	// A two-way sync's first copy keeps no checkpoints, and the table may
	// not exist: the query would not even parse.
	var exists bool
	if err := pool.QueryRow(context.Background(), `SELECT to_regclass('datasync.backfill_progress') IS NOT NULL`).Scan(&exists); err != nil {
		tb.Fatalf("look for an unrecorded copy: %v", err)
	}
	if !exists {
		return false
	}
	var n int
	err := pool.QueryRow(context.Background(), `SELECT count(*) FROM datasync.backfill_progress WHERE name LIKE 'sync:%'`).Scan(&n)
	if err != nil {
		tb.Fatalf("look for an unrecorded copy: %v", err)
	}
	return n > 0
}

var testLogOut io.Writer = io.Discard

// hookHandler is a slog.Handler that passes every record, at every level,
// to fn, which must be safe for concurrent use.
type hookHandler struct{ fn func(slog.Record) }

func (h hookHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h hookHandler) Handle(_ context.Context, r slog.Record) error {
	h.fn(r)
	return nil
}

func (h hookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h hookHandler) WithGroup(string) slog.Handler { return h }

// attr returns the value of the record's attribute key, zero when absent.
func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}
