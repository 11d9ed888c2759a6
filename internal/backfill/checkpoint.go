package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// CheckpointTable holds backfill progress in the target database: one row
// per key range of each table, updated in the same transaction as every
// batch copied into it.
const CheckpointTable = "datasync.backfill_progress"

const checkpointDDL = `
SELECT pg_advisory_xact_lock(hashtext('datasync.backfill_progress'));
CREATE SCHEMA IF NOT EXISTS datasync;
CREATE TABLE IF NOT EXISTS datasync.backfill_progress (
	name         text        NOT NULL,
	target_table text        NOT NULL,
	range_id     integer     NOT NULL,
	source_table text        NOT NULL,
	key_columns  text[]      NOT NULL,
	range_start  text[],
	range_end    text[],
	last_key     text[],
	rows_copied  bigint      NOT NULL DEFAULT 0,
	done         boolean     NOT NULL DEFAULT false,
	started_at   timestamptz NOT NULL DEFAULT now(),
	updated_at   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (name, target_table, range_id)
);
COMMENT ON TABLE datasync.backfill_progress IS
	'datasync backfill checkpoints: one row per key range; range_start is exclusive, range_end inclusive, NULL unbounded; keys are the key columns'' text forms';`

// span is one key range of a table and how far it has been copied. Keys are
// the text forms of the key columns' values, in key order.
type span struct {
	id    int
	start []string // exclusive lower bound; nil means unbounded
	end   []string // inclusive upper bound; nil means unbounded
	last  []string // last key copied; nil means none yet
	rows  int64
	done  bool
}

// lower is where the next batch of the range starts (exclusive).
func (s *span) lower() []string {
	if s.last != nil {
		return s.last
	}
	return s.start
}

// ensureCheckpoints creates the checkpoint table if it is missing. The
// advisory lock keeps concurrent first runs from racing on the catalog.
func ensureCheckpoints(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create checkpoint table: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, checkpointDDL); err != nil {
		return fmt.Errorf("create checkpoint table: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create checkpoint table: %w", err)
	}
	return nil
}

func targetKeyNames(t *mapping.Table) []string {
	return keyAttr(t, func(c mapping.Column) string { return c.Target })
}

// errKeyChanged means checkpoints were written for another key.
var errKeyChanged = errors.New("checkpoints were made with another key")

// loadSpans reads the stored ranges of a table, in range order.
func loadSpans(ctx context.Context, pool *pgxpool.Pool, name string, t *mapping.Table) ([]*span, error) {
	rows, err := pool.Query(ctx, `SELECT range_id, key_columns, range_start, range_end, last_key, rows_copied, done
		FROM datasync.backfill_progress WHERE name = $1 AND target_table = $2 ORDER BY range_id`,
		name, t.Target.String())
	if err != nil {
		return nil, fmt.Errorf("read checkpoints of %s: %w", t.Target, err)
	}
	defer rows.Close()
	want := targetKeyNames(t)
	var spans []*span
	for rows.Next() {
		s := &span{}
		var key []string
		if err := rows.Scan(&s.id, &key, &s.start, &s.end, &s.last, &s.rows, &s.done); err != nil {
			return nil, fmt.Errorf("read checkpoints of %s: %w", t.Target, err)
		}
		if !slices.Equal(key, want) {
			return nil, fmt.Errorf("read checkpoints of %s: %w: (%s), now (%s): run with --restart",
				t.Target, errKeyChanged, strings.Join(key, ", "), strings.Join(want, ", "))
		}
		spans = append(spans, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read checkpoints of %s: %w", t.Target, err)
	}
	return spans, nil
}

// saveSpans replaces the stored ranges of a table with spans.
func saveSpans(ctx context.Context, pool *pgxpool.Pool, name string, t *mapping.Table, spans []*span) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("write checkpoints of %s: %w", t.Target, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `DELETE FROM datasync.backfill_progress WHERE name = $1 AND target_table = $2`,
		name, t.Target.String()); err != nil {
		return fmt.Errorf("write checkpoints of %s: %w", t.Target, err)
	}
	key := targetKeyNames(t)
	for _, s := range spans {
		if _, err := tx.Exec(ctx, `INSERT INTO datasync.backfill_progress
				(name, target_table, range_id, source_table, key_columns, range_start, range_end)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			name, t.Target.String(), s.id, t.Source.String(), key, s.start, s.end); err != nil {
			return fmt.Errorf("write checkpoints of %s: %w", t.Target, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("write checkpoints of %s: %w", t.Target, err)
	}
	return nil
}

// deleteSpans forgets the progress of a table (--restart).
func deleteSpans(ctx context.Context, pool *pgxpool.Pool, name string, t *mapping.Table) error {
	if _, err := pool.Exec(ctx, `DELETE FROM datasync.backfill_progress WHERE name = $1 AND target_table = $2`,
		name, t.Target.String()); err != nil {
		return fmt.Errorf("forget checkpoints of %s: %w", t.Target, err)
	}
	return nil
}

// checkpointSQL returns the statement that records a batch of table t:
// parameters $1 name, $2 target table, $3 range id, $4 rows, $5 done, and,
// with withKey, $6… the last key's fields in the target types' binary
// forms, stored as their text forms so that they can be cast back.
func checkpointSQL(t *mapping.Table, withKey bool) string {
	set := ""
	if withKey {
		parts := make([]string, len(t.Key))
		for i := range t.Key {
			parts[i] = fmt.Sprintf("$%d::text", 6+i)
		}
		set = "last_key = ARRAY[" + strings.Join(parts, ", ") + "], "
	}
	ret := make([]string, len(t.Key))
	for i := range t.Key {
		ret[i] = fmt.Sprintf("last_key[%d]", i+1)
	}
	return "UPDATE datasync.backfill_progress SET " + set +
		"rows_copied = rows_copied + $4, done = $5, updated_at = now() " +
		"WHERE name = $1 AND target_table = $2 AND range_id = $3 RETURNING " + strings.Join(ret, ", ")
}

// batchEnd is how a batch's transaction ends.
type batchEnd struct {
	id   int      // range id
	rows int64    // rows in the batch
	last [][]byte // raw binary key fields of its last row; nil keeps the stored key
	done bool     // the range is finished
	// record writes the checkpoint; without it the transaction only
	// commits (a batch that found no row).
	record bool
	// beginNext opens the next batch's transaction at once.
	beginNext bool
}

// commitBatch ends the batch's transaction on conn: the checkpoint, COMMIT
// and, for the next batch, BEGIN go to the server in one round trip (a
// pipeline; after an error the server skips the rest, so a failed
// checkpoint never commits). It returns the stored last key in its text
// form, nil when there is none.
func commitBatch(ctx context.Context, conn *pgconn.PgConn, name string, t *mapping.Table, e batchEnd) ([]string, error) {
	p := conn.StartPipeline(ctx)
	if e.record {
		params := [][]byte{[]byte(name), []byte(t.Target.String()), []byte(strconv.Itoa(e.id)),
			[]byte(strconv.FormatInt(e.rows, 10)), []byte(strconv.FormatBool(e.done))}
		oids := []uint32{pgtype.TextOID, pgtype.TextOID, pgtype.Int4OID, pgtype.Int8OID, pgtype.BoolOID}
		formats := []int16{pgtype.TextFormatCode, pgtype.TextFormatCode, pgtype.TextFormatCode, pgtype.TextFormatCode, pgtype.TextFormatCode}
		for i, c := range t.KeyColumns() {
			if e.last == nil {
				break
			}
			params = append(params, e.last[i])
			oids = append(oids, c.TargetOID)
			formats = append(formats, pgtype.BinaryFormatCode)
		}
		p.SendQueryParams(checkpointSQL(t, e.last != nil), params, oids, formats, nil)
	}
	p.SendQueryParams("COMMIT", nil, nil, nil, nil)
	if e.beginNext {
		p.SendQueryParams("BEGIN", nil, nil, nil, nil)
	}
	fail := func(err error) ([]string, error) {
		_ = p.Close()
		return nil, fmt.Errorf("checkpoint range %d of %s: %w", e.id, t.Target, err)
	}
	if err := p.Sync(); err != nil {
		return fail(err)
	}
	var key []string
	if e.record {
		res, err := p.GetResults()
		if err != nil {
			return fail(err)
		}
		rr, ok := res.(*pgconn.ResultReader)
		if !ok {
			return fail(fmt.Errorf("unexpected pipeline result %T", res))
		}
		for rr.NextRow() {
			for _, v := range rr.Values() {
				if v == nil { // no key stored yet
					key = nil
					break
				}
				key = append(key, string(v))
			}
		}
		tag, err := rr.Close()
		if err == nil && tag.RowsAffected() != 1 {
			err = errors.New("its checkpoint row is gone (was it deleted while the backfill ran?)")
		}
		if err != nil {
			return fail(err)
		}
	}
	// The rest: COMMIT, BEGIN and the sync; Close reports their first
	// error.
	if err := p.Close(); err != nil {
		return nil, fmt.Errorf("commit batch of range %d of %s: %w", e.id, t.Target, err)
	}
	return key, nil
}
