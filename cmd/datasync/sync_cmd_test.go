package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// runCmd runs datasync in-process and returns its exit code and output.
func runCmd(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	var out, errOut bytes.Buffer
	io := &cli.IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, Getenv: func(string) string { return "" }}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = run(ctx, args, io)
	return code, out.String(), errOut.String()
}

func TestSyncStatusCleanupCommands(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, src.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text); INSERT INTO users VALUES (1, 'a'), (2, 'b');
		CREATE TABLE norep (id int PRIMARY KEY, v text); ALTER TABLE norep REPLICA IDENTITY NOTHING;`)
	execSQL(t, dst.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text); CREATE TABLE norep (id int PRIMARY KEY, v text);`)
	conn := []string{"--source", src.URL, "--target", dst.URL}

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string
		wantErrOut string
	}{
		{name: "unreachable source with a password", args: []string{"sync", "--name", "pw", "--table", "users",
			"--source", "postgres://u:s3cretpw@127.0.0.1:1/x?connect_timeout=2"}, wantCode: 2, wantErrOut: "connect"},
		{name: "bad name", args: []string{"sync", "--name", "Bad-Name", "--table", "users"}, wantCode: 2, wantErrOut: "--name"},
		{name: "replica identity refused", args: []string{"sync", "--name", "norep", "--table", "norep", "--until-caught-up"}, wantCode: 2,
			wantErrOut: `ALTER TABLE "public"."norep" REPLICA IDENTITY FULL`},
		{name: "sync until caught up", args: []string{"sync", "--name", "cmd", "--table", "users", "--until-caught-up"}, wantCode: 0},
		{name: "status", args: []string{"status", "--name", "cmd"}, wantCode: 0, wantOut: "copied 2 rows"},
		{name: "cleanup needs a name", args: []string{"cleanup"}, wantCode: 2, wantErrOut: "--name is required"},
		{name: "cleanup", args: []string{"cleanup", "--name", "cmd"}, wantCode: 0, wantOut: "dropped replication slot datasync_cmd on the source\ndropped publication datasync_cmd on the source\ndropped checkpoints of cmd in the target's datasync schema"},
		{name: "status after cleanup", args: []string{"status", "--name", "cmd"}, wantCode: 0, wantOut: "no sync named cmd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args[:1:1], append(conn, tc.args[1:]...)...)
			code, out, errOut := runCmd(t, args...)
			if code != tc.wantCode {
				t.Fatalf("exit code: got %d, want %d; stderr:\n%s", code, tc.wantCode, errOut)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("stdout: got %q, want it to contain %q", out, tc.wantOut)
			}
			if !strings.Contains(errOut, tc.wantErrOut) {
				t.Errorf("stderr: got %q, want it to contain %q", errOut, tc.wantErrOut)
			}
			if strings.Contains(out+errOut, "s3cretpw") {
				t.Errorf("output shows the password: %s", out+errOut)
			}
		})
	}
}

func TestStatusJSON(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, src.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text); INSERT INTO users VALUES (1, 'a')`)
	execSQL(t, dst.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text)`)
	if code, _, errOut := runCmd(t, "sync", "--source", src.URL, "--target", dst.URL, "--table", "users", "--name", "js", "--until-caught-up"); code != 0 {
		t.Fatalf("sync: exit %d: %s", code, errOut)
	}
	code, out, errOut := runCmd(t, "status", "--source", src.URL, "--target", dst.URL, "--name", "js", "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st struct {
		Slot       string `json:"slot"`
		SlotExists bool   `json:"slot_exists"`
		WALStatus  string `json:"wal_status"`
		AppliedLSN string `json:"applied_lsn"`
		Tables     []struct {
			Target     string `json:"target"`
			CopiedRows int64  `json:"copied_rows"`
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Slot != "datasync_js" || !st.SlotExists || st.WALStatus == "" || st.AppliedLSN == "" || len(st.Tables) != 1 || st.Tables[0].CopiedRows != 1 {
		t.Errorf("status: got %+v, want slot datasync_js with wal_status, applied lsn and one table of 1 row", st)
	}
}

// TestSyncDriftExitCode renames a mapped column under a running sync: it
// stops with exit code 2 and says which table changed and how.
func TestSyncDriftExitCode(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	execSQL(t, src.Pool, `CREATE TABLE t (id int PRIMARY KEY, a text)`)
	execSQL(t, dst.Pool, `CREATE TABLE t (id int PRIMARY KEY, a text)`)
	type result struct {
		code   int
		errOut string
	}
	done := make(chan result, 1)
	go func() {
		code, _, errOut := runCmd(t, "sync", "--source", src.URL, "--target", dst.URL, "--table", "t", "--name", "drift")
		done <- result{code, errOut}
	}()
	cdctest.WaitCopied(t, dst.Pool, "drift")
	execSQL(t, src.Pool, `ALTER TABLE t RENAME COLUMN a TO b`)
	execSQL(t, src.Pool, `INSERT INTO t VALUES (1, 'x')`)
	select {
	case r := <-done:
		if r.code != 2 {
			t.Errorf("exit code: got %d, want 2", r.code)
		}
		if want := `source table public.t changed: mapped column "a" is no longer published`; !strings.Contains(r.errOut, want) {
			t.Errorf("stderr: got %q, want it to contain %q", r.errOut, want)
		}
	case <-time.After(50 * time.Second):
		t.Fatal("sync did not stop on schema drift")
	}
}

// TestSyncRefusesWalLevelReplica runs sync against a source server without
// logical decoding: exit 2, the setting to change, and nothing created on
// either side.
func TestSyncRefusesWalLevelReplica(t *testing.T) {
	c := pgtest.NewCluster(t)
	admin := c.NewDB(t)
	execSQL(t, admin.Pool, `ALTER SYSTEM SET wal_level = replica`)
	admin.Pool.Close()
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	src, dst := c.NewDB(t), pgtest.NewDB(t)
	execSQL(t, src.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text); INSERT INTO users VALUES (1, 'a')`)
	execSQL(t, dst.Pool, `CREATE TABLE users (id bigint PRIMARY KEY, email text)`)

	code, _, errOut := runCmd(t, "sync", "--source", src.URL, "--target", dst.URL, "--table", "users", "--name", "nolog", "--until-caught-up")
	if code != 2 {
		t.Fatalf("exit code: got %d, want 2; stderr:\n%s", code, errOut)
	}
	for _, want := range []string{`source wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr: got %q, want it to contain %q", errOut, want)
		}
	}
	checks := []struct {
		name, query string
		db          *pgtest.DB
	}{
		{"slots", `SELECT count(*) FROM pg_replication_slots`, src},
		{"publications", `SELECT count(*) FROM pg_publication`, src},
		{"datasync schema in the target", `SELECT count(*) FROM pg_namespace WHERE nspname = 'datasync'`, dst},
		{"target rows", `SELECT count(*) FROM users`, dst},
	}
	for _, ch := range checks {
		if n := queryInt(t, ch.db.Pool, ch.query); n != 0 {
			t.Errorf("%s after the refusal: got %d, want 0", ch.name, n)
		}
	}
}
