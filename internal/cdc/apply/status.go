package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// Status is the state of a sync, read from both databases.
type Status struct {
	// Name is the sync's name.
	Name string `json:"name"`
	// Slot is the replication slot's name; SlotExists whether it exists.
	Slot       string `json:"slot"`
	SlotExists bool   `json:"slot_exists"`
	// SlotActive reports whether a sync is connected to the slot.
	SlotActive bool `json:"slot_active"`
	// WALStatus is pg_replication_slots.wal_status: reserved, extended,
	// unreserved or lost.
	WALStatus string `json:"wal_status,omitempty"`
	// SourceLSN is the source's current WAL position.
	SourceLSN string `json:"source_lsn"`
	// ConfirmedFlushLSN is what the slot has been told is applied.
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	// LagBytes is the WAL between the source's position and the slot's
	// confirmed position.
	LagBytes int64 `json:"lag_bytes"`
	// LagSeconds is how long ago the sync last applied anything, while it
	// lags; 0 when caught up.
	LagSeconds float64 `json:"lag_seconds"`
	// AppliedLSN is the end LSN of the last source transaction applied.
	AppliedLSN string `json:"applied_lsn,omitempty"`
	// LastApply is when the target last committed applied changes.
	LastApply *time.Time `json:"last_apply,omitempty"`
	// LastCommitTime is the source commit time of the last transaction
	// applied.
	LastCommitTime *time.Time `json:"last_commit_time,omitempty"`
	// Tables lists the copied tables.
	Tables []TableStatus `json:"tables"`
}

// TableStatus is the initial copy of one table.
type TableStatus struct {
	// Target is the target table.
	Target string `json:"target"`
	// CopiedLSN is the snapshot position the table was copied at.
	CopiedLSN string `json:"copied_lsn"`
	// CopiedRows is how many rows the copy wrote.
	CopiedRows int64 `json:"copied_rows"`
	// CopiedAt is when the copy committed.
	CopiedAt time.Time `json:"copied_at"`
}

// GetStatus reads the status of the sync called name.
func GetStatus(ctx context.Context, src, dst *pgxpool.Pool, name string) (*Status, error) {
	st := &Status{Name: name, Slot: SlotName(name), Tables: []TableStatus{}}
	var confirmed, walStatus *string
	var active *bool
	err := src.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, s.confirmed_flush_lsn::text, s.wal_status, s.active,
			coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn), 0)::bigint
		FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`, st.Slot).
		Scan(&st.SourceLSN, &confirmed, &walStatus, &active, &st.LagBytes)
	if err != nil {
		return nil, fmt.Errorf("status: read slot: %w", err)
	}
	st.SlotExists = active != nil
	if st.SlotExists {
		st.SlotActive = *active
		st.ConfirmedFlushLSN = deref(confirmed)
		st.WALStatus = deref(walStatus)
	}
	var schema bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.sync_state') IS NOT NULL`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("status: read target: %w", err)
	}
	if !schema {
		return st, nil
	}
	var applied string
	var lastApply, lastCommit *time.Time
	var lagSeconds float64
	err = dst.QueryRow(ctx, `SELECT applied_lsn::text, updated_at, last_commit_time, extract(epoch FROM now() - updated_at)::float8
		FROM datasync.sync_state WHERE name = $1`, name).Scan(&applied, &lastApply, &lastCommit, &lagSeconds)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("status: read sync state: %w", err)
	default:
		st.AppliedLSN, st.LastApply, st.LastCommitTime = applied, lastApply, lastCommit
		if st.LagBytes > 0 {
			st.LagSeconds = max(0, lagSeconds)
		}
	}
	rows, err := dst.Query(ctx, `SELECT target_table, copied_lsn::text, copied_rows, copied_at
		FROM datasync.sync_tables WHERE name = $1 ORDER BY target_table`, name)
	if err != nil {
		return nil, fmt.Errorf("status: read copied tables: %w", err)
	}
	st.Tables, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (TableStatus, error) {
		var t TableStatus
		err := r.Scan(&t.Target, &t.CopiedLSN, &t.CopiedRows, &t.CopiedAt)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("status: read copied tables: %w", err)
	}
	return st, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ErrSyncRunning is returned by Cleanup while a sync uses the slot.
var ErrSyncRunning = errors.New("sync is running")

// Cleanup drops what the sync called name created: its slot and
// publication on the source, its checkpoints in the target. The target
// tables and their rows stay. It fails while a sync is connected.
func Cleanup(ctx context.Context, src, dst *pgxpool.Pool, name string) error {
	slot := SlotName(name)
	// A sync that just stopped leaves its server process for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pid *int32
		err := src.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return fmt.Errorf("cleanup: look up slot %s: %w", slot, err)
		case pid != nil && time.Now().Before(deadline):
			select {
			case <-ctx.Done():
				return fmt.Errorf("cleanup: %w", ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			continue
		case pid != nil:
			return fmt.Errorf("cleanup: slot %s is in use by process %d: stop the sync first: %w", slot, *pid, ErrSyncRunning)
		default:
			if _, err := src.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
				return fmt.Errorf("cleanup: drop slot %s: %w", slot, err)
			}
		}
		break
	}
	if _, err := src.Exec(ctx, "DROP PUBLICATION IF EXISTS "+mapping.QuoteIdent(PublicationName(name))); err != nil {
		return fmt.Errorf("cleanup: drop publication: %w", err)
	}
	var schema bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.sync_state') IS NOT NULL`).Scan(&schema); err != nil {
		return fmt.Errorf("cleanup: read target: %w", err)
	}
	if schema {
		if _, err := dst.Exec(ctx, `DELETE FROM datasync.sync_state WHERE name = $1`, name); err != nil {
			return fmt.Errorf("cleanup: delete checkpoint: %w", err)
		}
		if _, err := dst.Exec(ctx, `DELETE FROM datasync.sync_tables WHERE name = $1`, name); err != nil {
			return fmt.Errorf("cleanup: delete copy records: %w", err)
		}
	}
	// The checkpoints of a first copy cut short.
	if _, err := dst.Exec(ctx, `DO $$BEGIN IF to_regclass('datasync.backfill_progress') IS NOT NULL THEN
		DELETE FROM datasync.backfill_progress WHERE name = `+mapping.QuoteLiteral(copyName(name))+`; END IF; END$$`); err != nil {
		return fmt.Errorf("cleanup: delete first-copy checkpoints: %w", err)
	}
	return nil
}
