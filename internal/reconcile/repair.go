package reconcile

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// RepairPlan counts what a repair did or, in a dry run, would do.
type RepairPlan struct {
	DryRun   bool
	Inserted int64
	Updated  int64
	Deleted  int64
}

// repair makes the target match the source's current rows for every key of
// d, in transactions of opts.BatchSize keys. A dry run only counts.
func (p *pair) repair(ctx context.Context, d diffs, opts Options) (*RepairPlan, error) {
	plan := &RepairPlan{DryRun: opts.DryRun}
	if opts.DryRun {
		plan.Inserted = int64(len(d.missing))
		plan.Updated = int64(len(d.mismatched))
		plan.Deleted = int64(len(d.extra))
		return plan, nil
	}
	keys := d.keys()
	for start := 0; start < len(keys); start += opts.BatchSize {
		chunk := keys[start:min(start+opts.BatchSize, len(keys))]
		if err := p.repairBatch(ctx, chunk, plan); err != nil {
			return nil, fmt.Errorf("repair: %w", err)
		}
		p.progress(opts, PhaseRepair, int64(start+len(chunk)), int64(len(keys)))
	}
	return plan, nil
}

// repairBatch copies the source's current rows of keys to the target and
// deletes the target rows of keys the source no longer has.
func (p *pair) repairBatch(ctx context.Context, keys [][]string, plan *RepairPlan) error {
	// The source's current values, as text in the target's types.
	var a args
	cols := make([]string, len(p.src.values))
	for i, v := range p.src.values {
		cols[i] = "(" + v + ")::text"
	}
	q := "SELECT " + strings.Join(p.src.keyText, ", ") + ", " + strings.Join(cols, ", ") + p.src.from() + p.joinKeys(p.src, keys, &a)
	if p.src.filter != "" {
		q += " WHERE (" + p.src.filter + ")"
	}
	rows, err := p.src.pool.Query(ctx, q, a...)
	if err != nil {
		return fmt.Errorf("read source rows: %w", err)
	}
	nk, nc := len(p.keyTypes), len(cols)
	values := make([][]*string, nc) // column-major, for unnest
	present := map[string]bool{}
	for rows.Next() {
		key := make([]string, nk)
		vals := make([]*string, nc)
		dest := make([]any, 0, nk+nc)
		for i := range key {
			dest = append(dest, &key[i])
		}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return fmt.Errorf("read source rows: %w", err)
		}
		present[keyString(key)] = true
		for i, v := range vals {
			values[i] = append(values[i], v)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read source rows: %w", err)
	}
	var gone [][]string
	for _, k := range keys {
		if !present[keyString(k)] {
			gone = append(gone, k)
		}
	}

	return pgx.BeginFunc(ctx, p.dst.pool, func(tx pgx.Tx) error {
		if len(present) > 0 {
			ins, upd, err := p.upsert(ctx, tx, values)
			if err != nil {
				return err
			}
			plan.Inserted += ins
			plan.Updated += upd
		}
		if len(gone) > 0 {
			var a args
			q := "DELETE FROM " + p.dst.rel + " USING " + p.unnestKeys(gone, &a) + " WHERE " + p.keyJoin(p.dst)
			tag, err := tx.Exec(ctx, q, a...)
			if err != nil {
				return fmt.Errorf("delete extra target rows: %w", err)
			}
			plan.Deleted += tag.RowsAffected()
		}
		return nil
	})
}

// upsert writes rows (column-major text values) into the target and counts
// the inserted and the updated ones.
func (p *pair) upsert(ctx context.Context, tx pgx.Tx, values [][]*string) (inserted, updated int64, err error) {
	var a args
	params := make([]string, len(values))
	names := make([]string, len(values))
	casts := make([]string, len(values))
	var sets []string
	for i, c := range p.table.Columns {
		params[i] = a.add(values[i]) + "::text[]"
		names[i] = fmt.Sprintf("v%d", i)
		casts[i] = fmt.Sprintf("v%d::%s", i, c.TargetType)
		if !c.Key {
			q := mapping.QuoteIdent(c.Target)
			sets = append(sets, q+" = EXCLUDED."+q)
		}
	}
	conflict := " DO NOTHING"
	if len(sets) > 0 {
		conflict = " DO UPDATE SET " + strings.Join(sets, ", ")
	}
	// xmax is 0 on a row version an INSERT created, and set when ON
	// CONFLICT updated the row.
	q := "INSERT INTO " + p.dst.rel + " AS __datasync_t (" + p.table.TargetColumnList() + ") SELECT " + strings.Join(casts, ", ") +
		" FROM unnest(" + strings.Join(params, ", ") + ") AS u(" + strings.Join(names, ", ") + ")" +
		" ON CONFLICT (" + p.table.TargetKeyList() + ")" + conflict + " RETURNING (__datasync_t.xmax = 0)"
	rows, err := tx.Query(ctx, q, a...)
	if err != nil {
		return 0, 0, fmt.Errorf("upsert target rows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var isInsert bool
		if err := rows.Scan(&isInsert); err != nil {
			return 0, 0, fmt.Errorf("upsert target rows: %w", err)
		}
		if isInsert {
			inserted++
		} else {
			updated++
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, fmt.Errorf("upsert target rows: %w", err)
	}
	return inserted, updated, nil
}
