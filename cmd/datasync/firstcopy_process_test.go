package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// bigSeed gives both tables enough rows that a copy in batches of 200 is
// under way for a while.
const bigSeed = `INSERT INTO accounts SELECT g, 'owner' || g, g * 1.5, repeat('n', g % 50), now() FROM generate_series(1, 30000) g;
	INSERT INTO events SELECT g, g, 'seed' FROM generate_series(1, 30000) g;`

// TestSyncProcessKilledMidCopy kills datasync sync with SIGKILL in the
// middle of its first copy, after some batches of a table committed, while
// a workload writes to the source. The next run copies that table again
// from a fresh snapshot (its partial rows first deleted) and keeps a table
// whose copy was recorded; afterwards source and target are identical,
// datasync verify says consistent, and no change was applied twice.
func TestSyncProcessKilledMidCopy(t *testing.T) {
	bin := buildDatasync(t)
	for _, tc := range []struct {
		name  string
		table string // the table being copied when killed
		kept  string // a table whose copy was recorded before the kill, if any
	}{
		{name: "first table", table: "public.accounts"},
		{name: "second table", table: "public.events", kept: "public.accounts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
			execSQL(t, src.Pool, workloadSchema+bigSeed)
			execSQL(t, dst.Pool, workloadSchema+targetExtra)
			name := "midcopy"
			w := startWorkload(t, src.Pool, 7)

			first := startDatasync(t, bin, syncArgs(src, dst, name, "--workers", "2", "--batch-size", "200")...)
			waitBatches(t, dst.Pool, name, tc.table, first)
			if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			first.wait(t, 10*time.Second)
			if n := queryInt(t, dst.Pool, `SELECT count(*) FROM datasync.sync_tables WHERE target_table = '`+tc.table+`'`); n != 0 {
				t.Fatalf("%s recorded as copied before the kill: the kill came too late to test a copy cut short", tc.table)
			}
			partial := queryInt(t, dst.Pool, `SELECT count(*) FROM `+tc.table)
			if partial == 0 {
				t.Fatalf("%s: no rows of the unfinished copy in the target, want some", tc.table)
			}

			// Run again while the workload goes on, then catch up once it
			// stopped.
			second := startDatasync(t, bin, syncArgs(src, dst, name, "--workers", "2", "--batch-size", "200", "--until-caught-up")...)
			if code := second.wait(t, 120*time.Second); code != 0 {
				t.Fatalf("second run exit code: got %d, want 0; output:\n%s", code, second.out.String())
			}
			if txs := w.stop(); txs < 10 {
				t.Fatalf("workload committed %d transactions, want at least 10", txs)
			}
			third := startDatasync(t, bin, syncArgs(src, dst, name, "--until-caught-up")...)
			if code := third.wait(t, 60*time.Second); code != 0 {
				t.Fatalf("third run exit code: got %d, want 0; output:\n%s", code, third.out.String())
			}

			out := second.out.String()
			if !strings.Contains(out, `msg="copied table" sync=`+name+` source=`+tc.table) {
				t.Errorf("second run did not copy %s again; output:\n%s", tc.table, out)
			}
			if tc.kept != "" && strings.Contains(out, `msg="copied table" sync=`+name+` source=`+tc.kept) {
				t.Errorf("second run copied %s again, whose copy was recorded; output:\n%s", tc.kept, out)
			}
			if strings.Contains(third.out.String(), "copied table") {
				t.Errorf("third run copied a table; output:\n%s", third.out.String())
			}
			assertSame(t, src.Pool, dst.Pool, accountsQuery)
			assertSame(t, src.Pool, dst.Pool, eventsQuery)
			if got := cdctest.Dump(t, dst.Pool, `SELECT id FROM dup_log ORDER BY id`); got != "" {
				t.Errorf("events updated in the target (applied twice): got ids\n%s, want none", got)
			}
			if n := queryInt(t, dst.Pool, `SELECT count(*) FROM datasync.backfill_progress WHERE name = 'sync:`+name+`'`); n != 0 {
				t.Errorf("the copy's checkpoints: got %d rows left, want none once recorded", n)
			}
			v := startDatasync(t, bin, "verify", "--source", src.URL, "--target", dst.URL, "--table", "accounts", "--table", "events")
			if code := v.wait(t, 60*time.Second); code != 0 {
				t.Fatalf("verify exit code: got %d, want 0 (consistent); output:\n%s", code, v.out.String())
			}
		})
	}
}

// waitBatches waits until the sync's first copy has committed batches of
// table (and the copy is not recorded yet).
func waitBatches(tb testing.TB, dst *pgxpool.Pool, name, table string, p *proc) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var n int64
		err := dst.QueryRow(context.Background(), `SELECT coalesce(sum(rows_copied), 0)::bigint FROM datasync.backfill_progress
			WHERE name = $1 AND target_table = $2`, "sync:"+name, table).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		select {
		case <-p.done:
			tb.Fatalf("datasync exited early; output:\n%s", p.out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	tb.Fatalf("no batch of %s committed within 60s; output:\n%s", table, p.out.String())
}

// TestSyncCopyFlagsChecked refuses a first copy's --workers or --batch-size
// below 1 with exit 2 naming the flag, before connecting anywhere.
func TestSyncCopyFlagsChecked(t *testing.T) {
	env := map[string]string{"DATASYNC_SOURCE": "postgres://127.0.0.1:1/none", "DATASYNC_TARGET": "postgres://127.0.0.1:1/none"}
	for _, tc := range []struct{ flag, value, want string }{
		{"--workers", "0", "--workers 0: want 1 or more"},
		{"--batch-size", "-5", "--batch-size -5: want 1 or more"},
	} {
		r := runDatasync(t, env, "sync", "--table", "users", tc.flag, tc.value)
		if r.code != 2 || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("sync %s %s: got exit %d, stderr %q; want exit 2 with %q", tc.flag, tc.value, r.code, r.errOut, tc.want)
		}
	}
}
