package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc"
)

// A change the other side refuses does not stop a two-way sync. When a
// target transaction fails on an integrity constraint (a foreign key, a
// unique index, a check, NOT NULL), it is rolled back and the same source
// transactions are applied again change by change, each under a savepoint
// and with deferred constraints checked at once: a change that fails is
// rolled back to its savepoint and parked, with the reason, in
// datasync.sync_parked of the side that refused it, in the same target
// transaction as the others and the checkpoint, and counted as a conflict of
// kind parked. Later changes keep flowing. A parked change holds the
// statement and arguments that apply it; datasync parked retry marks it,
// and the running sync (or the next one to start) applies it again.

// refused reports whether err is an integrity constraint violation, which
// parks the change in a two-way sync.
func (s *syncer) refused(err error) bool {
	var pgErr *pgconn.PgError
	return s.tw != nil && errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "23")
}

// applyParking applies batch change by change in one target transaction,
// parking the changes the target refuses. It returns the end LSN of the last
// transaction applied.
func (s *syncer) applyParking(ctx context.Context, batch []*cdc.Transaction) (cdc.LSN, error) {
	s.beginApply()
	tx, err := s.beginTx(ctx)
	if err != nil {
		return s.applied, fmt.Errorf("apply: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
		return s.applied, fmt.Errorf("apply: %w", err)
	}
	var last *cdc.Transaction
	counts := map[[2]string]int{}
	n := 0
	for _, t := range batch {
		if t.EndLSN <= s.applied {
			continue
		}
		if err := s.applyEach(ctx, tx, t, counts); err != nil {
			return s.applied, err
		}
		last = t
		n++
	}
	if last == nil {
		return s.applied, nil
	}
	commitTime := last.CommitTime
	if _, err := tx.Exec(ctx, upsertStateSQL, s.cfg.Name, last.EndLSN.String(), &commitTime); err != nil {
		return s.applied, fmt.Errorf("apply up to %s: %w", last.EndLSN, err)
	}
	if err := s.storeConflicts(ctx, tx); err != nil {
		return s.applied, err
	}
	if err := tx.Commit(ctx); err != nil {
		return s.applied, fmt.Errorf("apply up to %s: commit: %w", last.EndLSN, err)
	}
	s.reportConflicts()
	s.count(counts, n)
	return last.EndLSN, nil
}

// applyEach applies the changes of t (a whole transaction or a part) in the
// target transaction tx one by one, each under a savepoint, parking those
// the target refuses.
func (s *syncer) applyEach(ctx context.Context, tx pgx.Tx, t *cdc.Transaction, counts map[[2]string]int) error {
	for i := range t.Changes {
		one := *t
		one.Changes = t.Changes[i : i+1]
		b := &pgx.Batch{}
		mine := map[[2]string]int{}
		if err := s.queueTx(b, &one, mine, nil); err != nil {
			return err
		}
		if b.Len() == 0 {
			continue
		}
		mark := len(s.tw.pending)
		if _, err := tx.Exec(ctx, `SAVEPOINT datasync_change`); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		err := tx.SendBatch(ctx, b).Close()
		if err == nil {
			if _, err := tx.Exec(ctx, `RELEASE SAVEPOINT datasync_change`); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			for k, v := range mine {
				counts[k] += v
			}
			continue
		}
		if !s.refused(err) {
			return fmt.Errorf("apply the change of the transaction committed at %s: %w", t.CommitLSN, err)
		}
		if _, rerr := tx.Exec(ctx, `ROLLBACK TO SAVEPOINT datasync_change`); rerr != nil {
			return fmt.Errorf("apply: %w", rerr)
		}
		s.tw.pending = s.tw.pending[:mark]
		if err := s.park(ctx, tx, t, &t.Changes[i], b, err); err != nil {
			return err
		}
	}
	return nil
}

// park stores a refused change: its statements (b) and why.
func (s *syncer) park(ctx context.Context, tx pgx.Tx, t *cdc.Transaction, c *cdc.Change, b *pgx.Batch, cause error) error {
	table, key := s.describe(c)
	var pgErr *pgconn.PgError
	errors.As(cause, &pgErr)
	reason := pgErr.Message
	if pgErr.Detail != "" {
		reason += ": " + pgErr.Detail
	}
	commitTime := t.CommitTime
	for _, q := range b.QueuedQueries {
		args := make([]*string, len(q.Arguments))
		for i, a := range q.Arguments {
			switch v := a.(type) {
			case nil:
			case string:
				args[i] = &v
			default:
				str := fmt.Sprint(v)
				args[i] = &str
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO datasync.sync_parked (name, direction, table_name, op, key, statement, args, reason, sqlstate, commit_lsn, commit_time)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::pg_lsn, $11)`,
			s.tw.name, s.tw.label, table, c.Op.String(), key, q.SQL, args, reason, pgErr.Code, t.CommitLSN.String(), &commitTime); err != nil {
			return fmt.Errorf("park a refused change to %s: %w", table, err)
		}
	}
	s.tw.pending = append(s.tw.pending, conflict{table: table, kind: KindParked, key: key, remote: t.CommitTime,
		resolution: KindParked, lsn: t.CommitLSN, reason: reason})
	return nil
}

// describe names the table a change applies to and its key as JSON.
func (s *syncer) describe(c *cdc.Change) (table, key string) {
	if c.Op == cdc.OpTruncate {
		var names []string
		for _, rel := range c.Truncated {
			if t := s.byName[rel.Namespace+"."+rel.Name]; t != nil {
				names = append(names, t.Target.String())
			}
		}
		return strings.Join(names, ", "), "{}"
	}
	p, err := s.plan(c.Relation)
	if err != nil {
		return c.Relation.Namespace + "." + c.Relation.Name, "{}"
	}
	tup := c.New
	if c.Op == cdc.OpDelete || c.OldKind != 0 {
		tup = c.Old
	}
	k, err := p.key(tup)
	if err != nil {
		return p.table.Target.String(), "{}"
	}
	return p.table.Target.String(), keyJSON(p.table, k)
}

// retryParked applies again the parked changes marked for retry in the
// database this direction applies into, at most once a second. A change
// that applies is removed; one refused again stays parked with the new
// reason, unmarked.
func (s *syncer) retryParked(ctx context.Context) {
	if s.tw == nil || time.Now().Before(s.tw.nextRetryCheck) {
		return
	}
	s.tw.nextRetryCheck = time.Now().Add(time.Second)
	rows, err := s.dst.Query(ctx, `SELECT id, statement, args FROM datasync.sync_parked
		WHERE name = $1 AND direction = $2 AND retry_requested ORDER BY id`, s.tw.name, s.tw.label)
	if err != nil {
		s.log.Warn("look for parked changes to retry", "error", err)
		return
	}
	type item struct {
		id   int64
		sql  string
		args []*string
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (item, error) {
		var it item
		err := r.Scan(&it.id, &it.sql, &it.args)
		return it, err
	})
	if err != nil {
		s.log.Warn("look for parked changes to retry", "error", err)
		return
	}
	for _, it := range items {
		args := make([]any, len(it.args))
		for i, a := range it.args {
			if a != nil {
				args[i] = *a
			}
		}
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, it.sql, args...); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM datasync.sync_parked WHERE id = $1`, it.id)
			return err
		})
		if err == nil {
			s.log.Info("parked change applied on retry", "direction", s.tw.label, "id", it.id)
			continue
		}
		reason, code := err.Error(), ""
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			reason, code = pgErr.Message, pgErr.Code
			if pgErr.Detail != "" {
				reason += ": " + pgErr.Detail
			}
		}
		s.log.Warn("parked change refused again", "direction", s.tw.label, "id", it.id, "reason", reason)
		if _, err := s.dst.Exec(ctx, `UPDATE datasync.sync_parked SET retry_requested = false, attempts = attempts + 1,
			reason = $2, sqlstate = $3 WHERE id = $1`, it.id, reason, code); err != nil {
			s.log.Warn("record a failed retry of a parked change", "id", it.id, "error", err)
		}
	}
}

// ParkedChange is a change one side refused, as datasync parked and status
// list it.
type ParkedChange struct {
	// Side is the database that refused the change and holds it: source or
	// target.
	Side string `json:"side"`
	// ID numbers the change within its side.
	ID int64 `json:"id"`
	// Table is the table the change was for, on that side.
	Table string `json:"table"`
	// Op is insert, update, delete or truncate.
	Op string `json:"op"`
	// Key is the row's key as a JSON object.
	Key string `json:"key"`
	// Reason is the error the side answered.
	Reason string `json:"reason"`
	// ParkedAt is when it was parked; CommitTime when it committed on the
	// other side.
	ParkedAt   time.Time  `json:"parked_at"`
	CommitTime *time.Time `json:"commit_time,omitempty"`
	// Attempts counts failed retries; RetryRequested is set while a retry
	// is waiting for the sync.
	Attempts       int  `json:"attempts"`
	RetryRequested bool `json:"retry_requested"`
}

// Sides are the two databases of a sync, by name.
type Sides struct {
	Source, Target *pgxpool.Pool
}

func (s Sides) each(fn func(side string, pool *pgxpool.Pool) error) error {
	for _, side := range []struct {
		name string
		pool *pgxpool.Pool
	}{{"source", s.Source}, {"target", s.Target}} {
		if side.pool == nil {
			continue
		}
		var ok bool
		if err := side.pool.QueryRow(context.Background(), `SELECT to_regclass('datasync.sync_parked') IS NOT NULL`).Scan(&ok); err != nil {
			return fmt.Errorf("read %s: %w", side.name, err)
		}
		if !ok {
			continue
		}
		if err := fn(side.name, side.pool); err != nil {
			return err
		}
	}
	return nil
}

// ListParked returns the parked changes of the sync called name on both
// sides, oldest first on each.
func ListParked(ctx context.Context, sides Sides, name string) ([]ParkedChange, error) {
	var out []ParkedChange
	err := sides.each(func(side string, pool *pgxpool.Pool) error {
		rows, err := pool.Query(ctx, `SELECT id, table_name, op, key, reason, parked_at, commit_time, attempts, retry_requested
			FROM datasync.sync_parked WHERE name = $1 ORDER BY id`, name)
		if err != nil {
			return fmt.Errorf("list parked changes in %s: %w", side, err)
		}
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ParkedChange, error) {
			p := ParkedChange{Side: side}
			err := r.Scan(&p.ID, &p.Table, &p.Op, &p.Key, &p.Reason, &p.ParkedAt, &p.CommitTime, &p.Attempts, &p.RetryRequested)
			return p, err
		})
		if err != nil {
			return fmt.Errorf("list parked changes in %s: %w", side, err)
		}
		out = append(out, got...)
		return nil
	})
	return out, err
}

// ErrNoParked is returned when no parked change matches.
var ErrNoParked = errors.New("no such parked change")

// RetryParked marks parked changes of the sync called name for retry: the
// one numbered id on side ("source", "target", or "" for either), or all
// when id is 0. The running sync applies them within a second; a sync
// started later applies them as it starts streaming. It returns how many
// were marked.
func RetryParked(ctx context.Context, sides Sides, name, side string, id int64) (int64, error) {
	return changeParked(ctx, sides, name, side, id, `UPDATE datasync.sync_parked SET retry_requested = true`)
}

// DropParked deletes parked changes, chosen as RetryParked chooses them:
// they will never be applied. It returns how many were dropped.
func DropParked(ctx context.Context, sides Sides, name, side string, id int64) (int64, error) {
	return changeParked(ctx, sides, name, side, id, `DELETE FROM datasync.sync_parked`)
}

func changeParked(ctx context.Context, sides Sides, name, side string, id int64, stmt string) (int64, error) {
	var n int64
	err := sides.each(func(s string, pool *pgxpool.Pool) error {
		if side != "" && side != s {
			return nil
		}
		tag, err := pool.Exec(ctx, stmt+` WHERE name = $1 AND ($2 = 0 OR id = $2)`, name, id)
		if err != nil {
			return fmt.Errorf("parked changes in %s: %w", s, err)
		}
		n += tag.RowsAffected()
		return nil
	})
	if err == nil && n == 0 && id != 0 {
		return 0, fmt.Errorf("parked change %d of sync %s: %w", id, name, ErrNoParked)
	}
	return n, err
}

// parkingPart reports whether part belongs to a large transaction that
// is applied change by change, after the target refused one of its changes.
func (s *syncer) parkingPart(part *cdc.Transaction) bool {
	return s.tw != nil && s.tw.slow != 0 && s.tw.slow == part.CommitLSN
}

// parkFromStart handles a refused change in a large transaction applied in
// parts: what was sent of it is lost with the target transaction, so the
// stream is restarted, and the transaction, sent again from its start, is
// applied change by change.
func (s *syncer) parkFromStart(part *cdc.Transaction, err error) error {
	s.tw.slow = part.CommitLSN
	s.log.Warn("the target refused a change of a large transaction; applying it again change by change", "commit_lsn", part.CommitLSN.String(), "error", err)
	return &restartError{err: err}
}

// applyEachPart applies one part of a large transaction change by change in
// tx, parking what the target refuses; b holds the part's statements as
// queued, whose last one stores the checkpoint when this is the last part.
func (s *syncer) applyEachPart(ctx context.Context, tx pgx.Tx, part *cdc.Transaction, b *pgx.Batch) error {
	if part.Part == 0 {
		if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
			return err
		}
	}
	if err := s.applyEach(ctx, tx, part, map[[2]string]int{}); err != nil {
		return err
	}
	if !part.More {
		q := b.QueuedQueries[len(b.QueuedQueries)-1]
		if _, err := tx.Exec(ctx, q.SQL, q.Arguments...); err != nil {
			return err
		}
	}
	return nil
}
