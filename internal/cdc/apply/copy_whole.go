package apply

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// copyTablesWhole is the first copy of a two-way sync: each table in one
// target transaction on the sync's own target connection, which runs under
// the replication origin datasync_NAME_to_target. Every write of the copy,
// the emptying of the table included, then carries that origin, and the
// reverse stream, which reads the target from before the copy, drops it:
// otherwise the copy's rows would be sent back to the source, and its
// emptying of the target table would reach the source as a TRUNCATE. On
// PostgreSQL 15 an origin serves one session at a time, which rules out the
// parallel copy of copyTables.
func (s *syncer) copyTablesWhole(ctx context.Context, snapshot string, lsn cdc.LSN, tables []*mapping.Table) error {
	for _, t := range tables {
		start := time.Now()
		n, err := s.copyTableWhole(ctx, t, snapshot, lsn)
		if err != nil {
			return err
		}
		s.copied[t] = lsn
		s.log.Info("copied table", "source", t.Source.String(), "target", t.Target.String(), "rows", n,
			"lsn", lsn.String(), "seconds", time.Since(start).Seconds(), "workers", 1)
	}
	return nil
}

// copyTableWhole makes the target table hold exactly the source rows of the
// snapshot and records the copy at lsn, in one target transaction.
func (s *syncer) copyTableWhole(ctx context.Context, t *mapping.Table, snapshot string, lsn cdc.LSN) (int64, error) {
	op := fmt.Sprintf("copy %s to %s", t.Source, t.Target)
	sconn, err := s.src.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer sconn.Release()
	stx, err := sconn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer stx.Rollback(context.WithoutCancel(ctx))
	if _, err := stx.Exec(ctx, "SET TRANSACTION SNAPSHOT "+mapping.QuoteLiteral(snapshot)); err != nil {
		return 0, fmt.Errorf("%s: import snapshot: %w", op, err)
	}
	dtx, err := s.beginTx(ctx)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	defer dtx.Rollback(context.WithoutCancel(ctx))
	if _, err := dtx.Exec(ctx, "DELETE FROM "+t.Target.Quoted()); err != nil {
		return 0, fmt.Errorf("%s: empty target: %w", op, err)
	}
	pr, pw := io.Pipe()
	readErr := make(chan error, 1)
	go func() {
		_, err := sconn.Conn().PgConn().CopyTo(ctx, pw,
			"COPY (SELECT "+t.SourceSelectList()+" FROM "+t.Source.Quoted()+t.SourceWhere()+") TO STDOUT")
		pw.CloseWithError(err)
		readErr <- err
	}()
	tag, err := dtx.Conn().PgConn().CopyFrom(ctx, pr, "COPY "+t.Target.Quoted()+" ("+t.TargetColumnList()+") FROM STDIN")
	pr.CloseWithError(err)
	if rerr := <-readErr; rerr != nil {
		return 0, fmt.Errorf("%s: read source: %w", op, rerr)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: write target: %w", op, err)
	}
	if _, err := dtx.Exec(ctx, `INSERT INTO datasync.sync_tables (name, target_table, copied_lsn, copied_rows, mapping)
		VALUES ($1, $2, $3::text::pg_lsn, $4, $5)
		ON CONFLICT (name, target_table) DO UPDATE SET copied_lsn = EXCLUDED.copied_lsn,
			copied_rows = EXCLUDED.copied_rows, copied_at = now(), mapping = EXCLUDED.mapping`,
		s.cfg.Name, t.Target.String(), lsn.String(), tag.RowsAffected(), s.signature[t]); err != nil {
		return 0, fmt.Errorf("%s: record copy: %w", op, err)
	}
	if _, err := dtx.Exec(ctx, `INSERT INTO datasync.sync_state (name, applied_lsn) VALUES ($1, $2::text::pg_lsn)
		ON CONFLICT (name) DO NOTHING`, s.cfg.Name, lsn.String()); err != nil {
		return 0, fmt.Errorf("%s: create checkpoint: %w", op, err)
	}
	if err := dtx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return tag.RowsAffected(), nil
}
