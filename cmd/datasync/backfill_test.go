package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func mustExec(tb testing.TB, pool *pgxpool.Pool, sql string) {
	tb.Helper()
	if _, err := pool.Exec(context.Background(), sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func queryInt(tb testing.TB, pool *pgxpool.Pool, sql string) int64 {
	tb.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}

// result is what one datasync run printed and returned.
type result struct {
	code        int
	out, errOut string
}

// runDatasync runs datasync in-process with env as its whole environment.
func runDatasync(tb testing.TB, env map[string]string, args ...string) result {
	tb.Helper()
	var out, errOut bytes.Buffer
	io := &cli.IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(k string) string { return env[k] }}
	code := run(context.Background(), args, io)
	return result{code: code, out: out.String(), errOut: errOut.String()}
}

func hasCheckpoints(tb testing.TB, pool *pgxpool.Pool) bool {
	tb.Helper()
	return queryInt(tb, pool, "SELECT count(*) FROM pg_namespace WHERE nspname = 'datasync'") > 0
}

func TestBackfillPreflightErrors(t *testing.T) {
	src := pgtest.NewDB(t)
	dst := pgtest.NewDB(t)
	mustExec(t, src.Pool, `
		CREATE TABLE users (id bigint PRIMARY KEY, email text, n int NOT NULL);
		CREATE TABLE nokey (a int, b int);
		CREATE TABLE typed (id int PRIMARY KEY, v text);
		INSERT INTO users VALUES (1, 'a@example.com', 1)`)
	mustExec(t, dst.Pool, `
		CREATE TABLE users (id bigint PRIMARY KEY, email text, n int NOT NULL);
		CREATE TABLE nokey (a int, b int);
		CREATE TABLE nounique (id int, v text);
		CREATE TABLE typed (id int PRIMARY KEY, v int)`)
	dir := t.TempDir()
	config := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	badWhere := config("where.yaml", "tables:\n  - source: users\n    where: \"no_such_column > 1\"\n")
	dupKey := config("dup.yaml", "tables:\n  - source: users\n    key: [n]\n")
	noKeyColumn := config("nokeycol.yaml", "tables:\n  - source: users\n    key: [nope]\n")
	noSourceColumn := config("nosrccol.yaml", "tables:\n  - source: users\n    columns: {id: id, email: mail, n: n}\n")
	noTargetColumn := config("nodstcol.yaml", "tables:\n  - source: users\n    columns: {id: id, mail: email, n: n}\n")
	requiredUnmapped := config("required.yaml", "tables:\n  - source: users\n    columns: {id: id, email: email}\n")
	conn := []string{"--source", src.URL, "--target", dst.URL}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"unknown source table", append(conn, "--table", "missing"), nil, []string{"source table public.missing does not exist"}},
		{"unknown target table", append(conn, "--table", "users:gone"), nil, []string{"target table public.gone does not exist"}},
		{"no key", append(conn, "--table", "nokey"), nil, []string{"no primary key"}},
		{"key not unique in the target", append(conn, "--table", "typed:nounique"), nil, []string{"needs a unique index"}},
		{"column type mismatch", append(conn, "--table", "typed"), nil, []string{"column type mismatch"}},
		{"where filter that does not work", append(conn, "--config", badWhere), nil, []string{"where filter"}},
		{"key not unique in the source", append(conn, "--config", dupKey), nil, []string{"is not unique in source table public.users"}},
		{"key column missing", append(conn, "--config", noKeyColumn), nil, []string{`key column "nope" does not exist`}},
		{"mapped source column missing", append(conn, "--config", noSourceColumn), nil,
			[]string{`column "email" maps from source column "mail", which public.users does not have`}},
		{"mapped target column missing", append(conn, "--config", noTargetColumn), nil, []string{`target column "mail" does not exist in public.users`}},
		{"required target column left unmapped", append(conn, "--config", requiredUnmapped), nil,
			[]string{`target column "n" is NOT NULL without a default and nothing maps to it`}},
		{"every problem at once", append(conn, "--table", "missing", "--table", "typed"), nil,
			[]string{"public.missing does not exist", "column type mismatch"}},
		{"no source database", []string{"--target", dst.URL, "--table", "users"}, nil, []string{"no source database"}},
		{"bad workers", append(conn, "--table", "users", "--workers", "0"), nil, []string{"--workers 0"}},
		{"unreachable source", []string{"--source", "postgres://u:secret@127.0.0.1:1/db", "--target", dst.URL, "--table", "users"}, nil,
			[]string{"source database 127.0.0.1:1/db"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runDatasync(t, tt.env, append([]string{"backfill"}, tt.args...)...)
			if res.code != 2 {
				t.Fatalf("got exit code %d, want 2; stderr:\n%s", res.code, res.errOut)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.errOut, w) {
					t.Errorf("got stderr\n%s\nwant it to mention %q", res.errOut, w)
				}
			}
			if strings.Contains(res.errOut, "secret") {
				t.Errorf("got stderr\n%s\nwant the password masked", res.errOut)
			}
			if hasCheckpoints(t, dst.Pool) {
				t.Fatalf("got a datasync schema in the target, want nothing written")
			}
		})
	}
	if n := queryInt(t, dst.Pool, "SELECT count(*) FROM users"); n != 0 {
		t.Errorf("got %d target rows, want 0", n)
	}
}

func TestBackfillCommand(t *testing.T) {
	src := pgtest.NewDB(t)
	dst := pgtest.NewDB(t)
	mustExec(t, src.Pool, `
		CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, username text NOT NULL, created_at timestamptz);
		INSERT INTO users (email, username, created_at)
			SELECT 'u' || i || '@example.com', 'user' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE now() END FROM generate_series(1, 250) i;
		CREATE TABLE products (id bigint PRIMARY KEY, name text NOT NULL, price_cents int, deleted_at timestamptz);
		INSERT INTO products SELECT i, 'p' || i, i, CASE WHEN i % 4 = 0 THEN now() END FROM generate_series(1, 40) i`)
	mustExec(t, dst.Pool, `
		CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, username text NOT NULL, created_at timestamptz);
		CREATE TABLE catalog_items (id bigint PRIMARY KEY, title text, price_cents bigint)`)
	cfg := filepath.Join(t.TempDir(), "datasync.yaml")
	if err := os.WriteFile(cfg, []byte(`source: ${MONOLITH_DATABASE_URL}
target: ${PRODUCTS_DATABASE_URL}
tables:
  - source: users
  - source: public.products
    target: catalog_items
    columns: {id: id, title: name, price_cents: price_cents}
    where: "deleted_at IS NULL"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MONOLITH_DATABASE_URL": src.URL, "PRODUCTS_DATABASE_URL": dst.URL}

	res := runDatasync(t, env, "backfill", "--config", cfg, "--batch-size", "30", "--workers", "2")
	if res.code != 0 {
		t.Fatalf("got exit code %d, want 0; stderr:\n%s", res.code, res.errOut)
	}
	if strings.Contains(res.out, " 0 rows/s") {
		t.Errorf("got stdout\n%s\nwant a rate above 0 rows/s", res.out)
	}
	for _, w := range []string{"public.users: 250 rows in ", "public.products → public.catalog_items: 30 rows in ", "total: 280 rows"} {
		if !strings.Contains(res.out, w) {
			t.Errorf("got stdout\n%s\nwant it to contain %q", res.out, w)
		}
	}
	var done int
	for _, line := range strings.Split(strings.TrimSpace(res.errOut), "\n") {
		var l struct {
			Label string `json:"label"`
			Rows  int64  `json:"rows"`
			Done  bool   `json:"done"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("stderr line %q is not JSON: %v", line, err)
		}
		if l.Done {
			done++
		}
	}
	if done != 2 {
		t.Errorf("got %d final JSON progress lines, want 2; stderr:\n%s", done, res.errOut)
	}
	if got, want := queryInt(t, dst.Pool, "SELECT count(*) FROM catalog_items"), int64(30); got != want {
		t.Errorf("got %d catalog items, want %d", got, want)
	}
	if got := queryInt(t, dst.Pool, "SELECT count(*) FROM catalog_items WHERE title <> 'p' || id OR price_cents <> id"); got != 0 {
		t.Errorf("got %d catalog items unlike their product, want 0", got)
	}

	res = runDatasync(t, env, "backfill", "--config", cfg)
	if res.code != 0 || strings.Count(res.out, "already backfilled") != 2 {
		t.Errorf("second run: got exit code %d and stdout\n%s\nwant 0 and both tables skipped", res.code, res.out)
	}

	// Starting over on a terminal: a progress bar, and nothing to change.
	var out, errOut bytes.Buffer
	io := &cli.IO{Out: &out, ErrOut: &errOut, ErrIsTerminal: true, Getenv: func(k string) string { return env[k] }}
	mustExec(t, dst.Pool, "UPDATE users SET username = 'drifted' WHERE id = 7")
	if code := run(context.Background(), []string{"backfill", "--config", cfg, "--restart"}, io); code != 0 {
		t.Fatalf("restart: got exit code %d, want 0; stderr:\n%s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "\r") || !strings.Contains(errOut.String(), "rows/s") {
		t.Errorf("restart on a terminal: got stderr %q, want a redrawn progress bar", errOut.String())
	}
	if got := queryInt(t, dst.Pool, "SELECT count(*) FROM users WHERE username = 'user' || id"); got != 250 {
		t.Errorf("after restart: got %d users equal to the source, want 250", got)
	}
}

func TestBackfillHelp(t *testing.T) {
	res := runDatasync(t, nil, "backfill", "--help")
	for _, w := range []string{"--batch-size", "--workers", "--max-rows-per-second", "--restart", "--config", "Examples:"} {
		if !strings.Contains(res.out, w) {
			t.Errorf("got help\n%s\nwant it to mention %q", res.out, w)
		}
	}
}

// TestBackfillSurvivesSIGKILL kills a real datasync process in the middle of
// a throttled backfill, then runs it again: the target must end equal to the
// source, and at the kill it must hold exactly the checkpointed rows.
func TestBackfillSurvivesSIGKILL(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "datasync")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build datasync: %v\n%s", err, out)
	}
	src := pgtest.NewDB(t)
	dst := pgtest.NewDB(t)
	mustExec(t, src.Pool, `
		CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, username text, created_at timestamptz);
		INSERT INTO users SELECT i, 'u' || i || '@example.com', CASE WHEN i % 9 <> 0 THEN 'user' || i END,
			timestamptz '2020-01-01' + i * interval '1 minute' FROM generate_series(1, 20000) i`)
	mustExec(t, dst.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, username text, created_at timestamptz)`)

	args := []string{"backfill", "--source", src.URL, "--target", dst.URL, "--table", "users", "--batch-size", "250", "--workers", "2"}
	cmd := exec.Command(bin, append(args, "--max-rows-per-second", "4000")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	checkpointed := func() int64 {
		if !hasCheckpoints(t, dst.Pool) {
			return 0
		}
		return queryInt(t, dst.Pool, "SELECT coalesce(sum(rows_copied), 0) FROM datasync.backfill_progress")
	}
	deadline := time.Now().Add(60 * time.Second)
	for checkpointed() < 3000 {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no progress after 60s; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	copied := queryInt(t, dst.Pool, "SELECT count(*) FROM users")
	if ck := checkpointed(); copied != ck || copied >= 20000 {
		t.Fatalf("after the kill: got %d target rows and %d checkpointed, want them equal and below 20000", copied, ck)
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "resumed: 20000 rows in all") {
		t.Errorf("rerun: got\n%s\nwant a resumed run ending at 20000 rows", out)
	}
	if got := queryInt(t, dst.Pool, "SELECT count(*) FROM users"); got != 20000 {
		t.Errorf("got %d target rows, want 20000", got)
	}
	srcSum := queryInt(t, src.Pool, "SELECT sum(hashtext(u::text)::bigint) FROM users u")
	dstSum := queryInt(t, dst.Pool, "SELECT sum(hashtext(u::text)::bigint) FROM users u")
	if srcSum != dstSum {
		t.Errorf("got target checksum %d, want the source's %d", dstSum, srcSum)
	}
}
