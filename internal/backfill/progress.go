package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// TableProgress is how far one backfill of one target table has got, as
// its checkpoints in datasync.backfill_progress tell.
type TableProgress struct {
	// Name is the backfill's name: DefaultName for datasync backfill.
	Name string `json:"name"`
	// Source and Target are the tables, schema-qualified.
	Source string `json:"source"`
	Target string `json:"target"`
	// RowsCopied counts the rows copied by every run so far.
	RowsCopied int64 `json:"rows_copied"`
	// Ranges is the number of key ranges; RangesDone how many are copied.
	Ranges     int `json:"ranges"`
	RangesDone int `json:"ranges_done"`
	// Done reports that every range is copied.
	Done bool `json:"done"`
	// StartedAt is when the first run planned the ranges; UpdatedAt when a
	// batch last committed.
	StartedAt time.Time `json:"started_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// EstimatedRows is the expected total: RowsCopied once done, otherwise
	// the source's planner estimate (pg_class.reltuples, never below
	// RowsCopied). Nil when unknown: the source was not asked, the table
	// was never analyzed, or it is gone.
	EstimatedRows *int64 `json:"estimated_rows,omitempty"`
}

// ReadProgress returns the progress of every backfill recorded in the
// target's checkpoints, ordered by target table and name. It returns none,
// and no error, when no backfill ever ran there. With targets, only those
// target tables are listed. With src, unfinished tables get an estimate of
// their total from the source's statistics.
func ReadProgress(ctx context.Context, src, dst *pgxpool.Pool, targets []mapping.Ident) ([]TableProgress, error) {
	var exists bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.backfill_progress') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read backfill checkpoints: %w", err)
	}
	if !exists {
		return []TableProgress{}, nil
	}
	rows, err := dst.Query(ctx, `SELECT name, target_table, min(source_table), sum(rows_copied)::bigint,
			count(*)::int, (count(*) FILTER (WHERE done))::int, min(started_at), max(updated_at)
		FROM datasync.backfill_progress GROUP BY name, target_table ORDER BY target_table, name`)
	if err != nil {
		return nil, fmt.Errorf("read backfill checkpoints: %w", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TableProgress, error) {
		var p TableProgress
		err := r.Scan(&p.Name, &p.Target, &p.Source, &p.RowsCopied, &p.Ranges, &p.RangesDone, &p.StartedAt, &p.UpdatedAt)
		p.Done = p.RangesDone == p.Ranges
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read backfill checkpoints: %w", err)
	}
	out := []TableProgress{}
	for _, p := range all {
		if len(targets) > 0 && !slices.ContainsFunc(targets, func(t mapping.Ident) bool { return t.String() == p.Target }) {
			continue
		}
		if p.Done {
			p.EstimatedRows = &p.RowsCopied
		} else if src != nil {
			if p.EstimatedRows, err = sourceEstimate(ctx, src, p); err != nil {
				return nil, err
			}
		}
		out = append(out, p)
	}
	return out, nil
}

// sourceEstimate is the planner's row count of p's source table, at least
// what is already copied; nil when the planner has none (-1 before the
// first ANALYZE) or the table is gone. The table is matched on the form
// the checkpoints store, schema.name unquoted.
func sourceEstimate(ctx context.Context, src *pgxpool.Pool, p TableProgress) (*int64, error) {
	var n float64
	err := src.QueryRow(ctx, `SELECT c.reltuples FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
		WHERE s.nspname || '.' || c.relname = $1`, p.Source).Scan(&n)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("estimate rows of %s for the progress of %s: %w", p.Source, p.Target, err)
	case n < 0:
		return nil, nil
	}
	est := max(int64(n), p.RowsCopied)
	return &est, nil
}
