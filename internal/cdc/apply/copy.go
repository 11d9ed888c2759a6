package apply

import (
	"context"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// copyTable makes the target table hold exactly the source rows visible in
// the exported snapshot, and records the copy at lsn (the snapshot's
// consistent point), all in one target transaction: a copy cut short leaves
// the target as it was and the table still marked as not copied.
//
// Rows already in the target are deleted first, so that a row deleted from
// the source before the snapshot cannot survive in the target.
//
// The copy transaction also creates the sync's checkpoint at lsn if there is
// none: from then on the slot is in use, and a restart copies the tables
// still missing with a snapshot of their own instead of starting over.
func copyTable(ctx context.Context, src, dst *pgxpool.Pool, name string, t *mapping.Table, signature, snapshot string, lsn cdc.LSN) (int64, error) {
	op := fmt.Sprintf("copy %s to %s", t.Source, t.Target)
	sconn, err := src.Acquire(ctx)
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

	dtx, err := dst.Begin(ctx)
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
		name, t.Target.String(), lsn.String(), tag.RowsAffected(), signature); err != nil {
		return 0, fmt.Errorf("%s: record copy: %w", op, err)
	}
	if _, err := dtx.Exec(ctx, `INSERT INTO datasync.sync_state (name, applied_lsn) VALUES ($1, $2::text::pg_lsn)
		ON CONFLICT (name) DO NOTHING`, name, lsn.String()); err != nil {
		return 0, fmt.Errorf("%s: create checkpoint: %w", op, err)
	}
	if err := dtx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("%s: %w", op, err)
	}
	return tag.RowsAffected(), nil
}
