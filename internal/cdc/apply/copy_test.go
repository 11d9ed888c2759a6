package apply

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/progress"
	"github.com/strangler-fig/strangler/internal/testkit"
)

// TestFirstCopyBatchedParallelWithProgress copies a table in many batches
// over several key ranges from the slot's snapshot, into a target holding
// stale rows (an extra one, a different one): the target ends equal to the
// source, the copy is recorded with its row count, its checkpoints are
// gone, and progress went out as JSON lines.
func TestFirstCopyBatchedParallelWithProgress(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users SELECT g, 'u' || g || '@x', 'U' || g, repeat('n', g % 40), g FROM generate_series(1, 3000) g;`,
		usersSchema+`INSERT INTO users VALUES (5, 'stale', 'S', NULL, 0), (99999, 'extra', 'X', NULL, 0);`)
	var logs, prog testkit.Buffer
	cfg := p.config("batched", mapping.TableSpec{Source: "users"})
	cfg.UntilCaughtUp = true
	cfg.CopyWorkers, cfg.CopyBatchSize = 3, 100
	cfg.Progress = progress.Options{Out: &prog}
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	if got, want := dump(t, p.dst.Pool, usersQuery), dump(t, p.src.Pool, usersQuery); got != want {
		t.Fatalf("target differs from the source after the first copy")
	}
	var rows int64
	if err := p.dst.Pool.QueryRow(testCtx(t), `SELECT copied_rows FROM datasync.sync_tables WHERE name = 'batched'`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 3000 {
		t.Errorf("copied_rows: got %d, want 3000", rows)
	}
	var left int
	if err := p.dst.Pool.QueryRow(testCtx(t), `SELECT count(*) FROM `+backfill.CheckpointTable+` WHERE name = 'sync:batched'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("checkpoints of the recorded copy: got %d rows, want none", left)
	}
	if !strings.Contains(logs.String(), "ranges=3") || !strings.Contains(logs.String(), "workers=3") {
		t.Errorf("log: want the copy split in 3 ranges over 3 workers; got:\n%s", logs.String())
	}
	var last progress.Line
	sc := bufio.NewScanner(strings.NewReader(prog.String()))
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("progress line %q: %v", sc.Text(), err)
		}
	}
	if last.Label != "public.users" || last.Rows != 3000 || !last.Done {
		t.Errorf("last progress line: got %+v, want public.users, 3000 rows, done", last)
	}
}

// TestFirstCopyDoesNotTrustUnprovenBackfill pins that a finished datasync
// backfill does not stand for the sync's copy: it read its rows before the
// slot existed, so a row deleted and a row updated on the source after the
// backfill, before the sync started, are in neither its rows nor the
// stream. The sync copies from its snapshot, and the target matches.
func TestFirstCopyDoesNotTrustUnprovenBackfill(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users SELECT g, 'u' || g, 'U', 'x', g FROM generate_series(1, 500) g;`, usersSchema)
	tables, err := mapping.ResolveAll(testCtx(t), p.src.Pool, p.dst.Pool, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backfill.Run(testCtx(t), backfill.Options{Source: p.src.Pool, Target: p.dst.Pool}, tables); err != nil {
		t.Fatal(err)
	}
	execAll(t, p.src.Pool, `DELETE FROM users WHERE id = 7`, `UPDATE users SET n = -1 WHERE id = 8`)

	var logs testkit.Buffer
	cfg := p.config("afterbackfill", mapping.TableSpec{Source: "users"})
	cfg.UntilCaughtUp = true
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	if got, want := dump(t, p.dst.Pool, usersQuery), dump(t, p.src.Pool, usersQuery); got != want {
		t.Fatalf("target differs from the source: a finished backfill was taken for the copy")
	}
	if !strings.Contains(logs.String(), "finished datasync backfill") || !strings.Contains(logs.String(), `msg="copied table"`) {
		t.Errorf("log: want the finished backfill noted and the table copied; got:\n%s", logs.String())
	}
}

// TestCleanupDropsFirstCopyCheckpoints: cleanup forgets the checkpoints a
// first copy cut short left under sync:NAME, and no other backfill's.
func TestCleanupDropsFirstCopyCheckpoints(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1);`, usersSchema)
	tables, err := mapping.ResolveAll(testCtx(t), p.src.Pool, p.dst.Pool, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{copyName("cl"), backfill.DefaultName} {
		if _, err := backfill.Run(testCtx(t), backfill.Options{Source: p.src.Pool, Target: p.dst.Pool, Name: name, Restart: true}, tables); err != nil {
			t.Fatal(err)
		}
	}
	if err := Cleanup(testCtx(t), p.src.Pool, p.dst.Pool, "cl"); err != nil {
		t.Fatal(err)
	}
	got := dump(t, p.dst.Pool, `SELECT name FROM `+backfill.CheckpointTable+` ORDER BY name`)
	if want := dump(t, p.dst.Pool, `SELECT 'backfill'::text`); got != want {
		t.Errorf("checkpoints after cleanup: got\n%s\nwant\n%s", got, want)
	}
}

// TestFirstCopyEmptiesReferencedTarget copies into a target table that
// holds rows and that another table's foreign key refers to: it cannot be
// truncated, so its rows are deleted, and the copy goes on.
func TestFirstCopyEmptiesReferencedTarget(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1), (2, 'b', 'B', 'y', 2);`,
		usersSchema+`INSERT INTO users VALUES (2, 'old', 'O', NULL, 0), (3, 'gone', 'G', NULL, 0);
			CREATE TABLE orders (id int PRIMARY KEY, user_id bigint REFERENCES users (id));`)
	cfg := p.config("referenced", mapping.TableSpec{Source: "users"})
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, want := dump(t, p.dst.Pool, usersQuery), dump(t, p.src.Pool, usersQuery); got != want {
		t.Fatalf("target: got\n%s\nwant\n%s", got, want)
	}
}
