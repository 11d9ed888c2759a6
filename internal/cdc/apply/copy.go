package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// The first copy of a table runs the backfill engine (internal/backfill) on
// the snapshot a replication slot exported: binary COPY in keyset batches,
// CopyWorkers key ranges at once, each on a source connection that imports
// the snapshot (SET TRANSACTION SNAPSHOT) while the slot's own connection
// stays open and idle, so every worker reads the source exactly as of the
// slot's consistent point. Each batch commits in a target transaction of its
// own with its checkpoint under the backfill name copyName(sync name).
//
// Committing batch by batch keeps the gap-free handoff described on Run:
//
//   - Before the first batch, the target table is emptied (in a transaction
//     of its own; see emptyTable), so a row deleted from the source before
//     the snapshot cannot survive in the target.
//   - The table is recorded as copied (datasync.sync_tables, with the
//     consistent point) only after its last batch, in one transaction that
//     also creates the sync's checkpoint if there is none and drops the
//     copy's own checkpoints. Until then the stream does not start: nobody
//     but the sync reads the target, and the stream applies changes only
//     to a table whose copy is whole and recorded.
//   - A copy cut short (crash, kill -9, SIGTERM) leaves the table unrecorded.
//     The next run copies it again from the start, from a fresh snapshot:
//     the rows of the unfinished copy are deleted first. It does not resume
//     the unfinished copy's key ranges, because the snapshot they were read
//     from died with the process: the rows after the checkpoints would come
//     from a later snapshot, and streaming from the old consistent point
//     over them would apply again changes they already hold. Inserts,
//     deletes and whole-row updates converge when applied twice, but an
//     update that changes a key while leaving a TOASTed column unchanged
//     is applied as an UPDATE by the old key, and applied again it can move
//     another row that took that key since. Tables whose copy was recorded
//     before the crash are kept.

// copyName is the backfill name under which the first copy of the sync
// called name checkpoints its batches, apart from datasync backfill's.
func copyName(name string) string { return "sync:" + name }

// copyTables copies tables from snapshot, the snapshot exported at lsn, one
// table after the other, recording each at lsn once it is whole. The caller
// keeps the exporting connection open and idle until copyTables returns.
func (s *syncer) copyTables(ctx context.Context, snapshot string, lsn cdc.LSN, tables []*mapping.Table) error {
	if s.tw != nil {
		return s.copyTablesWhole(ctx, snapshot, lsn, tables)
	}
	workers := max(s.cfg.CopyWorkers, 1)
	src, err := copyPool(ctx, "source", s.cfg.Source, workers)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := copyPool(ctx, "target", s.cfg.Target, workers)
	if err != nil {
		return err
	}
	defer dst.Close()
	for _, t := range tables {
		start := time.Now()
		n, err := s.copyTable(ctx, src, dst, t, snapshot, lsn)
		if err != nil {
			return err
		}
		s.copied[t] = lsn
		if err := s.advanceSequences(ctx, []*mapping.Table{t}); err != nil {
			return err
		}
		secs := time.Since(start).Seconds()
		s.log.Info("copied table", "source", t.Source.String(), "target", t.Target.String(), "rows", n,
			"lsn", lsn.String(), "seconds", secs, "rows_per_second", rate(n, secs), "workers", workers)
	}
	return nil
}

// copyTable copies one table and records the copy; see the comment at the
// top of this file.
func (s *syncer) copyTable(ctx context.Context, src, dst *pgxpool.Pool, t *mapping.Table, snapshot string, lsn cdc.LSN) (int64, error) {
	op := fmt.Sprintf("copy %s to %s", t.Source, t.Target)
	if err := s.noteBackfill(ctx, dst, t); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	if err := emptyTable(ctx, dst, t.Target); err != nil {
		return 0, fmt.Errorf("%s: empty the target table: %w", op, err)
	}
	sum, err := backfill.Run(ctx, backfill.Options{
		Source:    src,
		Target:    dst,
		Name:      copyName(s.cfg.Name),
		BatchSize: s.cfg.CopyBatchSize,
		Workers:   max(s.cfg.CopyWorkers, 1),
		// Checkpoints left by a copy cut short belong to a dead snapshot.
		Restart:  true,
		Snapshot: snapshot,
		Progress: s.cfg.Progress,
		Logger:   s.log.With("copy", t.Target.String()),
	}, []*mapping.Table{t})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	var rows int64
	for _, r := range sum.Tables {
		rows += r.Rows
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: record copy: %w", op, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `INSERT INTO datasync.sync_tables (name, target_table, copied_lsn, copied_rows, mapping)
		VALUES ($1, $2, $3::text::pg_lsn, $4, $5)
		ON CONFLICT (name, target_table) DO UPDATE SET copied_lsn = EXCLUDED.copied_lsn,
			copied_rows = EXCLUDED.copied_rows, copied_at = now(), mapping = EXCLUDED.mapping`,
		s.cfg.Name, t.Target.String(), lsn.String(), rows, s.signature[t]); err != nil {
		return 0, fmt.Errorf("%s: record copy: %w", op, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO datasync.sync_state (name, applied_lsn) VALUES ($1, $2::text::pg_lsn)
		ON CONFLICT (name) DO NOTHING`, s.cfg.Name, lsn.String()); err != nil {
		return 0, fmt.Errorf("%s: create checkpoint: %w", op, err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM `+backfill.CheckpointTable+` WHERE name = $1 AND target_table = $2`,
		copyName(s.cfg.Name), t.Target.String()); err != nil {
		return 0, fmt.Errorf("%s: drop the copy's checkpoints: %w", op, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("%s: record copy: %w", op, err)
	}
	return rows, nil
}

// noteBackfill says why a finished datasync backfill of the table is
// copied again. Its rows were read batch by batch, each at its own moment,
// before this snapshot: a change committed between a row's read and the
// snapshot is in neither the rows nor the stream. Streaming from a position
// before the backfill would not mend that soundly either: the changes
// between that position and each row's read would be applied again over
// rows that already hold them, and an update that changes a key while
// leaving a TOASTed column unchanged, applied again, can move another row
// that took that key since. Only a copy read whole from the slot's own
// snapshot has a position that can be proven: the sync's copy.
func (s *syncer) noteBackfill(ctx context.Context, dst *pgxpool.Pool, t *mapping.Table) error {
	runs, err := backfill.ReadProgress(ctx, nil, dst, []mapping.Ident{t.Target})
	if err != nil {
		return err
	}
	for _, r := range runs {
		if r.Name == backfill.DefaultName && r.Done {
			s.log.Info("a finished datasync backfill of this table is in the target, but it was not read from the slot's snapshot: copying from the snapshot",
				"target", t.Target.String(), "backfill_rows", r.RowsCopied)
		}
	}
	return nil
}

// emptyTable deletes the rows of a target table before its copy. A table
// with rows (an earlier backfill, a copy cut short) is truncated, which
// takes no time whatever its size, unless that fails: a foreign key of
// another table refers to it, or a reader holds a lock on it for more than
// the lock timeout; then its rows are deleted.
func emptyTable(ctx context.Context, dst *pgxpool.Pool, table mapping.Ident) error {
	var rows bool
	if err := dst.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM "+table.Quoted()+")").Scan(&rows); err != nil {
		return err
	}
	if !rows {
		return nil
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '2s'; TRUNCATE "+table.Quoted()); err == nil {
		return tx.Commit(ctx)
	}
	if err := tx.Rollback(ctx); err != nil {
		return err
	}
	_, err = dst.Exec(ctx, "DELETE FROM "+table.Quoted())
	return err
}

// copyPool connects to one side for the copy, with room for workers plus
// the connections that plan the ranges and hold the table's lock. Session
// settings that change how values print as text are pinned: key values
// travel as text between batches (rows themselves travel in binary).
func copyPool(ctx context.Context, side, url string, workers int) (*pgxpool.Pool, error) {
	pool, err := dbconn.Open(ctx, side, url, "datasync sync copy", func(cfg *pgxpool.Config) {
		cfg.MaxConns = int32(workers + 2)
	})
	if err != nil {
		return nil, fmt.Errorf("copy: %w", err)
	}
	return pool, nil
}

func rate(rows int64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(rows) / secs
}
