package proxyserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/strangler-fig/strangler/internal/pgtest"
	"github.com/strangler-fig/strangler/internal/toggles"
	"github.com/strangler-fig/strangler/internal/toggles/togglescmd"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fleetReplica is one proxy replica of a fleet test.
type fleetReplica struct {
	name               string
	dir, cfgPath       string
	proxyURL, adminURL string
	env                map[string]string
	stop               func()
}

// fleetConfig is rolloutConfig with the flags in the store at ${FLAGS_DB}
// (seeded from flags.yaml) and the replica's name.
func fleetConfig(mono, svc, name string) string {
	return rolloutConfig(mono, svc) + fmt.Sprintf("flags_store: {postgres: \"${FLAGS_DB}\", replica_name: %s}\n", name)
}

// startFleet starts n replicas (proxyserver.Server instances) on the store
// at dbURL, each in its own folder with the same seed flags file.
func startFleet(tb testing.TB, dbURL, svcURL, flags string, n int) []*fleetReplica {
	tb.Helper()
	mono := namedServer(tb, "monolith", nil, nil)
	out := make([]*fleetReplica, n)
	for i := range n {
		r := &fleetReplica{name: fmt.Sprintf("r%d", i), dir: tb.TempDir()}
		r.cfgPath = filepath.Join(r.dir, "strangler.yaml")
		writeConfig(tb, r.cfgPath, fleetConfig(mono.URL, svcURL, r.name))
		writeConfig(tb, filepath.Join(r.dir, "flags.yaml"), flags)
		r.env = map[string]string{"FLAGS_DB": dbURL}
		for k, v := range e2eEnv {
			r.env[k] = v
		}
		r.start(tb)
		out[i] = r
	}
	return out
}

// start runs a new Server on the replica's files; stop ends it.
func (r *fleetReplica) start(tb testing.TB) {
	tb.Helper()
	srv, err := New(Options{
		ConfigPath:   r.cfgPath,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		Getenv:       func(k string) string { return r.env[k] },
		PollInterval: -1,
		GuardTick:    20 * time.Millisecond,
		RampTick:     50 * time.Millisecond,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, nil) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	tb.Cleanup(r.stop)
	p, a, err := srv.Addrs(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	r.proxyURL, r.adminURL = "http://"+p.String(), "http://"+a.String()
}

// waitAll waits until ok accepts the flag as every replica shows it.
func waitAll(tb testing.TB, reps []*fleetReplica, key string, ok func(toggles.FlagView) bool) {
	tb.Helper()
	for _, r := range reps {
		waitFlag(tb, r.adminURL, key, nil, ok)
	}
}

// flagETag returns the ETag of GET /admin/flags/{key}.
func flagETag(tb testing.TB, adminURL, key string) string {
	tb.Helper()
	resp, err := http.Get(adminURL + "/admin/flags/" + key)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") == "" {
		tb.Fatalf("GET flag %s: %d, ETag %q", key, resp.StatusCode, resp.Header.Get("ETag"))
	}
	return resp.Header.Get("ETag")
}

// putIfMatch sends PUT /admin/flags/{key} with If-Match.
func putIfMatch(tb testing.TB, adminURL, key, etag, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPut, adminURL+"/admin/flags/"+key, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	req.Header.Set("If-Match", etag)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func auditCount(tb testing.TB, pool *pgxpool.Pool, actorPrefix string) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM strangler_flags.audit WHERE actor LIKE $1 || '%'`, actorPrefix).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

const fleetFlags = `flags:
  users-migration: {percentage: 0}
`

// TestFleetWriteThroughOneIsSeenByAll: a change made through one replica's
// admin API is served by every replica, with the same revision as ETag,
// and audited once with the replica that made it.
func TestFleetWriteThroughOneIsSeenByAll(t *testing.T) {
	db := pgtest.NewDB(t)
	svc := namedServer(t, "user-service", nil, nil)
	reps := startFleet(t, db.URL, svc.URL, fleetFlags, 3)
	for _, r := range reps {
		if got := servedBy(t, r.proxyURL+"/api/users", "u-1", nil); got != "monolith" {
			t.Fatalf("%s at 0 %%: served by %s", r.name, got)
		}
	}
	setFlag(t, reps[1].adminURL, "users-migration", `{"percentage": 100}`)
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 100 })
	etag := flagETag(t, reps[0].adminURL, "users-migration")
	for _, r := range reps {
		if got := servedBy(t, r.proxyURL+"/api/users", "u-1", nil); got != "user-service" {
			t.Errorf("%s at 100 %%: served by %s", r.name, got)
		}
		if e := flagETag(t, r.adminURL, "users-migration"); e != etag {
			t.Errorf("%s serves ETag %s, %s serves %s", r.name, e, reps[0].name, etag)
		}
		_, metrics := adminDo(t, http.MethodGet, r.adminURL+"/metrics", "", "")
		if !strings.Contains(metrics, "strangler_flags_store_up 1") || !strings.Contains(metrics, "strangler_flags_revision "+strings.Trim(etag, `"`)) {
			t.Errorf("%s metrics lack store up and revision %s", r.name, etag)
		}
	}
	var replica string
	if err := db.Pool.QueryRow(context.Background(), `SELECT replica FROM strangler_flags.audit WHERE flag = 'users-migration'`).Scan(&replica); err != nil {
		t.Fatalf("one audit row for the change: %v", err)
	}
	if replica != "r1" {
		t.Errorf("audit replica = %q, want r1", replica)
	}
	// Every replica is listed with the revision it serves.
	code, body := adminDo(t, http.MethodGet, reps[2].adminURL+"/admin/replicas", "", "")
	var list ReplicaList
	if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list.Replicas) != 3 {
		t.Fatalf("GET /admin/replicas: %d %s, want 3 replicas", code, body)
	}
}

// TestFleetStaleIfMatchIs409: a PUT whose If-Match is a revision older
// than the store's is refused with 409 and changes nothing, whichever
// replica it goes to.
func TestFleetStaleIfMatchIs409(t *testing.T) {
	db := pgtest.NewDB(t)
	svc := namedServer(t, "user-service", nil, nil)
	reps := startFleet(t, db.URL, svc.URL, fleetFlags, 3)
	old := flagETag(t, reps[0].adminURL, "users-migration")
	setFlag(t, reps[1].adminURL, "users-migration", `{"percentage": 10}`)
	code, body := putIfMatch(t, reps[2].adminURL, "users-migration", old, `{"percentage": 90}`)
	if code != http.StatusConflict {
		t.Fatalf("PUT with stale If-Match %s: %d %s, want 409", old, code, body)
	}
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 10 })
	cur := flagETag(t, reps[2].adminURL, "users-migration")
	if code, body := putIfMatch(t, reps[2].adminURL, "users-migration", cur, `{"percentage": 90}`); code != http.StatusOK {
		t.Fatalf("PUT with current If-Match %s: %d %s, want 200", cur, code, body)
	}
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 90 })
}

// TestFleetGuardTripSetsAllToZero: a service failing under traffic
// through one replica trips that replica's guard; every replica goes to 0 %, and
// the fleet records one trip, not one per replica; a resume through
// another replica rearms the guard that tripped.
func TestFleetGuardTripSetsAllToZero(t *testing.T) {
	db := pgtest.NewDB(t)
	var failing atomic.Bool
	svc := switchableServer(t, &failing)
	reps := startFleet(t, db.URL, svc.URL, `flags:
  users-migration:
    percentage: 100
    guard: {window: 1s, min_requests: 5, max_error_rate: 0.2}
`, 3)
	failing.Store(true)
	// Only the first replica gets traffic: its guard judges its own
	// requests, and its trip applies to all.
	send := func(round int) {
		for i := range 20 {
			servedBy(t, reps[0].proxyURL+"/api/users", fmt.Sprintf("u-%d-%d", round, i), nil)
		}
	}
	waitFlag(t, reps[0].adminURL, "users-migration", send, func(v toggles.FlagView) bool { return v.Percentage == 0 })
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 0 })
	for _, r := range reps[1:] {
		if got := servedBy(t, r.proxyURL+"/api/users", "u-x", nil); got != "monolith" {
			t.Errorf("%s after the trip: served by %s", r.name, got)
		}
	}
	if n := auditCount(t, db.Pool, "guard tripped"); n != 1 {
		t.Errorf("audit has %d guard trips, want 1", n)
	}
	// Resumed through another replica, the tripped guard is rearmed too.
	failing.Store(false)
	if code, body := adminDo(t, http.MethodPost, reps[1].adminURL+"/admin/flags/users-migration/resume", e2eToken, ""); code != http.StatusOK {
		t.Fatalf("resume through %s: %d %s", reps[1].name, code, body)
	}
	waitFlag(t, reps[0].adminURL, "users-migration", nil, func(v toggles.FlagView) bool {
		return v.State != nil && v.State.Guard != nil && !v.State.Guard.Tripped
	})
}

// TestFleetGuardTripOnEveryReplicaChangesOnce: when every replica's guard
// trips on the same failure, the store records one change. The users are
// in include_users, so they keep reaching the failing service through
// every replica after the first trip, and every guard trips.
func TestFleetGuardTripOnEveryReplicaChangesOnce(t *testing.T) {
	db := pgtest.NewDB(t)
	var failing atomic.Bool
	svc := switchableServer(t, &failing)
	users := make([]string, 20)
	for i := range users {
		users[i] = fmt.Sprintf("u-%d", i)
	}
	reps := startFleet(t, db.URL, svc.URL, fmt.Sprintf(`flags:
  users-migration:
    percentage: 100
    include_users: [%s]
    guard: {window: 1s, min_requests: 5, max_error_rate: 0.2}
`, strings.Join(users, ", ")), 3)
	failing.Store(true)
	for _, r := range reps {
		send := func(int) {
			for _, u := range users {
				servedBy(t, r.proxyURL+"/api/users", u, nil)
			}
		}
		waitFlag(t, r.adminURL, "users-migration", send, func(v toggles.FlagView) bool {
			return v.Percentage == 0 && v.State != nil && v.State.Guard != nil && v.State.Guard.Tripped
		})
	}
	if n := auditCount(t, db.Pool, "guard tripped"); n != 1 {
		t.Errorf("audit has %d guard trips for one failure that tripped 3 replicas, want 1", n)
	}
}

// TestFleetRampStepsOncePerInterval: three replicas tick the same ramp
// every 50ms; the flag still takes one step per interval for the fleet.
func TestFleetRampStepsOncePerInterval(t *testing.T) {
	db := pgtest.NewDB(t)
	svc := namedServer(t, "user-service", nil, nil)
	reps := startFleet(t, db.URL, svc.URL, `flags:
  users-migration:
    percentage: 0
    ramp: {steps: [10, 20, 30, 40], interval: 1s}
`, 3)
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 40 })
	rows, err := db.Pool.Query(context.Background(), `SELECT at, (new->>'percentage')::float8 FROM strangler_flags.audit
		WHERE actor LIKE 'ramp step%' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var ats []time.Time
	var pcts []float64
	for rows.Next() {
		var at time.Time
		var p float64
		if err := rows.Scan(&at, &p); err != nil {
			t.Fatal(err)
		}
		ats, pcts = append(ats, at), append(pcts, p)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if fmt.Sprint(pcts) != "[10 20 30 40]" {
		t.Fatalf("ramp steps in the audit log: %v, want [10 20 30 40] (one per step)", pcts)
	}
	for i := 1; i < len(ats); i++ {
		// The store's clock: a step is decided when the last one is at
		// least an interval old; the write follows the decision after a
		// delay that varies with load, hence the margin. Steps taken by
		// several replicas in one interval are milliseconds apart.
		if gap := ats[i].Sub(ats[i-1]); gap < 500*time.Millisecond {
			t.Errorf("steps %v and %v are %v apart, want one interval (1s)", pcts[i-1], pcts[i], gap)
		}
	}
}

// storeUp reads strangler_flags_store_up from the replica's metrics.
func storeUp(tb testing.TB, r *fleetReplica) string {
	tb.Helper()
	_, metrics := adminDo(tb, http.MethodGet, r.adminURL+"/metrics", "", "")
	for line := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(line, "strangler_flags_store_up "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// waitStoreUp waits until every replica reports the store's state as want.
func waitStoreUp(tb testing.TB, reps []*fleetReplica, want string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range reps {
		for storeUp(tb, r) != want {
			if time.Now().After(deadline) {
				tb.Fatalf("%s: strangler_flags_store_up is %q at the deadline, want %s", r.name, storeUp(tb, r), want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestFleetSurvivesStoreStopAndStart: PostgreSQL stopped and started under
// traffic. The replicas keep serving the last state with no failed
// request, admin writes answer 503, a replica restarted during the outage
// serves the flags cached beside its config file, and once the store is
// back every replica catches up without a restart.
func TestFleetSurvivesStoreStopAndStart(t *testing.T) {
	cluster := pgtest.NewCluster(t)
	db := cluster.NewDB(t)
	svc := namedServer(t, "user-service", nil, nil)
	reps := startFleet(t, db.URL, svc.URL, fleetFlags, 3)
	setFlag(t, reps[0].adminURL, "users-migration", `{"percentage": 100}`)
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 100 })

	// Traffic through the replicas that stay up the whole test.
	var sent, failed atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range reps[:2] {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest(http.MethodGet, r.proxyURL+"/api/users", nil)
				req.Header.Set("X-User-ID", fmt.Sprintf("u-%d", i%50))
				resp, err := http.DefaultClient.Do(req)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Served-By") != "user-service" {
					failed.Add(1)
					firstFailure.CompareAndSwap(nil, fmt.Sprintf("%s: %d from %s", r.name, resp.StatusCode, resp.Header.Get("X-Served-By")))
				}
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	waitStoreUp(t, reps, "0")
	code, body := adminDo(t, http.MethodPut, reps[1].adminURL+"/admin/flags/users-migration", e2eToken, `{"percentage": 5}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "unreachable") {
		t.Errorf("PUT with the store down: %d %s, want 503 saying the store is unreachable", code, body)
	}
	// A replica restarted during the outage serves its local copy.
	reps[2].stop()
	reps[2].start(t)
	if got := servedBy(t, reps[2].proxyURL+"/api/users", "u-1", nil); got != "user-service" {
		t.Errorf("replica restarted during the outage: served by %s, want user-service (100 %% from its local copy)", got)
	}
	if v := getFlag(t, reps[2].adminURL, "users-migration"); v.Percentage != 100 {
		t.Errorf("replica restarted during the outage serves %v %%, want 100", v.Percentage)
	}

	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	waitStoreUp(t, reps, "1")
	for _, r := range reps {
		if v := getFlag(t, r.adminURL, "users-migration"); v.Percentage != 100 {
			t.Errorf("%s after the store came back: %v %%, want 100 (state intact)", r.name, v.Percentage)
		}
	}
	// The replicas follow the store again without a restart.
	setFlag(t, reps[2].adminURL, "users-migration", `{"percentage": 100, "include_users": ["u-vip"]}`)
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return len(v.IncludeUsers) == 1 })

	close(stop)
	wg.Wait()
	stop = make(chan struct{})
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d proxied requests failed across the outage; first: %v", n, sent.Load(), firstFailure.Load())
	}
	if sent.Load() == 0 {
		t.Error("no traffic was sent")
	}
}

// cliRun runs a strangler-proxy command tree with args and returns its
// standard output and error streams.
func cliRun(tb testing.TB, cmd *cobra.Command, errOut *bytes.Buffer, args ...string) error {
	tb.Helper()
	cmd.SetArgs(args)
	cmd.SetOut(errOut)
	cmd.SetErr(errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	return cmd.ExecuteContext(context.Background())
}

// TestFleetRolloutGetWarnsWhenReplicasDisagree: rollout get says nothing
// while the replicas serve one revision, and warns, naming them, when one
// lags.
func TestFleetRolloutGetWarnsWhenReplicasDisagree(t *testing.T) {
	db := pgtest.NewDB(t)
	svc := namedServer(t, "user-service", nil, nil)
	reps := startFleet(t, db.URL, svc.URL, fleetFlags, 2)
	get := func() string {
		var out, errOut bytes.Buffer
		cmd := togglescmd.NewCmdRollout(togglescmd.Deps{Out: &out, ErrOut: &errOut, Getenv: func(string) string { return "" }})
		if err := cliRun(t, cmd, &errOut, "get", "--admin", reps[0].adminURL); err != nil {
			t.Fatalf("rollout get: %v", err)
		}
		if !strings.Contains(out.String(), "users-migration") {
			t.Fatalf("rollout get printed %q", out.String())
		}
		return errOut.String()
	}
	if msg := get(); strings.Contains(msg, "warning") {
		t.Errorf("rollout get with replicas in agreement warned: %s", msg)
	}
	if _, err := db.Pool.Exec(context.Background(), `INSERT INTO strangler_flags.replicas (id, revision, started_at, last_seen)
		VALUES ('r-lagging', 0, now(), now())`); err != nil {
		t.Fatal(err)
	}
	if msg := get(); !strings.Contains(msg, "warning") || !strings.Contains(msg, "r-lagging at 0") {
		t.Errorf("rollout get with a lagging replica: stderr %q, want a warning naming r-lagging", msg)
	}
}

// TestFleetFlagsImportExport: flags export --store writes the store's
// flags as a flags file; flags import --store puts a file in force on
// every replica as one audited revision, and refuses a stale
// --if-revision.
func TestFleetFlagsImportExport(t *testing.T) {
	db := pgtest.NewDB(t)
	svc := namedServer(t, "user-service", nil, nil)
	reps := startFleet(t, db.URL, svc.URL, fleetFlags, 2)
	setFlag(t, reps[0].adminURL, "users-migration", `{"percentage": 15}`)
	dir := t.TempDir()
	deps := func(out, errOut *bytes.Buffer) togglescmd.Deps {
		return togglescmd.Deps{Out: out, ErrOut: errOut, Getenv: func(k string) string {
			if k == "STRANGLER_FLAGS_DATABASE_URL" {
				return db.URL
			}
			return ""
		}}
	}
	exported := filepath.Join(dir, "exported.yaml")
	var out, errOut bytes.Buffer
	if err := cliRun(t, togglescmd.NewCmdFlags(deps(&out, &errOut)), &errOut, "export", "--store", "env", "-o", exported); err != nil {
		t.Fatalf("flags export: %v (%s)", err, errOut.String())
	}
	data, err := os.ReadFile(exported)
	if err != nil {
		t.Fatal(err)
	}
	f, err := toggles.Parse(data)
	if err != nil || f.Flags["users-migration"].Percentage != 15 {
		t.Fatalf("exported flags: %v, %s", err, data)
	}

	next := filepath.Join(dir, "next.yaml")
	writeConfig(t, next, "flags:\n  users-migration: {percentage: 70}\n  new-flag: {percentage: 1}\n")
	if err := cliRun(t, togglescmd.NewCmdFlags(deps(&out, &errOut)), &errOut, "import", "--store", "env", "--flags", next, "--if-revision", "1"); err == nil {
		t.Fatal("flags import with a stale --if-revision 1: no error")
	}
	if err := cliRun(t, togglescmd.NewCmdFlags(deps(&out, &errOut)), &errOut, "import", "--store", "env", "--flags", next); err != nil {
		t.Fatalf("flags import: %v (%s)", err, errOut.String())
	}
	waitAll(t, reps, "users-migration", func(v toggles.FlagView) bool { return v.Percentage == 70 })
	waitAll(t, reps, "new-flag", func(v toggles.FlagView) bool { return v.Percentage == 1 })
	if n := auditCount(t, db.Pool, "flags import"); n != 2 {
		t.Errorf("audit rows of the import: %d, want 2 (one per changed flag)", n)
	}
}
