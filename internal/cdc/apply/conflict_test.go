package apply

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/cdc"
)

// TestConflictCheckSeesTheRowItWaitedFor forces the interleaving in which
// two-way sync once let the sides diverge: an incoming update reaches a row
// while a local transaction holds it, and that transaction commits, later
// than the incoming change, while the apply waits for the row. The decision
// must be taken on the row as committed, with the commit time of its new
// writer: under last_update_wins the local row is the later one and stays.
// Read through a join beside the locked row, the commit time was that of
// the version before, so the older incoming change overwrote the newer
// local row on this side while the other side kept it. The fast statement
// must not apply the change either.
func TestConflictCheckSeesTheRowItWaitedFor(t *testing.T) {
	db := twoWayCluster(t).NewDB(t)
	ctx := testCtx(t)
	execAll(t, db.Pool, `CREATE SCHEMA app; CREATE TABLE app.people (id bigint PRIMARY KEY, email text, body text);
		INSERT INTO app.people VALUES (6, 'old', 'b'); CREATE SCHEMA datasync;`+tombstonesSchema)
	var ours uint32
	if err := db.Pool.QueryRow(ctx, `SELECT pg_replication_origin_create('datasync_waited_to_target')::int8`).Scan(&ours); err != nil {
		t.Fatal(err)
	}
	p, err := compile(planTable(), planRelation())
	if err != nil {
		t.Fatal(err)
	}
	d := &direction{name: "waited", fromSource: true, policy: LastUpdateWins, ours: ours, statements: map[stmtKey]string{}}
	// The source updated the row from the version both sides had; the
	// relation publishes body, extra, id, mail.
	change := &cdc.Change{Op: cdc.OpUpdate, OldKind: 'O',
		Old: cdc.Tuple{txt("b"), null, txt("6"), txt("old")},
		New: cdc.Tuple{txt("b"), null, txt("6"), txt("src")}}

	for _, fast := range []bool{true, false} {
		name := map[bool]string{true: "fast", false: "conflict-aware"}[fast]
		t.Run(name, func(t *testing.T) {
			execAll(t, db.Pool, `UPDATE app.people SET email = 'old' WHERE id = 6`)
			local, err := db.Pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer local.Rollback(context.WithoutCancel(ctx))
			if _, err := local.Exec(ctx, `UPDATE app.people SET email = 'local' WHERE id = 6`); err != nil {
				t.Fatal(err)
			}
			// The incoming change committed on the source now, before the
			// local transaction commits.
			incoming := &cdc.Transaction{CommitTime: time.Now(), CommitLSN: 1}
			time.Sleep(10 * time.Millisecond)
			k, args, _, err := d.conflictArgs(p, incoming, change, fast)
			if err != nil {
				t.Fatal(err)
			}
			type result struct {
				affected       int64
				conflict       *bool
				localTime      *time.Time
				applied        *bool
				err            error
				waitedForLocal bool
			}
			done := make(chan result, 1)
			applyConn, err := db.Pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer applyConn.Release()
			var applyPID int
			if err := applyConn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&applyPID); err != nil {
				t.Fatal(err)
			}
			go func() {
				var r result
				r.err = pgx.BeginFunc(ctx, applyConn, func(tx pgx.Tx) error {
					if fast {
						ct, err := tx.Exec(ctx, d.statement(k), args...)
						r.affected = ct.RowsAffected()
						return err
					}
					var inserted int64
					var deleted *time.Time
					return tx.QueryRow(ctx, d.statement(k), args...).Scan(&r.conflict, &r.localTime, &r.applied, &inserted, &deleted)
				})
				done <- r
			}()
			waitFor(t, "the apply to wait for the local transaction's row lock", func() bool {
				var waiting bool
				if err := db.Pool.QueryRow(ctx, `SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1`, applyPID).Scan(&waiting); err != nil {
					t.Fatal(err)
				}
				return waiting
			})
			if err := local.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			var localCommit time.Time
			if err := db.Pool.QueryRow(ctx, `SELECT pg_xact_commit_timestamp(xmin) FROM app.people WHERE id = 6`).Scan(&localCommit); err != nil {
				t.Fatal(err)
			}
			if !localCommit.After(incoming.CommitTime) {
				t.Fatalf("set-up: the local commit %v is not later than the incoming one %v", localCommit, incoming.CommitTime)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if fast {
				if r.affected != 0 {
					t.Errorf("fast statement: changed %d rows, want 0 (the row it waited for was written locally since)", r.affected)
				}
			} else {
				if r.conflict == nil || !*r.conflict {
					t.Errorf("conflict: got %v, want true", r.conflict != nil && *r.conflict)
				}
				if r.localTime == nil || !r.localTime.Equal(localCommit) {
					t.Errorf("local commit time: got %v, want %v, the commit of the row waited for", r.localTime, localCommit)
				}
				if r.applied == nil || *r.applied {
					t.Errorf("applied: got %v, want false: the local row is later", r.applied != nil && *r.applied)
				}
			}
			if got := dump(t, db.Pool, `SELECT email FROM app.people WHERE id = 6`); got != "[local]\n" {
				t.Errorf("row after the apply: got %s, want [local] (the later write)", got)
			}
		})
	}
}
