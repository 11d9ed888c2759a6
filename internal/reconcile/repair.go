package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/origins"
)

// RepairPlan counts what a repair did or, in a dry run, would do.
// Inserted, Updated and Deleted count target rows; the Source counts are
// rows of the source, which only a two-way repair writes.
type RepairPlan struct {
	DryRun   bool
	Inserted int64
	Updated  int64
	Deleted  int64

	SourceInserted int64
	SourceUpdated  int64
	SourceDeleted  int64
	// Skipped counts differing rows that a running sync held locked (it
	// was changing them) through every attempt: they were left to it, and
	// the verification after the repair tells whether they still differ.
	Skipped int64
}

// total is the number of rows written.
func (r *RepairPlan) total() int64 {
	return r.Inserted + r.Updated + r.Deleted + r.SourceInserted + r.SourceUpdated + r.SourceDeleted
}

// repairAttempts is how often keys that a sync held locked are tried
// again before they are left to it.
const repairAttempts = 4

// repairLockTimeout bounds every wait of a repair transaction for a lock.
// It is below PostgreSQL's default deadlock_timeout (1s), so a repair that
// waits for a sync's transaction while that one waits for the repair gives
// up before the deadlock check could pick the sync's transaction to fail.
const repairLockTimeout = "200ms"

// flow is one direction of repair: the rows of some keys are read from
// side from and written into side to, through the mapping.
type flow struct {
	from, to *side
	// fromKey and fromVals read, on from, each key column and each mapped
	// column as text, in to's types.
	fromKey, fromVals []string
	// toKey reads to's key columns as the text fromKey gives.
	toKey []string
	// cols are to's quoted columns in mapping order, casts their types
	// without modifiers, key whether each is a key column.
	cols, casts []string
	key         []bool
	// conflict is to's key column list, for ON CONFLICT.
	conflict string
	// origin, when set, is the replication origin every write into to
	// runs under, so that a two-way sync does not send it back.
	origin string
	// afterRead, when set, runs between reading the rows to write and
	// writing them (tests use it to change the row in between).
	afterRead func(ctx context.Context)
	// expectXmin, when set, holds by key string the xmin that to's row
	// had when the difference was classified: a row written since is left
	// alone (a two-way repair must not overwrite a newer write).
	expectXmin map[string]string
}

// toTarget is the flow that makes the target match the source.
func (p *pair) toTarget(origin string) *flow {
	f := &flow{from: p.src, to: p.dst, fromKey: p.src.keyText, toKey: p.dst.keyText, conflict: p.table.TargetKeyList(), origin: origin}
	for i, c := range p.table.Columns {
		f.fromVals = append(f.fromVals, "("+p.src.values[i]+")::text")
		f.cols = append(f.cols, mapping.QuoteIdent(c.Target))
		f.casts = append(f.casts, mapping.CastType(c.TargetType))
		f.key = append(f.key, c.Key)
	}
	return f
}

// toSource is the flow that makes the source match the target, for a
// two-way repair: each target column is read in its source column's type.
func (p *pair) toSource(origin string) *flow {
	f := &flow{from: p.dst, to: p.src, fromKey: p.dst.keyText, toKey: p.src.keyText, conflict: p.table.SourceKeyList(), origin: origin}
	for _, c := range p.table.Columns {
		v := mapping.QuoteIdent(c.Target)
		if mapping.CastType(c.SourceType) != mapping.CastType(c.TargetType) {
			v += "::" + mapping.CastType(c.SourceType)
		}
		f.fromVals = append(f.fromVals, "("+v+")::text")
		f.cols = append(f.cols, mapping.QuoteIdent(c.Source))
		f.casts = append(f.casts, mapping.CastType(c.SourceType))
		f.key = append(f.key, c.Key)
	}
	return f
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
	var origin string
	if opts.TwoWay {
		origin = origins.ToTarget(opts.Name)
	}
	f := p.toTarget(origin)
	f.afterRead = opts.afterRepairRead
	err := p.repairFlow(ctx, f, d.keys(), d.missing, opts, plan, func(n repairCounts) {
		plan.Inserted += n.inserted
		plan.Updated += n.updated
		plan.Deleted += n.deleted
	})
	if err != nil {
		return nil, err
	}
	return plan, nil
}

// repairCounts are the rows one batch wrote.
type repairCounts struct{ inserted, updated, deleted, changed int64 }

// repairFlow writes the current rows of keys from f.from into f.to, in
// batches, opts.Workers at a time, trying keys a sync held locked again a
// few times. missing lists
// the keys that f.to lacked when compared.
func (p *pair) repairFlow(ctx context.Context, f *flow, keys, missing [][]string, opts Options, plan *RepairPlan, count func(repairCounts)) error {
	isMissing := make(map[string]bool, len(missing))
	for _, k := range missing {
		isMissing[keyString(k)] = true
	}
	total, done := int64(len(keys)), int64(0)
	for attempt := 1; len(keys) > 0; attempt++ {
		var (
			mu   sync.Mutex
			held [][]string
		)
		g, gctx := errgroup.WithContext(ctx)
		// Batches hold distinct keys, so they run side by side; but on
		// PostgreSQL 15 a replication origin serves one session at a
		// time, so writes under one go batch after batch.
		g.SetLimit(opts.Workers)
		if f.origin != "" {
			g.SetLimit(1)
		}
		for start := 0; start < len(keys); start += opts.BatchSize {
			chunk := keys[start:min(start+opts.BatchSize, len(keys))]
			g.Go(func() error {
				n, busy, err := p.repairBatch(gctx, f, chunk, isMissing)
				if err != nil {
					return fmt.Errorf("repair %s: %w", f.to.name, err)
				}
				mu.Lock()
				defer mu.Unlock()
				count(n)
				plan.Skipped += n.changed
				held = append(held, busy...)
				done += int64(len(chunk) - len(busy))
				p.progress(opts, PhaseRepair, done, total)
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		keys = held
		if len(keys) == 0 {
			break
		}
		if attempt == repairAttempts {
			plan.Skipped += int64(len(keys))
			opts.Logger.InfoContext(ctx, "rows held by another transaction left unrepaired", "table", p.table.Target.String(), "side", f.to.name, "rows", len(keys))
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 100 * time.Millisecond):
		}
	}
	return nil
}

// repairBatch makes f.to's rows of keys match f.from's current rows, safely
// beside a sync that applies changes to f.to at the same time (issue 15,
// item 7). In one transaction of f.to it first takes the row locks of the
// keys, then reads f.from, then writes:
//
//   - a key f.to lacked is inserted with the row f.from had before the
//     transaction, ON CONFLICT DO NOTHING, which holds the key;
//   - the rows of the other keys are locked FOR UPDATE SKIP LOCKED;
//   - f.from's current rows of the keys held are read, and written over
//     them, or the rows deleted where f.from has none.
//
// A change the sync applied before a lock was taken had committed on
// f.from before the read, so the value read is at least as new; a change
// it applies later waits for the lock and lands after the repair, in
// stream order. The repair never writes a row it does not hold. A row the
// sync holds is not waited for: it is returned in busy, to try again.
func (p *pair) repairBatch(ctx context.Context, f *flow, keys [][]string, isMissing map[string]bool) (n repairCounts, busy [][]string, err error) {
	var lacking [][]string
	for _, k := range keys {
		if isMissing[keyString(k)] {
			lacking = append(lacking, k)
		}
	}
	var before fromRows
	if len(lacking) > 0 {
		if before, err = p.readFrom(ctx, f, lacking); err != nil {
			return n, nil, err
		}
	}
	conn, err := f.to.pool.Acquire(ctx)
	if err != nil {
		return n, nil, fmt.Errorf("connect: %w", err)
	}
	if f.origin != "" {
		if err := setupOrigin(ctx, conn, f.origin); err != nil {
			conn.Release()
			return n, nil, err
		}
		defer resetOrigin(conn)
	} else {
		defer conn.Release()
	}

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+repairLockTimeout+"'"); err != nil {
			return err
		}
		if f.origin != "" {
			if _, err := tx.Exec(ctx, origins.ResetTimeSQL); err != nil {
				return err
			}
		}
		inserted := map[string]bool{}
		if len(before.keys) > 0 {
			ks, err := p.write(ctx, tx, f, before, " DO NOTHING RETURNING "+strings.Join(f.toKey, ", "))
			if err != nil {
				return fmt.Errorf("insert missing rows: %w", err)
			}
			for _, k := range ks {
				inserted[keyString(k)] = true
			}
		}
		var a args
		q := "SELECT " + strings.Join(f.toKey, ", ") + ", __datasync_t.xmin::text FROM " + f.to.rel + " AS __datasync_t" + p.joinKeys(f.to, keys, &a) +
			" FOR UPDATE OF __datasync_t SKIP LOCKED"
		locked, err := queryKeys(ctx, tx, q, a, len(f.toKey)+1)
		if err != nil {
			return fmt.Errorf("lock rows: %w", err)
		}
		held := map[string]bool{}
		var heldKeys [][]string
		for _, r := range locked {
			k, xmin := r[:len(f.toKey)], r[len(f.toKey)]
			ks := keyString(k)
			held[ks] = true
			if want, ok := f.expectXmin[ks]; ok && want != xmin && !inserted[ks] {
				// Written again since it was compared: not this
				// repair's to overwrite.
				n.changed++
				continue
			}
			heldKeys = append(heldKeys, k)
		}
		if len(held) < len(keys) {
			// Keys not held: rows another transaction holds, or no row.
			var a args
			q := "SELECT " + strings.Join(f.toKey, ", ") + " FROM " + f.to.rel + p.joinKeys(f.to, keys, &a)
			present, err := queryKeys(ctx, tx, q, a, len(f.toKey))
			if err != nil {
				return fmt.Errorf("read keys: %w", err)
			}
			for _, k := range present {
				if !held[keyString(k)] {
					busy = append(busy, k)
				}
			}
		}
		if len(heldKeys) == 0 {
			return nil
		}
		now, err := p.readFrom(ctx, f, heldKeys)
		if err != nil {
			return err
		}
		if f.afterRead != nil {
			f.afterRead(ctx)
		}
		var gone [][]string
		for _, k := range heldKeys {
			if !now.has[keyString(k)] {
				gone = append(gone, k)
			}
		}
		if len(now.keys) > 0 {
			if _, err := p.write(ctx, tx, f, now, " DO UPDATE SET "+setList(f)); err != nil {
				return fmt.Errorf("write rows: %w", err)
			}
			for _, k := range now.keys {
				if inserted[keyString(k)] {
					n.inserted++
				} else {
					n.updated++
				}
			}
		}
		if len(gone) > 0 {
			var a args
			q := "DELETE FROM " + f.to.rel + " USING " + p.unnestKeys(gone, &a) + " WHERE " + p.keyJoin(f.to)
			if _, err := tx.Exec(ctx, q, a...); err != nil {
				return fmt.Errorf("delete rows: %w", err)
			}
			for _, k := range gone {
				// A row inserted above and gone from f.from since: nothing
				// was there before, nothing is now.
				if !inserted[keyString(k)] {
					n.deleted++
				}
			}
		}
		return nil
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlstateLockNotAvailable {
		// A wait passed the lock timeout: all of the batch again later.
		return repairCounts{}, keys, nil
	}
	if err != nil {
		return repairCounts{}, nil, err
	}
	return n, busy, nil
}

// SQLSTATEs repair handles.
const (
	sqlstateLockNotAvailable = "55P03"
	sqlstateObjectInUse      = "55006"
)

// fromRows are rows read from a flow's from side: their keys and their
// values as text, column by column (for unnest).
type fromRows struct {
	keys   [][]string
	values [][]*string
	has    map[string]bool
}

// readFrom reads f.from's current rows of keys (with the source filter,
// when f.from is the source).
func (p *pair) readFrom(ctx context.Context, f *flow, keys [][]string) (fromRows, error) {
	var a args
	q := "SELECT " + strings.Join(f.fromKey, ", ") + ", " + strings.Join(f.fromVals, ", ") + f.from.from() + p.joinKeys(f.from, keys, &a)
	if f.from.filter != "" {
		q += " WHERE (" + f.from.filter + ")"
	}
	out := fromRows{values: make([][]*string, len(f.fromVals)), has: map[string]bool{}}
	rows, err := f.from.pool.Query(ctx, q, a...)
	if err != nil {
		return out, fmt.Errorf("read %s rows: %w", f.from.name, err)
	}
	defer rows.Close()
	nk, nc := len(f.fromKey), len(f.fromVals)
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
			return out, fmt.Errorf("read %s rows: %w", f.from.name, err)
		}
		out.keys = append(out.keys, key)
		out.has[keyString(key)] = true
		for i, v := range vals {
			out.values[i] = append(out.values[i], v)
		}
	}
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("read %s rows: %w", f.from.name, err)
	}
	return out, nil
}

// setList is the DO UPDATE SET list of a flow's non-key columns.
func setList(f *flow) string {
	var sets []string
	for i, c := range f.cols {
		if !f.key[i] {
			sets = append(sets, c+" = EXCLUDED."+c)
		}
	}
	if len(sets) == 0 {
		// Only key columns: rewriting the key takes the row's lock and
		// changes nothing.
		for i, c := range f.cols {
			if f.key[i] {
				sets = append(sets, c+" = EXCLUDED."+c)
			}
		}
	}
	return strings.Join(sets, ", ")
}

// write inserts rows into f.to, with the given ON CONFLICT action and an
// optional RETURNING of keys, and returns the keys returned.
func (p *pair) write(ctx context.Context, tx pgx.Tx, f *flow, r fromRows, action string) ([][]string, error) {
	var a args
	params := make([]string, len(f.cols))
	names := make([]string, len(f.cols))
	casts := make([]string, len(f.cols))
	for i := range f.cols {
		params[i] = a.add(r.values[i]) + "::text[]"
		names[i] = fmt.Sprintf("v%d", i)
		casts[i] = fmt.Sprintf("v%d::%s", i, f.casts[i])
	}
	// OVERRIDING SYSTEM VALUE: the key is the other side's, also in a
	// GENERATED ALWAYS identity column; on other tables it does nothing.
	q := "INSERT INTO " + f.to.rel + " (" + strings.Join(f.cols, ", ") + ") OVERRIDING SYSTEM VALUE SELECT " + strings.Join(casts, ", ") +
		" FROM unnest(" + strings.Join(params, ", ") + ") AS u(" + strings.Join(names, ", ") + ")" +
		" ON CONFLICT (" + f.conflict + ")" + action
	if !strings.Contains(action, "RETURNING") {
		_, err := tx.Exec(ctx, q, a...)
		return nil, err
	}
	return queryKeys(ctx, tx, q, a, len(f.toKey))
}

// queryKeys runs q and reads rows of nk text columns.
func queryKeys(ctx context.Context, tx pgx.Tx, q string, a args, nk int) ([][]string, error) {
	rows, err := tx.Query(ctx, q, a...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		k := make([]string, nk)
		dest := make([]any, nk)
		for i := range k {
			dest[i] = &k[i]
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// setupOrigin makes conn's session write under replication origin name
// (which prepareTwoWay found). On PostgreSQL 15 an origin serves one
// session at a time: while a sync's apply session holds it, this waits for
// it a while, then fails.
func setupOrigin(ctx context.Context, conn *pgxpool.Conn, name string) error {
	var last error
	for wait := 50 * time.Millisecond; wait < 10*time.Second; wait *= 2 {
		_, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", name)
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != sqlstateObjectInUse {
			return fmt.Errorf("write under replication origin %s: %w", name, err)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	return fmt.Errorf("write under replication origin %s: %w: it stayed in use by another session (on PostgreSQL 15 an origin serves one session at a time: a running sync holds its own, and repair uses them only when the sync has not created the repair origins datasync_NAME_to_target_repair and datasync_NAME_to_source_repair, which a sync of this version does at start): restart the sync with this version, or stop it for the repair, or verify without --repair", name, last)
}

// resetOrigin ends the session's origin and releases conn; a connection
// whose origin could not be reset is closed instead of going back to the
// pool.
func resetOrigin(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_reset()"); err != nil {
		_ = conn.Hijack().Close(ctx)
		return
	}
	conn.Release()
}
