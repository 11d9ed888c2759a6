package reconcile

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// waitFor polls cond until it holds, failing the test when ctx ends first.
func waitFor(tb testing.TB, ctx context.Context, what string, cond func() (bool, error)) {
	tb.Helper()
	for {
		ok, err := cond()
		if err != nil {
			tb.Fatalf("wait for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("wait for %s: %v", what, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestRepairBesideRunningSyncNeverWritesOlderValues pins issue 15, item 7:
// verify --repair read the source, the running sync then applied a newer
// value, and the repair wrote the older one over it for good. A counter
// that only grows on the source must never be taken down by a repair
// write, while repairs run again and again beside a real sync and a stream
// of updates; and once both stop, the tables are consistent.
func TestRepairBesideRunningSyncNeverWritesOlderValues(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const rows = 40
	ddl := `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL, pad text NOT NULL);
		INSERT INTO counters SELECT g, 0, 'p' FROM generate_series(1, 40) g;`
	srcDB, dstDB := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, srcDB.Pool, ddl)
	execSQL(t, dstDB.Pool, `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL, pad text NOT NULL)`)
	src, err := Connect(ctx, srcDB.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := Connect(ctx, dstDB.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()

	spec := mapping.TableSpec{Source: "counters"}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- apply.Run(syncCtx, apply.Config{
			Name: "repair_race", Source: srcDB.URL, Target: dstDB.URL, Tables: []mapping.TableSpec{spec},
			StatusInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	defer func() {
		stopSync()
		if err := <-syncDone; err != nil {
			t.Errorf("sync: %v", err)
		}
	}()
	waitFor(t, ctx, "the first copy", func() (bool, error) {
		var n int
		err := dst.QueryRow(ctx, "SELECT count(*) FROM counters").Scan(&n)
		return n == rows, err
	})

	// A repair write that takes a counter down is a violation. The sync
	// itself may: a repair writes the source's current value, ahead of a
	// lagging stream, which then applies the older changes it still has
	// before the newer ones. ENABLE ALWAYS: the sync may apply with
	// session_replication_role = replica.
	execSQL(t, dst, `CREATE TABLE violations (id int, was bigint, now bigint);
		CREATE FUNCTION watch() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF current_setting('application_name') = 'datasync-verify' AND NEW.n < OLD.n THEN
				INSERT INTO violations VALUES (NEW.id, OLD.n, NEW.n);
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER watch AFTER UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION watch();
		ALTER TABLE counters ENABLE ALWAYS TRIGGER watch;`)

	// The monolith: counters only grow.
	updCtx, stopUpdates := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var updates int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for updCtx.Err() == nil {
			a, b := 1+rand.IntN(rows), 1+rand.IntN(rows)
			_, err := src.Exec(updCtx, "UPDATE counters SET n = n + 1 WHERE id IN ($1, $2)", a, b)
			if err != nil && !errors.Is(err, context.Canceled) && updCtx.Err() == nil {
				t.Errorf("update source: %v", err)
				return
			}
			updates++
		}
	}()

	tables, err := mapping.ResolveAll(ctx, src, dst, []mapping.TableSpec{spec})
	if err != nil {
		t.Fatal(err)
	}
	var repaired int64
	for range 12 {
		// Damage every target row where the sync does not look (pad is
		// only rewritten when the row changes on the source), so that
		// each repair rewrites rows the stream is updating.
		// The statement takes the rows in no set order and can deadlock
		// with the sync's apply, which PostgreSQL then breaks by failing
		// one of the two: the damage is tried again, never the sync.
		damage(t, dst, "UPDATE counters SET pad = 'damaged'")
		rep, err := Verify(ctx, src, dst, tables, Options{Repair: true, BatchSize: 7})
		if err != nil {
			t.Fatal(err)
		}
		repaired += rep.Tables[0].Repaired
	}
	stopUpdates()
	wg.Wait()
	if repaired == 0 || updates == 0 {
		t.Fatalf("got %d rows repaired beside %d updates, want both above 0", repaired, updates)
	}

	// Once the sync has applied a last marker, the sides agree.
	execSQL(t, src, "UPDATE counters SET pad = 'marker' WHERE id = 1")
	waitFor(t, ctx, "the sync to catch up", func() (bool, error) {
		var pad string
		err := dst.QueryRow(ctx, "SELECT pad FROM counters WHERE id = 1").Scan(&pad)
		return pad == "marker", err
	})
	rep, err := Verify(ctx, src, dst, tables, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkDiffs(t, rep.Tables[0], nil, nil, nil)
	rowsV, err := dst.Query(ctx, "SELECT id, was, now FROM violations ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	type violation struct{ ID, Was, Now int64 }
	got, err := pgx.CollectRows(rowsV, pgx.RowToStructByPos[violation])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 0 {
		t.Errorf("got %d repair writes that took a counter back to an older value (id, was, written): %v", len(got), got)
	}
	t.Logf("%d source updates, %d rows repaired", updates, repaired)
}

// TestRepairWriteAfterSyncAppliedNewerValue pins issue 15, item 7, at the
// exact interleaving: between the repair's read of the source and its
// write, the source row changes and the sync applies the change. The
// repair must not leave the older value it read in the target.
func TestRepairWriteAfterSyncAppliedNewerValue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcDB, dstDB := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, srcDB.Pool, `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL, pad text NOT NULL);
		INSERT INTO counters VALUES (1, 0, 'p');
		CREATE TABLE marker (id int PRIMARY KEY);`)
	execSQL(t, dstDB.Pool, `CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL, pad text NOT NULL);
		CREATE TABLE marker (id int PRIMARY KEY);`)
	src, err := Connect(ctx, srcDB.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := Connect(ctx, dstDB.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	specs := []mapping.TableSpec{{Source: "counters"}, {Source: "marker"}}
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone := make(chan error, 1)
	go func() {
		syncDone <- apply.Run(syncCtx, apply.Config{
			Name: "repair_interleave", Source: srcDB.URL, Target: dstDB.URL, Tables: specs,
			StatusInterval: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}()
	defer func() {
		stopSync()
		if err := <-syncDone; err != nil {
			t.Errorf("sync: %v", err)
		}
	}()
	waitFor(t, ctx, "the first copy", func() (bool, error) {
		var n int
		err := dst.QueryRow(ctx, "SELECT count(*) FROM counters").Scan(&n)
		return n == 1, err
	})
	execSQL(t, dst, "UPDATE counters SET pad = 'damaged'")

	tables, err := mapping.ResolveAll(ctx, src, dst, specs[:1])
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	opts := Options{Repair: true, afterRepairRead: func(ctx context.Context) {
		if changed {
			return
		}
		changed = true
		execSQL(t, src, "UPDATE counters SET n = 1")
		// Until the sync has applied it, or waits for the repair's lock.
		waitFor(t, ctx, "the sync to apply the change or wait for the repair", func() (bool, error) {
			var applied, waiting bool
			err := dstDB.Pool.QueryRow(ctx, `SELECT (SELECT n = 1 FROM counters WHERE id = 1),
				EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&applied, &waiting)
			return applied || waiting, err
		})
	}}
	if _, err := Verify(ctx, src, dst, tables, opts); err != nil {
		t.Fatal(err)
	}
	if !changed {
		t.Fatal("the repair did not run")
	}
	execSQL(t, src, "INSERT INTO marker VALUES (1)")
	waitFor(t, ctx, "the sync to catch up", func() (bool, error) {
		var n int
		err := dst.QueryRow(ctx, "SELECT count(*) FROM marker").Scan(&n)
		return n == 1, err
	})
	var n int64
	var pad string
	if err := dst.QueryRow(ctx, "SELECT n, pad FROM counters WHERE id = 1").Scan(&n, &pad); err != nil {
		t.Fatal(err)
	}
	if n != 1 || pad != "p" {
		t.Errorf("got target row n=%d pad=%q, want n=1 pad=\"p\" (the source's)", n, pad)
	}
}

// damage runs sql on pool, again when PostgreSQL broke a deadlock by
// failing it (SQLSTATE 40P01).
func damage(tb testing.TB, pool *pgxpool.Pool, sql string) {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		_, err := pool.Exec(context.Background(), sql)
		var pgErr *pgconn.PgError
		if err == nil {
			return
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "40P01" || attempt == 5 {
			tb.Fatalf("%s: %v", sql, err)
		}
	}
}
