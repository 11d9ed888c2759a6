package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/origins"
)

// Sides a two-way difference names as the one that wrote the row last.
const (
	sideSource = "source"
	sideTarget = "target"
)

// ErrTwoWay is wrapped by the errors that stop a two-way verification
// before it compares anything: a setting it needs is off, or a plain
// repair would run beside a two-way sync.
var ErrTwoWay = errors.New("two-way verify cannot run")

// twoWay is what a two-way verification knows of the sync named name: the
// origin identifiers under which its apply sessions write, in each side's
// cluster.
type twoWay struct {
	name string
	// toTarget is the roident of datasync_NAME_to_target in the target's
	// cluster, toSource that of datasync_NAME_to_source in the source's.
	// Both are checked to exist.
	toTarget, toSource uint32
	// repairToTarget and repairToSource are the origins repair writes
	// under: datasync_NAME_to_target_repair and datasync_NAME_to_source_repair, which the
	// sync creates and its streams drop, so that repair runs beside it
	// (PostgreSQL 15 lets one session at a time use an origin, and the
	// sync's apply sessions hold theirs). A sync from before them has
	// none, and repair then writes under the sync's own origins. Their
	// ids, 0 when absent, mark rows that are copies like the sync's.
	repairToTarget, repairToSource     string
	repairToTargetID, repairToSourceID uint32
}

// copied reports whether w, the last writer of a row of side, wrote a copy
// of the other side's row: the sync's apply or a repair.
func (tw *twoWay) copied(side string, w writer) bool {
	if side == sideTarget {
		return w.origin == tw.toTarget || (tw.repairToTargetID != 0 && w.origin == tw.repairToTargetID)
	}
	return w.origin == tw.toSource || (tw.repairToSourceID != 0 && w.origin == tw.repairToSourceID)
}

// prepareTwoWay checks that both sides record commit timestamps and that
// the sync's origins exist, and reads their identifiers.
func prepareTwoWay(ctx context.Context, src, dst *pgxpool.Pool, name string) (*twoWay, error) {
	tw := &twoWay{name: name}
	for _, s := range []struct {
		side   string
		pool   *pgxpool.Pool
		origin string
		ident  *uint32
	}{{sideSource, src, origins.ToSource(name), &tw.toSource}, {sideTarget, dst, origins.ToTarget(name), &tw.toTarget}} {
		var on string
		if err := s.pool.QueryRow(ctx, "SELECT current_setting('track_commit_timestamp')").Scan(&on); err != nil {
			return nil, fmt.Errorf("read track_commit_timestamp on the %s: %w", s.side, err)
		}
		if on != "on" {
			return nil, fmt.Errorf("%w: track_commit_timestamp is %s on the %s database, and --two-way tells who wrote a row last by its commit timestamp: set track_commit_timestamp = on in its postgresql.conf and restart it (rows written before have no timestamp)", ErrTwoWay, on, s.side)
		}
		var id pgtype.Int8
		err := s.pool.QueryRow(ctx, "SELECT (SELECT roident FROM pg_replication_origin WHERE roname = $1)::bigint", s.origin).Scan(&id)
		if err != nil {
			return nil, fmt.Errorf("read replication origin %s on the %s: %w", s.origin, s.side, err)
		}
		if !id.Valid {
			// Without it no row can be told to be the sync's copy, and
			// every row only on one side would count as written there:
			// repair would copy back rows the other side deleted.
			return nil, fmt.Errorf("%w: the %s database's server has no replication origin %s, so no two-way sync named %q has run against it: check --name (the sync's --name)", ErrTwoWay, s.side, s.origin, name)
		}
		*s.ident = uint32(id.Int64)
	}
	tw.repairToTarget, tw.repairToSource = origins.ToTarget(name), origins.ToSource(name)
	for _, s := range []struct {
		pool   *pgxpool.Pool
		origin string
		name   *string
		ident  *uint32
	}{{src, origins.Repair(origins.ToSource(name)), &tw.repairToSource, &tw.repairToSourceID},
		{dst, origins.Repair(origins.ToTarget(name)), &tw.repairToTarget, &tw.repairToTargetID}} {
		var id pgtype.Int8
		if err := s.pool.QueryRow(ctx, "SELECT (SELECT roident FROM pg_replication_origin WHERE roname = $1)::bigint", s.origin).Scan(&id); err != nil {
			return nil, fmt.Errorf("read replication origin %s: %w", s.origin, err)
		}
		if id.Valid {
			*s.name, *s.ident = s.origin, uint32(id.Int64)
		}
	}
	return tw, nil
}

// checkNoTwoWaySync refuses a one-way repair beside the two-way sync named
// name: its writes into the target would run under no origin of the sync,
// which would send them back to the source, where they could overwrite a
// newer write of the monolith. The sync's reverse origin on the source
// tells it exists; a server that does not let the catalog be read is not
// checked.
func checkNoTwoWaySync(ctx context.Context, src *pgxpool.Pool, name string) error {
	var exists bool
	if err := src.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_replication_origin WHERE roname = $1)", origins.ToSource(name)).Scan(&exists); err != nil {
		return nil
	}
	if exists {
		return fmt.Errorf("%w: --repair without --two-way beside the two-way sync %q (replication origin %s exists on the source): its writes would be sent back to the source; repair with --two-way --name %s", ErrTwoWay, name, origins.ToSource(name), name)
	}
	return nil
}

// writer is who last wrote a row on one side: its xmin, and the commit
// timestamp and replication origin of that transaction (zero when unknown:
// written before track_commit_timestamp was on, or frozen).
type writer struct {
	xmin   string
	at     time.Time
	origin uint32
}

// writers reads the last writer of side s's rows of keys, by key string.
func (p *pair) writers(ctx context.Context, s *side, keys [][]string) (map[string]writer, error) {
	out := make(map[string]writer, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	var a args
	q := "SELECT " + strings.Join(s.keyText, ", ") + ", __datasync_t.xmin::text, w.timestamp, coalesce(w.roident, 0)::bigint" +
		" FROM " + s.rel + " AS __datasync_t" + p.joinKeys(s, keys, &a) +
		" CROSS JOIN LATERAL pg_xact_commit_timestamp_origin(__datasync_t.xmin) AS w"
	rows, err := s.pool.Query(ctx, q, a...)
	if err != nil {
		return nil, fmt.Errorf("read last writers of %s rows: %w", s.name, err)
	}
	defer rows.Close()
	nk := len(s.keyText)
	for rows.Next() {
		k := make([]string, nk)
		var w writer
		var at pgtype.Timestamptz
		var origin int64
		dest := make([]any, 0, nk+3)
		for i := range k {
			dest = append(dest, &k[i])
		}
		dest = append(dest, &w.xmin, &at, &origin)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read last writers of %s rows: %w", s.name, err)
		}
		if at.Valid {
			w.at = at.Time
		}
		w.origin = uint32(origin)
		out[keyString(k)] = w
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read last writers of %s rows: %w", s.name, err)
	}
	return out, nil
}

// classify sorts the differences of a two-way verification by the side
// that wrote each row last:
//
//   - a row only in the target came from the source (its last writer is
//     the sync's origin into the target) and the source deleted it since:
//     extra in the target; otherwise the service wrote it and the source
//     never had it: missing in the source;
//   - a row only in the source came from the target and the target
//     deleted it: extra in the source; otherwise missing in the target;
//   - a row on both sides that differs was written last by the side whose
//     write is its own (not the sync's copy of the other side's) and, when
//     both are, the later commit; a tie goes to the source.
//
// It also records the xmin of the rows repair would overwrite or delete,
// so that a repair leaves alone a row written again since.
func (p *pair) classify(ctx context.Context, d *diffs, tw *twoWay) error {
	var srcW, dstW map[string]writer
	srcKeys := append(append([][]string{}, d.missing...), mismatchKeys(d.mismatched)...)
	dstKeys := append(append([][]string{}, d.extra...), mismatchKeys(d.mismatched)...)
	err := both(ctx,
		func(ctx context.Context) (err error) { srcW, err = p.writers(ctx, p.src, srcKeys); return err },
		func(ctx context.Context) (err error) { dstW, err = p.writers(ctx, p.dst, dstKeys); return err })
	if err != nil {
		return err
	}
	d.xmin = map[string]string{}

	var missing, extraInSource [][]string
	for _, k := range d.missing {
		w := srcW[keyString(k)]
		if tw.copied(sideSource, w) {
			extraInSource = append(extraInSource, k)
			d.xmin[keyString(k)] = w.xmin
		} else {
			missing = append(missing, k)
		}
	}
	var extra, missingInSource [][]string
	for _, k := range d.extra {
		w := dstW[keyString(k)]
		if tw.copied(sideTarget, w) {
			extra = append(extra, k)
			d.xmin[keyString(k)] = w.xmin
		} else {
			missingInSource = append(missingInSource, k)
		}
	}
	for i, m := range d.mismatched {
		ks := keyString(m.key)
		sw, dw := srcW[ks], dstW[ks]
		srcCopy, dstCopy := tw.copied(sideSource, sw), tw.copied(sideTarget, dw)
		newer := sideSource
		switch {
		case dstCopy && !srcCopy:
		case srcCopy && !dstCopy:
			newer = sideTarget
		case dw.at.After(sw.at):
			newer = sideTarget
		}
		d.mismatched[i].newer = newer
		if newer == sideSource {
			d.xmin[ks] = dw.xmin
		} else {
			d.xmin[ks] = sw.xmin
		}
	}
	d.missing, d.extra = missing, extra
	d.missingInSource, d.extraInSource = missingInSource, extraInSource
	d.twoWay = true
	return nil
}

func mismatchKeys(ms []mismatch) [][]string {
	out := make([][]string, len(ms))
	for i, m := range ms {
		out[i] = m.key
	}
	return out
}

// repairTwoWay repairs each difference toward the side that wrote last:
// into the target under the repair origin into the target, into the source
// under the one into the source (the sync's own origins when those do not
// exist), so that the running sync does not send the repair back. A row repair would overwrite or delete that was written
// again since it was classified is left alone (Skipped).
func (p *pair) repairTwoWay(ctx context.Context, d diffs, opts Options, tw *twoWay) (*RepairPlan, error) {
	plan := &RepairPlan{DryRun: opts.DryRun}
	var toTgt, toSrc [][]string
	for _, m := range d.mismatched {
		if m.newer == sideTarget {
			toSrc = append(toSrc, m.key)
		} else {
			toTgt = append(toTgt, m.key)
		}
	}
	if opts.DryRun {
		plan.Inserted, plan.Deleted, plan.Updated = int64(len(d.missing)), int64(len(d.extra)), int64(len(toTgt))
		plan.SourceInserted, plan.SourceDeleted, plan.SourceUpdated = int64(len(d.missingInSource)), int64(len(d.extraInSource)), int64(len(toSrc))
		return plan, nil
	}
	fT := p.toTarget(tw.repairToTarget)
	fT.expectXmin, fT.afterRead = d.xmin, opts.afterRepairRead
	keys := append(append(append([][]string{}, d.missing...), d.extra...), toTgt...)
	err := p.repairFlow(ctx, fT, keys, d.missing, opts, plan, func(n repairCounts) {
		plan.Inserted += n.inserted
		plan.Updated += n.updated
		plan.Deleted += n.deleted
	})
	if err != nil {
		return nil, err
	}
	fS := p.toSource(tw.repairToSource)
	fS.expectXmin, fS.afterRead = d.xmin, opts.afterRepairRead
	keys = append(append(append([][]string{}, d.missingInSource...), d.extraInSource...), toSrc...)
	err = p.repairFlow(ctx, fS, keys, d.missingInSource, opts, plan, func(n repairCounts) {
		plan.SourceInserted += n.inserted
		plan.SourceUpdated += n.updated
		plan.SourceDeleted += n.deleted
	})
	if err != nil {
		return nil, err
	}
	return plan, nil
}
