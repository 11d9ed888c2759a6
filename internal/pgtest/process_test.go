package pgtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// Environment of TestHelperProcess: what it does, and the file it writes
// what it saw into.
const (
	helperModeEnv = "PGTEST_HELPER_MODE"
	helperOutEnv  = "PGTEST_HELPER_OUT"
)

// helperReport is what a helper process saw of the server it used.
type helperReport struct {
	Dir           string `json:"dir"`            // the shared cluster's folder, "" when none was started
	PostmasterPID int    `json:"postmaster_pid"` // 0 when no cluster was started
	DB            string `json:"db"`
}

// TestHelperProcess is a test binary's whole life as a package using pgtest
// sees it: it runs only when a process test starts this binary again.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperModeEnv)
	if mode == "" {
		t.Skip("only runs as the helper of the process tests")
	}
	db := NewDB(t)
	rep := helperReport{DB: db.Name}
	if shared != nil {
		rep.Dir = shared.Dir
		pid, err := postmasterPID(shared)
		if err != nil {
			t.Fatal(err)
		}
		rep.PostmasterPID = pid
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv(helperOutEnv), b, 0o644); err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "fail":
		t.Fatal("failing on purpose")
	case "kill":
		// Dies the way a test binary killed by a timeout or kill -9 does:
		// no cleanup, no Main epilogue.
		if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		select {}
	case "existing":
		if shared != nil {
			t.Errorf("with %s set: got a cluster started in %s, want the existing server used", EnvURL, shared.Dir)
		}
	}
}

// postmasterPID reads the server's process id from its data directory.
func postmasterPID(c *Cluster) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strconv.Atoi(strings.TrimSpace(first))
}

// runHelper runs TestHelperProcess in a new process of this test binary in
// the given mode, with extra environment, and returns its report (zero when
// it wrote none), its output and its exit error.
func runHelper(tb testing.TB, mode string, env ...string) (helperReport, string, error) {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), append([]string{helperModeEnv + "=" + mode, helperOutEnv + "=" + out}, env...)...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	runErr := cmd.Run()
	var rep helperReport
	if b, err := os.ReadFile(out); err == nil {
		if err := json.Unmarshal(b, &rep); err != nil {
			tb.Fatalf("helper report %q: %v", b, err)
		}
	}
	return rep, output.String(), runErr
}

// processGone tells whether the process pid has ended: there is none, or
// only a zombie that its new parent has not reaped yet.
func processGone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

func dirGone(dir string) bool {
	_, err := os.Stat(dir)
	return errors.Is(err, os.ErrNotExist)
}

// TestClusterStoppedWhenTheBinaryEnds runs test binaries that end badly and
// checks that the shared cluster each started is stopped and its folder
// removed: by Main after a failed test, by the watchdog after kill -9.
func TestClusterStoppedWhenTheBinaryEnds(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts processes that start PostgreSQL")
	}
	for _, mode := range []string{"fail", "kill"} {
		t.Run(mode, func(t *testing.T) {
			rep, out, err := runHelper(t, mode, EnvURL+"=")
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.Success() {
				t.Fatalf("helper: got %v, want a failed exit; output:\n%s", err, out)
			}
			if rep.Dir == "" || rep.PostmasterPID == 0 {
				t.Fatalf("helper report: got %+v, want the cluster it started; output:\n%s", rep, out)
			}
			if mode == "fail" && !dirGone(rep.Dir) {
				// Main stops the server and removes the folder before the
				// binary exits; the watchdog would only get there later.
				t.Errorf("cluster folder %s: got it still there when the binary had exited, want it removed by Main", rep.Dir)
			}
			testkit.Eventually(t, 60*time.Second, "the postmaster to stop", func() bool { return processGone(rep.PostmasterPID) })
			testkit.Eventually(t, 60*time.Second, "the cluster's folder to be removed", func() bool { return dirGone(rep.Dir) })
		})
	}
}

// TestNoPostgreSQLFailsLoudly checks that a test needing a database fails,
// with the reason, when PostgreSQL cannot be started: it is never skipped.
func TestNoPostgreSQLFailsLoudly(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a process")
	}
	missing := filepath.Join(t.TempDir(), "no-postgresql-here")
	_, out, err := runHelper(t, "plain", EnvURL+"=", "PG_BIN="+missing)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Success() {
		t.Fatalf("helper without PostgreSQL: got %v, want a failed exit; output:\n%s", err, out)
	}
	for _, want := range []string{"--- FAIL: TestHelperProcess", "pgtest: PostgreSQL could not be started", missing} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "--- SKIP") {
		t.Errorf("output: got a skipped test, want a failure:\n%s", out)
	}
}

// TestExistingServerURL points a test binary at this binary's server
// through STRANGLER_TEST_DATABASE_URL: it must start no cluster of its own,
// create its database there, and drop it when its test ends.
func TestExistingServerURL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a process")
	}
	url := Shared(t)
	rep, out, err := runHelper(t, "existing", EnvURL+"="+url)
	if err != nil {
		t.Fatalf("helper: %v; output:\n%s", err, out)
	}
	if rep.DB == "" || rep.Dir != "" {
		t.Fatalf("helper report: got %+v, want a database and no cluster of its own; output:\n%s", rep, out)
	}
	if !strings.Contains(out, "--- PASS: TestHelperProcess") {
		t.Fatalf("output: got no passing helper test:\n%s", out)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", rep.DB).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s after the helper ended: got it still there, want it dropped", rep.DB)
	}
}
