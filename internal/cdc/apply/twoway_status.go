package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TwoWayStatus is what datasync status adds for a two-way sync: the
// reverse direction's slot and checkpoint, the conflicts met and the
// changes parked.
type TwoWayStatus struct {
	// ReverseSlot is the target's slot of the target → source stream.
	ReverseSlot       string `json:"reverse_slot"`
	ReverseSlotExists bool   `json:"reverse_slot_exists"`
	ReverseSlotActive bool   `json:"reverse_slot_active"`
	// ReverseLagBytes is the target's WAL beyond what the reverse slot was
	// told is applied.
	ReverseLagBytes int64 `json:"reverse_lag_bytes"`
	// ReverseAppliedLSN is the target position applied to the source.
	ReverseAppliedLSN string `json:"reverse_applied_lsn,omitempty"`
	// Conflicts counts conflicts by direction, table, kind and resolution.
	Conflicts []ConflictCount `json:"conflicts"`
	// RecentConflicts are the last conflicts met, newest first (at most 10
	// per side).
	RecentConflicts []ConflictRecord `json:"recent_conflicts"`
	// Parked lists the parked changes.
	Parked []ParkedChange `json:"parked"`
}

// ConflictCount is how many conflicts of one kind a direction met in a
// table.
type ConflictCount struct {
	Direction  string `json:"direction"`
	Table      string `json:"table"`
	Kind       string `json:"kind"`
	Resolution string `json:"resolution"`
	Count      int64  `json:"count"`
}

// ConflictRecord is one stored conflict.
type ConflictRecord struct {
	Direction string `json:"direction"`
	Table     string `json:"table"`
	Kind      string `json:"kind"`
	Key       string `json:"key"`
	// LocalCommitTime is the commit time of the row's last writer on the
	// side the change was applied to; RemoteCommitTime the incoming
	// change's.
	LocalCommitTime  *time.Time `json:"local_commit_time,omitempty"`
	RemoteCommitTime *time.Time `json:"remote_commit_time,omitempty"`
	Resolution       string     `json:"resolution"`
	DetectedAt       time.Time  `json:"detected_at"`
}

// GetTwoWayStatus reads the two-way part of the status of the sync called
// name; nil when neither side has a trace of a two-way sync of that name.
func GetTwoWayStatus(ctx context.Context, sides Sides, name string) (*TwoWayStatus, error) {
	st := &TwoWayStatus{ReverseSlot: SlotName(ReverseName(name))}
	found := false
	var active *int32
	err := sides.Target.QueryRow(ctx, `SELECT active_pid, greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::int8
		FROM pg_replication_slots WHERE slot_name = $1`, st.ReverseSlot).Scan(&active, &st.ReverseLagBytes)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return nil, fmt.Errorf("status: read reverse slot: %w", err)
	default:
		found, st.ReverseSlotExists, st.ReverseSlotActive = true, true, active != nil
	}
	err = sides.each(func(side string, pool *pgxpool.Pool) error {
		if side == "source" {
			var lsn string
			err := pool.QueryRow(ctx, `SELECT applied_lsn::text FROM datasync.sync_state WHERE name = $1`, ReverseName(name)).Scan(&lsn)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("status: read reverse checkpoint: %w", err)
			}
			st.ReverseAppliedLSN = lsn
			found = found || lsn != ""
		}
		rows, err := pool.Query(ctx, `SELECT direction, table_name, kind, resolution, count(*) FROM datasync.sync_conflicts
			WHERE name = $1 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4`, name)
		if err != nil {
			return fmt.Errorf("status: read conflicts in %s: %w", side, err)
		}
		counts, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ConflictCount])
		if err != nil {
			return fmt.Errorf("status: read conflicts in %s: %w", side, err)
		}
		st.Conflicts = append(st.Conflicts, counts...)
		found = found || len(counts) > 0
		rows, err = pool.Query(ctx, `SELECT direction, table_name, kind, key, local_commit_time, remote_commit_time, resolution, detected_at
			FROM datasync.sync_conflicts WHERE name = $1 ORDER BY id DESC LIMIT 10`, name)
		if err != nil {
			return fmt.Errorf("status: read conflicts in %s: %w", side, err)
		}
		recent, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ConflictRecord])
		if err != nil {
			return fmt.Errorf("status: read conflicts in %s: %w", side, err)
		}
		st.RecentConflicts = append(st.RecentConflicts, recent...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.Parked, err = ListParked(ctx, sides, name); err != nil {
		return nil, err
	}
	if !found && len(st.Parked) == 0 {
		return nil, nil
	}
	return st, nil
}
