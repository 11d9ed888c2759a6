package cdc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// newSlot creates schema, a publication pub and a slot on the database at
// url, and returns the slot's consistent point.
func newSlot(tb testing.TB, pool *pgxpool.Pool, url, slot, schema string) LSN {
	tb.Helper()
	ctx := testCtx(tb)
	if _, err := pool.Exec(ctx, schema); err != nil {
		tb.Fatalf("schema: %v", err)
	}
	rc := connect(tb, url)
	s, err := rc.CreateSlot(ctx, slot, SlotOptions{})
	if err != nil {
		tb.Fatalf("create slot: %v", err)
	}
	return s.ConsistentPoint
}

func openStream(tb testing.TB, cfg StreamConfig) *Stream {
	tb.Helper()
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 20 * time.Millisecond
	}
	cfg.MinBackoff = 20 * time.Millisecond
	cfg.MaxBackoff = 200 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := OpenStream(testCtx(tb), cfg)
	if err != nil {
		tb.Fatalf("open stream: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func next(tb testing.TB, s *Stream) *Transaction {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.Next(ctx)
	if err != nil {
		tb.Fatalf("next: %v", err)
	}
	return tx
}

func execAll(tb testing.TB, pool *pgxpool.Pool, sqls ...string) {
	tb.Helper()
	for _, sql := range sqls {
		if _, err := pool.Exec(testCtx(tb), sql); err != nil {
			tb.Fatalf("%s: %v", sql, err)
		}
	}
}

func confirmedFlush(tb testing.TB, pool *pgxpool.Pool, slot string) LSN {
	tb.Helper()
	var s string
	if err := pool.QueryRow(testCtx(tb), `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&s); err != nil {
		tb.Fatalf("confirmed_flush_lsn: %v", err)
	}
	l, err := ParseLSN(s)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// summary renders a transaction's changes as "op:table:first column".
func summary(tx *Transaction) []string {
	var out []string
	for _, c := range tx.Changes {
		switch c.Op {
		case OpTruncate:
			out = append(out, fmt.Sprintf("truncate:%s", c.Truncated[0].Name))
		case OpDelete:
			out = append(out, fmt.Sprintf("delete:%s:%s", c.Relation.Name, c.Old[0].Data))
		default:
			out = append(out, fmt.Sprintf("%s:%s:%s", c.Op, c.Relation.Name, c.New[0].Data))
		}
	}
	return out
}

func TestStreamTransactions(t *testing.T) {
	db := pgtest.NewDB(t)
	start := newSlot(t, db.Pool, db.URL, "s1", `CREATE TABLE a (id int PRIMARY KEY, v text);
		CREATE TABLE other (id int);
		CREATE PUBLICATION pub FOR TABLE a`)
	s := openStream(t, StreamConfig{ConnString: db.URL, Slot: "s1", Publications: []string{"pub"}, StartLSN: start})
	execAll(t, db.Pool,
		`INSERT INTO a VALUES (1, 'x')`,
		`INSERT INTO other VALUES (1)`, // not published: no transaction
		`BEGIN; INSERT INTO a VALUES (2, 'y'); UPDATE a SET v = 'z' WHERE id = 1; DELETE FROM a WHERE id = 2; COMMIT`,
		`TRUNCATE a`,
	)
	tests := []struct {
		name          string
		want          []string
		wantRelations int
	}{
		{name: "single insert", want: []string{"insert:a:1"}, wantRelations: 1},
		{name: "three changes", want: []string{"insert:a:2", "update:a:1", "delete:a:2"}},
		{name: "truncate", want: []string{"truncate:a"}},
	}
	var prev LSN
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tx := next(t, s)
			if got := summary(tx); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("changes: got %v, want %v", got, tc.want)
			}
			if len(tx.Relations) < tc.wantRelations {
				t.Errorf("relations: got %d, want at least %d", len(tx.Relations), tc.wantRelations)
			}
			if tx.EndLSN <= tx.CommitLSN || tx.CommitLSN <= prev {
				t.Errorf("lsns: got commit %s end %s after %s, want increasing", tx.CommitLSN, tx.EndLSN, prev)
			}
			if d := time.Since(tx.CommitTime); d < 0 || d > time.Minute {
				t.Errorf("commit time: got %v, want within the last minute", tx.CommitTime)
			}
			prev = tx.EndLSN
		})
	}
}

// TestStreamFlushFollowsAck checks that the position reported as flushed
// never passes what was acknowledged while a transaction is pending, follows
// Ack, and advances alone over transactions of unpublished tables once idle.
func TestStreamFlushFollowsAck(t *testing.T) {
	db := pgtest.NewDB(t)
	start := newSlot(t, db.Pool, db.URL, "s2", `CREATE TABLE a (id int PRIMARY KEY);
		CREATE TABLE other (id int);
		CREATE PUBLICATION pub FOR TABLE a`)
	s := openStream(t, StreamConfig{ConnString: db.URL, Slot: "s2", Publications: []string{"pub"}, StartLSN: start})
	execAll(t, db.Pool, `INSERT INTO a VALUES (1)`)
	tx := next(t, s)

	sent := s.updates.Load()
	waitFor(t, "three more status updates", func() bool { return s.updates.Load() >= sent+3 })
	if got := confirmedFlush(t, db.Pool, "s2"); got >= tx.EndLSN {
		t.Fatalf("confirmed flush before ack: got %s, want below %s", got, tx.EndLSN)
	}

	s.Ack(tx.EndLSN)
	waitFor(t, "confirmed flush to reach the ack", func() bool { return confirmedFlush(t, db.Pool, "s2") >= tx.EndLSN })

	execAll(t, db.Pool, `INSERT INTO other SELECT generate_series(1, 100)`)
	var after string
	if err := db.Pool.QueryRow(testCtx(t), `SELECT pg_current_wal_lsn()::text`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	afterLSN, _ := ParseLSN(after)
	waitFor(t, "confirmed flush to pass the unpublished insert", func() bool {
		return confirmedFlush(t, db.Pool, "s2") >= afterLSN
	})
	if got := s.Acked(); got != tx.EndLSN {
		t.Errorf("acked: got %s, want %s", got, tx.EndLSN)
	}
}

func TestStreamMissingSlot(t *testing.T) {
	db := pgtest.NewDB(t)
	execAll(t, db.Pool, `CREATE TABLE a (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE a`)
	_, err := OpenStream(testCtx(t), StreamConfig{ConnString: db.URL, Slot: "nope", Publications: []string{"pub"}})
	if err == nil || Retryable(err) {
		t.Fatalf("got %v, want an error that is not retried", err)
	}
}

// TestStreamSurvivesRestart stops the server under a stream and starts it
// again: after reconnecting, every transaction is delivered exactly once,
// in order. A fast shutdown waits for the client to confirm everything it
// was sent, so there every transaction is acknowledged first; a crash does
// not wait, and leaves one delivered transaction unacknowledged, which the
// server sends again.
func TestStreamSurvivesRestart(t *testing.T) {
	c := pgtest.NewCluster(t)
	// terminate ends the walsender, as a dropped connection would.
	var db *pgtest.DB
	terminate := func() error {
		_, err := db.Pool.Exec(context.Background(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active`)
		return err
	}
	tests := []struct {
		name      string
		stop      func() error
		start     func() error
		ackSecond bool
	}{
		{name: "restart", stop: c.Stop, start: c.Start, ackSecond: true},
		{name: "crash", stop: c.Crash, start: c.Start, ackSecond: false},
		{name: "connection dropped", stop: terminate, start: func() error { return nil }, ackSecond: false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db = c.NewDB(t)
			slot := fmt.Sprintf("s3_%d", i)
			start := newSlot(t, db.Pool, db.URL, slot, `CREATE TABLE a (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE a`)
			s := openStream(t, StreamConfig{ConnString: db.URL, Slot: slot, Publications: []string{"pub"}, StartLSN: start})
			execAll(t, db.Pool, `INSERT INTO a VALUES (1)`, `INSERT INTO a VALUES (2)`)
			tx1 := next(t, s)
			s.Ack(tx1.EndLSN)
			tx2 := next(t, s)
			if tc.ackSecond {
				s.Ack(tx2.EndLSN)
			}
			waitFor(t, "ack to reach the server", func() bool { return confirmedFlush(t, db.Pool, slot) >= s.Acked() })

			if err := tc.stop(); err != nil {
				t.Fatal(err)
			}
			if err := tc.start(); err != nil {
				t.Fatal(err)
			}
			db.Pool.Reset()
			execAll(t, db.Pool, `INSERT INTO a VALUES (3)`)
			tx3 := next(t, s)

			got := []string{summary(tx1)[0], summary(tx2)[0], summary(tx3)[0]}
			want := []string{"insert:a:1", "insert:a:2", "insert:a:3"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("got %v, want %v", got, want)
			}
			if n := s.Connections(); n < 2 {
				t.Errorf("connections: got %d, want at least 2", n)
			}
			s.Ack(tx3.EndLSN)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if tx, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("after the last transaction: got %v, %v, want nothing more", tx, err)
			}
		})
	}
}

// TestStreamWaitsForSlotRelease opens a stream while another connection
// still streams from the slot, as after a restart whose predecessor's
// server process has not gone yet.
func TestStreamWaitsForSlotRelease(t *testing.T) {
	db := pgtest.NewDB(t)
	start := newSlot(t, db.Pool, db.URL, "held", `CREATE TABLE a (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE a`)
	rc, err := Connect(testCtx(t), db.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.StartReplication(testCtx(t), "held", start, []string{"pub"}); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		rc.Close(context.Background())
	}()
	s := openStream(t, StreamConfig{ConnString: db.URL, Slot: "held", Publications: []string{"pub"}, StartLSN: start})
	execAll(t, db.Pool, `INSERT INTO a VALUES (1)`)
	if got := summary(next(t, s)); fmt.Sprint(got) != "[insert:a:1]" {
		t.Errorf("got %v, want [insert:a:1]", got)
	}
}

// TestStreamLargeTransactionInParts streams one source transaction of
// 50,000 changes with parts of at most 1,000: the parts come numbered from
// 0, only the last without More and with EndLSN, and together they hold
// every change in order. The transactions around it stay whole.
func TestStreamLargeTransactionInParts(t *testing.T) {
	db := pgtest.NewDB(t)
	start := newSlot(t, db.Pool, db.URL, "parts", `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE a`)
	s := openStream(t, StreamConfig{ConnString: db.URL, Slot: "parts", Publications: []string{"pub"}, StartLSN: start,
		MaxTxChanges: 1000, Buffer: 4})
	const rows = 50000
	execAll(t, db.Pool,
		`INSERT INTO a VALUES (0, 'before')`,
		fmt.Sprintf(`BEGIN; INSERT INTO a SELECT g, 'v' FROM generate_series(1, %d) g; DELETE FROM a WHERE id = 0; COMMIT`, rows),
		`INSERT INTO a VALUES (-1, 'after')`,
	)
	before := next(t, s)
	if got := summary(before); fmt.Sprint(got) != "[insert:a:0]" || before.Part != 0 || before.More || before.EndLSN == 0 {
		t.Fatalf("first transaction: got %v part %d more %v end %s, want one whole insert", got, before.Part, before.More, before.EndLSN)
	}
	var got []string
	var first *Transaction
	for part := 0; ; part++ {
		tx := next(t, s)
		if first == nil {
			first = tx
		}
		if tx.Part != part || tx.Xid != first.Xid || tx.CommitLSN != first.CommitLSN {
			t.Fatalf("part %d: got part %d of xid %d commit %s, want part %d of xid %d commit %s",
				part, tx.Part, tx.Xid, tx.CommitLSN, part, first.Xid, first.CommitLSN)
		}
		if n := len(tx.Changes); n == 0 || n > 1000 {
			t.Fatalf("part %d: got %d changes, want 1 to 1000", part, n)
		}
		if tx.More == (tx.EndLSN != 0) {
			t.Fatalf("part %d: got more %v with end %s, want EndLSN set on the last part only", part, tx.More, tx.EndLSN)
		}
		if tx.CommitTime.IsZero() {
			t.Fatalf("part %d: no commit time", part)
		}
		got = append(got, summary(tx)...)
		if !tx.More {
			if tx.EndLSN <= tx.CommitLSN {
				t.Errorf("last part: got commit %s end %s, want end after commit", tx.CommitLSN, tx.EndLSN)
			}
			break
		}
	}
	want := make([]string, 0, rows+1)
	for i := 1; i <= rows; i++ {
		want = append(want, fmt.Sprintf("insert:a:%d", i))
	}
	want = append(want, "delete:a:0")
	if len(got) != len(want) {
		t.Fatalf("changes: got %d, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("change %d: got %s, want %s", i, got[i], want[i])
		}
	}
	if after := next(t, s); fmt.Sprint(summary(after)) != "[insert:a:-1]" || after.Part != 0 || after.More {
		t.Errorf("last transaction: got %v part %d more %v, want one whole insert", summary(after), after.Part, after.More)
	}
}

// TestStreamReconnectInsideTransaction ends the walsender after the first
// part of a large transaction was received: after the reconnect the server
// sends the transaction again, and the stream delivers it again from Part
// 0. A consumer that starts over on Part 0 ends with exactly the
// transaction's changes.
func TestStreamReconnectInsideTransaction(t *testing.T) {
	db := pgtest.NewDB(t)
	start := newSlot(t, db.Pool, db.URL, "again", `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE a`)
	// Wider than the socket buffers between server and client can hold,
	// so that the server is still sending when its walsender ends.
	const rows = 64000
	execAll(t, db.Pool, fmt.Sprintf(`INSERT INTO a SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, %d) g`, rows))
	s := openStream(t, StreamConfig{ConnString: db.URL, Slot: "again", Publications: []string{"pub"}, StartLSN: start,
		MaxTxChanges: 1000, Buffer: 1})
	first := next(t, s)
	if first.Part != 0 || !first.More {
		t.Fatalf("first: got part %d more %v, want part 0 with more", first.Part, first.More)
	}
	execAll(t, db.Pool, `SELECT pg_terminate_backend(pid) FROM pg_stat_replication`)

	held := summary(first)
	restarts := 0
	for {
		tx := next(t, s)
		if tx.Part == 0 {
			restarts++
			held = nil
		} else if tx.Xid != first.Xid {
			t.Fatalf("got xid %d, want %d", tx.Xid, first.Xid)
		}
		held = append(held, summary(tx)...)
		if !tx.More {
			break
		}
	}
	if restarts != 1 {
		t.Errorf("restarts at part 0: got %d, want 1", restarts)
	}
	if n := s.Connections(); n < 2 {
		t.Errorf("connections: got %d, want at least 2", n)
	}
	if len(held) != rows {
		t.Fatalf("changes: got %d, want %d", len(held), rows)
	}
	for i, c := range held {
		if want := fmt.Sprintf("insert:a:%d", i+1); c != want {
			t.Fatalf("change %d: got %s, want %s", i, c, want)
		}
	}
}
