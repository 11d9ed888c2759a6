package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/dbconn"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// Tombstones let two-way sync compare a write with a delete that came
// before it on the side the write arrives at. Without them a side keeps no
// trace of a row it deleted, so an insert (or update) arriving for that key
// would find nothing to compare with and be applied, while on the other
// side the delete, meeting the write, may win: the row would stay on one
// side only.
//
// Each side's tables get an AFTER DELETE trigger, named
// datasync_NAME_tombstone, that records the key of every row the
// application deletes in datasync.sync_tombstones, in the deleting
// transaction: the tombstone's xmin gives the delete's commit time. Deletes
// made under a replication origin (the sync's apply, a repair) record
// nothing: they are copies of the other side's. A write arriving for a
// missing key with a tombstone is then decided like any delete against a
// write: by commit time, the later one winning (see conflictSQL).
//
// Tombstones are kept for tombstoneKeep after the incoming stream's last
// applied commit has passed them: by then every change of the other side
// that could have been written without knowing of the delete has arrived.

// tombstonesSchema is created in both databases.
const tombstonesSchema = `
CREATE TABLE IF NOT EXISTS datasync.sync_tombstones (
	name text NOT NULL,
	table_name text NOT NULL,
	key text[] NOT NULL,
	PRIMARY KEY (name, table_name, key)
);`

// tombstoneKeep is how long a tombstone is kept after the incoming stream
// has applied changes committed later than it.
const tombstoneKeep = time.Hour

// TombstoneTrigger names the trigger that records the keys the application
// deletes from a table of the two-way sync called name.
func TombstoneTrigger(name string) string { return "datasync_" + name + "_tombstone" }

// tombstoneFunction names the trigger function of table oid.
func tombstoneFunction(name string, oid uint32) string {
	return fmt.Sprintf("tombstone_%s_%d", name, oid)
}

// installTombstones creates or replaces, on the tables of one side (the
// Source of each of tables), the triggers that record deleted keys, logging
// each one it creates.
func installTombstones(ctx context.Context, pool *pgxpool.Pool, side, name string, tables []*mapping.Table, log interface {
	Info(string, ...any)
}) error {
	if _, err := pool.Exec(ctx, tombstonesSchema); err != nil {
		return fmt.Errorf("create datasync.sync_tombstones in the %s: %w", side, err)
	}
	for _, t := range tables {
		var oid uint32
		var exists bool
		if err := pool.QueryRow(ctx, `SELECT c.oid, EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = $2)
			FROM pg_class c WHERE c.oid = $1::regclass`, t.Source.Quoted(), TombstoneTrigger(name)).Scan(&oid, &exists); err != nil {
			return fmt.Errorf("look up %s table %s: %w", side, t.Source, err)
		}
		var keys []string
		for _, k := range t.KeyColumns() {
			keys = append(keys, "OLD."+mapping.QuoteIdent(k.Source)+"::text")
		}
		fn := "datasync." + mapping.QuoteIdent(tombstoneFunction(name, oid))
		// SECURITY DEFINER: the application's role need not be allowed to
		// write datasync's schema. The function runs under the settings
		// every datasync session pins, so that it writes a key as text
		// exactly as the apply session reads it.
		sql := fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql
	SECURITY DEFINER SET search_path = pg_catalog, pg_temp %s
	AS $fn$
BEGIN
	IF pg_replication_origin_session_is_setup() THEN
		RETURN NULL;
	END IF;
	INSERT INTO datasync.sync_tombstones (name, table_name, key) VALUES (%s, %s, ARRAY[%s])
		ON CONFLICT (name, table_name, key) DO UPDATE SET key = EXCLUDED.key;
	RETURN NULL;
END $fn$;
CREATE OR REPLACE TRIGGER %s AFTER DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s()`,
			fn, dbconn.FunctionSettings(), mapping.QuoteLiteral(name), mapping.QuoteLiteral(t.Source.String()), strings.Join(keys, ", "),
			mapping.QuoteIdent(TombstoneTrigger(name)), t.Source.Quoted(), fn)
		if _, err := pool.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create the tombstone trigger on %s table %s: %w (two-way sync under last_update_wins records deleted keys with it: let the sync's role create triggers and functions there, or choose --conflicts source_wins or target_wins, which keep no tombstones)", side, t.Source, err)
		}
		if !exists {
			log.Info("changed the "+side+" database for two-way sync: a trigger records the keys the application deletes, so that a write arriving later for such a key is compared with the delete",
				"table", t.Source.String(), "trigger", TombstoneTrigger(name), "function", fn)
		}
	}
	return nil
}

// dropTombstonesOf drops, on both sides, the tombstone triggers and
// tombstones of the sync called name, which only a two-way sync under
// last_update_wins keeps: left by one, they would go on recording deletes
// nothing reads or prunes. Each one dropped is logged.
func dropTombstonesOf(ctx context.Context, src, dst *pgxpool.Pool, name string, log interface {
	Info(string, ...any)
}) error {
	for _, side := range []struct {
		db   string
		pool *pgxpool.Pool
	}{{"source", src}, {"target", dst}} {
		dropped, err := dropTombstones(ctx, side.pool, side.db, name)
		for _, d := range dropped {
			log.Info("dropped what a two-way sync under last_update_wins of this name left, which this sync does not use", "dropped", d)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// tombstone is the SQL of the commit time (ts) of the tombstone of the key
// of t's target table whose column i is parameter at(i), when the row is
// missing (NOT EXISTS l) and there is no row in l for the fast insert.
// Only last_update_wins keeps tombstones; under the other policies it
// returns no row.
func (d *direction) tombstone(t *mapping.Table, at func(i int) int) string {
	if d.policy != LastUpdateWins {
		return "SELECT NULL::timestamptz AS ts WHERE false"
	}
	keys := make([]string, len(t.Key))
	for i, k := range t.Key {
		keys[i] = "(" + param(at(i), t.Columns[k]) + ")::text"
	}
	return fmt.Sprintf(`SELECT pg_xact_commit_timestamp(x.xmin) AS ts FROM datasync.sync_tombstones x
	WHERE x.name = %s AND x.table_name = %s AND x.key = ARRAY[%s]`,
		mapping.QuoteLiteral(d.name), mapping.QuoteLiteral(t.Target.String()), strings.Join(keys, ", "))
}

// pruneTombstones deletes the tombstones of the side s applies into that
// changes committed more than tombstoneKeep after them have been applied
// (the checkpoint's last commit time), at most once a minute.
func (s *syncer) pruneTombstones(ctx context.Context) {
	if s.tw == nil || time.Now().Before(s.tw.nextPrune) {
		return
	}
	s.tw.nextPrune = time.Now().Add(time.Minute)
	tag, err := s.dst.Exec(ctx, `DELETE FROM datasync.sync_tombstones WHERE name = $1
		AND pg_xact_commit_timestamp(xmin) < (SELECT last_commit_time FROM datasync.sync_state WHERE name = $2) - $3::interval`,
		s.tw.name, s.cfg.Name, tombstoneKeep.String())
	if err != nil {
		s.log.Warn("pruning tombstones failed; trying again in a minute", "error", err)
		return
	}
	if n := tag.RowsAffected(); n > 0 {
		s.log.Info("pruned tombstones", "rows", n)
	}
}

// dropTombstones drops the tombstone triggers and functions of the sync
// called name in one database, and its tombstones; it returns what it
// dropped.
func dropTombstones(ctx context.Context, pool *pgxpool.Pool, db, name string) ([]string, error) {
	var dropped []string
	rows, err := pool.Query(ctx, `SELECT g.tgrelid::regclass::text, p.oid::regprocedure::text FROM pg_trigger g JOIN pg_proc p ON p.oid = g.tgfoid
		WHERE g.tgname = $1`, TombstoneTrigger(name))
	if err != nil {
		return nil, fmt.Errorf("cleanup: look up tombstone triggers in the %s: %w", db, err)
	}
	type trig struct{ table, fn string }
	var trigs []trig
	for rows.Next() {
		var t trig
		if err := rows.Scan(&t.table, &t.fn); err != nil {
			rows.Close()
			return nil, fmt.Errorf("cleanup: look up tombstone triggers in the %s: %w", db, err)
		}
		trigs = append(trigs, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cleanup: look up tombstone triggers in the %s: %w", db, err)
	}
	for _, t := range trigs {
		if _, err := pool.Exec(ctx, "DROP TRIGGER IF EXISTS "+mapping.QuoteIdent(TombstoneTrigger(name))+" ON "+t.table+"; DROP FUNCTION IF EXISTS "+t.fn); err != nil {
			return dropped, fmt.Errorf("cleanup: drop tombstone trigger on %s in the %s: %w", t.table, db, err)
		}
		dropped = append(dropped, fmt.Sprintf("tombstone trigger %s on %s in the %s", TombstoneTrigger(name), t.table, db))
	}
	tag, err := pool.Exec(ctx, `DELETE FROM datasync.sync_tombstones WHERE name = $1`, name)
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P01") {
		return dropped, fmt.Errorf("cleanup: delete tombstones in the %s: %w", db, err)
	}
	if err == nil && tag.RowsAffected() > 0 {
		dropped = append(dropped, fmt.Sprintf("%d tombstones of %s in the %s's datasync schema", tag.RowsAffected(), name, db))
	}
	return dropped, nil
}
