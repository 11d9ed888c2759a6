package cdc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func connect(tb testing.TB, url string) *ReplConn {
	tb.Helper()
	rc, err := Connect(testCtx(tb), url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { rc.Close(context.Background()) })
	return rc
}

func TestIdentifySystem(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	rc := connect(t, db.URL)
	got, err := rc.IdentifySystem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wantID string
	var cur string
	if err := db.Pool.QueryRow(ctx, `SELECT system_identifier::text, pg_current_wal_lsn()::text FROM pg_control_system()`).Scan(&wantID, &cur); err != nil {
		t.Fatal(err)
	}
	curLSN, _ := ParseLSN(cur)
	if got.SystemID != wantID || got.DBName != db.Name || got.Timeline != 1 {
		t.Errorf("got %+v, want system %s, database %s, timeline 1", got, wantID, db.Name)
	}
	if got.XLogPos == 0 || got.XLogPos > curLSN {
		t.Errorf("xlogpos: got %s, want in (0, %s]", got.XLogPos, curLSN)
	}
}

// TestExportedSnapshot checks that the snapshot exported with a new slot
// shows the rows committed before the slot and none committed after, and
// that the slot streams exactly the latter.
func TestExportedSnapshot(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY);
		INSERT INTO t VALUES (1);
		CREATE PUBLICATION pub FOR TABLE t`); err != nil {
		t.Fatal(err)
	}
	rc := connect(t, db.URL)
	slot, err := rc.CreateSlot(ctx, "snap", SlotOptions{ExportSnapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	if slot.SnapshotName == "" || slot.Plugin != "pgoutput" || slot.ConsistentPoint == 0 {
		t.Fatalf("slot: got %+v, want a snapshot, pgoutput and a consistent point", slot)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO t VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+slot.SnapshotName+"'"); err != nil {
		t.Fatal(err)
	}
	var n, maxID int
	if err := tx.QueryRow(ctx, `SELECT count(*), max(id) FROM t`).Scan(&n, &maxID); err != nil {
		t.Fatal(err)
	}
	if n != 1 || maxID != 1 {
		t.Errorf("rows in snapshot: got %d (max id %d), want 1 (max id 1)", n, maxID)
	}
	tx.Rollback(ctx)

	if err := rc.StartReplication(ctx, "snap", slot.ConsistentPoint, []string{"pub"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for len(ids) == 0 {
		msg, err := rc.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if x, ok := msg.(*XLogData); ok {
			m, err := Decode(x.Data)
			if err != nil {
				t.Fatal(err)
			}
			if ins, ok := m.(*Insert); ok {
				ids = append(ids, string(ins.New[0].Data))
			}
		}
	}
	if ids[0] != "2" {
		t.Errorf("first streamed insert: got id %s, want 2", ids[0])
	}
}

func TestCreateSlotErrors(t *testing.T) {
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	rc := connect(t, db.URL)
	if _, err := rc.CreateSlot(ctx, "Bad-Name", SlotOptions{}); err == nil {
		t.Error("invalid name: got no error, want one")
	}
	if _, err := rc.CreateSlot(ctx, "dup", SlotOptions{Temporary: true}); err != nil {
		t.Fatal(err)
	}
	_, err := rc.CreateSlot(ctx, "dup", SlotOptions{})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42710" {
		t.Errorf("duplicate slot: got %v, want SQLSTATE 42710", err)
	}
}

// publishedSlot makes a database with table t in publication pub, and a
// replication connection with a new slot called name.
func publishedSlot(t *testing.T, name string) (*pgtest.DB, *ReplConn, Slot) {
	t.Helper()
	db := pgtest.NewDB(t)
	ctx := testCtx(t)
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION pub FOR TABLE t`); err != nil {
		t.Fatal(err)
	}
	rc := connect(t, db.URL)
	slot, err := rc.CreateSlot(ctx, name, SlotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return db, rc, slot
}

// TestStandbyStatusMovesConfirmedFlush checks that a status update moves
// the slot's confirmed_flush_lsn, and that a reply request is answered with
// a keepalive.
func TestStandbyStatusMovesConfirmedFlush(t *testing.T) {
	db, rc, slot := publishedSlot(t, "status")
	ctx := testCtx(t)
	if _, err := db.Pool.Exec(ctx, `INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	if err := rc.StartReplication(ctx, "status", slot.ConsistentPoint, []string{"pub"}); err != nil {
		t.Fatal(err)
	}
	var end LSN
	for end == 0 {
		msg, err := rc.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if x, ok := msg.(*XLogData); ok {
			if m, err := Decode(x.Data); err == nil {
				if c, ok := m.(*Commit); ok {
					end = c.EndLSN
				}
			}
		}
	}
	if err := rc.SendStandbyStatus(ctx, StandbyStatus{Write: end, Flush: end, Apply: end, ReplyRequested: true}); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := rc.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := msg.(*Keepalive); ok {
			break
		}
	}
	waitFor(t, "confirmed_flush_lsn to reach "+end.String(), func() bool {
		var s string
		if err := db.Pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'status'`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		got, _ := ParseLSN(s)
		return got >= end
	})
}

// waitFor polls cond until it holds, failing the test after 30 seconds.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReceiveUntil checks ReceiveUntil's two ways out of a quiet stream: its
// deadline passing, after which the connection still delivers the next
// change, and its context ending in the middle of a read (WatchContext),
// which returns at once rather than at the deadline.
func TestReceiveUntil(t *testing.T) {
	db, rc, slot := publishedSlot(t, "until")
	ctx := testCtx(t)
	if err := rc.StartReplication(ctx, "until", slot.ConsistentPoint, []string{"pub"}); err != nil {
		t.Fatal(err)
	}
	// Quiet: only keepalives may come until the deadline.
	deadline := time.Now().Add(300 * time.Millisecond)
	for {
		msg, err := rc.ReceiveUntil(ctx, deadline)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("before the deadline: %v", err)
		}
		if _, ok := msg.(*Keepalive); !ok {
			t.Fatalf("got %T on a quiet stream, want keepalives only", msg)
		}
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO t VALUES (7)`); err != nil {
		t.Fatal(err)
	}
	var got *Insert
	for got == nil {
		msg, err := rc.ReceiveUntil(ctx, time.Now().Add(10*time.Second))
		if err != nil {
			t.Fatalf("after a deadline passed, the connection must stay usable: %v", err)
		}
		if x, ok := msg.(*XLogData); ok {
			if m, err := Decode(x.Data); err == nil {
				got, _ = m.(*Insert)
			}
		}
	}
	if string(got.New[0].Data) != "7" {
		t.Errorf("insert: got %q, want 7", got.New[0].Data)
	}

	cctx, cancel := context.WithCancel(ctx)
	defer rc.WatchContext(cctx)()
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	for {
		_, err := rc.ReceiveUntil(cctx, time.Now().Add(time.Minute))
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: got %v, want context.Canceled", err)
		}
		break
	}
	if waited := time.Since(start); waited > 30*time.Second {
		t.Errorf("the read ended %v after cancel, want at once, well before its deadline", waited)
	}
}
