package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/cli"
	"github.com/strangler-fig/strangler/internal/pgtest"
	"github.com/strangler-fig/strangler/internal/progress"
)

// verifyCLI runs datasync with args and an empty environment, and returns
// its exit code and output.
func verifyCLI(tb testing.TB, args ...string) (code int, stdout, stderr string) {
	tb.Helper()
	r := runDatasync(tb, nil, args...)
	return r.code, r.out, r.errOut
}

func newVerifyDBs(tb testing.TB, sql string) (src, dst *pgtest.DB) {
	tb.Helper()
	src, dst = pgtest.NewDB(tb), pgtest.NewDB(tb)
	for _, db := range []*pgtest.DB{src, dst} {
		if _, err := db.Pool.Exec(context.Background(), sql); err != nil {
			tb.Fatalf("%s: %v", sql, err)
		}
	}
	return src, dst
}

const verifyUsers = `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, created_at timestamptz);
INSERT INTO users SELECT g, 'u' || g, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, 3000) g;
CREATE TABLE events (at timestamptz NOT NULL, seq int NOT NULL, v text, PRIMARY KEY (at, seq));
INSERT INTO events SELECT timestamptz '2024-01-01 00:00:00.5+00' + g * interval '1 hour', g % 3, 'v' FROM generate_series(1, 500) g;`

func TestVerifyCommandExitCodes(t *testing.T) {
	src, dst := newVerifyDBs(t, verifyUsers)
	base := []string{"verify", "--source", src.URL, "--target", dst.URL, "--table", "users"}

	code, out, stderr := verifyCLI(t, base...)
	if code != 0 {
		t.Fatalf("identical tables: got exit %d, want 0; stdout %s stderr %s", code, out, stderr)
	}
	if !strings.Contains(out, "public.users: consistent (source 3000 rows, target 3000 rows") {
		t.Errorf("got summary %q, want the table consistent with its row counts", out)
	}

	if _, err := dst.Pool.Exec(context.Background(), `UPDATE users SET email = 'changed' WHERE id = 42`); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{"differences", base, 1, "mismatched:        1 (id=42)", ""},
		{"dry run", append(slices.Clone(base), "--repair", "--dry-run"), 1, "dry run, would repair: insert 0, update 1, delete 0", ""},
		{"dry run needs repair", append(slices.Clone(base), "--dry-run"), 2, "", "--dry-run only makes sense with --repair"},
		{"unknown table", []string{"verify", "--source", src.URL, "--target", dst.URL, "--table", "nope"}, 2, "", "source table public.nope does not exist"},
		{"no source", []string{"verify", "--target", dst.URL, "--table", "users"}, 2, "", "no source database"},
		{"unreachable", []string{"verify", "--source", "postgres://u:secret@127.0.0.1:1/db?connect_timeout=5", "--target", dst.URL, "--table", "users"}, 2, "", "source database"},
		{"repair", append(slices.Clone(base), "--repair"), 0, "public.users: consistent after repair (source 3000 rows, target 3000 rows", ""},
		{"clean after repair", base, 0, "consistent: 1 table(s)", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := verifyCLI(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("got exit %d, want %d; stdout %s stderr %s", code, tc.wantCode, out, stderr)
			}
			if !strings.Contains(out, tc.wantOut) {
				t.Errorf("got stdout %q, want it to contain %q", out, tc.wantOut)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("got stderr %q, want it to contain %q", stderr, tc.wantErr)
			}
			if strings.Contains(stderr, "secret") {
				t.Errorf("got stderr %q, want no password in it", stderr)
			}
		})
	}
}

func TestVerifyCommandReportAndMetrics(t *testing.T) {
	src, dst := newVerifyDBs(t, verifyUsers)
	if _, err := dst.Pool.Exec(context.Background(), `
		DELETE FROM users WHERE id = 7;
		DELETE FROM events WHERE seq = 1 AND at = timestamptz '2024-01-01 01:00:00.5+00';
		INSERT INTO users VALUES (9999, 'extra', NULL);`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var pushed string
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushed = r.Method + " " + r.URL.Path + "\n" + string(b)
		mu.Unlock()
	}))
	defer gw.Close()

	dir := t.TempDir()
	reportFile, textfile := filepath.Join(dir, "report.json"), filepath.Join(dir, "verify.prom")
	config := filepath.Join(dir, "datasync.yaml")
	if err := os.WriteFile(config, []byte("source: "+src.URL+"\ntarget: "+dst.URL+"\ntables:\n  - source: users\n  - source: events\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := verifyCLI(t, "verify", "--config", config, "--report", reportFile,
		"--textfile", textfile, "--pushgateway", gw.URL, "--max-samples", "1")
	if code != 1 {
		t.Fatalf("got exit %d, want 1; stdout %s stderr %s", code, out, stderr)
	}

	data, err := os.ReadFile(reportFile)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report %s: %v", data, err)
	}
	if got, want := sortedKeys(rep), []string{"consistent", "duration_seconds", "started_at", "tables"}; !slices.Equal(got, want) {
		t.Errorf("got report fields %v, want %v", got, want)
	}
	if _, err := time.Parse(time.RFC3339Nano, rep["started_at"].(string)); err != nil {
		t.Errorf("got started_at %v, want RFC 3339: %v", rep["started_at"], err)
	}
	tables := rep["tables"].([]any)
	if len(tables) != 2 {
		t.Fatalf("got %d tables, want 2", len(tables))
	}
	users := tables[0].(map[string]any)
	if got, want := sortedKeys(users), []string{"consistent", "extra_in_target", "mismatched", "missing_in_target", "repaired",
		"samples", "source", "source_rows", "target", "target_rows"}; !slices.Equal(got, want) {
		t.Errorf("got table fields %v, want %v", got, want)
	}
	samples, _ := json.Marshal(users["samples"])
	if got, want := string(samples), `{"extra_in_target":[{"id":9999}],"mismatched":[],"missing_in_target":[{"id":7}]}`; got != want {
		t.Errorf("got samples %s, want %s", got, want)
	}
	events, _ := json.Marshal(tables[1].(map[string]any)["samples"])
	if got, want := string(events), `{"extra_in_target":[],"mismatched":[],"missing_in_target":[{"at":"2024-01-01T01:00:00.5Z","seq":1}]}`; got != want {
		t.Errorf("got samples %s, want %s", got, want)
	}
	if rep["consistent"] != false || users["source_rows"] != 3000.0 || users["target_rows"] != 3000.0 {
		t.Errorf("got consistent %v rows %v/%v, want false 3000/3000", rep["consistent"], users["source_rows"], users["target_rows"])
	}

	prom, err := os.ReadFile(textfile)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, want := range []string{
		`datasync_verify_rows{side="source",table="public.users"} 3000`,
		`datasync_verify_differences{kind="missing_in_target",table="public.users"} 1`,
		`datasync_verify_differences{kind="extra_in_target",table="public.users"} 1`,
		`datasync_verify_differences{kind="missing_in_target",table="public.events"} 1`,
		`datasync_verify_consistent{table="public.events"} 0`,
		`datasync_verify_duration_seconds{table="public.users"} `,
		`datasync_verify_last_run_timestamp_seconds `,
	} {
		if !strings.Contains(string(prom), want) {
			t.Errorf("got textfile\n%s\nwant a line %q", prom, want)
		}
		if !strings.Contains(pushed, want) {
			t.Errorf("got pushed\n%s\nwant a line %q", pushed, want)
		}
	}
	if !strings.HasPrefix(pushed, "PUT /metrics/job/datasync_verify\n") {
		t.Errorf("got push %q, want PUT /metrics/job/datasync_verify", strings.SplitN(pushed, "\n", 2)[0])
	}
}

func sortedKeys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestVerifyHelp(t *testing.T) {
	code, out, _ := verifyCLI(t, "verify", "--help")
	if code != 0 {
		t.Fatalf("got exit %d, want 0", code)
	}
	for _, want := range []string{"--report", "--max-samples", "--recheck-delay", "--repair", "--dry-run", "--textfile", "--pushgateway", "--two-way", "--name", "Examples:", "Exit status: 0 consistent, 1 differences"} {
		if !strings.Contains(out, want) {
			t.Errorf("got help without %q", want)
		}
	}
	if strings.Contains(out, "--debug-bytes") {
		t.Errorf("got help listing the hidden --debug-bytes")
	}
}

func TestNewCmdVerifyFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		want    VerifyOptions
		wantErr string
	}{
		{name: "defaults", args: nil, want: VerifyOptions{MaxSamples: 100, LeafRows: 2000, MaxBuckets: 1024, Name: "datasync"}},
		{name: "two-way", args: []string{"--two-way", "--name", "users"}, want: VerifyOptions{MaxSamples: 100, LeafRows: 2000, MaxBuckets: 1024, TwoWay: true, Name: "users"}},
		{name: "bad name", args: []string{"--name", "Users!"}, wantErr: `--name "Users!"`},
		{name: "everything", args: []string{"--report", "r.json", "--max-samples", "5", "--recheck-delay", "2s", "--repair", "--dry-run",
			"--textfile", "v.prom", "--pushgateway", "http://gw:9091", "--hash", "md5"},
			want: VerifyOptions{ReportFile: "r.json", MaxSamples: 5, RecheckDelay: 2 * time.Second, Repair: true, DryRun: true,
				Textfile: "v.prom", Pushgateway: "http://gw:9091", Hash: "md5", LeafRows: 2000, MaxBuckets: 1024, Name: "datasync"}},
		{name: "negative samples", args: []string{"--max-samples", "-1"}, wantErr: "--max-samples -1"},
		{name: "negative delay", args: []string{"--recheck-delay", "-1s"}, wantErr: "--recheck-delay -1s"},
		{name: "unknown hash", args: []string{"--hash", "sha1"}, wantErr: `--hash "sha1"`},
		{name: "arguments", args: []string{"users"}, wantErr: "unknown command"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got *VerifyOptions
			io := &cli.IO{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}, Getenv: func(string) string { return "" }}
			cmd := NewCmdVerify(io, func(_ context.Context, o *VerifyOptions) error { got = o; return nil })
			cmd.SetArgs(tc.args)
			cmd.SetOut(io.Out)
			cmd.SetErr(io.ErrOut)
			err := cmd.Execute()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.IO, got.Flags = nil, tc.want.Flags
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v, want %+v", *got, tc.want)
			}
		})
	}
}

func TestVerifyCommandProgressLines(t *testing.T) {
	src, dst := newVerifyDBs(t, verifyUsers)
	if _, err := dst.Pool.Exec(context.Background(), `DELETE FROM users WHERE id = 99`); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := verifyCLI(t, "verify", "--source", src.URL, "--target", dst.URL, "--table", "users", "--table", "events")
	if code != 1 {
		t.Fatalf("got exit %d, want 1; stderr %s", code, stderr)
	}
	// Not a terminal: one JSON object per line, a final one per table.
	final := map[string]progress.Line{}
	for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
		var l progress.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("got stderr line %q, want JSON: %v", line, err)
		}
		if l.Done {
			final[l.Label] = l
		}
	}
	want := map[string]int64{"public.users": 3000, "public.events": 500}
	for label, rows := range want {
		l, ok := final[label]
		if !ok {
			t.Errorf("got no final progress line for %s in %q", label, stderr)
			continue
		}
		if l.Rows != rows || l.Total != rows {
			t.Errorf("%s: got %d of %d rows, want %d of %d", label, l.Rows, l.Total, rows, rows)
		}
	}
}

// TestVerifyCommandTwoWay runs verify --two-way on a server with commit
// timestamps: the service's row is missing_in_source in the summary, the
// JSON report and the metrics, and --repair copies it to the source. The
// config's two_way: true does the same as the flag; without commit
// timestamps verify refuses with exit 2, naming the setting.
func TestVerifyCommandTwoWay(t *testing.T) {
	ctx := context.Background()
	t.Run("needs track_commit_timestamp", func(t *testing.T) {
		src, dst := newVerifyDBs(t, `CREATE TABLE users (id int PRIMARY KEY)`)
		cfg := filepath.Join(t.TempDir(), "datasync.yaml")
		if err := os.WriteFile(cfg, []byte("two_way: true\ntables: [{source: users}]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := verifyCLI(t, "verify", "--source", src.URL, "--target", dst.URL, "--config", cfg)
		if code != 2 || !strings.Contains(stderr, "track_commit_timestamp is off on the source") {
			t.Errorf("got exit %d stderr %q, want 2 naming track_commit_timestamp", code, stderr)
		}
	})

	c := pgtest.NewCluster(t)
	admin, err := pgxpool.New(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	// The sync's origins, as a two-way sync named users creates them.
	for _, q := range []string{"ALTER SYSTEM SET track_commit_timestamp = on",
		"SELECT pg_replication_origin_create('datasync_users_to_target'), pg_replication_origin_create('datasync_users_to_source')"} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	admin.Close()
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	src, dst := c.NewDB(t), c.NewDB(t)
	for _, db := range []*pgtest.DB{src, dst} {
		if _, err := db.Pool.Exec(ctx, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)`); err != nil {
			t.Fatal(err)
		}
	}
	// The service's own row: a plain write, no origin of the sync.
	if _, err := dst.Pool.Exec(ctx, `INSERT INTO users VALUES (1002, 'new@example.com')`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	report, prom := filepath.Join(dir, "verify.json"), filepath.Join(dir, "verify.prom")
	base := []string{"verify", "--source", src.URL, "--target", dst.URL, "--table", "users", "--two-way", "--name", "users"}
	code, out, stderr := verifyCLI(t, append(slices.Clone(base), "--report", report, "--textfile", prom)...)
	if code != 1 {
		t.Fatalf("got exit %d, want 1; stdout %s stderr %s", code, out, stderr)
	}
	if !strings.Contains(out, "missing in source: 1 (id=1002)") || !strings.Contains(out, "extra in target:   0") {
		t.Errorf("got summary %q, want id=1002 missing in source and nothing extra", out)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Tables []struct {
			ExtraInTarget   int64 `json:"extra_in_target"`
			MissingInSource int64 `json:"missing_in_source"`
			Samples         struct {
				MissingInSource []map[string]any `json:"missing_in_source"`
			} `json:"samples"`
		} `json:"tables"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if tr := rep.Tables[0]; tr.MissingInSource != 1 || tr.ExtraInTarget != 0 || len(tr.Samples.MissingInSource) != 1 || tr.Samples.MissingInSource[0]["id"] != float64(1002) {
		t.Errorf("got report %s, want missing_in_source 1 (id 1002), extra_in_target 0", b)
	}
	metrics, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(metrics), `datasync_verify_differences{kind="missing_in_source",table="public.users"} 1`) {
		t.Errorf("got metrics\n%s\nwant missing_in_source 1", metrics)
	}

	code, out, stderr = verifyCLI(t, append(slices.Clone(base), "--repair")...)
	if code != 0 || !strings.Contains(out, "insert 1, update 0, delete 0 in the source") {
		t.Fatalf("repair: got exit %d stdout %q stderr %q, want 0 and one row inserted in the source", code, out, stderr)
	}
	var email string
	if err := src.Pool.QueryRow(ctx, "SELECT email FROM users WHERE id = 1002").Scan(&email); err != nil || email != "new@example.com" {
		t.Errorf("got source row %q (%v), want the service's row copied", email, err)
	}
}
