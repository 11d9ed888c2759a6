package apply

import (
	"errors"
	"fmt"
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
	"github.com/strangler-fig/strangler/internal/reconcile"
)

// twoWayCluster starts a cluster of the test's own with
// track_commit_timestamp on, which two-way sync needs.
func twoWayCluster(tb testing.TB) *pgtest.Cluster { return pgtest.NewTwoWayCluster(tb) }

// pairIn creates the source and target databases in cluster c (as in the
// demo, where both live in one cluster and origins and slots are shared).
func pairIn(tb testing.TB, c *pgtest.Cluster, srcSchema, dstSchema string) pair {
	tb.Helper()
	p := pair{src: c.NewDB(tb), dst: c.NewDB(tb)}
	execAll(tb, p.src.Pool, srcSchema)
	execAll(tb, p.dst.Pool, dstSchema)
	return p
}

// newTwoWayPair is pairIn in a cluster of the test's own.
func newTwoWayPair(tb testing.TB, srcSchema, dstSchema string) pair {
	tb.Helper()
	return pairIn(tb, twoWayCluster(tb), srcSchema, dstSchema)
}

func (p pair) twoWay(name, policy string, tables ...mapping.TableSpec) Config {
	cfg := p.config(name, tables...)
	cfg.TwoWay, cfg.Conflicts = true, policy
	cfg.Metrics = NewMetrics(nil)
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

// TestTwoWayConflictPolicies makes rows conflict while the sync is stopped
// (changed on both sides before either change reached the other), then
// catches up, and checks that both sides converge to the row the policy
// picks, and that each conflict is logged, counted and stored. Commit order
// is source first, so the target's changes are the later ones.
func TestTwoWayConflictPolicies(t *testing.T) {
	c := twoWayCluster(t)
	const seed = accountsSchema + `; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1), (2, 'b@x', 'B', 2), (3, 'c@x', 'C', 3), (4, 'd@x', 'D', 4), (5, 'e@x', 'E', 5)`
	// Under last_update_wins the later of a delete and an update wins (the
	// side that deleted compares with its tombstone): the target's are the
	// later, so row 2 goes and row 3 stays.
	cases := []struct {
		policy string
		want   string
	}{
		{LastUpdateWins, "[1 a@x tgt 1]\n[3 c@x tgt 3]\n[4 d@x D 40]\n[5 e@x E 5]\n[100 t100@x T 0]\n"},
		{SourceWins, "[1 a@x src 1]\n[2 b@x src 2]\n[4 d@x D 40]\n[5 e@x E 5]\n[100 s100@x S 0]\n"},
		{TargetWins, "[1 a@x tgt 1]\n[3 c@x tgt 3]\n[4 d@x D 40]\n[5 e@x E 5]\n[100 t100@x T 0]\n"},
	}
	for _, tc := range cases {
		t.Run(tc.policy, func(t *testing.T) {
			p := pairIn(t, c, seed, accountsSchema)
			var logs logRecorder
			cfg := p.twoWay("c_"+tc.policy, tc.policy, mapping.TableSpec{Source: "accounts"})
			cfg.Logger = logs.logger()
			catchUp(t, cfg) // the initial copy

			// Row 1: updated on both sides. Row 2: updated on the source,
			// deleted on the target. Row 3: deleted on the source, updated
			// on the target. Row 100: inserted on both. Row 4: updated on
			// the target alone, then again on the source after it came
			// through: sequential, no conflict. Row 5 is left alone.
			execAll(t, p.src.Pool, `UPDATE accounts SET name = 'src' WHERE id IN (1, 2)`, `DELETE FROM accounts WHERE id = 3`,
				`INSERT INTO accounts VALUES (100, 's100@x', 'S', 0)`)
			execAll(t, p.dst.Pool, `UPDATE accounts SET name = 'tgt' WHERE id IN (1, 3)`, `DELETE FROM accounts WHERE id = 2`,
				`INSERT INTO accounts VALUES (100, 't100@x', 'T', 0)`, `UPDATE accounts SET n = 40 WHERE id = 4`)
			m := catchUp(t, cfg)
			catchUp(t, cfg)

			s, d := dump(t, p.src.Pool, accountsQuery), dump(t, p.dst.Pool, accountsQuery)
			if s != d {
				t.Fatalf("the sides did not converge\nsource:\n%s\ntarget:\n%s", s, d)
			}
			if s != tc.want {
				t.Errorf("got\n%swant\n%s", s, tc.want)
			}
			// Each of the four conflicts is seen by both directions.
			kinds := dump(t, p.src.Pool, `SELECT direction, kind, key, resolution, local_commit_time IS NOT NULL, remote_commit_time IS NOT NULL FROM datasync.sync_conflicts ORDER BY kind, key`) +
				dump(t, p.dst.Pool, `SELECT direction, kind, key, resolution, local_commit_time IS NOT NULL, remote_commit_time IS NOT NULL FROM datasync.sync_conflicts ORDER BY kind, key`)
			for _, want := range []string{"to_source delete_update {\"id\": \"2\"}", "to_source insert_exists {\"id\": \"100\"}",
				"to_source update_delete {\"id\": \"3\"}", "to_source update_update {\"id\": \"1\"}",
				"to_target delete_update {\"id\": \"3\"}", "to_target insert_exists {\"id\": \"100\"}",
				"to_target update_delete {\"id\": \"2\"}", "to_target update_update {\"id\": \"1\"}"} {
				if !strings.Contains(kinds, "["+want) {
					t.Errorf("stored conflicts lack %s:\n%s", want, kinds)
				}
			}
			if n := strings.Count(kinds, "\n"); n != 8 {
				t.Errorf("stored conflicts: got %d, want 8:\n%s", n, kinds)
			}
			if got := len(logs.messages("conflict")); got != 8 {
				t.Errorf("conflict log lines: got %d, want 8", got)
			}
			for _, r := range logs.messages("conflict") {
				local, remote := "target_commit_time", "source_commit_time"
				if attr(r, "direction").String() == dirToSource {
					local, remote = remote, local
				}
				if !strings.HasPrefix(attr(r, remote).String(), "20") {
					t.Errorf("conflict log line without the incoming commit time %s: %v", remote, r)
				}
				if kind := attr(r, "kind").String(); kind != KindUpdateDelete && !strings.HasPrefix(attr(r, local).String(), "20") {
					t.Errorf("%s conflict log line without the local commit time %s: %v", kind, local, r)
				}
			}
			if got := testutil.ToFloat64(m.Conflicts.WithLabelValues("public.accounts", KindUpdateUpdate, map[string]string{LastUpdateWins: "target_won", SourceWins: "source_won", TargetWins: "target_won"}[tc.policy])); got != 2 {
				t.Errorf("datasync_sync_conflicts_total{kind=update_update}: got %v, want 2", got)
			}
		})
	}
}

// waitFor polls cond every 25 ms for up to 30 seconds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestTwoWayParksRefusedChange deletes, in the target, an account that has
// orders in the source: the source refuses the delete (foreign key). The
// delete is parked with its reason in the source, counted as a conflict,
// and later changes keep flowing both ways. Once the order is gone, a retry
// applies the delete and the sides are equal again.
func TestTwoWayParksRefusedChange(t *testing.T) {
	p := newTwoWayPair(t, accountsSchema+`; CREATE TABLE orders (id int PRIMARY KEY, account_id bigint REFERENCES accounts);
		INSERT INTO accounts VALUES (1, 'a@x', 'A', 1), (2, 'b@x', 'B', 2); INSERT INTO orders VALUES (10, 1)`, accountsSchema)
	cfg := p.twoWay("park", "", mapping.TableSpec{Source: "accounts"})
	r := startSync(t, cfg)
	waitSame(t, p, r, accountsQuery, accountsQuery)

	execAll(t, p.dst.Pool, `DELETE FROM accounts WHERE id = 1`, `INSERT INTO accounts VALUES (3, 'c@x', 'C', 3)`)
	execAll(t, p.src.Pool, `INSERT INTO accounts VALUES (4, 'd@x', 'D', 4)`)
	const without1 = `SELECT id, email, name, n FROM accounts WHERE id <> 1 ORDER BY id`
	waitSame(t, p, r, without1, without1)

	sides := Sides{Source: p.src.Pool, Target: p.dst.Pool}
	var parked []ParkedChange
	waitFor(t, "the refused delete parked", func() bool {
		var err error
		parked, err = ListParked(testCtx(t), sides, "park")
		return err == nil && len(parked) == 1
	})
	got := parked[0]
	if got.Side != "source" || got.Table != "public.accounts" || got.Op != "delete" || got.Key != `{"id": "1"}` || !strings.Contains(got.Reason, "orders") {
		t.Fatalf("parked: got %+v, want the delete of account 1 in the source, refused for its orders", got)
	}
	if n := testutil.ToFloat64(cfg.Metrics.Conflicts.WithLabelValues("public.accounts", KindParked, KindParked)); n != 1 {
		t.Errorf("parked conflicts: got %v, want 1", n)
	}
	if got := dump(t, p.src.Pool, `SELECT direction, kind, key, resolution FROM datasync.sync_conflicts`); got != "[to_source parked {\"id\": \"1\"} parked]\n" {
		t.Errorf("stored conflicts in the source: got %s, want the parked delete", got)
	}
	// A retry before the cause is gone parks it again.
	if n, err := RetryParked(testCtx(t), sides, "park", "source", got.ID); err != nil || n != 1 {
		t.Fatalf("retry: got %d, %v; want 1 marked", n, err)
	}
	waitFor(t, "the failed retry recorded", func() bool {
		l, err := ListParked(testCtx(t), sides, "park")
		return err == nil && len(l) == 1 && l[0].Attempts == 1 && !l[0].RetryRequested
	})

	execAll(t, p.src.Pool, `DELETE FROM orders`)
	if n, err := RetryParked(testCtx(t), sides, "park", "", 0); err != nil || n != 1 {
		t.Fatalf("retry: got %d, %v; want 1 marked", n, err)
	}
	waitSame(t, p, r, accountsQuery, accountsQuery)
	waitFor(t, "the parked change gone after its retry", func() bool {
		l, err := ListParked(testCtx(t), sides, "park")
		return err == nil && len(l) == 0
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

// TestTwoWayParksUniqueViolations inserts the same email under different
// keys on both sides while the sync is stopped: each side refuses the
// other's row (unique email), both are parked, and a change after them in
// the same source transaction still applies. Dropping one parked change and
// retrying after fixing the other makes the sides equal.
func TestTwoWayParksUniqueViolations(t *testing.T) {
	p := newTwoWayPair(t, accountsSchema+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1)`, accountsSchema)
	cfg := p.twoWay("uniq", "", mapping.TableSpec{Source: "accounts"})
	catchUp(t, cfg)
	execAll(t, p.src.Pool, `BEGIN; INSERT INTO accounts VALUES (70, 'z@x', 'S', 0); UPDATE accounts SET n = 11 WHERE id = 1; COMMIT`)
	execAll(t, p.dst.Pool, `BEGIN; INSERT INTO accounts VALUES (71, 'z@x', 'T', 0); INSERT INTO accounts VALUES (72, 'y@x', 'T', 0); COMMIT`)
	m := catchUp(t, cfg)
	parked, err := ListParked(testCtx(t), Sides{Source: p.src.Pool, Target: p.dst.Pool}, "uniq")
	if err != nil || len(parked) != 2 {
		t.Fatalf("parked: got %+v, %v; want one on each side", parked, err)
	}
	if n := testutil.ToFloat64(m.Conflicts.WithLabelValues("public.accounts", KindParked, KindParked)); n != 2 {
		t.Errorf("parked conflicts: got %v, want 2", n)
	}
	const rest = `SELECT id, email, name, n FROM accounts WHERE id NOT IN (70, 71) ORDER BY id`
	if s, d := dump(t, p.src.Pool, rest), dump(t, p.dst.Pool, rest); s != d || !strings.Contains(s, "[1 a@x A 11]") || !strings.Contains(s, "[72 y@x T 0]") {
		t.Fatalf("the changes after the refused ones did not apply\nsource:\n%s\ntarget:\n%s", s, d)
	}
	// The target's row 71 gives way: it is deleted there, the source's
	// parked insert of it dropped, and the target's parked insert of 70
	// retried.
	sides := Sides{Source: p.src.Pool, Target: p.dst.Pool}
	execAll(t, p.dst.Pool, `DELETE FROM accounts WHERE id = 71`)
	for _, pc := range parked {
		var err error
		if pc.Side == "source" {
			_, err = DropParked(testCtx(t), sides, "uniq", "source", pc.ID)
		} else {
			_, err = RetryParked(testCtx(t), sides, "uniq", "target", pc.ID)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	catchUp(t, cfg)
	if s, d := dump(t, p.src.Pool, accountsQuery), dump(t, p.dst.Pool, accountsQuery); s != d || !strings.Contains(s, "[70 z@x S 0]") {
		t.Fatalf("sides differ after the retry\nsource:\n%s\ntarget:\n%s", s, d)
	}
	if l, err := ListParked(testCtx(t), sides, "uniq"); err != nil || len(l) != 0 {
		t.Fatalf("parked after retry and drop: got %+v, %v; want none", l, err)
	}
}

// TestTwoWayAfterOneWayUpdatesStillAllowed switches a one-way sync of a table with a column
// the mapping leaves out to two ways. Its publication entry has a column
// list, which PostgreSQL refuses under REPLICA IDENTITY FULL unless it
// covers every column: the application's updates on the source would fail.
// They must go on working, and flow both ways.
func TestTwoWayAfterOneWayUpdatesStillAllowed(t *testing.T) {
	const src = `CREATE TABLE accounts (id bigint PRIMARY KEY, email text UNIQUE, name text, n int, secret text);
		INSERT INTO accounts VALUES (1, 'a@x', 'A', 1, 's')`
	p := newTwoWayPair(t, src, accountsSchema)
	cfg := p.config("switch", mapping.TableSpec{Source: "accounts"})
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	// The moment the two-way start has changed the replica identity,
	// before the sync runs on: the application's updates still work.
	tables, err := mapping.ResolveAll(testCtx(t), p.src.Pool, p.dst.Pool, []mapping.TableSpec{{Source: "accounts"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fullIdentity(testCtx(t), p.src.Pool, "source", PublicationName("switch"), tables, slog.New(hookHandler{fn: func(slog.Record) {}})); err != nil {
		t.Fatal(err)
	}
	execAll(t, p.src.Pool, `UPDATE accounts SET name = 'A2' WHERE id = 1`)

	tw := p.twoWay("switch", "", mapping.TableSpec{Source: "accounts"})
	catchUp(t, tw)
	execAll(t, p.src.Pool, `INSERT INTO accounts VALUES (2, 'b@x', 'B', 2, 's')`)
	execAll(t, p.dst.Pool, `INSERT INTO accounts VALUES (3, 'c@x', 'C', 3)`)
	catchUp(t, tw)
	execAll(t, p.dst.Pool, `UPDATE accounts SET n = 10 WHERE id = 1`)
	catchUp(t, tw)
	if s, d := dump(t, p.src.Pool, accountsQuery), dump(t, p.dst.Pool, accountsQuery); s != d || !strings.Contains(s, "[1 a@x A2 10]") || !strings.Contains(s, "[3 c@x C 3]") {
		t.Fatalf("sides differ\nsource:\n%s\ntarget:\n%s", s, d)
	}
}

// TestTwoWayParksInLargeTransaction refuses one change of a source
// transaction applied in parts (more than MaxTxChanges changes): the
// transaction is applied again from its start, change by change, the
// refused change is parked and every other one applied, once.
func TestTwoWayParksInLargeTransaction(t *testing.T) {
	const schema = `CREATE TABLE accounts (id bigint PRIMARY KEY, email text, name text, n int)`
	p := newTwoWayPair(t, schema, schema+`; CREATE UNIQUE INDEX ON accounts (email)`)
	cfg := p.twoWay("bigpark", "", mapping.TableSpec{Source: "accounts"})
	cfg.MaxTxChanges = 3
	catchUp(t, cfg)
	execAll(t, p.src.Pool, `INSERT INTO accounts SELECT g, CASE WHEN g IN (4, 7) THEN 'dup@x' ELSE g || '@x' END, 'N', g FROM generate_series(1, 10) g`)
	m := catchUp(t, cfg)
	if got := dump(t, p.dst.Pool, `SELECT count(*), sum(n) FROM accounts`); got != "[9 48]\n" {
		t.Errorf("target: got %s, want the 9 rows other than 7", got)
	}
	parked, err := ListParked(testCtx(t), Sides{Source: p.src.Pool, Target: p.dst.Pool}, "bigpark")
	if err != nil || len(parked) != 1 || parked[0].Side != "target" || parked[0].Key != `{"id": "7"}` {
		t.Fatalf("parked: got %+v, %v; want the insert of 7 in the target", parked, err)
	}
	if n := testutil.ToFloat64(m.Transactions); n != 1 {
		t.Errorf("transactions applied: got %v, want 1", n)
	}
}

// TestTwoWayEveryPolicyCarriesPlainChanges checks that changes without a
// conflict reach the other side under every policy, in both directions: an
// insert of a new row, an update and a delete on each side, also on a table
// whose key is GENERATED ALWAYS AS IDENTITY on both sides (the applying
// side must insert with OVERRIDING SYSTEM VALUE and must not SET the key).
// Each side's changes are one transaction. In the "with a conflict" runs
// that transaction also updates row 5, which the other side updates too:
// the batch then goes through the conflict-aware statements, not the fast
// ones, and exactly that conflict is stored, once per direction.
func TestTwoWayEveryPolicyCarriesPlainChanges(t *testing.T) {
	c := twoWayCluster(t)
	const ident = `; CREATE TABLE ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)`
	const identQuery = `SELECT id, v FROM ident ORDER BY id`
	for _, policy := range []string{LastUpdateWins, SourceWins, TargetWins} {
		for _, withConflict := range []bool{false, true} {
			name := policy
			if withConflict {
				name += " with a conflict"
			}
			t.Run(name, func(t *testing.T) {
				p := pairIn(t, c, accountsSchema+ident+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1), (2, 'b@x', 'B', 2), (3, 'c@x', 'C', 3), (4, 'd@x', 'D', 4), (5, 'e@x', 'E', 5);
					INSERT INTO ident (v) VALUES ('one'), ('two')`, accountsSchema+ident)
				cfg := p.twoWay(fmt.Sprintf("plain_%s_%t", policy, withConflict), policy, mapping.TableSpec{Source: "accounts"}, mapping.TableSpec{Source: "ident"})
				catchUp(t, cfg) // the initial copy, which also makes the identity keys disjoint

				srcTx := `INSERT INTO accounts VALUES (10, 's10@x', 'S', 0); UPDATE accounts SET name = 'A2' WHERE id = 1;
					DELETE FROM accounts WHERE id = 2; INSERT INTO ident (v) VALUES ('src'); UPDATE ident SET v = 'one2' WHERE v = 'one';`
				dstTx := `INSERT INTO accounts VALUES (200, 't200@x', 'T', 0); UPDATE accounts SET n = 30 WHERE id = 3;
					DELETE FROM accounts WHERE id = 4; INSERT INTO ident (v) VALUES ('tgt'); DELETE FROM ident WHERE v = 'two';`
				row5 := "[5 e@x E 5]\n"
				if withConflict {
					srcTx += `UPDATE accounts SET name = 'src' WHERE id = 5;`
					dstTx += `UPDATE accounts SET name = 'tgt' WHERE id = 5;`
					// The target commits later.
					row5 = "[5 e@x tgt 5]\n"
					if policy == SourceWins {
						row5 = "[5 e@x src 5]\n"
					}
				}
				execAll(t, p.src.Pool, "BEGIN; "+srcTx+" COMMIT")
				execAll(t, p.dst.Pool, "BEGIN; "+dstTx+" COMMIT")
				catchUp(t, cfg)
				catchUp(t, cfg)

				want := "[1 a@x A2 1]\n[3 c@x C 30]\n" + row5 + "[10 s10@x S 0]\n[200 t200@x T 0]\n"
				for _, q := range []string{accountsQuery, identQuery} {
					s, d := dump(t, p.src.Pool, q), dump(t, p.dst.Pool, q)
					if s != d {
						t.Errorf("%s: the sides differ\nsource:\n%s\ntarget:\n%s", q, s, d)
					}
					if q == accountsQuery && s != want {
						t.Errorf("accounts: got\n%swant\n%s", s, want)
					}
				}
				if got := dump(t, p.src.Pool, `SELECT string_agg(v, ' ' ORDER BY v) FROM ident`); got != "[one2 src tgt]\n" {
					t.Errorf("ident values: got %s, want [one2 src tgt]", got)
				}
				wantConflicts := ""
				if withConflict {
					wantConflicts = "[update_update {\"id\": \"5\"}]\n"
				}
				for _, pool := range []*pgxpool.Pool{p.src.Pool, p.dst.Pool} {
					if got := dump(t, pool, `SELECT kind, key FROM datasync.sync_conflicts ORDER BY id`); got != wantConflicts {
						t.Errorf("stored conflicts: got %q, want %q", got, wantConflicts)
					}
				}
			})
		}
	}
}

// TestTwoWayConcurrentWritersConverge writes the same few rows on both
// sides at once while the sync runs (updates, and deletes and inserts of
// the same keys), so that changes keep crossing each other and local writes
// race the apply for row locks. Once the writers stop and the sync has
// caught up both ways, both sides must hold the same rows: a conflict may
// lose a write, by the policy, but the sides never keep different ones.
func TestTwoWayConcurrentWritersConverge(t *testing.T) {
	c := twoWayCluster(t)
	workloads := []struct {
		name                     string
		withDeletes, withInserts bool
	}{{"updates", false, false}, {"updates and deletes", true, false}, {"updates, deletes and inserts of deleted keys", true, true}}
	for _, policy := range []string{LastUpdateWins, SourceWins, TargetWins} {
		for wl, workload := range workloads {
			withDeletes, withInserts := workload.withDeletes, workload.withInserts
			if withInserts && policy != LastUpdateWins {
				// Without tombstones (kept under last_update_wins only) a
				// key deleted on one side while the other inserts it
				// again may end on one side only: docs/datasync.md.
				continue
			}
			t.Run(policy+" "+workload.name, func(t *testing.T) {
				seed := accountsSchema + `; INSERT INTO accounts SELECT g, 'e' || g, 'seed', 0 FROM generate_series(1, 8) g`
				p := pairIn(t, c, seed, accountsSchema)
				cfg := p.twoWay(fmt.Sprintf("converge_%s_%d", policy, wl), policy, mapping.TableSpec{Source: "accounts"})
				catchUp(t, cfg)
				r := startSync(t, cfg)
				ctx := testCtx(t)
				stop := time.Now().Add(2 * time.Second)
				var wg sync.WaitGroup
				for side, pool := range map[string]*pgxpool.Pool{"s": p.src.Pool, "t": p.dst.Pool} {
					for w := range 2 {
						wg.Go(func() {
							for i := 0; time.Now().Before(stop); i++ {
								id := (i*7+w*3)%8 + 1
								var err error
								switch i % 10 {
								case 3:
									if !withDeletes {
										continue
									}
									_, err = pool.Exec(ctx, `DELETE FROM accounts WHERE id = $1`, id)
								case 6:
									if !withInserts {
										continue
									}
									_, err = pool.Exec(ctx, `INSERT INTO accounts VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING`, id, fmt.Sprintf("e%d", id), side)
								default:
									_, err = pool.Exec(ctx, `UPDATE accounts SET name = $1, n = n + 1 WHERE id = $2`, fmt.Sprintf("%s%d-%d", side, w, i), id)
								}
								if err != nil {
									t.Error(err)
									return
								}
							}
						})
					}
				}
				wg.Wait()
				if err := r.stop(t); err != nil {
					t.Fatalf("sync: %v", err)
				}
				catchUp(t, cfg)
				catchUp(t, cfg)
				s, d := dump(t, p.src.Pool, accountsQuery), dump(t, p.dst.Pool, accountsQuery)
				if s != d {
					t.Fatalf("the sides diverged\nsource:\n%s\ntarget:\n%s\nconflicts:\n%s", s, d,
						dump(t, p.dst.Pool, `SELECT direction, kind, key, local_commit_time, remote_commit_time, resolution FROM datasync.sync_conflicts ORDER BY id`)+
							dump(t, p.src.Pool, `SELECT direction, kind, key, local_commit_time, remote_commit_time, resolution FROM datasync.sync_conflicts ORDER BY id`))
				}
				t.Logf("converged after %s conflicts", dump(t, p.dst.Pool, `SELECT (SELECT count(*) FROM datasync.sync_conflicts)`))
			})
		}
	}
}

// TestTwoWayRepairBesideRunningSync runs datasync verify --two-way --repair
// while the two-way sync runs, as a nightly job would. Rows made to differ
// behind the sync's back (written under an origin its streams drop) are
// repaired toward the side that wrote last, at once (the repair writes
// under origins of its own, not the sync's, which its apply sessions hold),
// and the repair's writes are not sent back: the sync applies nothing more,
// and the sides stay equal while both take writes again.
func TestTwoWayRepairBesideRunningSync(t *testing.T) {
	p := newTwoWayPair(t, accountsSchema+`; INSERT INTO accounts SELECT g, 'e' || g, 'seed', g FROM generate_series(1, 20) g`, accountsSchema)
	cfg := p.twoWay("nightly", "", mapping.TableSpec{Source: "accounts"})
	reg := prometheus.NewRegistry()
	cfg.Metrics = NewMetrics(reg)
	r := startSync(t, cfg)
	waitSame(t, p, r, accountsQuery, accountsQuery)

	// Damage that no stream carries: on the target, a row changed and one
	// deleted under the target's repair origin, which both streams drop.
	execAll(t, p.dst.Pool, `BEGIN; SELECT pg_replication_origin_session_setup('datasync_nightly_to_target_repair');
		UPDATE accounts SET name = 'damaged' WHERE id = 3; DELETE FROM accounts WHERE id = 4; COMMIT;
		SELECT pg_replication_origin_session_reset()`)
	// A row the service writes for real, which the sync carries.
	execAll(t, p.dst.Pool, `UPDATE accounts SET name = 'service' WHERE id = 5`)
	waitFor(t, "the service's write to reach the source", func() bool {
		return dump(t, p.src.Pool, `SELECT name FROM accounts WHERE id = 5`) == "[service]\n"
	})
	before := testutil.ToFloat64(cfg.Metrics.Transactions) + testutil.ToFloat64(cfg.Metrics.reverse.Transactions)

	tables, err := mapping.ResolveAll(testCtx(t), p.src.Pool, p.dst.Pool, []mapping.TableSpec{{Source: "accounts"}})
	if err != nil {
		t.Fatal(err)
	}
	verify := func(repair bool) *reconcile.Report {
		t.Helper()
		src, err := reconcile.Connect(testCtx(t), p.src.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := reconcile.Connect(testCtx(t), p.dst.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		rep, err := reconcile.Verify(testCtx(t), src, dst, tables, reconcile.Options{TwoWay: true, Name: "nightly", Repair: repair})
		if err != nil {
			t.Fatalf("verify --two-way (repair %t) beside the running sync: %v", repair, err)
		}
		return rep
	}
	rep := verify(true)
	tr := rep.Tables[0]
	if tr.MissingInTarget != 1 || tr.Mismatched != 1 || tr.Repaired != 2 || !rep.Consistent {
		t.Errorf("repair: got missing in target %d, mismatched %d, repaired %d, consistent %t; want 1, 1, 2, true",
			tr.MissingInTarget, tr.Mismatched, tr.Repaired, rep.Consistent)
	}
	execAll(t, p.src.Pool, `UPDATE accounts SET n = n + 100 WHERE id = 3`)
	execAll(t, p.dst.Pool, `UPDATE accounts SET n = n + 100 WHERE id = 4`)
	waitSame(t, p, r, accountsQuery, accountsQuery)
	if err := r.stop(t); err != nil {
		t.Fatalf("sync: %v", err)
	}
	after := testutil.ToFloat64(cfg.Metrics.Transactions) + testutil.ToFloat64(cfg.Metrics.reverse.Transactions)
	if after-before != 2 {
		t.Errorf("transactions applied after the repair: got %v, want 2, the two updates (the repair's writes must not be sent back)", after-before)
	}
	if got := dump(t, p.src.Pool, `SELECT name, n FROM accounts WHERE id IN (3, 4, 5) ORDER BY id`); got != "[seed 103]\n[seed 104]\n[service 5]\n" {
		t.Errorf("rows 3, 4, 5: got\n%swant the source's rows 3 and 4 with the later updates, and the service's row 5", got)
	}
	if rep := verify(false); !rep.Consistent {
		t.Errorf("verify --two-way after: not consistent: %+v", rep.Tables[0])
	}
}

// TestTwoWayTombstones checks the record of deleted keys behind
// last_update_wins: a delete by the application, as a role with no right
// on datasync's schema, leaves a tombstone; a delete the sync applies
// leaves none; an older update arriving for the deleted key is not
// written back, a later insert of it is; and cleanup drops the triggers,
// their functions and the tombstones, after which deletes still work.
func TestTwoWayTombstones(t *testing.T) {
	p := newTwoWayPair(t, accountsSchema+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1), (2, 'b@x', 'B', 2), (3, 'c@x', 'C', 3)`, accountsSchema)
	cfg := p.twoWay("tomb", "", mapping.TableSpec{Source: "accounts"})
	catchUp(t, cfg)
	execAll(t, p.dst.Pool, `CREATE ROLE tomb_app; GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO tomb_app`)

	// The source updates row 1 first; the target, later, deletes it as
	// the application's role; both before either reaches the other.
	execAll(t, p.src.Pool, `UPDATE accounts SET name = 'older' WHERE id = 1`, `DELETE FROM accounts WHERE id = 2`)
	execAll(t, p.dst.Pool, `BEGIN; SET LOCAL ROLE tomb_app; DELETE FROM accounts WHERE id = 1; COMMIT`)
	const tombs = `SELECT table_name, key FROM datasync.sync_tombstones WHERE name = 'tomb' ORDER BY key`
	if got := dump(t, p.dst.Pool, tombs); got != "[public.accounts [1]]\n" {
		t.Fatalf("target tombstones after the application's delete: got %q, want row 1's", got)
	}
	catchUp(t, cfg)
	catchUp(t, cfg)
	if s, d := dump(t, p.src.Pool, accountsQuery), dump(t, p.dst.Pool, accountsQuery); s != d || s != "[3 c@x C 3]\n" {
		t.Fatalf("after the later delete: source\n%starget\n%swant only row 3 on both", s, d)
	}
	// The sync's delete of row 2 in the target left no tombstone there.
	if got := dump(t, p.dst.Pool, tombs); got != "[public.accounts [1]]\n" {
		t.Errorf("target tombstones after the sync applied the source's delete: got %q, want row 1's only", got)
	}
	// A later insert of the deleted key goes through.
	execAll(t, p.src.Pool, `INSERT INTO accounts VALUES (1, 'a@x', 'again', 0)`)
	catchUp(t, cfg)
	if got := dump(t, p.dst.Pool, `SELECT name FROM accounts WHERE id = 1`); got != "[again]\n" {
		t.Errorf("a later insert of a deleted key: got %q in the target, want [again]", got)
	}

	st, err := GetStatus(testCtx(t), p.src.Pool, p.dst.Pool, "tomb")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(st.Tombstones); got != "[{source 1 1} {target 1 1}]" {
		t.Errorf("status tombstones: got %s, want triggers on both sides, each with the key its application deleted (2 in the source, 1 in the target)", got)
	}

	rep, err := DropSync(testCtx(t), p.src.Pool, p.dst.Pool, "tomb")
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(rep.Dropped, "\n")
	for _, want := range []string{"tombstone trigger datasync_tomb_tombstone on accounts in the target", "tombstone trigger datasync_tomb_tombstone on accounts in the source", "1 tombstones of tomb in the target"} {
		if !strings.Contains(all, want) {
			t.Errorf("cleanup: got\n%s\nwant %q", all, want)
		}
	}
	for _, pool := range []*pgxpool.Pool{p.src.Pool, p.dst.Pool} {
		if got := dump(t, pool, `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = 'datasync_tomb_tombstone') + (SELECT count(*) FROM pg_proc WHERE proname LIKE 'tombstone_tomb_%')`); got != "[0]\n" {
			t.Errorf("triggers and functions left after cleanup: %s", got)
		}
		execAll(t, pool, `DELETE FROM accounts WHERE id = 3`)
	}
}

// TestTwoWayFirstStartKeepsServiceRows checks that the first start of a
// two-way sync refuses, creating nothing, when a target table holds rows
// that no sync of its name nor a finished backfill wrote (the service's,
// written before the sync ran): its first copy would replace them. An
// empty target, or one a one-way sync of the same name filled, starts.
func TestTwoWayFirstStartKeepsServiceRows(t *testing.T) {
	c := twoWayCluster(t)
	p := pairIn(t, c, accountsSchema+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1)`, accountsSchema+`; INSERT INTO accounts VALUES (500, 'svc@x', 'S', 0)`)
	err := Run(testCtx(t), p.twoWay("keep", "", mapping.TableSpec{Source: "accounts"}))
	if !errors.Is(err, mapping.ErrPreflight) || !strings.Contains(err.Error(), "target table public.accounts has rows") {
		t.Fatalf("got %v, want a preflight error naming the target table", err)
	}
	if got := dump(t, p.src.Pool, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'datasync_keep%'`); got != "[0]\n" {
		t.Errorf("slots created: %s, want none", got)
	}
	if got := dump(t, p.dst.Pool, accountsQuery); got != "[500 svc@x S 0]\n" {
		t.Errorf("the target's row: got %s, want it kept", got)
	}

	// A one-way sync of the name copies the table first; switched to two
	// ways, it starts.
	q := pairIn(t, c, accountsSchema+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1)`, accountsSchema)
	oneWay := q.config("switch", mapping.TableSpec{Source: "accounts"})
	oneWay.UntilCaughtUp = true
	if err := Run(testCtx(t), oneWay); err != nil {
		t.Fatal(err)
	}
	catchUp(t, q.twoWay("switch", "", mapping.TableSpec{Source: "accounts"}))
	if s, d := dump(t, q.src.Pool, accountsQuery), dump(t, q.dst.Pool, accountsQuery); s != d {
		t.Errorf("after the switch: source\n%starget\n%s", s, d)
	}
}

// TestTombstoneTriggersLeaveWithLastUpdateWins checks that the tombstone
// triggers exist only while a two-way sync under last_update_wins runs the
// name: restarted under source_wins, or as a one-way sync, it drops them.
func TestTombstoneTriggersLeaveWithLastUpdateWins(t *testing.T) {
	c := twoWayCluster(t)
	const triggers = `SELECT count(*) FROM pg_trigger WHERE tgname = 'datasync_leave_tombstone'`
	for _, then := range []string{SourceWins, "one-way"} {
		t.Run(then, func(t *testing.T) {
			p := pairIn(t, c, accountsSchema+`; INSERT INTO accounts VALUES (1, 'a@x', 'A', 1)`, accountsSchema)
			catchUp(t, p.twoWay("leave", "", mapping.TableSpec{Source: "accounts"}))
			for _, pool := range []*pgxpool.Pool{p.src.Pool, p.dst.Pool} {
				if got := dump(t, pool, triggers); got != "[1]\n" {
					t.Fatalf("triggers under last_update_wins: got %s, want 1 per side", got)
				}
			}
			if then == SourceWins {
				catchUp(t, p.twoWay("leave", SourceWins, mapping.TableSpec{Source: "accounts"}))
			} else {
				cfg := p.config("leave", mapping.TableSpec{Source: "accounts"})
				cfg.UntilCaughtUp = true
				if err := Run(testCtx(t), cfg); err != nil {
					t.Fatal(err)
				}
			}
			for _, pool := range []*pgxpool.Pool{p.src.Pool, p.dst.Pool} {
				if got := dump(t, pool, triggers); got != "[0]\n" {
					t.Errorf("triggers after a %s run: got %s, want none", then, got)
				}
			}
		})
	}
}

// TestTwoWayTombstonesCompositeKey checks that the tombstone of a key of
// several columns, declared in another order than the table's columns, is
// found on both sides: a delete on either side that commits after an
// update of the same row on the other wins on both.
func TestTwoWayTombstonesCompositeKey(t *testing.T) {
	const schema = `CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (b, a))`
	p := newTwoWayPair(t, schema+`; INSERT INTO pairs VALUES (1, 'x', 'one'), (2, 'y', 'two')`, schema)
	cfg := p.twoWay("ctomb", "", mapping.TableSpec{Source: "pairs"})
	catchUp(t, cfg)
	execAll(t, p.src.Pool, `UPDATE pairs SET v = 'src' WHERE a = 1`)
	execAll(t, p.dst.Pool, `UPDATE pairs SET v = 'tgt' WHERE a = 2`)
	execAll(t, p.dst.Pool, `DELETE FROM pairs WHERE a = 1 AND b = 'x'`)
	execAll(t, p.src.Pool, `DELETE FROM pairs WHERE a = 2 AND b = 'y'`)
	catchUp(t, cfg)
	catchUp(t, cfg)
	const q = `SELECT a, b, v FROM pairs ORDER BY a`
	if s, d := dump(t, p.src.Pool, q), dump(t, p.dst.Pool, q); s != "" || d != "" {
		t.Errorf("after deletes later than the other side's updates: source %q, target %q, want both empty", s, d)
	}
}

// TestTwoWayAppliedRowsCarryTheirOwnCommitTime checks that rows the sync
// applies at different times carry different commit times on the side
// they are applied to. PostgreSQL would otherwise give every transaction
// of a session under a replication origin the commit time of its first.
func TestTwoWayAppliedRowsCarryTheirOwnCommitTime(t *testing.T) {
	p := newTwoWayPair(t, accountsSchema, accountsSchema)
	cfg := p.twoWay("ctime", "", mapping.TableSpec{Source: "accounts"})
	r := startSync(t, cfg)
	for _, id := range []int{1, 2} {
		execAll(t, p.src.Pool, fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'e%d', 'n', 0)`, id, id))
		waitSame(t, p, r, accountsQuery, accountsQuery)
		time.Sleep(300 * time.Millisecond)
	}
	var gap float64
	if err := p.dst.Pool.QueryRow(testCtx(t), `SELECT extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(pg_xact_commit_timestamp(xmin)))::float8
		FROM accounts`).Scan(&gap); err != nil {
		t.Fatal(err)
	}
	if gap < 0.25 {
		t.Errorf("commit times of rows applied 300 ms apart differ by %.3f s, want at least 0.25 s", gap)
	}
}
