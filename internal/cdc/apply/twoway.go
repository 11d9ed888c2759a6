package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/origins"
)

// Conflict policies of two-way sync (Config.Conflicts).
const (
	// LastUpdateWins keeps the row of the later commit; on equal commit
	// times the source's. It is the default.
	LastUpdateWins = "last_update_wins"
	// SourceWins keeps the source's row.
	SourceWins = "source_wins"
	// TargetWins keeps the target's row.
	TargetWins = "target_wins"
)

// twoWayError is a refusal to start two-way sync; it counts as a preflight
// error (exit 2, nothing created).
func twoWayError(format string, args ...any) error {
	return &mapping.PreflightError{Problems: []string{fmt.Sprintf(format, args...)}}
}

// ValidConflictPolicy reports whether p names a conflict policy.
func ValidConflictPolicy(p string) bool {
	return p == LastUpdateWins || p == SourceWins || p == TargetWins
}

// MaxTwoWayNameLen is the longest sync name two-way sync accepts: the
// reverse slot datasync_NAME_to_source must fit PostgreSQL's 63 characters.
const MaxTwoWayNameLen = 44

// ReverseName is the name under which the reverse direction of the two-way
// sync called name keeps its slot and publication on the target
// (datasync_NAME_to_source) and its checkpoint, the row NAME_to_source of
// datasync.sync_state in the source.
func ReverseName(name string) string { return name + "_to_source" }

// Directions of a two-way sync, as stored and logged.
const (
	dirToTarget = "to_target"
	dirToSource = "to_source"
)

// direction is what a syncer needs to know when it is one of the two
// directions of a two-way sync.
type direction struct {
	// name is the two-way sync's name (not the reverse syncer's).
	name string
	// label is dirToTarget or dirToSource.
	label string
	// fromSource is set for the forward direction: the changes come from
	// the source.
	fromSource bool
	// origin is the replication origin the apply sessions run under; ours
	// its id in the applying side's cluster.
	origin string
	ours   uint32
	// repair is the id of the origin under which datasync verify
	// --two-way --repair writes into the same side (origins.Repair): its
	// rows, like those of ours, are copies of the other side's.
	repair uint32
	// skip lists the origins whose transactions the stream drops.
	skip []string
	// policy is the conflict policy.
	policy string
	// ready is closed once the forward direction has finished its initial
	// copy; the reverse direction streams only after that.
	ready chan struct{}
	// pending holds the conflicts met in the target transaction being
	// built; they are stored with it and reported once it commits.
	pending []conflict
	// statements caches the two-way statements.
	statements map[stmtKey]string
	// slowBatches is how many more batches are applied with the
	// conflict-aware statements straight away (see apply).
	slowBatches int
	// slow is the commit LSN of a large transaction to apply change by
	// change, since the target refused one of its changes.
	slow cdc.LSN
	// nextRetryCheck is when the parked changes marked for retry are
	// looked for next.
	nextRetryCheck time.Time
	// nextPrune is when old tombstones are pruned next.
	nextPrune time.Time
	// lock is the two-way sync's run lock, held by runTwoWay for both
	// directions.
	lock *runLock
}

// side names the side a direction applies into.
func (d *direction) side() string {
	if d.fromSource {
		return "target"
	}
	return "source"
}

// otherSide names the side a direction's changes come from.
func (d *direction) otherSide() string {
	if d.fromSource {
		return "source"
	}
	return "target"
}

// twoWaySchema is created in both databases: conflicts as detected by the
// direction applying into that database, and the changes it parked.
const twoWaySchema = `
CREATE SCHEMA IF NOT EXISTS datasync;
CREATE TABLE IF NOT EXISTS datasync.sync_conflicts (
	id bigserial PRIMARY KEY,
	name text NOT NULL,
	direction text NOT NULL,
	table_name text NOT NULL,
	kind text NOT NULL,
	key text NOT NULL,
	local_commit_time timestamptz,
	remote_commit_time timestamptz,
	resolution text NOT NULL,
	commit_lsn pg_lsn,
	detected_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS datasync.sync_parked (
	id bigserial PRIMARY KEY,
	name text NOT NULL,
	direction text NOT NULL,
	table_name text NOT NULL,
	op text NOT NULL,
	key text NOT NULL,
	statement text NOT NULL,
	args text[] NOT NULL,
	reason text NOT NULL,
	sqlstate text,
	commit_lsn pg_lsn,
	commit_time timestamptz,
	parked_at timestamptz NOT NULL DEFAULT now(),
	retry_requested boolean NOT NULL DEFAULT false,
	attempts int NOT NULL DEFAULT 0
);`

// checkTwoWaySettings refuses two-way sync unless both servers keep commit
// timestamps (conflict detection reads them) and the target, whose changes
// are streamed too, runs with wal_level=logical.
func checkTwoWaySettings(ctx context.Context, src, dst *pgxpool.Pool) error {
	var problems []string
	for _, side := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"source", src}, {"target", dst}} {
		var tct, level string
		if err := side.pool.QueryRow(ctx, `SELECT current_setting('track_commit_timestamp'), current_setting('wal_level')`).Scan(&tct, &level); err != nil {
			return fmt.Errorf("read %s settings: %w", side.name, err)
		}
		if tct != "on" {
			problems = append(problems, fmt.Sprintf("%s track_commit_timestamp is %s, but two-way sync detects conflicts by commit timestamp: set track_commit_timestamp = on (ALTER SYSTEM SET track_commit_timestamp = on) and restart the %s server", side.name, tct, side.name))
		}
		if level != "logical" {
			problems = append(problems, fmt.Sprintf("%s wal_level is %q, but two-way sync streams both sides' changes: set wal_level = logical and restart the %s server", side.name, level, side.name))
		}
	}
	if len(problems) > 0 {
		return &mapping.PreflightError{Problems: problems}
	}
	return nil
}

// reverseSpecs turns the resolved forward mappings into the specs of the
// reverse direction: from the target table to the source table, over the
// same columns and key.
func reverseSpecs(tables []*mapping.Table) []mapping.TableSpec {
	out := make([]mapping.TableSpec, len(tables))
	for i, t := range tables {
		spec := mapping.TableSpec{Source: t.Target.String(), Target: t.Source.String(), Columns: map[string]string{}}
		for _, c := range t.Columns {
			spec.Columns[c.Source] = c.Target
		}
		for _, k := range t.KeyColumns() {
			spec.Key = append(spec.Key, k.Target)
		}
		out[i] = spec
	}
	return out
}

// fullIdentity sets REPLICA IDENTITY FULL on the tables whose changes a
// side streams, so that updates and deletes carry the whole old row that
// conflict detection compares with the local row. Each change is logged.
//
// A table already in the publication pub (a one-way sync switched to two
// ways) is published there with a column list, which PostgreSQL refuses
// under REPLICA IDENTITY FULL unless it names every column: the
// application's updates would fail. Its entry is replaced by one without a
// list in the same transaction, so that no change goes unpublished and no
// update is refused.
func fullIdentity(ctx context.Context, pool *pgxpool.Pool, side, pub string, tables []*mapping.Table, log interface {
	Info(string, ...any)
}) error {
	for _, t := range tables {
		if t.SourceReplicaIdentity == 'f' {
			continue
		}
		sql := "ALTER TABLE " + t.Source.Quoted() + " REPLICA IDENTITY FULL"
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
			var in bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
				WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`, pub, t.Source.Schema, t.Source.Name).Scan(&in); err != nil {
				return err
			}
			if !in {
				return nil
			}
			for _, stmt := range []string{"DROP TABLE ", "ADD TABLE "} {
				if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+mapping.QuoteIdent(pub)+" "+stmt+t.Source.Quoted()); err != nil {
					return err
				}
			}
			log.Info("changed the "+side+" database for two-way sync: the table is published with all its columns, as REPLICA IDENTITY FULL needs",
				"publication", pub, "table", t.Source.String())
			return nil
		})
		if err != nil {
			return fmt.Errorf("set the replica identity of %s table %s: %w", side, t.Source, err)
		}
		log.Info("changed the "+side+" database for two-way sync: updates and deletes now carry the whole old row, which conflict detection compares", "statement", sql)
		t.SourceReplicaIdentity = 'f'
	}
	return nil
}

// ensureOrigin creates the replication origin if missing, logging it, and
// returns its id.
func ensureOrigin(ctx context.Context, pool *pgxpool.Pool, side, origin string, log interface {
	Info(string, ...any)
}) (uint32, error) {
	var id *uint32
	if err := pool.QueryRow(ctx, `SELECT pg_replication_origin_oid($1)::int8`, origin).Scan(&id); err != nil {
		return 0, fmt.Errorf("look up replication origin %s: %w", origin, err)
	}
	if id != nil {
		return *id, nil
	}
	var created uint32
	if err := pool.QueryRow(ctx, `SELECT pg_replication_origin_create($1)::int8`, origin).Scan(&created); err != nil {
		return 0, fmt.Errorf("create replication origin %s in the %s cluster: %w", origin, side, err)
	}
	log.Info("created a replication origin in the "+side+" cluster: changes applied under it are not sent back", "origin", origin)
	return created, nil
}

// originPool opens a pool of one connection whose session runs under the
// replication origin: everything it commits carries the origin, which the
// other direction's stream drops. PostgreSQL 15 lets one session at a time
// use an origin; a server process of a connection just lost may still hold
// it for a moment, so the set-up is retried for a while.
func originPool(ctx context.Context, url, origin string) (*pgxpool.Pool, error) {
	pc, err := dbconn.PoolConfig("database", url, "datasync sync")
	if err != nil {
		return nil, err
	}
	pc.MaxConns = 1
	// The apply statements look rows up by key, which a generic plan does
	// as well as a custom one; without this the server plans each of them
	// anew at every execution, their generic plan's estimate being higher.
	pc.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, err := c.Exec(ctx, `SELECT pg_replication_origin_session_setup($1)`, origin)
			var pgErr *pgconn.PgError
			if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
				if err != nil {
					return fmt.Errorf("run the session under replication origin %s: %w", origin, err)
				}
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

// runTwoWay runs both directions of a two-way sync in one process: the
// forward stream (source → target, as a one-way sync does, with the
// initial copy) and the reverse stream (target → source). Either failing
// stops the other; the first error is returned.
func runTwoWay(ctx context.Context, cfg Config) error {
	if !ValidName(cfg.Name) || len(cfg.Name) > MaxTwoWayNameLen {
		return fmt.Errorf("sync: name %q: two-way sync needs lower-case letters, digits and _ (at most %d, to fit the reverse slot name datasync_NAME_to_source)", cfg.Name, MaxTwoWayNameLen)
	}
	if cfg.Conflicts == "" {
		cfg.Conflicts = LastUpdateWins
	}
	if !ValidConflictPolicy(cfg.Conflicts) {
		return fmt.Errorf("sync: conflicts %q: use last_update_wins, source_wins or target_wins", cfg.Conflicts)
	}
	for _, spec := range cfg.Tables {
		if spec.Where != "" {
			return twoWayError("table %s has a where filter: two-way sync applies every row both ways, so a filter would make the sides differ; remove it or sync this table one way", spec.Source)
		}
	}
	fillDefaults(&cfg)
	log := cfg.Logger.With("sync", cfg.Name)

	// One sync per name, checked before anything is created or dropped;
	// both directions run under this lock.
	lock, err := acquireRunLock(ctx, cfg)
	if err != nil {
		return err
	}
	defer lock.release()
	src, err := dbconn.Open(ctx, "source", cfg.Source, "datasync sync", nil)
	if err != nil {
		return fmt.Errorf("connect source: %w", err)
	}
	defer src.Close()
	dst, err := dbconn.Open(ctx, "target", cfg.Target, "datasync sync", nil)
	if err != nil {
		return fmt.Errorf("connect target: %w", err)
	}
	defer dst.Close()
	// Everything is checked before anything is created or changed.
	if err := checkTwoWaySettings(ctx, src, dst); err != nil {
		return err
	}
	fwdTables, err := mapping.ResolveAll(ctx, src, dst, cfg.Tables)
	if err != nil {
		return err
	}
	revTables, err := mapping.ResolveAll(ctx, dst, src, reverseSpecs(fwdTables))
	if err != nil {
		return fmt.Errorf("the target tables must also fit the source tables, for the changes made in the target: %w", err)
	}
	// Before the first two-way write, the sides' sequence-backed keys are
	// made disjoint (or found to be), so that no id is handed out twice.
	if _, err := EnsureDisjointKeys(ctx, src, dst, fwdTables, log); err != nil {
		return err
	}
	// Checked after the keys (a split range is kept, and harmless), before
	// anything of the sync is created.
	if err := checkFirstCopyKeepsNothing(ctx, dst, cfg.Name, fwdTables); err != nil {
		return err
	}
	var revStart string
	if err := dst.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&revStart); err != nil {
		return fmt.Errorf("read target WAL position: %w", err)
	}
	revCaughtUpAt, err := cdc.ParseLSN(revStart)
	if err != nil {
		return err
	}

	if err := fullIdentity(ctx, src, "source", PublicationName(cfg.Name), fwdTables, log); err != nil {
		return err
	}
	if err := fullIdentity(ctx, dst, "target", PublicationName(ReverseName(cfg.Name)), revTables, log); err != nil {
		return err
	}
	toTarget, err := ensureOrigin(ctx, dst, "target", origins.ToTarget(cfg.Name), log)
	if err != nil {
		return err
	}
	toSource, err := ensureOrigin(ctx, src, "source", origins.ToSource(cfg.Name), log)
	if err != nil {
		return err
	}
	for _, side := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"source", src}, {"target", dst}} {
		if err := ensureStateSchema(ctx, side.pool); err != nil {
			return err
		}
		if _, err := side.pool.Exec(ctx, twoWaySchema); err != nil {
			return fmt.Errorf("create datasync schema in %s: %w", side.name, err)
		}
	}
	if cfg.Conflicts == LastUpdateWins {
		if err := installTombstones(ctx, src, "source", cfg.Name, fwdTables, log); err != nil {
			return err
		}
		if err := installTombstones(ctx, dst, "target", cfg.Name, revTables, log); err != nil {
			return err
		}
	} else if err := dropTombstonesOf(ctx, src, dst, cfg.Name, log); err != nil {
		return err
	}
	repairToTarget, err := ensureOrigin(ctx, dst, "target", origins.Repair(origins.ToTarget(cfg.Name)), log)
	if err != nil {
		return err
	}
	repairToSource, err := ensureOrigin(ctx, src, "source", origins.Repair(origins.ToSource(cfg.Name)), log)
	if err != nil {
		return err
	}
	applyOrigins := []string{origins.ToTarget(cfg.Name), origins.ToSource(cfg.Name)}
	skip := append(applyOrigins, origins.Repair(applyOrigins[0]), origins.Repair(applyOrigins[1]))
	fwd := &direction{name: cfg.Name, label: dirToTarget, fromSource: true, origin: applyOrigins[0], ours: toTarget, repair: repairToTarget,
		skip: skip, policy: cfg.Conflicts, ready: make(chan struct{}), statements: map[stmtKey]string{}, lock: lock}
	rev := &direction{name: cfg.Name, label: dirToSource, origin: applyOrigins[1], ours: toSource, repair: repairToSource,
		skip: skip, policy: cfg.Conflicts, statements: map[stmtKey]string{}, lock: lock}

	r, err := newReverse(ctx, cfg, rev, dst, revTables)
	if err != nil {
		return err
	}
	defer r.dst.Close()
	if err := r.prepare(ctx); err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() {
		err := run(runCtx, cfg, fwd)
		if err != nil {
			err = fmt.Errorf("source → target: %w", err)
		}
		errs <- err
	}()
	go func() {
		select {
		case <-fwd.ready:
		case <-runCtx.Done():
			errs <- nil
			return
		}
		err := r.stream(runCtx, revCaughtUpAt)
		if err != nil {
			err = fmt.Errorf("target → source: %w", err)
		}
		errs <- err
	}()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// checkFirstCopyKeepsNothing refuses the first start of the two-way sync
// called name when a target table holds rows that neither a sync of that
// name nor a finished backfill wrote: the first copy replaces a target
// table's rows with the source's, and rows the service wrote there (before
// the sync ran, or while it was cleaned up) would be lost. A table the
// sync has copied before (a one-way sync switched to two ways, a restart)
// or a backfill filled is copied as usual.
func checkFirstCopyKeepsNothing(ctx context.Context, dst *pgxpool.Pool, name string, tables []*mapping.Table) error {
	var synced bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.sync_state') IS NOT NULL`).Scan(&synced); err != nil {
		return fmt.Errorf("read target state: %w", err)
	}
	if synced {
		if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM datasync.sync_state WHERE name = $1)`, name).Scan(&synced); err != nil {
			return fmt.Errorf("read target state: %w", err)
		}
	}
	if synced {
		return nil
	}
	var backfilled bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('datasync.backfill_progress') IS NOT NULL`).Scan(&backfilled); err != nil {
		return fmt.Errorf("read target state: %w", err)
	}
	var problems []string
	for _, t := range tables {
		var rows bool
		if err := dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+t.Target.Quoted()+`)`).Scan(&rows); err != nil {
			return fmt.Errorf("read target table %s: %w", t.Target, err)
		}
		if !rows {
			continue
		}
		filled := false
		if backfilled {
			if err := dst.QueryRow(ctx, `SELECT bool_and(done) IS TRUE FROM datasync.backfill_progress WHERE target_table = $1`, t.Target.String()).Scan(&filled); err != nil {
				return fmt.Errorf("read backfill state of %s: %w", t.Target, err)
			}
		}
		if !filled {
			problems = append(problems, fmt.Sprintf("target table %s has rows, and no sync named %q nor a finished backfill wrote them: the first two-way copy replaces the target's rows with the source's, so rows the service wrote there would be lost. If they are a copy of the source's, empty the table (or fill it with datasync backfill) and start again; if the service wrote rows that must be kept, copy them to the source first",
				t.Target, name))
		}
	}
	if len(problems) > 0 {
		return &mapping.PreflightError{Problems: problems}
	}
	return nil
}

// fillDefaults sets Config's defaults.
func fillDefaults(cfg *Config) {
	if cfg.MaxBatchChanges <= 0 {
		cfg.MaxBatchChanges = 2000
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
}

// newReverse builds the syncer of the reverse direction: its source is the
// target database (plain pool tgt), its target the source database, under
// the origin of dir. Its name is ReverseName, which names its slot,
// publication and checkpoint.
func newReverse(ctx context.Context, cfg Config, dir *direction, tgt *pgxpool.Pool, tables []*mapping.Table) (*syncer, error) {
	rc := cfg
	rc.Name = ReverseName(cfg.Name)
	rc.Source, rc.Target = cfg.Target, cfg.Source
	rc.Metrics = cfg.Metrics.reverse
	s := &syncer{cfg: rc, log: cfg.Logger.With("sync", cfg.Name, "direction", dirToSource), metrics: rc.Metrics,
		byName: map[string]*mapping.Table{}, copied: map[*mapping.Table]cdc.LSN{}, plans: map[uint32]*plan{}, unmapped: map[uint32]bool{},
		tables: tables, src: tgt, tw: dir}
	var err error
	if s.dst, err = originPool(ctx, cfg.Source, dir.origin); err != nil {
		return nil, fmt.Errorf("connect source: %w", err)
	}
	for _, t := range tables {
		s.byName[t.Source.String()] = t
		for _, op := range []cdc.Op{cdc.OpInsert, cdc.OpUpdate, cdc.OpDelete, cdc.OpTruncate} {
			s.metrics.AppliedChanges.WithLabelValues(t.Target.String(), op.String())
		}
	}
	return s, nil
}

// prepare makes sure the reverse direction has its publication and slot on
// the target and its checkpoint in the source. It runs before the forward
// direction's initial copy: the target's changes from then on are kept by
// the slot, and the copy's own writes carry the target origin, so the
// reverse stream drops them.
func (s *syncer) prepare(ctx context.Context) error {
	identity, err := Preflight(ctx, s.src, s.tables)
	if err != nil {
		return err
	}
	if err := ensurePublication(ctx, s.src, PublicationName(s.cfg.Name), s.tables, identity, nil); err != nil {
		return err
	}
	slot := SlotName(s.cfg.Name)
	st, exists, err := s.slotAndState(ctx, slot)
	if err != nil {
		return err
	}
	switch {
	case !exists && st.exists:
		return fmt.Errorf("sync %s: the source has applied the target's changes up to %s but the target has no slot %s: changes since are lost; run datasync cleanup --name %s, then sync again: %w",
			s.tw.name, st.applied, slot, s.tw.name, ErrSlotLost)
	case exists && st.exists:
		s.applied = st.applied
		return nil
	case exists:
		if err := s.dropUnfinished(ctx, slot, "the reverse slot of an unfinished first start"); err != nil {
			return err
		}
	}
	rc, err := cdc.Connect(ctx, s.cfg.Source)
	if err != nil {
		return err
	}
	defer rc.Close(context.WithoutCancel(ctx))
	sl, err := rc.CreateSlot(ctx, slot, cdc.SlotOptions{})
	if err != nil {
		return err
	}
	s.log.Info("created the reverse slot on the target", "slot", slot, "lsn", sl.ConsistentPoint.String())
	if _, err := s.dst.Exec(ctx, `INSERT INTO datasync.sync_state (name, applied_lsn) VALUES ($1, $2::text::pg_lsn)
		ON CONFLICT (name) DO NOTHING`, s.cfg.Name, sl.ConsistentPoint.String()); err != nil {
		return fmt.Errorf("create the reverse checkpoint: %w", err)
	}
	s.applied = sl.ConsistentPoint
	return nil
}

// handedOff tells the reverse direction that the forward one has finished
// its initial copy.
func (d *direction) handedOff() {
	if d != nil && d.ready != nil {
		select {
		case <-d.ready:
		default:
			close(d.ready)
		}
	}
}

// skipOrigins returns the origins the syncer's stream drops.
func (s *syncer) skipOrigins() []string {
	if s.tw == nil {
		return nil
	}
	return s.tw.skip
}

// openTarget opens the pool the syncer applies through: under the
// direction's origin in two-way sync.
func openTarget(ctx context.Context, url string, dir *direction) (*pgxpool.Pool, error) {
	if dir == nil {
		return dbconn.Open(ctx, "target", url, "datasync sync", nil)
	}
	return originPool(ctx, url, dir.origin)
}
