package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/pgtest"
	"github.com/strangler-fig/strangler/internal/testkit"
)

// workloadSchema has a table taking inserts, updates (key changes
// included) and deletes, and an append-only one. In the target, a trigger
// records every UPDATE of events: the source never updates an event, so
// any row there means an insert was applied twice.
const (
	workloadSchema = `CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2), note text, updated_at timestamptz);
		CREATE TABLE events (id bigint PRIMARY KEY, account bigint, kind text, at timestamptz DEFAULT now());`
	targetExtra = `CREATE TABLE dup_log (id bigint, at timestamptz DEFAULT now());
		CREATE FUNCTION log_dup() RETURNS trigger LANGUAGE plpgsql AS
			$$BEGIN INSERT INTO dup_log (id) VALUES (OLD.id); RETURN NEW; END$$;
		CREATE TRIGGER events_dup BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION log_dup();`
	seedRows = `INSERT INTO accounts SELECT g, 'owner' || g, g * 1.5, repeat('n', g % 50), now() FROM generate_series(1, 20000) g;
		INSERT INTO events SELECT g, g, 'seed' FROM generate_series(1, 20000) g;`
	accountsQuery = `SELECT id, owner, balance, note, updated_at FROM accounts ORDER BY id`
	eventsQuery   = `SELECT id, account, kind, at FROM events ORDER BY id`
)

// buildDatasync builds the datasync binary into a temporary folder.
func buildDatasync(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "datasync")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a datasync process.
type proc struct {
	cmd  *exec.Cmd
	out  *testkit.Buffer
	done chan error
}

func startDatasync(tb testing.TB, bin string, args ...string) *proc {
	tb.Helper()
	p := &proc{cmd: exec.Command(bin, args...), out: &testkit.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), "DATASYNC_SOURCE=", "DATASYNC_TARGET=")
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start datasync: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	tb.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(tb testing.TB, timeout time.Duration) int {
	tb.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		tb.Fatalf("datasync did not exit within %v; output:\n%s", timeout, p.out.String())
		return -1
	}
}

func execSQL(tb testing.TB, pool *pgxpool.Pool, sql string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// workload writes small transactions of inserts, updates, key changes and
// deletes to the source until stopped, and returns how many committed.
type workload struct {
	stop func() int
}

func startWorkload(tb testing.TB, pool *pgxpool.Pool, seed uint64) *workload {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		r := rand.New(rand.NewPCG(seed, 1))
		nextID := int64(1_000_000)
		nextEvent := int64(1_000_000)
		n := 0
		for ctx.Err() == nil {
			var stmts []string
			for range 1 + r.IntN(4) {
				id := 1 + r.Int64N(20000)
				switch r.IntN(5) {
				case 0:
					nextID++
					stmts = append(stmts, fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'new%d', %d.25, NULL, now())`, nextID, nextID, r.IntN(1000)))
				case 1:
					stmts = append(stmts, fmt.Sprintf(`UPDATE accounts SET balance = balance + 1, updated_at = now() WHERE id = %d`, id))
				case 2:
					stmts = append(stmts, fmt.Sprintf(`DELETE FROM accounts WHERE id = %d`, id))
				case 3:
					nextID++
					stmts = append(stmts, fmt.Sprintf(`UPDATE accounts SET id = %d, note = 'moved' WHERE id = %d`, nextID, id))
				default:
					stmts = append(stmts, fmt.Sprintf(`UPDATE accounts SET note = NULL WHERE id = %d`, id))
				}
				nextEvent++
				stmts = append(stmts, fmt.Sprintf(`INSERT INTO events VALUES (%d, %d, 'op')`, nextEvent, id))
			}
			if _, err := pool.Exec(ctx, "BEGIN; "+strings.Join(stmts, "; ")+"; COMMIT"); err == nil {
				n++
			}
		}
		done <- n
	}()
	var once sync.Once
	var n int
	w := &workload{stop: func() int {
		once.Do(func() {
			cancel()
			n = <-done
		})
		return n
	}}
	tb.Cleanup(func() { w.stop() })
	return w
}

// assertSame compares source and target row for row, every column.
func assertSame(tb testing.TB, src, dst *pgxpool.Pool, query string) {
	tb.Helper()
	s, d := cdctest.Dump(tb, src, query), cdctest.Dump(tb, dst, query)
	if s == d {
		return
	}
	sl, dl := strings.Split(s, "\n"), strings.Split(d, "\n")
	for i := 0; i < len(sl) || i < len(dl); i++ {
		var a, b string
		if i < len(sl) {
			a = sl[i]
		}
		if i < len(dl) {
			b = dl[i]
		}
		if a != b {
			tb.Fatalf("%s: first difference at row %d: got (target) %q, want (source) %q; %d source rows, %d target rows",
				query, i, b, a, len(sl)-1, len(dl)-1)
		}
	}
}

func syncArgs(src, dst *pgtest.DB, name string, extra ...string) []string {
	return append([]string{"sync", "--source", src.URL, "--target", dst.URL, "--table", "accounts", "--table", "events", "--name", name}, extra...)
}

// TestSyncProcessConcurrentWritesAndKill runs datasync sync as a process
// while a workload writes to the source: through the initial copy, then
// streaming, a SIGKILL in the middle, and a restart. After the workload
// stops and the sync catches up, source and target are identical row for
// row, and no change was applied twice.
func TestSyncProcessConcurrentWritesAndKill(t *testing.T) {
	bin := buildDatasync(t)
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, src.Pool, workloadSchema+seedRows)
	execSQL(t, dst.Pool, workloadSchema+targetExtra)

	w := startWorkload(t, src.Pool, 1)
	first := startDatasync(t, bin, syncArgs(src, dst, "kill")...)
	// Let it copy and stream for a while, then kill it without warning.
	waitApplied(t, dst.Pool, "kill", first)
	time.Sleep(300 * time.Millisecond)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)

	second := startDatasync(t, bin, syncArgs(src, dst, "kill", "--metrics-addr", "127.0.0.1:0")...)
	waitOutput(t, second, "msg=streaming")
	checkMetrics(t, second)
	txs := w.stop()
	if txs < 10 {
		t.Fatalf("workload committed %d transactions, want at least 10", txs)
	}
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := second.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM: got %d, want 0; output:\n%s", code, second.out.String())
	}
	// Catch up with what the workload committed last.
	third := startDatasync(t, bin, syncArgs(src, dst, "kill", "--until-caught-up")...)
	if code := third.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("--until-caught-up exit code: got %d, want 0; output:\n%s", code, third.out.String())
	}
	assertSame(t, src.Pool, dst.Pool, accountsQuery)
	assertSame(t, src.Pool, dst.Pool, eventsQuery)
	if got := cdctest.Dump(t, dst.Pool, `SELECT id FROM dup_log ORDER BY id`); got != "" {
		t.Errorf("events updated in the target (applied twice): got ids\n%s, want none", got)
	}
	if strings.Count(third.out.String(), "copied table") != 0 || strings.Count(second.out.String(), "copied table") != 0 {
		t.Errorf("restarts copied tables again; output:\n%s\n%s", second.out.String(), third.out.String())
	}
	t.Logf("workload: %d transactions", txs)
}

// waitApplied waits until the sync has applied at least one transaction
// after its copy.
func waitApplied(tb testing.TB, dst *pgxpool.Pool, name string, p *proc) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := dst.QueryRow(context.Background(), `SELECT count(*) FROM datasync.sync_state s
			WHERE name = $1 AND applied_lsn > (SELECT max(copied_lsn) FROM datasync.sync_tables t WHERE t.name = s.name)`, name).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		select {
		case <-p.done:
			tb.Fatalf("datasync exited early; output:\n%s", p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	tb.Fatalf("no transaction applied within 60s; output:\n%s", p.out.String())
}

// waitOutput waits until the process has printed want.
func waitOutput(tb testing.TB, p *proc, want string) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.out.String(), want) {
		if time.Now().After(deadline) {
			tb.Fatalf("datasync did not print %q within 60s; output:\n%s", want, p.out.String())
		}
		select {
		case <-p.done:
			tb.Fatalf("datasync exited before printing %q; output:\n%s", want, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkMetrics reads the process's /metrics, at the address it logged,
// until the sync's series are there and transactions were counted: after a
// restart the sync may still be catching up on the WAL the kill left, so
// the first read can come before the first applied transaction.
func checkMetrics(tb testing.TB, p *proc) {
	tb.Helper()
	m := regexp.MustCompile(`msg="serving metrics" addr=(\S+)`).FindStringSubmatch(p.out.String())
	if m == nil {
		tb.Fatalf("no metrics address in the output:\n%s", p.out.String())
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		problems := metricsProblems(tb, "http://"+m[1]+"/metrics")
		if len(problems) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("metrics after 60s: %s", strings.Join(problems, "; "))
		}
		select {
		case <-p.done:
			tb.Fatalf("datasync exited before its metrics were complete (%s); output:\n%s", strings.Join(problems, "; "), p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// metricsProblems reads url once and says what is missing from it.
func metricsProblems(tb testing.TB, url string) []string {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	var problems []string
	for _, want := range []string{
		`datasync_sync_applied_changes_total{op="insert",table="public.events"}`,
		"datasync_sync_lag_bytes ",
		"datasync_sync_lag_seconds ",
		"datasync_sync_transactions_total ",
	} {
		if !strings.Contains(string(body), want) {
			problems = append(problems, fmt.Sprintf("got no %q", want))
		}
	}
	if strings.Contains(string(body), "datasync_sync_transactions_total 0\n") {
		problems = append(problems, "got transactions_total 0 under a running workload, want more")
	}
	return problems
}

// TestSyncProcessKilledInsideLargeTransaction kills datasync sync with
// SIGKILL while it applies a source transaction of many parts: the target
// shows nothing of it, and the next run applies it whole, nothing twice.
func TestSyncProcessKilledInsideLargeTransaction(t *testing.T) {
	bin := buildDatasync(t)
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, src.Pool, workloadSchema+seedRows)
	execSQL(t, dst.Pool, workloadSchema+targetExtra)

	first := startDatasync(t, bin, syncArgs(src, dst, "bigkill", "--max-tx-changes", "500")...)
	waitOutput(t, first, "msg=streaming")
	execSQL(t, src.Pool, `BEGIN;
		INSERT INTO events SELECT g, g % 100, 'bulk' FROM generate_series(100001, 140000) g;
		UPDATE accounts SET balance = balance + 1, updated_at = now();
		DELETE FROM accounts WHERE id % 3 = 0;
		COMMIT`)
	waitOutput(t, first, "applying a large transaction in parts")
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)
	if strings.Contains(first.out.String(), "applied a large transaction") {
		t.Fatalf("the large transaction was applied before the kill; output:\n%s", first.out.String())
	}
	var events int
	if err := dst.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if events != 20000 {
		t.Errorf("target events after the kill: got %d, want 20000 (nothing of the large transaction)", events)
	}

	second := startDatasync(t, bin, syncArgs(src, dst, "bigkill", "--max-tx-changes", "500", "--until-caught-up")...)
	if code := second.wait(t, 120*time.Second); code != 0 {
		t.Fatalf("--until-caught-up exit code: got %d, want 0; output:\n%s", code, second.out.String())
	}
	if !strings.Contains(second.out.String(), "applied a large transaction") {
		t.Errorf("the second run did not apply the large transaction; output:\n%s", second.out.String())
	}
	assertSame(t, src.Pool, dst.Pool, accountsQuery)
	assertSame(t, src.Pool, dst.Pool, eventsQuery)
	if got := cdctest.Dump(t, dst.Pool, `SELECT id FROM dup_log ORDER BY id`); got != "" {
		t.Errorf("events updated in the target (applied twice): got ids\n%s, want none", got)
	}
}
