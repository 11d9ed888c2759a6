package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// Conflict kinds, as stored and as the kind label of
// datasync_sync_conflicts_total.
const (
	// KindInsertExists: an insert whose key the other side already has,
	// with other values, written there.
	KindInsertExists = "insert_exists"
	// KindUpdateUpdate: an update of a row the other side has changed too.
	KindUpdateUpdate = "update_update"
	// KindUpdateDelete: an update of a row the other side has deleted.
	KindUpdateDelete = "update_delete"
	// KindDeleteUpdate: a delete of a row the other side has changed.
	KindDeleteUpdate = "delete_update"
	// KindParked: a change the other side refused, parked.
	KindParked = "parked"
)

// conflict is one conflict met by a direction.
type conflict struct {
	table      string
	kind       string
	key        string
	local      *time.Time // commit time of the local row's last writer
	remote     time.Time  // commit time of the incoming change
	resolution string     // source_won, target_won or parked
	lsn        cdc.LSN
	reason     string // for parked changes
}

// stmtKey names a cached two-way statement: of a plan and kind of change,
// for an update whether it changes the key, and whether it is the fast
// statement or the conflict-aware one.
type stmtKey struct {
	p         *plan
	op        cdc.Op
	keyChange bool
	fast      bool
}

// Conflict detection, per incoming row change, is one statement that reads
// the local row (locking it), decides, and writes, so that a batch of
// changes still goes in one round trip:
//
//   - The local row's last writer is pg_xact_commit_timestamp_origin(xmin):
//     its commit time and replication origin. A row whose last writer is
//     this direction's own origin, or the origin under which datasync
//     verify --two-way --repair writes into this side, came from the other
//     side;
//     a row written in the same target transaction, or before commit
//     timestamps were kept, has no commit time. Neither is a conflict.
//   - An update or delete conflicts when the local row was last written
//     locally and differs from the incoming old row (REPLICA IDENTITY FULL
//     sends it) and from the incoming new row: the local side changed it
//     after the change the other side started from. An insert conflicts
//     when the key exists, written locally, with other values. The
//     sequential case (a change that came through the sync, then a local
//     write, then the other side's next change starting from that write)
//     is not a conflict, since the incoming old row is the local row.
//   - The incoming change wins under source_wins when it comes from the
//     source, under target_wins when from the target, and under
//     last_update_wins when its commit time is later than the local row's;
//     on equal times the source's row wins. Both directions decide the
//     same way from the same two commit times, so both sides converge.
//   - An update of a row missing locally (deleted there) inserts it when
//     the incoming side wins; a delete of a row changed locally deletes it
//     when the incoming side wins. Under last_update_wins, where a deleted
//     row has no commit time to compare, the update wins on both sides.
//
// decision modes passed to the statement: the incoming change never wins,
// always wins, or wins by commit time.
const (
	modeLocal  = 0
	modeRemote = 1
	modeTime   = 2
)

// modes returns, for an incoming change of op, the decision mode for a
// conflicting local row and whether a row missing locally is written.
func (d *direction) modes(op cdc.Op) (mode int, missing bool) {
	// Under last_update_wins a delete against a write is decided by time
	// too, as the other side decides the same pair, the write arriving
	// there for a key it deleted, by its tombstone's time.
	if d.policy == LastUpdateWins {
		return modeTime, true
	}
	if incomingWins := (d.policy == SourceWins) == d.fromSource; incomingWins {
		return modeRemote, true
	}
	// An insert of a row missing locally is no conflict: it is written
	// under every policy.
	return modeLocal, op == cdc.OpInsert
}

// byText lists types without an equality operator, compared as text.
var byText = map[string]bool{"json": true, "xml": true, "point": true, "line": true, "lseg": true,
	"box": true, "path": true, "polygon": true, "circle": true}

// cmpExpr is the SQL of a local column and a parameter compared by value.
func cmpExpr(c mapping.Column, n int) (local, param string) {
	local = "t." + mapping.QuoteIdent(c.Target)
	p := fmt.Sprintf("$%d::text::%s", n, mapping.CastType(c.TargetType))
	if byText[strings.TrimSuffix(mapping.CastType(c.TargetType), "[]")] {
		return local + "::text", p + "::text"
	}
	return local, p
}

// rowMatch is ROW(local columns) IS NOT DISTINCT FROM ROW(parameters from
// first).
func rowMatch(t *mapping.Table, first int) string {
	var l, r []string
	for i, c := range t.Columns {
		a, b := cmpExpr(c, first+i)
		l = append(l, a)
		r = append(r, b)
	}
	return "ROW(" + strings.Join(l, ", ") + ") IS NOT DISTINCT FROM ROW(" + strings.Join(r, ", ") + ")"
}

// keyMatch is the local key equal to the parameters from first.
func keyMatch(t *mapping.Table, first int) string {
	conds := make([]string, len(t.Key))
	for i, k := range t.Key {
		c := t.Columns[k]
		conds[i] = "t." + mapping.QuoteIdent(c.Target) + " = " + param(first+i, c)
	}
	return strings.Join(conds, " AND ")
}

// setList is the SET list of an update of p's table to the new row ($1…$n):
// the columns that are not part of the key, or all of them when the update
// changes the key (or every column is part of the key). Leaving the key
// alone lets an update apply to a key that is GENERATED ALWAYS AS IDENTITY,
// which only DEFAULT may be assigned.
func setList(t *mapping.Table, keyChange bool) string {
	var sets []string
	for i, c := range t.Columns {
		if keyChange || !c.Key {
			sets = append(sets, mapping.QuoteIdent(c.Target)+" = "+param(i+1, c))
		}
	}
	if len(sets) == 0 {
		return setList(t, true)
	}
	return strings.Join(sets, ", ")
}

// conflictSQL builds the conflict-aware statement of op for p's table. Its
// parameters: for an insert or update, the new row ($1…$n), the key to
// look up ($n+1…$n+k), for an update the old row, then the decision
// (mode, incoming commit time, tie, own origin, write a missing row); for a
// delete, the key ($1…$k), the old row, then the decision without the last.
// It returns one row: conflict (NULL when the row is missing), the local
// commit time, whether the change was applied, rows inserted.
func (d *direction) conflictSQL(p *plan, op cdc.Op, keyChange bool) string {
	t := p.table
	n, k := len(t.Columns), len(t.Key)
	target := t.Target.Quoted()
	var b strings.Builder
	var lookup, decision int
	var same string
	switch op {
	case cdc.OpInsert:
		lookup, decision = n+1, n+k+1
		same = rowMatch(t, 1)
	case cdc.OpUpdate:
		lookup, decision = n+1, 2*n+k+1
		same = "(" + rowMatch(t, n+k+1) + ") OR (" + rowMatch(t, 1) + ")"
	case cdc.OpDelete:
		lookup, decision = 1, n+k+1
		same = rowMatch(t, k+1)
	}
	mode, ts, tie, ours := decision, decision+1, decision+2, decision+3
	// The last writer is read in the locked row's own output, not through
	// a join beside it: when the row was changed while the statement
	// waited for its lock, PostgreSQL rereads the row, and the output with
	// it, but keeps a joined function's result from the version before.
	fmt.Fprintf(&b, `WITH l AS (SELECT %s AS same, pg_xact_commit_timestamp_origin(t.xmin) AS c
	FROM %s t WHERE %s FOR UPDATE OF t),
w AS (SELECT ts, conflict, (NOT conflict OR $%d::int = 1 OR ($%d::int = 2 AND ($%d::timestamptz > ts OR ($%d::timestamptz = ts AND $%d::bool)))) AS apply
	FROM (SELECT (c).timestamp AS ts, (NOT same AND (c).timestamp IS NOT NULL AND (c).roident IS DISTINCT FROM $%d::oid AND (c).roident IS DISTINCT FROM %d) AS conflict FROM l) v)`,
		same, target, keyMatch(t, lookup), mode, mode, ts, ts, tie, ours, d.repairID())
	if op == cdc.OpDelete {
		fmt.Fprintf(&b, `,
d AS (DELETE FROM %s t USING w WHERE %s AND w.apply RETURNING 1)
SELECT w.conflict, w.ts, w.apply, 0::int8, NULL::timestamptz FROM (SELECT 1) o LEFT JOIN w ON true`, target, keyMatch(t, lookup))
		return b.String()
	}
	vals := make([]string, n)
	for i, c := range t.Columns {
		vals[i] = param(i+1, c)
	}
	// A missing row with a tombstone (last_update_wins only) was deleted
	// here: the later of the delete and the incoming write wins (on a tie,
	// the source's). Without one, an insert is written, an update as the
	// policy says (missing).
	fmt.Fprintf(&b, `,
u AS (UPDATE %s t SET %s FROM w WHERE %s AND w.apply RETURNING 1),
tb AS (SELECT ts FROM (%s) x WHERE NOT EXISTS (SELECT 1 FROM l)),
i AS (INSERT INTO %s (%s)%s SELECT %s WHERE NOT EXISTS (SELECT 1 FROM l)
	AND coalesce((SELECT $%d::timestamptz > tb.ts OR ($%d::timestamptz = tb.ts AND $%d::bool) FROM tb WHERE tb.ts IS NOT NULL), $%d::bool) RETURNING 1)
SELECT w.conflict, w.ts, w.apply, (SELECT count(*) FROM i), (SELECT tb.ts FROM tb) FROM (SELECT 1) o LEFT JOIN w ON true`,
		target, setList(t, keyChange), keyMatch(t, lookup), d.tombstone(t, func(i int) int { return lookup + i }),
		target, t.TargetColumnList(), t.Overriding(), strings.Join(vals, ", "), ts, ts, tie, ours+1)
	return b.String()
}

// fastSQL builds the fast statement of op for p's table, which direction d
// applies under its origin: it applies the change only where the
// conflict-aware statement would find no conflict and the row where it is
// expected, and then does what that statement does; it touches no row
// otherwise. Its parameters are the first ones of the conflict-aware
// statement's. It changes exactly one row when it applies the change.
//
// A row is where it is expected, without conflict, when an insert's key is
// free, and when the row an update or delete finds by key was last written
// through this direction's origin, or has no commit time, or equals the
// incoming old row (or, for an update, the new row).
func (d *direction) fastSQL(p *plan, op cdc.Op, keyChange bool) string {
	t := p.table
	n, k := len(t.Columns), len(t.Key)
	target := t.Target.Quoted()
	ours := fmt.Sprintf(`(SELECT c.timestamp IS NULL OR c.roident IN (%d, %d) FROM pg_xact_commit_timestamp_origin(t.xmin) c)`, d.ours, d.repairID())
	switch op {
	case cdc.OpInsert:
		vals := make([]string, n)
		for i, c := range t.Columns {
			vals[i] = param(i+1, c)
		}
		// A key with a tombstone is left to the conflict-aware statement.
		return "INSERT INTO " + target + " (" + t.TargetColumnList() + ")" + t.Overriding() + " SELECT " + strings.Join(vals, ", ") +
			" WHERE NOT EXISTS (" + d.tombstone(t, func(i int) int { return t.Key[i] + 1 }) +
			") ON CONFLICT (" + t.TargetKeyList() + ") DO NOTHING"
	case cdc.OpUpdate:
		return "UPDATE " + target + " t SET " + setList(t, keyChange) + " WHERE " + keyMatch(t, n+1) +
			" AND ((" + rowMatch(t, n+k+1) + ") OR (" + rowMatch(t, 1) + ") OR " + ours + ")"
	default:
		return "DELETE FROM " + target + " t WHERE " + keyMatch(t, 1) + " AND ((" + rowMatch(t, k+1) + ") OR " + ours + ")"
	}
}

// repairID is the id of the repair origin, or of ours when it is not known:
// never 0, which is no origin, the id of every local write.
func (d *direction) repairID() uint32 {
	if d.repair == 0 {
		return d.ours
	}
	return d.repair
}

// statement returns the two-way statement named by k, compiling it on
// first use.
func (d *direction) statement(k stmtKey) string {
	sql, ok := d.statements[k]
	if !ok {
		if k.fast {
			sql = d.fastSQL(k.p, k.op, k.keyChange)
		} else {
			sql = d.conflictSQL(k.p, k.op, k.keyChange)
		}
		d.statements[k] = sql
	}
	return sql
}

// errFastMiss is returned when a fast statement of a two-way batch found a
// conflict or a row missing: the batch is applied again with the
// conflict-aware statements.
var errFastMiss = errors.New("a fast two-way statement met a conflict or a missing row")

// queueChange queues the statements of one row change: plainly in a
// one-way sync, and in a two-way one with the fast statement (when fast is
// set) or the conflict-aware one. A fast statement that does not apply its
// change marks fast.
func (s *syncer) queueChange(b *pgx.Batch, p *plan, tx *cdc.Transaction, c *cdc.Change, fast *fastBatch) error {
	if s.tw == nil {
		return p.queue(b, c)
	}
	k, args, keyTuple, err := s.tw.conflictArgs(p, tx, c, fast != nil)
	if err != nil {
		return err
	}
	if k.p == nil {
		// Without the old row (the replica identity was changed from FULL
		// behind the sync's back) no conflict can be told: applied plainly.
		return p.queue(b, c)
	}
	if fast != nil {
		b.Queue(s.tw.statement(k), args...).Exec(func(ct pgconn.CommandTag) error {
			if ct.RowsAffected() != 1 {
				fast.miss = true
			}
			return nil
		})
		return nil
	}
	d, table, commit := s.tw, p.table.Target.String(), tx.CommitTime
	lsn := tx.CommitLSN
	b.Queue(s.tw.statement(k), args...).QueryRow(func(row pgx.Row) error {
		var conflicted, applied *bool
		var local, deleted *time.Time
		var inserted int64
		if err := row.Scan(&conflicted, &local, &applied, &inserted, &deleted); err != nil {
			return fmt.Errorf("apply %s on %s: %w", c.Op, table, err)
		}
		kind := ""
		switch {
		case conflicted != nil && *conflicted:
			kind = map[cdc.Op]string{cdc.OpInsert: KindInsertExists, cdc.OpUpdate: KindUpdateUpdate, cdc.OpDelete: KindDeleteUpdate}[c.Op]
		case conflicted == nil && (c.Op == cdc.OpUpdate || deleted != nil):
			// The row is missing here: an update, or a write of a key
			// deleted here (its tombstone's time is the local one).
			kind = KindUpdateDelete
			t := inserted > 0
			applied, local = &t, deleted
		}
		if kind == "" {
			return nil
		}
		winner := d.side()
		if applied != nil && *applied {
			winner = d.otherSide()
		}
		key, err := p.key(keyTuple)
		if err != nil {
			return err
		}
		d.pending = append(d.pending, conflict{table: table, kind: kind, key: keyJSON(p.table, key), local: local, remote: commit,
			resolution: winner + "_won", lsn: lsn})
		return nil
	})
	return nil
}

// fastBatch is a two-way batch sent with the fast statements.
type fastBatch struct {
	// miss is set when one of them did not apply its change.
	miss bool
}

// conflictArgs returns the name of the two-way statement of a change
// (fast or conflict-aware), its arguments (all text) and the tuple holding
// its key. k.p is nil when the change lacks the old row needed.
func (d *direction) conflictArgs(p *plan, tx *cdc.Transaction, c *cdc.Change, fast bool) (k stmtKey, args []any, keyTuple cdc.Tuple, err error) {
	newRow := c.New
	switch c.Op {
	case cdc.OpUpdate, cdc.OpDelete:
		if c.OldKind != 'O' {
			return stmtKey{}, nil, nil, nil
		}
	}
	if c.Op == cdc.OpUpdate {
		// Unchanged TOAST values of the new row are those of the old row,
		// which REPLICA IDENTITY FULL sends whole.
		newRow = make(cdc.Tuple, len(c.New))
		copy(newRow, c.New)
		for i, v := range newRow {
			if v.Kind == cdc.ValueUnchanged {
				if c.Old[i].Kind == cdc.ValueUnchanged {
					return stmtKey{}, nil, nil, nil
				}
				newRow[i] = c.Old[i]
			}
		}
	}
	k = stmtKey{p: p, op: c.Op, fast: fast}
	var parts []cdc.Tuple
	var keys []any
	switch c.Op {
	case cdc.OpInsert:
		keyTuple, parts = newRow, []cdc.Tuple{newRow}
	case cdc.OpUpdate:
		keyTuple, parts = c.Old, []cdc.Tuple{newRow, nil, c.Old}
	case cdc.OpDelete:
		keyTuple, parts = c.Old, []cdc.Tuple{nil, c.Old}
	default:
		return stmtKey{}, nil, nil, fmt.Errorf("queue %s on %s: not a row change", c.Op, p.table.Source)
	}
	if keys, err = p.key(keyTuple); err != nil {
		return stmtKey{}, nil, nil, err
	}
	args = make([]any, 0, 2*len(p.table.Columns)+len(keys)+5)
	for _, part := range parts {
		if part == nil {
			args = append(args, keys...)
			continue
		}
		r, err := p.row(part)
		if err != nil {
			return stmtKey{}, nil, nil, err
		}
		args = append(args, r...)
	}
	if c.Op == cdc.OpInsert && !fast {
		args = append(args, keys...)
	}
	if c.Op == cdc.OpUpdate {
		newKey, err := p.key(newRow)
		if err != nil {
			return stmtKey{}, nil, nil, err
		}
		for i := range keys {
			if newKey[i] != keys[i] {
				k.keyChange = true
			}
		}
	}
	if fast {
		return k, args, keyTuple, nil
	}
	mode, missing := d.modes(c.Op)
	args = append(args, strconv.Itoa(mode), tx.CommitTime.UTC().Format(time.RFC3339Nano),
		strconv.FormatBool(d.fromSource), strconv.FormatUint(uint64(d.ours), 10))
	if c.Op != cdc.OpDelete {
		args = append(args, strconv.FormatBool(missing))
	}
	return k, args, keyTuple, nil
}

// keyJSON renders key values as a JSON object of target key column → value.
func keyJSON(t *mapping.Table, vals []any) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range t.Key {
		if i > 0 {
			b.WriteString(", ")
		}
		name, _ := json.Marshal(t.Columns[k].Target)
		v, _ := json.Marshal(vals[i])
		b.Write(name)
		b.WriteString(": ")
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String()
}

// beginApply forgets the conflicts of a target transaction that did not
// commit.
func (s *syncer) beginApply() {
	if s.tw != nil {
		s.tw.pending = s.tw.pending[:0]
	}
}

const insertConflictSQL = `INSERT INTO datasync.sync_conflicts (name, direction, table_name, kind, key,
	local_commit_time, remote_commit_time, resolution, commit_lsn) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::pg_lsn)`

// storeConflicts writes the conflicts met in the target transaction tx
// into it, so that they are stored exactly when the changes are.
func (s *syncer) storeConflicts(ctx context.Context, tx pgx.Tx) error {
	if s.tw == nil || len(s.tw.pending) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, c := range s.tw.pending {
		b.Queue(insertConflictSQL, s.tw.name, s.tw.label, c.table, c.kind, c.key, c.local, c.remote, c.resolution, c.lsn.String())
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store conflicts: %w", err)
	}
	return nil
}

// reportConflicts logs and counts the conflicts of a target transaction
// that committed.
func (s *syncer) reportConflicts() {
	if s.tw == nil {
		return
	}
	for _, c := range s.tw.pending {
		var local any
		if c.local != nil {
			local = c.local.UTC().Format(time.RFC3339Nano)
		}
		attrs := []any{"direction", s.tw.label, "table", c.table, "kind", c.kind, "key", c.key,
			s.tw.side() + "_commit_time", local, s.tw.otherSide() + "_commit_time", c.remote.UTC().Format(time.RFC3339Nano),
			"resolution", c.resolution}
		if c.reason != "" {
			attrs = append(attrs, "reason", c.reason)
		}
		s.log.Warn("conflict", attrs...)
		s.metrics.Conflicts.WithLabelValues(c.table, c.kind, c.resolution).Inc()
	}
	s.tw.pending = s.tw.pending[:0]
}
