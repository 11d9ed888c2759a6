package apply

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc"
)

// stateSchema creates the target's bookkeeping: the applied LSN per sync,
// and which tables have had their initial copy, at which LSN, under which
// mapping (see tableSignature; NULL for copies made before it was kept).
const stateSchema = `
CREATE SCHEMA IF NOT EXISTS datasync;
CREATE TABLE IF NOT EXISTS datasync.sync_state (
	name text PRIMARY KEY,
	applied_lsn pg_lsn NOT NULL,
	last_commit_time timestamptz,
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS datasync.sync_tables (
	name text NOT NULL,
	target_table text NOT NULL,
	copied_lsn pg_lsn NOT NULL,
	copied_rows bigint NOT NULL,
	copied_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (name, target_table)
);
ALTER TABLE datasync.sync_tables ADD COLUMN IF NOT EXISTS mapping text;`

var nameRE = regexp.MustCompile(`^[a-z0-9_]{1,54}$`)

// ValidName reports whether name can name a sync: lower-case letters,
// digits and underscores, at most 54 of them (the slot and publication
// names add a prefix).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// SlotName is the replication slot of the sync called name.
func SlotName(name string) string { return "datasync_" + name }

// PublicationName is the publication of the sync called name.
func PublicationName(name string) string { return "datasync_" + name }

// state is what the target knows of a sync.
type state struct {
	exists  bool
	applied cdc.LSN
	copied  map[string]cdc.LSN // target table → LSN of its copy
	mapped  map[string]string  // target table → tableSignature of its copy, when known
}

func ensureStateSchema(ctx context.Context, pool *pgxpool.Pool) error {
	if _, err := pool.Exec(ctx, stateSchema); err != nil {
		return fmt.Errorf("create datasync schema in target: %w", err)
	}
	return nil
}

func loadState(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, name string) (state, error) {
	st := state{copied: map[string]cdc.LSN{}, mapped: map[string]string{}}
	var applied string
	err := q.QueryRow(ctx, `SELECT applied_lsn::text FROM datasync.sync_state WHERE name = $1`, name).Scan(&applied)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return st, fmt.Errorf("read sync state: %w", err)
	default:
		st.exists = true
		if st.applied, err = cdc.ParseLSN(applied); err != nil {
			return st, fmt.Errorf("read sync state: %w", err)
		}
	}
	rows, err := q.Query(ctx, `SELECT target_table, copied_lsn::text, mapping FROM datasync.sync_tables WHERE name = $1`, name)
	if err != nil {
		return st, fmt.Errorf("read copied tables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, lsn string
		var sig *string
		if err := rows.Scan(&table, &lsn, &sig); err != nil {
			return st, fmt.Errorf("read copied tables: %w", err)
		}
		l, err := cdc.ParseLSN(lsn)
		if err != nil {
			return st, fmt.Errorf("read copied tables: %w", err)
		}
		st.copied[table] = l
		if sig != nil {
			st.mapped[table] = *sig
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("read copied tables: %w", err)
	}
	return st, nil
}

const upsertStateSQL = `INSERT INTO datasync.sync_state (name, applied_lsn, last_commit_time, updated_at)
	VALUES ($1, $2::text::pg_lsn, $3, now())
	ON CONFLICT (name) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn,
		last_commit_time = coalesce(EXCLUDED.last_commit_time, datasync.sync_state.last_commit_time),
		updated_at = now()`
