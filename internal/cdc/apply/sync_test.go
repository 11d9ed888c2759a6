package apply

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
	"github.com/strangler-fig/strangler/internal/testkit"
)

const usersSchema = `CREATE TABLE users (id bigint PRIMARY KEY, email text, name text, note text, n int);
	ALTER TABLE users ALTER COLUMN note SET STORAGE EXTERNAL;`

const usersQuery = `SELECT id, email, name, md5(note), length(note), n FROM users ORDER BY id`

// TestSyncReplicatesChanges copies existing rows, then streams each kind of
// change and checks after each step that the target equals the source in
// every column.
func TestSyncReplicatesChanges(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a@x', 'A', 'first', 1), (2, 'b@x', 'B', NULL, 2);`, usersSchema)
	r := startSync(t, p.config("basic", mapping.TableSpec{Source: "users"}))
	waitSame(t, p, r, usersQuery, usersQuery)

	steps := []struct {
		name string
		sql  string
	}{
		{name: "insert", sql: `INSERT INTO users VALUES (3, 'c@x', 'C', 'third', 3)`},
		{name: "insert nulls", sql: `INSERT INTO users (id) VALUES (4)`},
		{name: "update to null and back", sql: `UPDATE users SET email = NULL, n = 40 WHERE id = 4; UPDATE users SET name = 'D' WHERE id = 4`},
		{name: "key change moves the row", sql: `UPDATE users SET id = 30, name = 'C2' WHERE id = 3`},
		{name: "delete", sql: `DELETE FROM users WHERE id = 2`},
		{name: "many changes in one transaction", sql: `BEGIN; INSERT INTO users SELECT g, 'u' || g, 'n', 'x', g FROM generate_series(100, 199) g;
			UPDATE users SET n = n + 1 WHERE id BETWEEN 150 AND 160; DELETE FROM users WHERE id BETWEEN 100 AND 110; COMMIT`},
		{name: "large value inserted", sql: `INSERT INTO users VALUES (5, 'e@x', 'E', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g), 5)`},
		{name: "large value left unchanged by an update", sql: `UPDATE users SET n = 55, name = 'E2' WHERE id = 5`},
		{name: "large value unchanged across a key change", sql: `UPDATE users SET id = 50 WHERE id = 5`},
		{name: "truncate", sql: `TRUNCATE users`},
		{name: "insert after truncate", sql: `INSERT INTO users VALUES (7, 'g@x', 'G', 'seven', 7)`},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			execAll(t, p.src.Pool, step.sql)
			waitSame(t, p, r, usersQuery, usersQuery)
		})
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: got %v, want nil", err)
	}
}

// TestSyncRenamedColumnsAndFilter maps renamed columns and a row filter:
// rows updated into the filter appear, rows updated out of it disappear.
func TestSyncRenamedColumnsAndFilter(t *testing.T) {
	p := newPair(t,
		`CREATE TABLE items (id int PRIMARY KEY, title text, active bool NOT NULL, secret text);
		ALTER TABLE items REPLICA IDENTITY FULL;
		INSERT INTO items VALUES (1, 'one', true, 's'), (2, 'two', false, 's');`,
		`CREATE TABLE products (id bigint PRIMARY KEY, name text, active bool)`)
	spec := mapping.TableSpec{Source: "items", Target: "products", Columns: map[string]string{"id": "id", "name": "title", "active": "active"}, Where: "active"}
	r := startSync(t, p.config("filter", spec))
	const srcQ = `SELECT id, title, active FROM items WHERE active ORDER BY id`
	const dstQ = `SELECT id, name, active FROM products ORDER BY id`
	waitSame(t, p, r, srcQ, dstQ)
	steps := []struct{ name, sql string }{
		{"insert outside the filter", `INSERT INTO items VALUES (3, 'three', false, 's')`},
		{"update into the filter", `UPDATE items SET active = true, title = 'three!' WHERE id = 3`},
		{"update out of the filter", `UPDATE items SET active = false WHERE id = 1`},
		{"update outside the filter", `UPDATE items SET title = 'two?' WHERE id = 2`},
		{"delete inside the filter", `DELETE FROM items WHERE id = 3`},
		{"unmapped column only", `UPDATE items SET secret = 'changed'`},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			execAll(t, p.src.Pool, step.sql)
			waitSame(t, p, r, srcQ, dstQ)
		})
	}
}

// TestSyncSchemaDrift changes a mapped column under a running sync: the
// sync stops with an error naming the table and the column, and nothing
// past the last applied transaction is acknowledged.
func TestSyncSchemaDrift(t *testing.T) {
	tests := []struct {
		name, identity, alter, insert, wantChange string
	}{
		{name: "renamed column", identity: "DEFAULT", alter: `ALTER TABLE t RENAME COLUMN b TO c`, insert: `INSERT INTO t VALUES (2, 'c', 'd')`, wantChange: `"b" is no longer published`},
		// PostgreSQL refuses type changes of columns in a publication's
		// column list; without a list (REPLICA IDENTITY FULL) they happen.
		{name: "changed type", identity: "FULL", alter: `ALTER TABLE t ALTER COLUMN b TYPE int USING length(b)`, insert: `INSERT INTO t VALUES (2, 'c', 4)`, wantChange: `"b" changed type`},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, `CREATE TABLE t (id int PRIMARY KEY, a text, b text); ALTER TABLE t REPLICA IDENTITY `+tc.identity,
				`CREATE TABLE t (id int PRIMARY KEY, a text, b text)`)
			name := fmt.Sprintf("drift%d", i)
			r := startSync(t, p.config(name, mapping.TableSpec{Source: "t"}))
			execAll(t, p.src.Pool, `INSERT INTO t VALUES (1, 'a', 'b')`)
			waitSame(t, p, r, `SELECT * FROM t ORDER BY id`, `SELECT * FROM t ORDER BY id`)
			before := appliedLSN(t, p, name)

			execAll(t, p.src.Pool, tc.alter, tc.insert)
			var err error
			select {
			case err = <-r.done:
				r.done <- err
			case <-time.After(30 * time.Second):
				t.Fatal("sync did not stop on schema drift")
			}
			var drift *DriftError
			if !errors.As(err, &drift) || drift.Table != "public.t" || !strings.Contains(drift.Change, tc.wantChange) {
				t.Fatalf("got %v, want a drift error on public.t containing %q", err, tc.wantChange)
			}
			after := appliedLSN(t, p, name)
			if after != before {
				t.Errorf("applied lsn: got %s, want %s (unchanged)", after, before)
			}
			// The slot must still hold the transaction that did not fit.
			var pending int
			deadline := time.Now().Add(30 * time.Second)
			for {
				err := p.src.Pool.QueryRow(testCtx(t), `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
					'proto_version', '1', 'publication_names', $2) WHERE get_byte(data, 0) = ascii('I')`,
					SlotName(name), PublicationName(name)).Scan(&pending)
				if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "is active") {
					if err != nil {
						t.Fatal(err)
					}
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if pending != 1 {
				t.Errorf("inserts still held by the slot: got %d, want 1", pending)
			}
			if got := dump(t, p.dst.Pool, `SELECT id FROM t ORDER BY id`); got != "[1]\n" {
				t.Errorf("target rows: got %q, want only id 1", got)
			}
		})
	}
}

// copiedAt is when the sync called name last copied its (one) table.
func copiedAt(tb testing.TB, p pair, name string) time.Time {
	tb.Helper()
	var at time.Time
	if err := p.dst.Pool.QueryRow(testCtx(tb), `SELECT copied_at FROM datasync.sync_tables WHERE name = $1`, name).Scan(&at); err != nil {
		tb.Fatal(err)
	}
	return at
}

func appliedLSN(tb testing.TB, p pair, name string) cdc.LSN {
	tb.Helper()
	return queryLSN(tb, p.dst.Pool, `SELECT applied_lsn::text FROM datasync.sync_state WHERE name = $1`, name)
}

// queryLSN runs a query returning one LSN as text.
func queryLSN(tb testing.TB, pool *pgxpool.Pool, query string, args ...any) cdc.LSN {
	tb.Helper()
	var s string
	if err := pool.QueryRow(testCtx(tb), query, args...).Scan(&s); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	l, err := cdc.ParseLSN(s)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// TestSyncRestartResumes stops a sync, changes the source, and runs it again
// until caught up: the changes arrive, nothing is copied again.
func TestSyncRestartResumes(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1)`, usersSchema)
	cfg := p.config("resume", mapping.TableSpec{Source: "users"})
	r := startSync(t, cfg)
	waitSame(t, p, r, usersQuery, usersQuery)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	first := copiedAt(t, p, "resume")
	execAll(t, p.src.Pool, `INSERT INTO users VALUES (2, 'b', 'B', 'y', 2)`, `UPDATE users SET n = 10 WHERE id = 1`, `DELETE FROM users WHERE id = 2`, `INSERT INTO users VALUES (3, 'c', 'C', 'z', 3)`)

	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("run until caught up: %v", err)
	}
	if s, d := dump(t, p.src.Pool, usersQuery), dump(t, p.dst.Pool, usersQuery); s != d {
		t.Errorf("after catching up: got target\n%s, want\n%s", d, s)
	}
	again := copiedAt(t, p, "resume")
	if !again.Equal(first) {
		t.Errorf("copied_at: got %v, want %v (no second copy)", again, first)
	}
}

func TestPreflightRefuses(t *testing.T) {
	tests := []struct {
		name, srcSchema, dstSchema string
		spec                       mapping.TableSpec
		want                       string
	}{
		{
			name:      "replica identity nothing",
			srcSchema: `CREATE TABLE t (id int PRIMARY KEY, v text); ALTER TABLE t REPLICA IDENTITY NOTHING`,
			dstSchema: `CREATE TABLE t (id int PRIMARY KEY, v text)`,
			spec:      mapping.TableSpec{Source: "t"},
			want:      `ALTER TABLE "public"."t" REPLICA IDENTITY FULL`,
		},
		{
			name:      "no primary key, unique index on the key",
			srcSchema: `CREATE TABLE t (id int NOT NULL, v text); CREATE UNIQUE INDEX t_id ON t (id)`,
			dstSchema: `CREATE TABLE t (id int PRIMARY KEY, v text)`,
			spec:      mapping.TableSpec{Source: "t", Key: []string{"id"}},
			want:      `ALTER TABLE "public"."t" REPLICA IDENTITY USING INDEX "t_id"`,
		},
		{
			name:      "filter outside the replica identity",
			srcSchema: `CREATE TABLE t (id int PRIMARY KEY, v text, active bool)`,
			dstSchema: `CREATE TABLE t (id int PRIMARY KEY, v text)`,
			spec:      mapping.TableSpec{Source: "t", Where: "active"},
			want:      `REPLICA IDENTITY FULL`,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, tc.srcSchema, tc.dstSchema)
			err := Run(testCtx(t), p.config("pf"+string(rune('a'+i)), tc.spec))
			if !errors.Is(err, mapping.ErrPreflight) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a preflight error containing %q", err, tc.want)
			}
			var n int
			if err := p.src.Pool.QueryRow(testCtx(t), `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("slots after a failed preflight: got %d, want 0", n)
			}
		})
	}
}

// TestSyncSourceRestart restarts the source server under a running sync,
// with writes before, during and after: the sync reconnects and the target
// ends equal to the source.
func TestSyncSourceRestart(t *testing.T) {
	c := pgtest.NewCluster(t)
	p := pair{src: c.NewDB(t), dst: pgtest.NewDB(t)}
	execAll(t, p.src.Pool, usersSchema+`INSERT INTO users SELECT g, 'e' || g, 'n', 'x', g FROM generate_series(1, 100) g`)
	execAll(t, p.dst.Pool, usersSchema)
	r := startSync(t, p.config("restart", mapping.TableSpec{Source: "users"}))
	waitSame(t, p, r, usersQuery, usersQuery)

	execAll(t, p.src.Pool, `UPDATE users SET n = n + 1 WHERE id <= 50`, `DELETE FROM users WHERE id > 90`)
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	p.src.Pool.Reset()
	execAll(t, p.src.Pool, `INSERT INTO users VALUES (500, 'after', 'restart', 'y', 1)`, `UPDATE users SET id = 501 WHERE id = 1`)
	waitSame(t, p, r, usersQuery, usersQuery)
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: got %v, want nil", err)
	}
}

// TestStatusAndCleanup reads a sync's status, then drops what it created.
func TestStatusAndCleanup(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1), (2, 'b', 'B', 'y', 2)`, usersSchema)
	cfg := p.config("st", mapping.TableSpec{Source: "users"})
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	execAll(t, p.src.Pool, `INSERT INTO users VALUES (3, 'c', 'C', 'z', 3)`)

	var st *Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if st, err = GetStatus(testCtx(t), p.src.Pool, p.dst.Pool, "st"); err != nil {
			t.Fatal(err)
		}
		// The stopped sync's server process may linger for a moment.
		if !st.SlotActive || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !st.SlotExists || st.SlotActive || st.WALStatus != "reserved" {
		t.Errorf("slot: got exists=%v active=%v wal_status=%q, want true false reserved", st.SlotExists, st.SlotActive, st.WALStatus)
	}
	if st.LagBytes <= 0 {
		t.Errorf("lag bytes with an unapplied insert: got %d, want > 0", st.LagBytes)
	}
	if st.AppliedLSN == "" || st.LastApply == nil {
		t.Errorf("applied: got %q at %v, want both set", st.AppliedLSN, st.LastApply)
	}
	if len(st.Tables) != 1 || st.Tables[0].Target != "public.users" || st.Tables[0].CopiedRows != 2 {
		t.Errorf("tables: got %+v, want public.users with 2 rows copied", st.Tables)
	}

	if err := Cleanup(testCtx(t), p.src.Pool, p.dst.Pool, "st"); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name  string
		pool  *pgxpool.Pool
		query string
	}{
		{"slot", p.src.Pool, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'datasync_st'`},
		{"publication", p.src.Pool, `SELECT count(*) FROM pg_publication WHERE pubname = 'datasync_st'`},
		{"checkpoint", p.dst.Pool, `SELECT count(*) FROM datasync.sync_state WHERE name = 'st'`},
		{"copied tables", p.dst.Pool, `SELECT count(*) FROM datasync.sync_tables WHERE name = 'st'`},
	}
	for _, c := range checks {
		var n int
		if err := c.pool.QueryRow(testCtx(t), c.query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s after cleanup: got %d, want 0", c.name, n)
		}
	}
	if got := dump(t, p.dst.Pool, `SELECT count(*) FROM users`); got != "[2]\n" {
		t.Errorf("target rows after cleanup: got %q, want 2 kept", got)
	}
}

// TestSyncAddedTable adds a table to an existing sync: it is published and
// copied from a snapshot of its own while the first table keeps its
// position, and changes to both are applied from then on.
func TestSyncAddedTable(t *testing.T) {
	schema := `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);`
	p := newPair(t, schema+`INSERT INTO a VALUES (1, 'a1'); INSERT INTO b VALUES (1, 'b1');`, schema)
	cfg := p.config("added", mapping.TableSpec{Source: "a"})
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	execAll(t, p.src.Pool, `INSERT INTO a VALUES (2, 'a2')`, `INSERT INTO b VALUES (2, 'b2')`, `UPDATE b SET v = 'b1!' WHERE id = 1`)
	if got := dump(t, p.dst.Pool, `SELECT count(*) FROM b`); got != "[0]\n" {
		t.Fatalf("b before it is mapped: got %q rows, want 0", got)
	}

	cfg = p.config("added", mapping.TableSpec{Source: "a"}, mapping.TableSpec{Source: "b"})
	r := startSync(t, cfg)
	for _, q := range []string{`SELECT * FROM a ORDER BY id`, `SELECT * FROM b ORDER BY id`} {
		waitSame(t, p, r, q, q)
	}
	execAll(t, p.src.Pool, `UPDATE a SET v = 'a2!' WHERE id = 2`, `DELETE FROM b WHERE id = 1`, `INSERT INTO b VALUES (3, 'b3')`)
	for _, q := range []string{`SELECT * FROM a ORDER BY id`, `SELECT * FROM b ORDER BY id`} {
		waitSame(t, p, r, q, q)
	}
	var n int
	if err := p.dst.Pool.QueryRow(testCtx(t), `SELECT count(DISTINCT copied_lsn) FROM datasync.sync_tables WHERE name = 'added'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("copy positions: got %d distinct, want 2 (one per copy)", n)
	}
}

// TestSyncTargetDown stops the target under a running sync: the sync keeps
// retrying without acknowledging anything, and applies everything once the
// target is back.
func TestSyncTargetDown(t *testing.T) {
	c := pgtest.NewCluster(t)
	p := pair{src: pgtest.NewDB(t), dst: c.NewDB(t)}
	execAll(t, p.src.Pool, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1)`)
	execAll(t, p.dst.Pool, usersSchema)
	r := startSync(t, p.config("tdown", mapping.TableSpec{Source: "users"}))
	waitSame(t, p, r, usersQuery, usersQuery)
	cdctest.WaitCopied(t, p.dst.Pool, "tdown")
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	execAll(t, p.src.Pool, `INSERT INTO users VALUES (2, 'b', 'B', 'y', 2)`, `UPDATE users SET n = 10 WHERE id = 1`)
	afterLSN := queryLSN(t, p.src.Pool, `SELECT pg_current_wal_insert_lsn()::text`)
	time.Sleep(500 * time.Millisecond) // a few failed attempts
	if got := confirmedFlushOf(t, p, "tdown"); got >= afterLSN {
		t.Errorf("confirmed flush while the target is down: got %s, want below %s (nothing new applied)", got, afterLSN)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	p.dst.Pool.Reset()
	waitSame(t, p, r, usersQuery, usersQuery)
}

func confirmedFlushOf(tb testing.TB, p pair, name string) cdc.LSN {
	tb.Helper()
	return queryLSN(tb, p.src.Pool, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, SlotName(name))
}

// TestSyncMetrics checks the counters against the changes made.
func TestSyncMetrics(t *testing.T) {
	p := newPair(t, usersSchema, usersSchema)
	reg := prometheus.NewRegistry()
	cfg := p.config("metrics", mapping.TableSpec{Source: "users"})
	cfg.Metrics = NewMetrics(reg)
	r := startSync(t, cfg)
	// Changes made before the copy would be copied, not streamed.
	cdctest.WaitCopied(t, p.dst.Pool, "metrics")
	execAll(t, p.src.Pool,
		`INSERT INTO users (id) VALUES (1), (2), (3)`,
		`UPDATE users SET n = 1 WHERE id = 1`,
		`BEGIN; DELETE FROM users WHERE id = 2; DELETE FROM users WHERE id = 3; COMMIT`)
	waitSame(t, p, r, usersQuery, usersQuery)
	// The counters move just after the target commits.
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(cfg.Metrics.Transactions) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	tests := []struct {
		op   string
		want float64
	}{{"insert", 3}, {"update", 1}, {"delete", 2}, {"truncate", 0}}
	// Gathered before the loop below reads (and so creates) any series:
	// every operation of the mapped table is exported from the start, a
	// truncate count of 0 included; with the transactions and the two lag
	// gauges, 7 series.
	n, err := testutil.GatherAndCount(reg, "datasync_sync_applied_changes_total", "datasync_sync_transactions_total",
		"datasync_sync_lag_bytes", "datasync_sync_lag_seconds")
	if err != nil || n != 7 {
		t.Errorf("gathered series: got %d, %v, want 7", n, err)
	}
	for _, tc := range tests {
		got := testutil.ToFloat64(cfg.Metrics.AppliedChanges.WithLabelValues("public.users", tc.op))
		if got != tc.want {
			t.Errorf("applied_changes_total{op=%q}: got %v, want %v", tc.op, got, tc.want)
		}
	}
	if got := testutil.ToFloat64(cfg.Metrics.Transactions); got != 3 {
		t.Errorf("transactions_total: got %v, want 3", got)
	}
}

// TestSyncTypes copies and streams values of many types and compares them
// column by column, so the text form the stream carries reads back the same
// in the target.
func TestSyncTypes(t *testing.T) {
	const schema = `CREATE TYPE mood AS ENUM ('sad', 'happy');
		CREATE TABLE ty (id int PRIMARY KEY, vc varchar(10), ch char(3), bits bit(8), num numeric(12,2), ts timestamptz(3),
			tsl timestamp, d date, iv interval, js jsonb, by bytea, arr int[], txtarr text[], u uuid, m mood, f float8, b bool);`
	const row = `(%d, 'héllo', 'ab', B'10101010', 1234.5, '2026-01-02 03:04:05.678+02', '2026-01-02 03:04:05.123456', '2026-02-28',
		'1 day 02:03:04.5', '{"a": [1, "x"]}', '\x00ff10', '{1,NULL,3}', '{"a b","c,d",NULL}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'happy', 0.1, true)`
	p := newPair(t, schema+fmt.Sprintf("INSERT INTO ty VALUES "+row, 1), schema)
	r := startSync(t, p.config("types", mapping.TableSpec{Source: "ty"}))
	const q = `SELECT * FROM ty ORDER BY id`
	waitSame(t, p, r, q, q)
	steps := []struct{ name, sql string }{
		{"insert", fmt.Sprintf("INSERT INTO ty VALUES "+row, 2)},
		{"update every column", `UPDATE ty SET vc = 'x', ch = 'z', bits = B'00000001', num = -0.01, ts = now(), tsl = 'infinity', d = '1999-12-31',
			iv = '-3 mons', js = 'null', by = '', arr = '{}', txtarr = '{""}', u = gen_random_uuid(), m = 'sad', f = 'NaN', b = false WHERE id = 2`},
		{"nulls", `INSERT INTO ty (id) VALUES (3)`},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			execAll(t, p.src.Pool, step.sql)
			waitSame(t, p, r, q, q)
		})
	}
}

// TestSyncPartitionedSource syncs a partitioned source table into a plain
// target table: changes to its partitions arrive as changes to the table.
func TestSyncPartitionedSource(t *testing.T) {
	p := newPair(t, `CREATE TABLE ev (id int, region text, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
		CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
		CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
		INSERT INTO ev VALUES (1, 'eu', 'a'), (2, 'us', 'b');`,
		`CREATE TABLE ev (id int, region text, v text, PRIMARY KEY (id, region))`)
	r := startSync(t, p.config("parts", mapping.TableSpec{Source: "ev", AcceptPartitionLimits: true}))
	const q = `SELECT * FROM ev ORDER BY id, region`
	waitSame(t, p, r, q, q)
	execAll(t, p.src.Pool, `INSERT INTO ev VALUES (3, 'us', 'c')`, `UPDATE ev SET v = 'a2' WHERE id = 1`, `DELETE FROM ev WHERE id = 2`,
		`UPDATE ev SET region = 'eu' WHERE id = 3`)
	waitSame(t, p, r, q, q)
}

// TestSyncRemappedTableCopiedAgain changes a table's mapping between two
// runs (more columns, no row filter): the second run must bring the columns
// and rows the first mapping left out, for rows copied before and for
// changes made since, and a third run with the same mapping copies nothing.
func TestSyncRemappedTableCopiedAgain(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1), (2, 'b', 'B', 'y', 20)`, usersSchema)
	narrow := p.config("remap", mapping.TableSpec{Source: "users", Columns: map[string]string{"id": "id", "email": "email", "n": "n"}, Where: "id < 2"})
	narrow.UntilCaughtUp = true
	if err := Run(testCtx(t), narrow); err != nil {
		t.Fatalf("first run: %v", err)
	}
	const narrowQuery = `SELECT id, email, name, n FROM users ORDER BY id`
	if got, want := dump(t, p.dst.Pool, narrowQuery), "[1 a <nil> 1]\n"; got != want {
		t.Fatalf("after the first run: got target\n%s, want\n%s", got, want)
	}
	execAll(t, p.src.Pool, `UPDATE users SET name = 'A2', email = 'a2' WHERE id = 1`, `INSERT INTO users VALUES (3, 'c', 'C', 'z', 30)`)

	wide := p.config("remap", mapping.TableSpec{Source: "users"})
	wide.UntilCaughtUp = true
	if err := Run(testCtx(t), wide); err != nil {
		t.Fatalf("run with the new mapping: %v", err)
	}
	if s, d := dump(t, p.src.Pool, usersQuery), dump(t, p.dst.Pool, usersQuery); s != d {
		t.Fatalf("after the mapping changed: got target\n%s, want\n%s", d, s)
	}

	// The stream now carries every column and row.
	execAll(t, p.src.Pool, `UPDATE users SET name = 'B2', note = 'w' WHERE id = 2`, `INSERT INTO users VALUES (4, 'd', 'D', NULL, 40)`)
	first := copiedAt(t, p, "remap")
	if err := Run(testCtx(t), wide); err != nil {
		t.Fatalf("third run: %v", err)
	}
	if s, d := dump(t, p.src.Pool, usersQuery), dump(t, p.dst.Pool, usersQuery); s != d {
		t.Errorf("after streaming with the new mapping: got target\n%s, want\n%s", d, s)
	}
	again := copiedAt(t, p, "remap")
	if !again.Equal(first) {
		t.Errorf("copied_at: got %v, want %v (same mapping, no new copy)", again, first)
	}
}

// TestSyncWarnsBeyondMaxLagBytes checks that a sync behind the source by
// more than MaxLagBytes says so in a warning with both numbers.
func TestSyncWarnsBeyondMaxLagBytes(t *testing.T) {
	p := newPair(t, usersSchema, usersSchema)
	cfg := p.config("maxlag", mapping.TableSpec{Source: "users"})
	cfg.MaxLagBytes = 1
	type warning struct{ lag, max int64 }
	warnings := make(chan warning, 1)
	cfg.Logger = slog.New(hookHandler{fn: func(r slog.Record) {
		if r.Level == slog.LevelWarn && strings.Contains(r.Message, "--max-lag-bytes") {
			select {
			case warnings <- warning{attr(r, "lag_bytes").Int64(), attr(r, "max_lag_bytes").Int64()}:
			default:
			}
		}
	}})
	startSync(t, cfg)
	cdctest.WaitCopied(t, p.dst.Pool, "maxlag")
	// Each insert moves the source's WAL on while the sync applies the one
	// before: sooner or later a measurement finds it more than a byte behind.
	var got warning
	id := 0
	testkit.Eventually(t, 60*time.Second, "a warning that the lag exceeds --max-lag-bytes", func() bool {
		select {
		case got = <-warnings:
			return true
		default:
		}
		id++
		execAll(t, p.src.Pool, fmt.Sprintf(`INSERT INTO users (id, note) VALUES (%d, repeat('x', 1000))`, id))
		return false
	})
	if got.lag <= 1 || got.max != 1 {
		t.Errorf("warning: got lag_bytes %d and max_lag_bytes %d, want lag above 1 and max 1", got.lag, got.max)
	}
}

// TestSyncWidenedColumnsStreamAsCopied pins issue 15 item 12: real widened
// to double precision and char(n) widened to text. The first copy converts
// with PostgreSQL's cast (0.1::real is 0.10000000149011612 as a double,
// 'ab'::char(4) is 'ab' as text); the stream sent the source's text straight
// to the target type (0.1, 'ab  '), so every streamed row differed from its
// copy, and verify flagged it.
func TestSyncWidenedColumnsStreamAsCopied(t *testing.T) {
	const (
		srcSchema = `CREATE TABLE w (id int PRIMARY KEY, r real, c char(4));`
		dstSchema = `CREATE TABLE w (id int PRIMARY KEY, r double precision, c text);`
		query     = `SELECT id, r::text, c, length(c) FROM w ORDER BY id`
	)
	p := newPair(t, srcSchema+`INSERT INTO w VALUES (1, 0.1, 'ab');`, dstSchema)
	r := startSync(t, p.config("widened", mapping.TableSpec{Source: "w"}))
	want := `SELECT id, r::double precision::text, c::text, length(c::text) FROM w ORDER BY id`
	waitSame(t, p, r, want, query)
	execAll(t, p.src.Pool, `INSERT INTO w VALUES (2, 0.1, 'ab'), (3, 1.7, 'xyz')`, `UPDATE w SET r = 0.3, c = 'q' WHERE id = 1`)
	waitSame(t, p, r, want, query)
	if got := dump(t, p.dst.Pool, query); !strings.Contains(got, "0.10000000149011612") || strings.Contains(got, "ab  ") {
		t.Errorf("target rows:\n%s\nwant the streamed real as the copy casts it and no char padding", got)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
