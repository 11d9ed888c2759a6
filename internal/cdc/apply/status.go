package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/origins"
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
	// Publication is the source's publication; PublicationExists whether
	// it exists.
	Publication       string `json:"publication"`
	PublicationExists bool   `json:"publication_exists"`
	// TwoWay reports that something of a two-way sync exists: the reverse
	// slot or publication, a replication origin.
	TwoWay bool `json:"two_way"`
	// Reverse is the target-to-source direction of a two-way sync: its
	// slot and publication on the target.
	Reverse ReverseStatus `json:"reverse"`
	// Origins are the two replication origins of a two-way sync, each
	// looked up in the database its changes are applied to.
	Origins []OriginStatus `json:"origins"`
	// KeyHeadroom is, per sequence behind a key split into ranges, how
	// many values are left in its side's range (see EnsureDisjointKeys).
	// The ranges belong to the target's tables, not to one sync: they are
	// listed whatever the sync's name, and stay after cleanup.
	KeyHeadroom []SequenceHeadroom `json:"key_headroom"`
	// Tombstones counts, per side, the deleted keys two-way sync keeps
	// (last_update_wins), with their tables' triggers.
	Tombstones []TombstoneStatus `json:"tombstones,omitempty"`
}

// TombstoneStatus is what one side keeps of the keys its application
// deleted, for a two-way sync under last_update_wins.
type TombstoneStatus struct {
	// Database is "source" or "target".
	Database string `json:"database"`
	// Triggers is how many tables have the sync's tombstone trigger.
	Triggers int64 `json:"triggers"`
	// Keys is how many deleted keys are kept.
	Keys int64 `json:"keys"`
}

// ReverseStatus is the target-to-source direction of a two-way sync.
type ReverseStatus struct {
	// Slot is the slot on the target; SlotExists whether it exists,
	// SlotActive whether a sync streams from it.
	Slot       string `json:"slot"`
	SlotExists bool   `json:"slot_exists"`
	SlotActive bool   `json:"slot_active"`
	// WALStatus is the slot's pg_replication_slots.wal_status.
	WALStatus string `json:"wal_status,omitempty"`
	// TargetLSN is the target's current WAL position.
	TargetLSN string `json:"target_lsn"`
	// ConfirmedFlushLSN is what the slot has been told is applied to the
	// source; LagBytes the target's WAL beyond it.
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn,omitempty"`
	LagBytes          int64  `json:"lag_bytes"`
	// Publication is the target's publication; PublicationExists whether
	// it exists.
	Publication       string `json:"publication"`
	PublicationExists bool   `json:"publication_exists"`
}

// OriginStatus is one replication origin of a two-way sync.
type OriginStatus struct {
	// Name is the origin's name.
	Name string `json:"name"`
	// Database is the database whose cluster it is looked up in: "target"
	// for the changes applied to the target, "source" for the others.
	Database string `json:"database"`
	// Exists reports whether the cluster has it.
	Exists bool `json:"exists"`
	// RemoteLSN is how far in the other side's WAL the changes applied
	// under the origin go, and LocalLSN where their commit is in this
	// side's WAL (pg_replication_origin_status), when known.
	RemoteLSN string `json:"remote_lsn,omitempty"`
	LocalLSN  string `json:"local_lsn,omitempty"`
}

// syncObjects names what the sync called name creates. The names are
// those of two-way sync: the reverse direction's slot, publication and
// checkpoint are named NAME_to_source (its slot and publication on the
// target, its checkpoint in the source's datasync.sync_state), its
// origins datasync_NAME_to_target (in the target's cluster) and
// datasync_NAME_to_source (in the source's), and the repair origins
// origins.Repair of each.
type syncObjects struct {
	slot, publication               string // on the source
	reverseSlot, reversePublication string // on the target
	reverseCheckpoint               string // row of the source's datasync.sync_state
	originToTarget, originToSource  string
}

func objectsOf(name string) syncObjects {
	return syncObjects{
		slot: SlotName(name), publication: PublicationName(name),
		reverseSlot: SlotName(name + "_to_source"), reversePublication: PublicationName(name + "_to_source"),
		reverseCheckpoint: name + "_to_source",
		originToTarget:    origins.ToTarget(name), originToSource: origins.ToSource(name),
	}
}

// slotInfo is a slot as pg_replication_slots shows it.
type slotInfo struct {
	exists, active                bool
	walStatus, confirmed, current string
	lagBytes                      int64
}

func readSlot(ctx context.Context, pool *pgxpool.Pool, slot string) (slotInfo, error) {
	var si slotInfo
	var confirmed, walStatus *string
	var active *bool
	err := pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, s.confirmed_flush_lsn::text, s.wal_status, s.active,
			coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn), 0)::bigint
		FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`, slot).
		Scan(&si.current, &confirmed, &walStatus, &active, &si.lagBytes)
	if err != nil {
		return si, err
	}
	si.exists = active != nil
	if si.exists {
		si.active = *active
		si.confirmed = deref(confirmed)
		si.walStatus = deref(walStatus)
	}
	return si, nil
}

func publicationExists(ctx context.Context, pool *pgxpool.Pool, pub string) (bool, error) {
	var ok bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, pub).Scan(&ok)
	return ok, err
}

// readOrigin looks an origin up, with its progress when the server lets
// this user read pg_replication_origin_status.
func readOrigin(ctx context.Context, pool *pgxpool.Pool, db, name string) (OriginStatus, error) {
	o := OriginStatus{Name: name, Database: db}
	var id *int64
	if err := pool.QueryRow(ctx, `SELECT roident::int8 FROM (SELECT 1) one LEFT JOIN pg_replication_origin ON roname = $1`, name).Scan(&id); err != nil {
		return o, fmt.Errorf("status: look up replication origin %s in the %s: %w", name, db, err)
	}
	if id == nil {
		return o, nil
	}
	o.Exists = true
	var remote, local *string
	err := pool.QueryRow(ctx, `SELECT remote_lsn::text, local_lsn::text FROM pg_replication_origin_status WHERE local_id::int8 = $1`, *id).Scan(&remote, &local)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		// Progress is for superusers and roles granted the view.
	case err != nil:
		return o, fmt.Errorf("status: read progress of replication origin %s in the %s: %w", name, db, err)
	default:
		o.RemoteLSN, o.LocalLSN = deref(remote), deref(local)
	}
	return o, nil
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
	obj := objectsOf(name)
	st := &Status{Name: name, Slot: obj.slot, Tables: []TableStatus{}, Publication: obj.publication,
		Reverse: ReverseStatus{Slot: obj.reverseSlot, Publication: obj.reversePublication}}
	si, err := readSlot(ctx, src, st.Slot)
	if err != nil {
		return nil, fmt.Errorf("status: read slot: %w", err)
	}
	st.SourceLSN, st.LagBytes = si.current, si.lagBytes
	st.SlotExists, st.SlotActive, st.ConfirmedFlushLSN, st.WALStatus = si.exists, si.active, si.confirmed, si.walStatus
	if st.PublicationExists, err = publicationExists(ctx, src, st.Publication); err != nil {
		return nil, fmt.Errorf("status: read source publications: %w", err)
	}
	if err := readTwoWay(ctx, src, dst, obj, st); err != nil {
		return nil, err
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

// readTwoWay fills in the objects of a two-way sync: the reverse slot and
// publication on the target, the origins, the key headroom.
func readTwoWay(ctx context.Context, src, dst *pgxpool.Pool, obj syncObjects, st *Status) error {
	r := &st.Reverse
	si, err := readSlot(ctx, dst, r.Slot)
	if err != nil {
		return fmt.Errorf("status: read the target's slot %s: %w", r.Slot, err)
	}
	r.TargetLSN, r.SlotExists, r.SlotActive, r.WALStatus, r.ConfirmedFlushLSN, r.LagBytes =
		si.current, si.exists, si.active, si.walStatus, si.confirmed, si.lagBytes
	if r.PublicationExists, err = publicationExists(ctx, dst, r.Publication); err != nil {
		return fmt.Errorf("status: read target publications: %w", err)
	}
	st.Origins = []OriginStatus{}
	for _, o := range []struct {
		db   string
		pool *pgxpool.Pool
		name string
	}{{"target", dst, obj.originToTarget}, {"source", src, obj.originToSource},
		{"target", dst, origins.Repair(obj.originToTarget)}, {"source", src, origins.Repair(obj.originToSource)}} {
		os, err := readOrigin(ctx, o.pool, o.db, o.name)
		if err != nil {
			return err
		}
		st.Origins = append(st.Origins, os)
		st.TwoWay = st.TwoWay || os.Exists
	}
	if st.KeyHeadroom, err = KeyHeadroom(ctx, src, dst); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	for _, side := range []struct {
		db   string
		pool *pgxpool.Pool
	}{{"source", src}, {"target", dst}} {
		ts := TombstoneStatus{Database: side.db}
		var kept bool
		if err := side.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = $1), to_regclass('datasync.sync_tombstones') IS NOT NULL`,
			TombstoneTrigger(st.Name)).Scan(&ts.Triggers, &kept); err != nil {
			return fmt.Errorf("status: read tombstones in the %s: %w", side.db, err)
		}
		if kept {
			if err := side.pool.QueryRow(ctx, `SELECT count(*) FROM datasync.sync_tombstones WHERE name = $1`, st.Name).Scan(&ts.Keys); err != nil {
				return fmt.Errorf("status: read tombstones in the %s: %w", side.db, err)
			}
		}
		if ts.Triggers > 0 || ts.Keys > 0 {
			st.Tombstones = append(st.Tombstones, ts)
		}
	}
	st.TwoWay = st.TwoWay || r.SlotExists || r.PublicationExists
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// ErrSyncRunning is returned by Cleanup while a sync uses the slot or an
// origin.
var ErrSyncRunning = errors.New("sync is running")

// CleanupReport lists what Cleanup dropped, one line each.
type CleanupReport struct {
	Dropped []string `json:"dropped"`
}

// Cleanup drops what the sync called name created, as DropSync does, and
// returns only the error.
func Cleanup(ctx context.Context, src, dst *pgxpool.Pool, name string) error {
	_, err := DropSync(ctx, src, dst, name)
	return err
}

// DropSync drops what the sync called name created, one-way or two-way:
// the slots and publications on both sides, the replication origins in
// both clusters, the tombstone triggers and tombstones, and the checkpoints (the target's for the forward
// direction, the source's for the reverse one). What never existed is
// skipped. The tables and their rows stay, and so do the ranges of
// sequences split for two-way sync, with their record in
// datasync.key_ranges: they keep the sides' ids apart and cost nothing.
// It fails while a sync is connected.
func DropSync(ctx context.Context, src, dst *pgxpool.Pool, name string) (*CleanupReport, error) {
	obj := objectsOf(name)
	rep := &CleanupReport{Dropped: []string{}}
	// A running sync holds its lock from before it creates anything until
	// it stops: even in its first copy, when its slot may not be active.
	for _, side := range []struct {
		db   string
		pool *pgxpool.Pool
	}{{"target", dst}, {"source", src}} {
		who, running, err := runningHolder(ctx, side.pool, side.db, name)
		if err != nil {
			return rep, fmt.Errorf("cleanup: %w", err)
		}
		if running {
			return rep, fmt.Errorf("cleanup: sync %s is running (%s): stop it first; nothing was dropped: %w", name, who, ErrAlreadyRunning)
		}
	}
	for _, sl := range []struct {
		db   string
		pool *pgxpool.Pool
		slot string
	}{{"source", src, obj.slot}, {"target", dst, obj.reverseSlot}} {
		dropped, err := dropSlot(ctx, sl.pool, sl.db, sl.slot)
		if err != nil {
			return rep, err
		}
		if dropped {
			rep.Dropped = append(rep.Dropped, fmt.Sprintf("replication slot %s on the %s", sl.slot, sl.db))
		}
	}
	for _, pb := range []struct {
		db   string
		pool *pgxpool.Pool
		pub  string
	}{{"source", src, obj.publication}, {"target", dst, obj.reversePublication}} {
		ok, err := publicationExists(ctx, pb.pool, pb.pub)
		if err != nil {
			return rep, fmt.Errorf("cleanup: read %s publications: %w", pb.db, err)
		}
		if !ok {
			continue
		}
		if _, err := pb.pool.Exec(ctx, "DROP PUBLICATION IF EXISTS "+mapping.QuoteIdent(pb.pub)); err != nil {
			return rep, fmt.Errorf("cleanup: drop publication %s on the %s: %w", pb.pub, pb.db, err)
		}
		rep.Dropped = append(rep.Dropped, fmt.Sprintf("publication %s on the %s", pb.pub, pb.db))
	}
	for _, db := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"target", dst}, {"source", src}} {
		dropped, err := dropTombstones(ctx, db.pool, db.name, name)
		rep.Dropped = append(rep.Dropped, dropped...)
		if err != nil {
			return rep, err
		}
	}
	// Each origin is looked for in both clusters: they are one cluster
	// when both databases are on the same server.
	for _, db := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"target", dst}, {"source", src}} {
		for _, origin := range []string{obj.originToTarget, obj.originToSource, origins.Repair(obj.originToTarget), origins.Repair(obj.originToSource)} {
			dropped, err := dropOrigin(ctx, db.pool, db.name, origin)
			if err != nil {
				return rep, err
			}
			if dropped {
				rep.Dropped = append(rep.Dropped, fmt.Sprintf("replication origin %s in the %s's cluster", origin, db.name))
			}
		}
	}
	for _, cp := range []struct {
		db   string
		pool *pgxpool.Pool
		name string
	}{{"target", dst, name}, {"source", src, obj.reverseCheckpoint}} {
		n, err := deleteCheckpoints(ctx, cp.pool, cp.name)
		if err != nil {
			return rep, fmt.Errorf("cleanup: %s: %w", cp.db, err)
		}
		if n > 0 {
			rep.Dropped = append(rep.Dropped, fmt.Sprintf("checkpoints of %s in the %s's datasync schema", cp.name, cp.db))
		}
	}
	// The checkpoints of a first copy cut short.
	if _, err := dst.Exec(ctx, `DO $$BEGIN IF to_regclass('datasync.backfill_progress') IS NOT NULL THEN
		DELETE FROM datasync.backfill_progress WHERE name = `+mapping.QuoteLiteral(copyName(name))+`; END IF; END$$`); err != nil {
		return rep, fmt.Errorf("cleanup: delete first-copy checkpoints: %w", err)
	}
	return rep, nil
}

// dropSlot drops a slot if it exists, waiting a moment for the server
// process of a sync that just stopped to let go of it.
func dropSlot(ctx context.Context, pool *pgxpool.Pool, db, slot string) (bool, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pid *int32
		err := pool.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&pid)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("cleanup: look up slot %s on the %s: %w", slot, db, err)
		case pid != nil && time.Now().Before(deadline):
			select {
			case <-ctx.Done():
				return false, fmt.Errorf("cleanup: %w", ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			continue
		case pid != nil:
			return false, fmt.Errorf("cleanup: slot %s on the %s is in use by process %d: stop the sync first: %w", slot, db, *pid, ErrSyncRunning)
		}
		if _, err := pool.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, slot); err != nil {
			return false, fmt.Errorf("cleanup: drop slot %s on the %s: %w", slot, db, err)
		}
		return true, nil
	}
}

// dropOrigin drops a replication origin if the cluster has it, waiting a
// moment for a session that just stopped to let go of it.
func dropOrigin(ctx context.Context, pool *pgxpool.Pool, db, origin string) (bool, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)`, origin).Scan(&exists); err != nil {
			return false, fmt.Errorf("cleanup: look up replication origin %s in the %s's cluster: %w", origin, db, err)
		}
		if !exists {
			return false, nil
		}
		_, err := pool.Exec(ctx, `SELECT pg_replication_origin_drop($1)`, origin)
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			return true, nil
		case errors.As(err, &pgErr) && pgErr.Code == "42704":
			return false, nil // dropped meanwhile
		case errors.As(err, &pgErr) && pgErr.Code == "55006" && time.Now().Before(deadline):
			select {
			case <-ctx.Done():
				return false, fmt.Errorf("cleanup: %w", ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		case errors.As(err, &pgErr) && pgErr.Code == "55006":
			return false, fmt.Errorf("cleanup: replication origin %s in the %s's cluster is in use: stop the sync first: %w", origin, db, ErrSyncRunning)
		default:
			return false, fmt.Errorf("cleanup: drop replication origin %s in the %s's cluster: %w", origin, db, err)
		}
	}
}

// deleteCheckpoints deletes the rows of the sync (or direction) called
// name from a database's datasync.sync_state and sync_tables, where they
// exist.
func deleteCheckpoints(ctx context.Context, pool *pgxpool.Pool, name string) (int64, error) {
	var state, tables bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('datasync.sync_state') IS NOT NULL, to_regclass('datasync.sync_tables') IS NOT NULL`).Scan(&state, &tables); err != nil {
		return 0, fmt.Errorf("read the datasync schema: %w", err)
	}
	var n int64
	if state {
		tag, err := pool.Exec(ctx, `DELETE FROM datasync.sync_state WHERE name = $1`, name)
		if err != nil {
			return n, fmt.Errorf("delete checkpoint: %w", err)
		}
		n += tag.RowsAffected()
	}
	if tables {
		tag, err := pool.Exec(ctx, `DELETE FROM datasync.sync_tables WHERE name = $1`, name)
		if err != nil {
			return n, fmt.Errorf("delete copy records: %w", err)
		}
		n += tag.RowsAffected()
	}
	return n, nil
}
