package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// dupTrigger records, on either side, every UPDATE of events: no one
// updates an event, so a row there means an insert was applied twice (the
// apply statement overwrites a row it finds).
const dupTrigger = `CREATE TABLE dup_log (id bigint, at timestamptz DEFAULT now());
	CREATE FUNCTION log_dup() RETURNS trigger LANGUAGE plpgsql AS
		$$BEGIN INSERT INTO dup_log (id) VALUES (OLD.id); RETURN NEW; END$$;
	CREATE TRIGGER events_dup BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION log_dup();`

// startSideWorkload writes small transactions to one side until stopped:
// inserts, updates, key changes and deletes of the accounts of its parity
// (odd ids for the source, even for the target), new keys from base, and
// an event per change. The two sides never write the same row, so a
// two-way sync meets no conflict. It returns how many transactions
// committed.
func startSideWorkload(tb testing.TB, pool *pgxpool.Pool, parity, base int64) func() int {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		r := rand.New(rand.NewPCG(uint64(base), 2))
		next := base
		n := 0
		for ctx.Err() == nil {
			var stmts []string
			for range 1 + r.IntN(3) {
				id := 2*(r.Int64N(1000)) + parity
				switch r.IntN(4) {
				case 0:
					next += 2
					stmts = append(stmts, fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'new%d', %d.25, NULL, now())`, next, next, r.IntN(1000)))
				case 1:
					stmts = append(stmts, fmt.Sprintf(`UPDATE accounts SET balance = balance + 1, updated_at = now() WHERE id = %d`, id))
				case 2:
					stmts = append(stmts, fmt.Sprintf(`DELETE FROM accounts WHERE id = %d`, id))
				default:
					next += 2
					stmts = append(stmts, fmt.Sprintf(`UPDATE accounts SET id = %d, note = 'moved' WHERE id = %d`, next, id))
				}
				next += 2
				stmts = append(stmts, fmt.Sprintf(`INSERT INTO events VALUES (%d, %d, 'op')`, next, id))
			}
			if _, err := pool.Exec(ctx, "BEGIN; "+strings.Join(stmts, "; ")+"; COMMIT"); err == nil {
				n++
			}
		}
		done <- n
	}()
	var once sync.Once
	var n int
	stop := func() int {
		once.Do(func() {
			cancel()
			n = <-done
		})
		return n
	}
	tb.Cleanup(func() { stop() })
	return stop
}

// waitRows waits until query returns a positive count.
func waitRows(tb testing.TB, pool *pgxpool.Pool, p *proc, query string) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := pool.QueryRow(context.Background(), query).Scan(&n); err == nil && n > 0 {
			return
		}
		select {
		case <-p.done:
			tb.Fatalf("datasync exited early; output:\n%s", p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	tb.Fatalf("%s: nothing within 60s; output:\n%s", query, p.out.String())
}

// TestTwoWaySyncProcessKill runs datasync sync --two-way as a process while
// both sides take writes, kills it with SIGKILL while both directions are
// streaming, and starts it again. After the writes stop and a catch-up run,
// both sides are identical row for row, no insert was applied twice on
// either side, and no conflict was met (the sides never write the same
// row).
func TestTwoWaySyncProcessKill(t *testing.T) {
	bin := buildDatasync(t)
	c := pgtest.NewTwoWayCluster(t)
	src, dst := c.NewDB(t), c.NewDB(t)
	execSQL(t, src.Pool, workloadSchema+dupTrigger+`INSERT INTO accounts SELECT g, 'owner' || g, g * 1.5, NULL, now() FROM generate_series(1, 2000) g;
		INSERT INTO events SELECT g, g, 'seed' FROM generate_series(1, 2000) g;`)
	execSQL(t, dst.Pool, workloadSchema+dupTrigger)
	args := func(extra ...string) []string {
		return append(syncArgs(src, dst, "tw", "--two-way"), extra...)
	}

	first := startDatasync(t, bin, args()...)
	waitOutput(t, first, "msg=streaming sync=tw direction=to_source")
	stopSrc := startSideWorkload(t, src.Pool, 1, 1_000_001)
	stopDst := startSideWorkload(t, dst.Pool, 0, 5_000_000)
	// Both directions carry the workloads' changes, then the kill.
	waitRows(t, dst.Pool, first, `SELECT count(*) FROM events WHERE id BETWEEN 1000000 AND 4999999`)
	waitRows(t, src.Pool, first, `SELECT count(*) FROM events WHERE id >= 5000000`)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)

	second := startDatasync(t, bin, args()...)
	waitOutput(t, second, "msg=streaming sync=tw direction=to_source")
	before := cdctest.Dump(t, src.Pool, `SELECT count(*) FROM events WHERE id >= 5000000`)
	waitRows(t, src.Pool, second, `SELECT count(*) - `+strings.Trim(strings.TrimSpace(before), "[]")+` FROM events WHERE id >= 5000000`)
	srcTxs, dstTxs := stopSrc(), stopDst()
	if srcTxs < 10 || dstTxs < 10 {
		t.Fatalf("workloads committed %d and %d transactions, want at least 10 each", srcTxs, dstTxs)
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := second.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM: got %d, want 0; output:\n%s", code, second.out.String())
	}
	third := startDatasync(t, bin, args("--until-caught-up")...)
	if code := third.wait(t, 120*time.Second); code != 0 {
		t.Fatalf("--until-caught-up exit code: got %d, want 0; output:\n%s", code, third.out.String())
	}
	assertSame(t, src.Pool, dst.Pool, accountsQuery)
	assertSame(t, src.Pool, dst.Pool, eventsQuery)
	for _, side := range []*pgtest.DB{src, dst} {
		if got := cdctest.Dump(t, side.Pool, `SELECT id FROM dup_log ORDER BY id`); got != "" {
			t.Errorf("%s: events updated (an insert applied twice): got ids\n%s, want none", side.Name, got)
		}
		if got := cdctest.Dump(t, side.Pool, `SELECT kind, key FROM datasync.sync_conflicts`); got != "" {
			t.Errorf("%s: conflicts where the sides never wrote the same row: got\n%s", side.Name, got)
		}
	}
	status := startDatasync(t, bin, "status", "--source", src.URL, "--target", dst.URL, "--name", "tw")
	if code := status.wait(t, 30*time.Second); code != 0 || !strings.Contains(status.out.String(), "conflicts") ||
		!strings.Contains(status.out.String(), "datasync_tw_to_source") {
		t.Errorf("status: exit %d, output without its conflicts and reverse slot:\n%s", code, status.out.String())
	}
	t.Logf("workloads: %d source and %d target transactions", srcTxs, dstTxs)
}
