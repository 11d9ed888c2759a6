package backfill

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// keyCases are tables keyed by each kind of key, with NULLs in the other
// columns.
var keyCases = []struct {
	name     string
	src, dst string
}{
	{
		name: "bigint",
		src: `CREATE TABLE t (id bigint PRIMARY KEY, v text, n numeric, at timestamptz);
			INSERT INTO t SELECT i * 3 - 40, CASE WHEN i % 5 = 0 THEN NULL ELSE 'v' || i END,
				CASE WHEN i % 7 = 0 THEN NULL ELSE i / 3.0 END, timestamptz '2024-01-01 00:00:00.123456+00' + i * interval '1 hour'
			FROM generate_series(1, 103) i`,
		dst: `CREATE TABLE t (id bigint PRIMARY KEY, v text, n numeric, at timestamptz)`,
	},
	{
		name: "uuid",
		src: `CREATE TABLE t (id uuid PRIMARY KEY, v text);
			INSERT INTO t SELECT md5(i::text)::uuid, CASE WHEN i % 4 = 0 THEN NULL ELSE repeat('x', i) END
			FROM generate_series(1, 97) i`,
		dst: `CREATE TABLE t (id uuid PRIMARY KEY, v text)`,
	},
	{
		name: "text with quotes, spaces and an empty key",
		src: `CREATE TABLE t (k text PRIMARY KEY, v int);
			INSERT INTO t SELECT 'k''' || i || CASE WHEN i % 3 = 0 THEN ' ,"x"' ELSE '' END, NULLIF(i % 4, 0)
			FROM generate_series(1, 88) i;
			INSERT INTO t VALUES ('', 1), ('{', 2), ('NULL', NULL)`,
		dst: `CREATE TABLE t (k text PRIMARY KEY, v int)`,
	},
	{
		name: "composite text and integer, a type widened on the way",
		src: `CREATE TABLE t (tenant text NOT NULL, n int NOT NULL, v varchar(20), PRIMARY KEY (tenant, n));
			INSERT INTO t SELECT 'tenant-' || (i % 4), i, CASE WHEN i % 6 = 0 THEN NULL ELSE 'v' || i END
			FROM generate_series(1, 120) i`,
		dst: `CREATE TABLE t (n bigint NOT NULL, tenant text NOT NULL, v text, UNIQUE (tenant, n))`,
	},
	{
		name: "composite timestamptz and numeric, values that must print and parse back exactly",
		src: `CREATE TABLE t (at timestamptz NOT NULL, n numeric NOT NULL, v text, PRIMARY KEY (at, n));
			INSERT INTO t SELECT timestamptz '1999-12-31 23:59:59.999999+05:30' + (i / 3) * interval '1.000001 second',
				(i % 3) / 7.0, 'v' || i FROM generate_series(1, 90) i`,
		dst: `CREATE TABLE t (at timestamptz NOT NULL, n numeric NOT NULL, v text, PRIMARY KEY (at, n))`,
	},
}

func TestKeysAndWorkers(t *testing.T) {
	for _, tc := range keyCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newPair(t, tc.src, tc.dst)
			tables := p.resolve(t, mapping.TableSpec{Source: "t"})
			var first []string
			for _, workers := range []int{1, 3} {
				exec(t, p.dst.Pool, "TRUNCATE t; DROP SCHEMA IF EXISTS datasync CASCADE")
				sum := p.run(t, p.opts(7, workers), tables)
				assertSameRows(t, p, tables[0])
				want := count(t, p.src.Pool, "SELECT count(*) FROM t")
				if sum.Rows != want {
					t.Errorf("workers %d: got %d rows in the summary, want %d", workers, sum.Rows, want)
				}
				if sum.Seconds <= 0 || sum.RowsPerSecond <= 0 || sum.Tables[0].Seconds <= 0 {
					t.Errorf("workers %d: got %+v, want the time taken and the rate", workers, sum)
				}
				if got := sum.Tables[0].Ranges; workers == 3 && got < 2 {
					t.Errorf("workers 3: got %d ranges, want 2 or more", got)
				}
				if n := count(t, p.dst.Pool, "SELECT count(*) FROM datasync.backfill_progress WHERE NOT done"); n != 0 {
					t.Errorf("workers %d: got %d ranges not done, want 0", workers, n)
				}
				got := targetRows(t, p.dst.Pool, tables[0])
				if first == nil {
					first = got
				} else if strings.Join(got, "\n") != strings.Join(first, "\n") {
					t.Errorf("workers %d: got a different target than with 1 worker", workers)
				}
			}
		})
	}
}

func TestRenamedFilteredAndToasted(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE products (id bigint PRIMARY KEY, name text NOT NULL, price_cents int, deleted_at timestamptz, extra text);
		INSERT INTO products SELECT i, 'product ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE i * 100 END,
			CASE WHEN i % 5 = 0 THEN now() END, 'not copied'
		FROM generate_series(1, 60) i;
		-- values of about 1 MB that do not compress, stored out of line
		INSERT INTO products SELECT 1000 + i, (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 32768) g), 1, NULL, NULL
		FROM generate_series(1, 3) i;`, `
		CREATE TABLE catalog_items (id bigint PRIMARY KEY, title text, price_cents bigint, note text NOT NULL DEFAULT 'default note');`)
	tables := p.resolve(t, mapping.TableSpec{
		Source: "products", Target: "catalog_items",
		Columns: map[string]string{"id": "id", "title": "name", "price_cents": "price_cents"},
		Where:   "deleted_at IS NULL",
	})
	p.run(t, p.opts(4, 2), tables)
	assertSameRows(t, p, tables[0])
	if got, want := count(t, p.dst.Pool, "SELECT count(*) FROM catalog_items"), int64(51); got != want {
		t.Errorf("got %d rows, want %d (60 minus the 12 deleted, plus 3 large)", got, want)
	}
	if got, want := count(t, p.dst.Pool, "SELECT min(length(title)) FROM catalog_items WHERE id > 1000"), int64(1<<20); got != want {
		t.Errorf("got large titles of %d bytes, want %d", got, want)
	}
	if got := count(t, p.dst.Pool, "SELECT count(*) FROM catalog_items WHERE note <> 'default note'"); got != 0 {
		t.Errorf("got %d rows with another note than the default, want 0", got)
	}
}

func TestEmptyTable(t *testing.T) {
	p := newPair(t, `CREATE TABLE t (id uuid PRIMARY KEY, v text)`, `CREATE TABLE t (id uuid PRIMARY KEY, v text)`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	for i, want := range []bool{false, true} {
		sum := p.run(t, p.opts(10, 3), tables)
		if got := sum.Tables[0]; got.Rows != 0 || got.Skipped != want {
			t.Errorf("run %d: got %d rows, skipped %v, want 0 rows, skipped %v", i+1, got.Rows, got.Skipped, want)
		}
	}
}

func TestRunningAgainChangesNothing(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (id int PRIMARY KEY, v text, w int);
		INSERT INTO t SELECT i, 'v' || i, CASE WHEN i % 2 = 0 THEN i END FROM generate_series(1, 50) i`,
		`CREATE TABLE t (id int PRIMARY KEY, v text, w int)`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	tb := tables[0]
	p.run(t, p.opts(8, 1), tables)
	before := xmins(t, p.dst.Pool, tb)

	sum := p.run(t, p.opts(8, 1), tables)
	if !sum.Tables[0].Skipped {
		t.Errorf("second run: got %+v, want the table skipped", sum.Tables[0])
	}

	// Drift the target: one row changed, one gone, one NULL made non-NULL.
	exec(t, p.dst.Pool, `UPDATE t SET v = 'changed' WHERE id = 10; DELETE FROM t WHERE id = 20; UPDATE t SET w = 0 WHERE id = 31`)
	drifted := xmins(t, p.dst.Pool, tb)
	opts := p.opts(8, 2)
	opts.Restart = true
	sum = p.run(t, opts, tables)
	if got, want := sum.Rows, int64(50); got != want {
		t.Errorf("restart: got %d rows, want %d", got, want)
	}
	assertSameRows(t, p, tb)
	after := xmins(t, p.dst.Pool, tb)
	for key, x := range before {
		touched := after[key] != drifted[key]
		wantTouched := key == "(10)" || key == "(20)" || key == "(31)"
		if touched != wantTouched {
			t.Errorf("row %s: got rewritten %v, want %v (xmin %s → %s → %s)", key, touched, wantTouched, x, drifted[key], after[key])
		}
	}
}

func TestConflictsInTheMiddle(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (id bigint PRIMARY KEY, v text);
		INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i`, `
		CREATE TABLE t (id bigint PRIMARY KEY, v text);
		INSERT INTO t VALUES (30, 'v30'), (31, 'old'), (77, 'v77'), (500, 'extra')`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	before := xmins(t, p.dst.Pool, tables[0])
	p.run(t, p.opts(10, 1), tables)
	after := xmins(t, p.dst.Pool, tables[0])
	for _, key := range []string{"(30)", "(77)", "(500)"} {
		if after[key] != before[key] {
			t.Errorf("row %s: got rewritten, want left alone", key)
		}
	}
	if after["(31)"] == before["(31)"] {
		t.Errorf("row (31): got left alone, want updated")
	}
	// The extra row stays: backfill copies, verify --repair removes extras.
	exec(t, p.dst.Pool, "DELETE FROM t WHERE id = 500")
	assertSameRows(t, p, tables[0])
}

func TestCancelledThenResumed(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (a text NOT NULL, b int NOT NULL, v text, PRIMARY KEY (a, b));
		INSERT INTO t SELECT chr(97 + i % 3), i, 'v' || i FROM generate_series(1, 200) i`,
		`CREATE TABLE t (a text NOT NULL, b int NOT NULL, v text, PRIMARY KEY (a, b))`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := p.opts(9, 1)
	batches := 0
	opts.OnBatch = func(BatchEvent) {
		if batches++; batches == 3 {
			cancel()
		}
	}
	sum, err := Run(ctx, opts, tables)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got error %v, want context.Canceled", err)
	}
	if got, want := count(t, p.dst.Pool, "SELECT count(*) FROM t"), int64(27); got != want {
		t.Fatalf("after 3 batches: got %d rows in the target, want %d", got, want)
	}
	if got, want := sum.Rows, int64(27); got != want {
		t.Errorf("after 3 batches: got %d rows in the summary, want %d", got, want)
	}
	if got, want := count(t, p.dst.Pool, "SELECT rows_copied FROM datasync.backfill_progress"), int64(27); got != want {
		t.Errorf("got checkpoint of %d rows, want %d", got, want)
	}

	opts.OnBatch = nil
	sum = p.run(t, opts, tables)
	if res := sum.Tables[0]; !res.Resumed || res.Rows != 173 || res.TotalRows != 200 {
		t.Errorf("resumed run: got %+v, want resumed with 173 rows, 200 in all", res)
	}
	assertSameRows(t, p, tables[0])
}

func TestSnapshot(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (id bigint PRIMARY KEY, v text);
		INSERT INTO t SELECT i, 'before' FROM generate_series(1, 40) i`,
		`CREATE TABLE t (id bigint PRIMARY KEY, v text)`)
	ctx := context.Background()
	holder, err := p.src.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	var snap string
	if _, err := holder.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ"); err != nil {
		t.Fatal(err)
	}
	if err := holder.QueryRow(ctx, "SELECT pg_export_snapshot()").Scan(&snap); err != nil {
		t.Fatalf("export snapshot: %v", err)
	}
	defer holder.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	want := sourceRows(t, p.src.Pool, p.resolve(t, mapping.TableSpec{Source: "t"})[0])
	exec(t, p.src.Pool, `INSERT INTO t SELECT i, 'after' FROM generate_series(41, 60) i;
		UPDATE t SET v = 'after' WHERE id = 5; DELETE FROM t WHERE id = 6`)

	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	opts := p.opts(6, 2)
	opts.Snapshot = snap
	p.run(t, opts, tables)
	got := targetRows(t, p.dst.Pool, tables[0])
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %d rows %v…, want the %d rows as of the snapshot", len(got), got[:min(3, len(got))], len(want))
	}
}

func TestBadSnapshot(t *testing.T) {
	p := newPair(t, `CREATE TABLE t (id int PRIMARY KEY)`, `CREATE TABLE t (id int PRIMARY KEY)`)
	opts := p.opts(10, 1)
	opts.Snapshot = "00000003-0000001B-1"
	_, err := Run(context.Background(), opts, p.resolve(t, mapping.TableSpec{Source: "t"}))
	if err == nil || !strings.Contains(err.Error(), "import snapshot") {
		t.Fatalf("got %v, want an error about importing the snapshot", err)
	}
}

func TestKeysetPlanUsesTheIndex(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (a text NOT NULL, b bigint NOT NULL, v text, PRIMARY KEY (a, b));
		INSERT INTO t SELECT 'k' || (i % 50), i, repeat('v', 50) FROM generate_series(1, 20000) i;
		ANALYZE t`,
		`CREATE TABLE t (a text NOT NULL, b bigint NOT NULL, v text, PRIMARY KEY (a, b))`)
	tb := p.resolve(t, mapping.TableSpec{Source: "t"})[0]
	copySQL := sourceCopySQL(tb, []string{"k17", "9000"}, []string{"k30", "5"}, true, 1000)
	query := strings.TrimSuffix(strings.TrimPrefix(copySQL, "COPY ("), ") TO STDOUT (FORMAT binary)")
	plan := strings.Join(queryStrings(t, p.src.Pool, "EXPLAIN "+query), "\n")
	if !strings.Contains(plan, "Index") || strings.Contains(plan, "Sort") || strings.Contains(plan, "Seq Scan") {
		t.Errorf("got plan\n%s\nwant an index scan without a sort", plan)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no pools", Options{}, "pool"},
		{"negative batch", Options{BatchSize: -1}, "batch size"},
		{"negative workers", Options{Workers: -2}, "workers"},
		{"negative rate", Options{MaxRowsPerSecond: -1}, "per second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.opts, nil)
			if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want ErrOptions mentioning %q", err, tt.want)
			}
		})
	}
}

// TestMaxRowsPerSecond is the rate through a whole run: batches are capped
// at a second's worth of rows, and 250 rows at 100 rows/s, of which the
// first 100 ride on the bucket's burst, cannot finish in less than 1.5 s
// however fast the machine is (only a lower bound: a loaded machine may take
// longer).
func TestMaxRowsPerSecond(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (id int PRIMARY KEY);
		INSERT INTO t SELECT generate_series(1, 250)`,
		`CREATE TABLE t (id int PRIMARY KEY)`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	opts := p.opts(1000, 1)
	opts.MaxRowsPerSecond = 100
	var largest int64
	opts.OnBatch = func(e BatchEvent) { largest = max(largest, e.Rows) }
	start := time.Now()
	sum := p.run(t, opts, tables)
	if elapsed := time.Since(start); elapsed < 1500*time.Millisecond {
		t.Errorf("250 rows at 100 rows/s took %v, want at least 1.5 s", elapsed)
	}
	if largest != 100 {
		t.Errorf("got batches of up to %d rows, want 100 (a second's worth)", largest)
	}
	if sum.Rows != 250 {
		t.Errorf("got %d rows, want 250", sum.Rows)
	}
	assertSameRows(t, p, tables[0])
}

func TestConcurrentRunIsRefused(t *testing.T) {
	p := newPair(t, `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)`, `CREATE TABLE t (id int PRIMARY KEY)`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	ctx := context.Background()
	other, err := p.dst.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Release()
	exec(t, p.dst.Pool, "SELECT 1") // the pool has a second connection for Run
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock(hashtext('datasync backfill backfill public.t'))"); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, p.opts(10, 1), tables); !errors.Is(err, ErrBusy) {
		t.Fatalf("while another run holds the table: got %v, want ErrBusy", err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_unlock_all()"); err != nil {
		t.Fatal(err)
	}
	p.run(t, p.opts(10, 1), tables)
	assertSameRows(t, p, tables[0])
}

// TestRowWrittenAheadOfTheCopy writes a row into the target just ahead of
// the batch being copied, after the range was probed: the straight copy of
// that batch fails on the key, and the batch is redone as an upsert.
func TestRowWrittenAheadOfTheCopy(t *testing.T) {
	p := newPair(t, `
		CREATE TABLE t (id bigint PRIMARY KEY, v text);
		INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i`,
		`CREATE TABLE t (id bigint PRIMARY KEY, v text)`)
	tables := p.resolve(t, mapping.TableSpec{Source: "t"})
	opts := p.opts(10, 1)
	batches := 0
	opts.OnBatch = func(BatchEvent) {
		if batches++; batches == 1 {
			exec(t, p.dst.Pool, "INSERT INTO t VALUES (15, 'written meanwhile'), (16, 'v16')")
		}
	}
	sum := p.run(t, opts, tables)
	if got, want := sum.Rows, int64(100); got != want {
		t.Errorf("got %d rows, want %d", got, want)
	}
	if got, want := count(t, p.dst.Pool, "SELECT rows_copied FROM datasync.backfill_progress"), int64(100); got != want {
		t.Errorf("got a checkpoint of %d rows, want %d", got, want)
	}
	assertSameRows(t, p, tables[0])
}

func TestCheckpointsOfAnotherKey(t *testing.T) {
	ddl := `CREATE TABLE t (id int PRIMARY KEY, code text NOT NULL UNIQUE)`
	p := newPair(t, ddl+`; INSERT INTO t SELECT i, 'c' || i FROM generate_series(1, 30) i`, ddl)
	opts := p.opts(7, 1)
	byID := p.resolve(t, mapping.TableSpec{Source: "t"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts.OnBatch = func(BatchEvent) { cancel() }
	if _, err := Run(ctx, opts, byID); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	opts.OnBatch = nil
	byCode := p.resolve(t, mapping.TableSpec{Source: "t", Key: []string{"code"}})
	_, err := Run(context.Background(), opts, byCode)
	if !errors.Is(err, errKeyChanged) || !strings.Contains(err.Error(), "--restart") {
		t.Fatalf("got %v, want errKeyChanged telling to use --restart", err)
	}
	opts.Restart = true
	p.run(t, opts, byCode)
	assertSameRows(t, p, byCode[0])
}
