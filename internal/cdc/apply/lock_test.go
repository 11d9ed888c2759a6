package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// waitUntil polls cond until it holds, failing after 60 seconds.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// TestSecondSyncSameNameDuringFirstCopyRefused pins issue 15, item 1: a
// second sync with the same --name, started while the first was in its
// initial copy, dropped the first's slot ("unfinished first copy"); the
// first then streamed from the second's newer slot and the rows committed
// in between were never applied. The second must be refused, naming the
// running process, without touching the slot, and the first must lose
// nothing.
func TestSecondSyncSameNameDuringFirstCopyRefused(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users SELECT g, 'u' || g, 'n', 'x', g FROM generate_series(1, 100) g;`, usersSchema)
	ctx := testCtx(t)
	// Hold the first sync inside its copy: a SHARE lock on the target table
	// lets it read the catalog but not write the rows.
	block, err := p.dst.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer block.Rollback(context.Background())
	if _, err := block.Exec(ctx, `LOCK TABLE users IN SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	cfg := p.config("twice", mapping.TableSpec{Source: "users"})
	first := startSync(t, cfg)
	waitUntil(t, "the first sync to create its slot and wait inside its copy", func() bool {
		var slots, waiting int
		if err := p.src.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'datasync_twice'`).Scan(&slots); err != nil {
			t.Fatal(err)
		}
		if err := p.dst.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return slots == 1 && waiting > 0
	})
	var slotBefore string
	if err := p.src.Pool.QueryRow(ctx, `SELECT concat_ws(' ', catalog_xmin, restart_lsn, confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = 'datasync_twice'`).Scan(&slotBefore); err != nil {
		t.Fatal(err)
	}
	// Committed after the first's snapshot: only its slot can bring these.
	execAll(t, p.src.Pool, `INSERT INTO users SELECT g, 'late' || g, 'n', 'x', g FROM generate_series(101, 150) g`,
		`UPDATE users SET n = -n WHERE id <= 10`, `DELETE FROM users WHERE id BETWEEN 20 AND 29`)

	secondCtx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = Run(secondCtx, cfg)
	if !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second sync: got %v, want an error wrapping ErrAlreadyRunning", err)
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("second sync's error %q does not name the running process (%s)", err, want)
	}
	var slotAfter string
	if err := p.src.Pool.QueryRow(ctx, `SELECT concat_ws(' ', catalog_xmin, restart_lsn, confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = 'datasync_twice'`).Scan(&slotAfter); err != nil {
		t.Fatalf("the first sync's slot after the second start: %v", err)
	}
	if slotAfter != slotBefore {
		t.Errorf("slot after the second start: got %s, want it untouched: %s", slotAfter, slotBefore)
	}

	if err := block.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitSame(t, p, first, usersQuery, usersQuery)
	if err := first.stop(t); err != nil {
		t.Fatalf("first sync: got %v, want nil", err)
	}
	// Once the first has stopped, the name is free again.
	cfg.UntilCaughtUp = true
	if err := Run(testCtx(t), cfg); err != nil {
		t.Fatalf("a sync started after the first stopped: %v", err)
	}
}

// TestSlotInUseNotDropped checks the guard beside the lock: a slot with no
// finished copy in the target is not dropped while a source process uses
// it.
func TestSlotInUseNotDropped(t *testing.T) {
	p := newPair(t, usersSchema, usersSchema)
	ctx := testCtx(t)
	execAll(t, p.src.Pool, `CREATE PUBLICATION busy_pub FOR TABLE users`,
		`SELECT pg_create_logical_replication_slot('datasync_busy', 'pgoutput')`)
	// A walsender streaming from the slot makes it active.
	rc := connectRepl(t, p.src.URL)
	if err := rc.StartReplication(ctx, "datasync_busy", 0, []string{"busy_pub"}); err != nil {
		t.Fatal(err)
	}
	err := Run(ctx, p.config("busy", mapping.TableSpec{Source: "users"}))
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), "in use by server process") {
		t.Fatalf("got %v, want a refusal naming the process using the slot", err)
	}
	var n int
	if err := p.src.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'datasync_busy'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("slot datasync_busy: got %d (%v), want it kept", n, err)
	}
}

func connectRepl(tb testing.TB, url string) *cdc.ReplConn {
	tb.Helper()
	rc, err := cdc.Connect(testCtx(tb), url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { rc.Close(context.Background()) })
	return rc
}

// TestCleanupRefusesWhileRunning checks that cleanup leaves a running
// sync alone, whatever its slot's state (it may not be active during the
// first copy): it names the running process and drops nothing; once the
// sync has stopped, it drops.
func TestCleanupRefusesWhileRunning(t *testing.T) {
	p := newPair(t, usersSchema+`INSERT INTO users VALUES (1, 'a', 'A', 'x', 1)`, usersSchema)
	r := startSync(t, p.config("busy", mapping.TableSpec{Source: "users"}))
	waitSame(t, p, r, usersQuery, usersQuery)
	rep, err := DropSync(testCtx(t), p.src.Pool, p.dst.Pool, "busy")
	if !errors.Is(err, ErrAlreadyRunning) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("cleanup beside the running sync: got %v, want ErrAlreadyRunning naming pid %d", err, os.Getpid())
	}
	if len(rep.Dropped) != 0 {
		t.Errorf("dropped beside the running sync: %v", rep.Dropped)
	}
	if got := dump(t, p.src.Pool, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'datasync_busy'`); got != "[1]\n" {
		t.Errorf("slot after the refused cleanup: %s, want it kept", got)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "cleanup after the sync stopped", func() bool {
		_, err := DropSync(testCtx(t), p.src.Pool, p.dst.Pool, "busy")
		return err == nil
	})
}
