package apply

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/mapping"
)

const (
	bigSchema      = `CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, note text)`
	bigQuery       = `SELECT id, v, note FROM big ORDER BY id`
	bigMD5Query    = `SELECT id, v, md5(note) FROM big ORDER BY id`
	bigMaxTx       = 500
	msgSentPart    = "sent part of a large transaction"
	msgRestart     = "apply failed inside a large transaction; restarting the stream from the applied position"
	msgStoppedLong = "stopped inside a large transaction; rolled back"
	msgStartOver   = "large transaction sent again from its start; starting over"
)

// bigSteps are source transactions on table big: small ones around two
// of many parts each (inserts, then a bulk update and a bulk delete).
var bigSteps = []string{
	`INSERT INTO big SELECT g, 0, 'small' FROM generate_series(1, 100) g`,
	`UPDATE big SET v = 1 WHERE id = 1`,
	`BEGIN; INSERT INTO big SELECT g, 1, 'n' || g FROM generate_series(101, 6000) g;
		UPDATE big SET v = v + 10, note = note || '!' WHERE id <= 4000;
		DELETE FROM big WHERE id % 7 = 0; COMMIT`,
	`UPDATE big SET v = v + 1000 WHERE id = 1`,
	`BEGIN; UPDATE big SET v = v + 100; DELETE FROM big WHERE id % 5 = 0; INSERT INTO big VALUES (1000000, 5, 'x'); COMMIT`,
	`DELETE FROM big WHERE id = 2`,
}

// bigInserts is how many rows bigSteps insert.
const bigInserts = 100 + 5900 + 1

// bigState is what a reader of table big sees: its row count and sum of v.
type bigState struct{ rows, sum int64 }

const bigStateQuery = `SELECT count(*), coalesce(sum(v), 0) FROM big`

func readBigState(tb testing.TB, pool *pgxpool.Pool) bigState {
	tb.Helper()
	var st bigState
	if err := pool.QueryRow(testCtx(tb), bigStateQuery).Scan(&st.rows, &st.sum); err != nil {
		tb.Fatalf("%s: %v", bigStateQuery, err)
	}
	return st
}

// runBigSteps runs bigSteps on the source one after the other and returns
// the states the source had at each commit, the one before them first.
func runBigSteps(tb testing.TB, p pair) []bigState {
	tb.Helper()
	states := []bigState{readBigState(tb, p.src.Pool)}
	for _, sql := range bigSteps {
		execAll(tb, p.src.Pool, sql)
		states = append(states, readBigState(tb, p.src.Pool))
	}
	return states
}

// watchStates reads the target's state of table big over and over until
// the returned stop is called, which returns every state seen.
func watchStates(tb testing.TB, pool *pgxpool.Pool) (stop func() []bigState) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	seen := map[bigState]bool{}
	var readErr error
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var st bigState
			if err := pool.QueryRow(ctx, bigStateQuery).Scan(&st.rows, &st.sum); err != nil {
				if ctx.Err() == nil {
					readErr = err
				}
				return
			}
			seen[st] = true
		}
	}()
	return func() []bigState {
		cancel()
		<-done
		if readErr != nil {
			tb.Fatalf("watch target: %v", readErr)
		}
		var out []bigState
		for st := range seen {
			out = append(out, st)
		}
		return out
	}
}

// messages records log messages, safe for concurrent use.
type messages struct {
	mu   sync.Mutex
	seen []string
}

func (m *messages) add(msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen = append(m.seen, msg)
}

func (m *messages) has(msg string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Contains(m.seen, msg)
}

// atPart returns a logger that records every message in log and, the first
// time the sync has sent part n of a large transaction, calls fn. The sync
// waits for fn, its target transaction open and idle.
func atPart(log *messages, n int64, fn func()) *slog.Logger {
	var once sync.Once
	return slog.New(hookHandler{fn: func(r slog.Record) {
		log.add(r.Message)
		if r.Message == msgSentPart && attr(r, "part").Int64() == n {
			once.Do(fn)
		}
	}})
}

// terminate returns a function that runs query, which terminates backends
// and counts them, on pool and stores the count in terminated.
func terminate(pool *pgxpool.Pool, query string, terminated *atomic.Int64) func() {
	return func() {
		var n int64
		if err := pool.QueryRow(context.Background(), query).Scan(&n); err == nil {
			terminated.Store(n)
		}
	}
}

// TestSyncLargeTransaction applies source transactions larger than
// MaxTxChanges, mixed with small ones, and breaks the target's connection
// in the middle of the first: the target never shows part of a source
// transaction, ends equal to the source, and counts each change and
// transaction once.
func TestSyncLargeTransaction(t *testing.T) {
	p := newPair(t, bigSchema+`; INSERT INTO big VALUES (-1, 0, 'copied')`, bigSchema)
	cfg := p.config("bigtx", mapping.TableSpec{Source: "big"})
	cfg.MaxTxChanges = bigMaxTx
	cfg.Metrics = NewMetrics(nil)
	var log messages
	var terminated atomic.Int64
	cfg.Logger = atPart(&log, 3, terminate(p.dst.Pool, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'`, &terminated))
	r := startSync(t, cfg)
	cdctest.WaitCopied(t, p.dst.Pool, "bigtx")
	stop := watchStates(t, p.dst.Pool)
	states := runBigSteps(t, p)
	waitSame(t, p, r, bigQuery, bigQuery)
	seen := stop()

	for _, st := range seen {
		if !slices.Contains(states, st) {
			t.Errorf("the target showed %+v, a state the source never committed (commit states: %+v)", st, states)
		}
	}
	if got := terminated.Load(); got != 1 {
		t.Errorf("target connections terminated inside the large transaction: got %d, want 1", got)
	}
	if !log.has(msgRestart) {
		t.Errorf("log: no %q", msgRestart)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(cfg.Metrics.Transactions) < float64(len(bigSteps)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(cfg.Metrics.Transactions); got != float64(len(bigSteps)) {
		t.Errorf("transactions_total: got %v, want %d", got, len(bigSteps))
	}
	if got := testutil.ToFloat64(cfg.Metrics.AppliedChanges.WithLabelValues("public.big", "insert")); got != bigInserts {
		t.Errorf("applied_changes_total{op=insert}: got %v, want %d", got, bigInserts)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: got %v, want nil", err)
	}
}

// TestSyncStoppedInsideLargeTransaction stops a sync (SIGTERM) while it
// applies a large source transaction: it rolls back and returns nil with
// nothing of it applied, and the next run applies it whole.
func TestSyncStoppedInsideLargeTransaction(t *testing.T) {
	p := newPair(t, bigSchema, bigSchema)
	cfg := p.config("bigstop", mapping.TableSpec{Source: "big"})
	cfg.MaxTxChanges = bigMaxTx
	plain := cfg.Logger
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log messages
	cfg.Logger = atPart(&log, 3, cancel)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	cdctest.WaitCopied(t, p.dst.Pool, "bigstop")
	execAll(t, p.src.Pool, bigSteps[0], bigSteps[1])
	waitSame(t, p, nil, bigQuery, bigQuery)
	before := readBigState(t, p.src.Pool)
	beforeLSN := queryLSN(t, p.src.Pool, `SELECT pg_current_wal_insert_lsn()::text`)
	execAll(t, p.src.Pool, bigSteps[2])

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run stopped inside a large transaction: got %v, want nil", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("sync did not stop within 60s")
	}
	if !log.has(msgStoppedLong) {
		t.Errorf("log: no %q", msgStoppedLong)
	}
	if got := readBigState(t, p.dst.Pool); got != before {
		t.Errorf("target after the stop: got %+v, want %+v (nothing of the large transaction)", got, before)
	}
	if got := appliedLSN(t, p, "bigstop"); got > beforeLSN {
		t.Errorf("applied LSN after the stop: got %s, want at most %s", got, beforeLSN)
	}

	cfg.Logger = plain
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("run again until caught up: %v", err)
	}
	if s, d := dump(t, p.src.Pool, bigQuery), dump(t, p.dst.Pool, bigQuery); s != d {
		t.Errorf("after running again: got target\n%s\nwant\n%s", d, s)
	}
	if got := fmt.Sprint(readBigState(t, p.dst.Pool)); got != fmt.Sprint(readBigState(t, p.src.Pool)) {
		t.Errorf("state after running again: got %s, want the source's", got)
	}
}

// TestSyncLargeTransactionSentAgain ends the source's walsender while the
// sync applies a large transaction: after the reconnect the server sends
// the transaction again from its start, and the sync rolls back what it
// sent of it and starts over, so the target never shows part of it and
// ends equal to the source.
func TestSyncLargeTransactionSentAgain(t *testing.T) {
	p := newPair(t, bigSchema, bigSchema)
	cfg := p.config("bigagain", mapping.TableSpec{Source: "big"})
	cfg.MaxTxChanges = bigMaxTx
	cfg.Metrics = NewMetrics(nil)
	var log messages
	var terminated atomic.Int64
	cfg.Logger = atPart(&log, 2, terminate(p.src.Pool,
		`SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_replication`, &terminated))
	r := startSync(t, cfg)
	cdctest.WaitCopied(t, p.dst.Pool, "bigagain")
	stop := watchStates(t, p.dst.Pool)
	before := readBigState(t, p.src.Pool)
	// Wider than the socket buffers between source and sync can hold, so
	// that the server is still sending when its walsender ends.
	execAll(t, p.src.Pool, `INSERT INTO big SELECT g, 1, repeat(md5(g::text), 32) FROM generate_series(1, 40000) g`)
	after := readBigState(t, p.src.Pool)
	waitSame(t, p, r, bigMD5Query, bigMD5Query)
	for _, st := range stop() {
		if st != before && st != after {
			t.Errorf("the target showed %+v, want %+v or %+v", st, before, after)
		}
	}
	if got := terminated.Load(); got != 1 {
		t.Errorf("walsenders terminated inside the large transaction: got %d, want 1", got)
	}
	if !log.has(msgStartOver) {
		t.Errorf("log: no %q", msgStartOver)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(cfg.Metrics.Transactions) < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(cfg.Metrics.AppliedChanges.WithLabelValues("public.big", "insert")); got != 40000 {
		t.Errorf("applied_changes_total{op=insert}: got %v, want 40000", got)
	}
}
