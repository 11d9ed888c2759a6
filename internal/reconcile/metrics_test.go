package reconcile

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func metricsReport() *Report {
	return &Report{Tables: []TableReport{
		{Source: "public.users", Target: "svc.users", Consistent: false, SourceRows: 10, TargetRows: 9,
			MissingInTarget: 2, ExtraInTarget: 1, Mismatched: 3, Duration: 1500 * time.Millisecond},
		{Source: "public.orders", Target: "public.orders", Consistent: true, SourceRows: 5, TargetRows: 5,
			Duration: 250 * time.Millisecond},
	}}
}

const wantMetrics = `# HELP datasync_verify_consistent 1 if the table is consistent (after repair, if any), else 0.
# TYPE datasync_verify_consistent gauge
datasync_verify_consistent{table="public.orders"} 1
datasync_verify_consistent{table="svc.users"} 0
# HELP datasync_verify_differences Rows found different, by kind: missing_in_target, extra_in_target, mismatched; two-way also missing_in_source, extra_in_source.
# TYPE datasync_verify_differences gauge
datasync_verify_differences{kind="extra_in_target",table="public.orders"} 0
datasync_verify_differences{kind="extra_in_target",table="svc.users"} 1
datasync_verify_differences{kind="mismatched",table="public.orders"} 0
datasync_verify_differences{kind="mismatched",table="svc.users"} 3
datasync_verify_differences{kind="missing_in_target",table="public.orders"} 0
datasync_verify_differences{kind="missing_in_target",table="svc.users"} 2
# HELP datasync_verify_duration_seconds How long verifying the table took.
# TYPE datasync_verify_duration_seconds gauge
datasync_verify_duration_seconds{table="public.orders"} 0.25
datasync_verify_duration_seconds{table="svc.users"} 1.5
# HELP datasync_verify_last_run_timestamp_seconds When the last verify run finished, in Unix seconds.
# TYPE datasync_verify_last_run_timestamp_seconds gauge
datasync_verify_last_run_timestamp_seconds 1.7e+09
# HELP datasync_verify_rows Rows of the table on each side (source: after the mapping's filter).
# TYPE datasync_verify_rows gauge
datasync_verify_rows{side="source",table="public.orders"} 5
datasync_verify_rows{side="source",table="svc.users"} 10
datasync_verify_rows{side="target",table="public.orders"} 5
datasync_verify_rows{side="target",table="svc.users"} 9
`

func TestWriteTextfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "datasync_verify.prom")
	if err := os.WriteFile(path, []byte("old contents\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := metricsReport().Registry(time.Unix(1_700_000_000, 0))
	if err := WriteTextfile(path, reg); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != wantMetrics {
		t.Errorf("got textfile\n%s\nwant\n%s", got, wantMetrics)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("got %d files in the folder, want 1 (no temporary file left)", len(entries))
	}
}

func TestPush(t *testing.T) {
	var mu sync.Mutex
	var method, path, body string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		method, path, body = r.Method, r.URL.Path, string(b)
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	reg := metricsReport().Registry(time.Unix(1_700_000_000, 0))
	if err := Push(context.Background(), srv.URL, reg, srv.Client()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if method != http.MethodPut {
		t.Errorf("got method %s, want PUT (replace the job's metrics)", method)
	}
	if want := "/metrics/job/" + PushJob; path != want {
		t.Errorf("got path %s, want %s", path, want)
	}
	for _, line := range strings.Split(strings.TrimSpace(wantMetrics), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.Contains(body, line+"\n") {
			t.Errorf("got pushed body\n%s\nwant it to contain %q", body, line)
		}
	}

	t.Run("gateway error", func(t *testing.T) {
		bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", http.StatusBadRequest)
		}))
		defer bad.Close()
		withAuth := strings.Replace(bad.URL, "http://", "http://job:s3cret@", 1)
		err := Push(context.Background(), withAuth, reg, bad.Client())
		if err == nil {
			t.Fatal("got no error, want the gateway's refusal")
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("got error %q, want the password hidden", err)
		}
	})
}
