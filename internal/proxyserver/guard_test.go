package proxyserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/guard"
	"github.com/strangler-fig/strangler/internal/routing"
	"github.com/strangler-fig/strangler/internal/toggles"
	"github.com/strangler-fig/strangler/internal/toggles/togglescmd"
)

// switchableServer answers as user-service, or 500 while failing is set.
func switchableServer(tb testing.TB, failing *atomic.Bool) *httptest.Server {
	tb.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.Header().Set("X-Served-By", "user-service")
		io.WriteString(w, "user-service")
	}))
	tb.Cleanup(s.Close)
	return s
}

// startGuarded runs a proxy whose /api/users route has the flag
// users-migration, as flags says, with fast guard and ramp loops. The route
// keeps the default fallbacks: a GET the service fails is answered by the
// monolith, and counts as an error for the guard.
func startGuarded(tb testing.TB, svcURL, flags string) (proxyURL, adminURL, dir string) {
	tb.Helper()
	mono := namedServer(tb, "monolith", nil, nil)
	dir = tb.TempDir()
	cfg := rolloutConfig(mono.URL, svcURL)
	path := filepath.Join(dir, "strangler.yaml")
	writeConfig(tb, path, cfg)
	writeConfig(tb, filepath.Join(dir, "flags.yaml"), flags)
	_, proxyURL, adminURL = runServer(tb, Options{
		ConfigPath: path,
		Getenv:     func(k string) string { return e2eEnv[k] },
		GuardTick:  20 * time.Millisecond,
		RampTick:   50 * time.Millisecond,
	})
	return proxyURL, adminURL, dir
}

// getFlag returns the admin API's view of a flag.
func getFlag(tb testing.TB, adminURL, key string) toggles.FlagView {
	tb.Helper()
	code, body := adminDo(tb, http.MethodGet, adminURL+"/admin/flags/"+key, "", "")
	if code != http.StatusOK {
		tb.Fatalf("GET flag %s: got %d %s, want 200", key, code, body)
	}
	var v toggles.FlagView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		tb.Fatalf("GET flag %s: %v in %s", key, err, body)
	}
	return v
}

// waitFlag polls the flag until ok accepts it, sending traffic as each
// round's users through the proxy meanwhile when traffic is set.
func waitFlag(tb testing.TB, adminURL, key string, traffic func(round int), ok func(toggles.FlagView) bool) toggles.FlagView {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for round := 0; ; round++ {
		v := getFlag(tb, adminURL, key)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			tb.Fatalf("flag %s: still %+v (state %+v) at the deadline", key, v, v.State)
		}
		if traffic != nil {
			traffic(round)
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestGuardTripsAFailingRamp pins issue 8: a service that starts failing
// under a 50 % ramp is set back to 0 % by its guard, everyone then goes to
// the monolith, the trip is shown with its reason, and resume rearms the
// guard and lets the ramp go on.
func TestGuardTripsAFailingRamp(t *testing.T) {
	var failing atomic.Bool
	svc := switchableServer(t, &failing)
	proxyURL, adminURL, dir := startGuarded(t, svc.URL, `flags:
  users-migration:
    percentage: 50
    guard: {window: 1s, min_requests: 5, max_error_rate: 0.2}
    ramp: {steps: [50, 100], interval: 1h}
`)
	failing.Store(true)
	send := func(round int) {
		for i := range 20 {
			req, _ := http.NewRequest(http.MethodGet, proxyURL+"/api/users", nil)
			req.Header.Set("X-User-ID", fmt.Sprintf("user-%d-%d", round, i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// The trip sets the percentage, then stops the ramp: wait for both.
	v := waitFlag(t, adminURL, "users-migration", send, func(v toggles.FlagView) bool {
		return v.Percentage == 0 && v.State != nil && v.State.Ramp != nil && v.State.Ramp.Stopped
	})
	if v.State == nil || v.State.Guard == nil || !v.State.Guard.Tripped || !strings.Contains(v.State.Guard.Reason, "error rate") {
		t.Fatalf("state after the trip: got %+v, want a tripped guard with its reason", v.State)
	}
	if r := v.State.Ramp; r == nil || !r.Stopped || !strings.Contains(r.StoppedReason, "error rate") {
		t.Errorf("ramp after the trip: got %+v, want it stopped with the trip's reason", r)
	}
	for i := range 100 {
		if got := servedBy(t, proxyURL+"/api/users", fmt.Sprintf("user-%d", i), nil); got != "monolith" {
			t.Fatalf("after the trip, user-%d: got %s, want monolith", i, got)
		}
	}
	// Persisted like a manual change, guard and ramp kept as written.
	data, err := os.ReadFile(filepath.Join(dir, "flags.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	file, err := toggles.Parse(data)
	if err != nil {
		t.Fatalf("flags file after the trip: %v", err)
	}
	if fl := file.Flags["users-migration"]; fl.Percentage != 0 || fl.Guard == nil || fl.Guard.Window != time.Second || fl.Ramp == nil || fl.Ramp.Interval != time.Hour {
		t.Errorf("flags file after the trip: got %+v, want percentage 0 with the guard and ramp as written", fl)
	}
	_, metrics := adminDo(t, http.MethodGet, adminURL+"/metrics", "", "")
	if !strings.Contains(metrics, `strangler_guard_trips_total{flag="users-migration"} 1`) {
		t.Errorf("/metrics: got no strangler_guard_trips_total of 1 for the flag")
	}

	failing.Store(false)
	steps := []struct {
		name, token string
		args        []string
		want        string // in the output, or in the error when wantErr
		wantErr     bool
	}{
		{"get shows the trip", "", []string{"get", "users-migration"}, "guard state:    tripped at", false},
		{"get shows the stopped ramp", "", []string{"get", "users-migration"}, "ramp state:     stopped at", false},
		{"resume without the token", "", []string{"resume", "users-migration"}, "401", true},
		{"resume", e2eToken, []string{"resume", "users-migration"}, "users-migration: resumed at 0%", false},
		{"resume again: nothing stopped", e2eToken, []string{"resume", "users-migration"}, "409", true},
		{"resume an unknown flag", e2eToken, []string{"resume", "nope"}, "404", true},
	}
	for _, st := range steps {
		out, err := rolloutCmd(t, adminURL, st.token, st.args...)
		switch {
		case st.wantErr && (err == nil || !strings.Contains(err.Error(), st.want)):
			t.Errorf("%s: got error %v, want one containing %q", st.name, err, st.want)
		case !st.wantErr && (err != nil || !strings.Contains(out, st.want)):
			t.Errorf("%s: got %q, error %v, want output containing %q", st.name, out, err, st.want)
		}
	}
	v = waitFlag(t, adminURL, "users-migration", nil, func(v toggles.FlagView) bool { return v.Percentage == 50 })
	if v.State.Guard.Tripped {
		t.Errorf("guard after resume: got tripped (%s), want holding", v.State.GuardSummary)
	}
}

// TestHealthyRampAdvances checks that a ramp whose guard holds steps up
// once per interval to its last step.
func TestHealthyRampAdvances(t *testing.T) {
	var failing atomic.Bool
	svc := switchableServer(t, &failing)
	_, adminURL, _ := startGuarded(t, svc.URL, `flags:
  users-migration:
    percentage: 0
    guard: {window: 1s, min_requests: 5, max_error_rate: 0.2}
    ramp: {steps: [10, 100], interval: 1s}
`)
	var seen []float64
	waitFlag(t, adminURL, "users-migration", nil, func(v toggles.FlagView) bool {
		if len(seen) == 0 || seen[len(seen)-1] != v.Percentage {
			seen = append(seen, v.Percentage)
		}
		return v.State != nil && v.State.Ramp != nil && v.State.Ramp.Done
	})
	if got, want := fmt.Sprint(seen), "[0 10 100]"; got != want {
		t.Errorf("percentages seen: got %s, want %s", got, want)
	}
}

// rolloutCmd runs "strangler-proxy rollout ARGS" against the admin API.
func rolloutCmd(tb testing.TB, adminURL, token string, args ...string) (string, error) {
	tb.Helper()
	var out, errOut bytes.Buffer
	cmd := togglescmd.NewCmdRollout(togglescmd.Deps{Out: &out, ErrOut: &errOut, Getenv: func(string) string { return "" }})
	cmd.SetArgs(append(args, "--admin", adminURL, "--token", token))
	cmd.SetOut(&errOut)
	cmd.SetErr(&errOut)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestGuardOutcome pins what a routed request tells its flag's guard.
func TestGuardOutcome(t *testing.T) {
	flagged := &routing.Route{Label: "/api/users", Flag: "users-migration"}
	service := routing.Decision{Backend: routing.BackendService}
	live := httptest.NewRequest(http.MethodGet, "/api/users", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := live.WithContext(ctx)
	cases := []struct {
		name   string
		r      *http.Request
		route  *routing.Route
		res    routing.Result
		want   guard.Outcome
		wantOK bool
	}{
		{"answered", live, flagged, routing.Result{Decision: service, Backend: routing.BackendService, Status: 200, Duration: time.Millisecond},
			guard.Outcome{Latency: time.Millisecond}, true},
		{"4xx is no error", live, flagged, routing.Result{Decision: service, Backend: routing.BackendService, Status: 404, Duration: time.Millisecond},
			guard.Outcome{Latency: time.Millisecond}, true},
		{"5xx the client got", live, flagged, routing.Result{Decision: service, Backend: routing.BackendService, Status: 503, Failure: routing.ReasonStatus5xx, Duration: time.Millisecond},
			guard.Outcome{Error: true, Latency: time.Millisecond}, true},
		{"5xx fallback", live, flagged, routing.Result{Decision: service, Backend: routing.BackendMonolith, Status: 200, Fallback: routing.ReasonStatus5xx, Failure: routing.ReasonStatus5xx, Duration: time.Millisecond},
			guard.Outcome{Error: true, Latency: time.Millisecond}, true},
		{"timeout without fallback", live, flagged, routing.Result{Decision: service, Status: 504, Failure: routing.ReasonTimeout, Duration: time.Second},
			guard.Outcome{Error: true, Latency: time.Second}, true},
		{"breaker open", live, flagged, routing.Result{Decision: service, Backend: routing.BackendMonolith, Status: 200, Fallback: routing.ReasonBreakerOpen, Duration: time.Millisecond},
			guard.Outcome{Error: true}, true},
		{"connect error", live, flagged, routing.Result{Decision: service, Backend: routing.BackendMonolith, Status: 200, Fallback: routing.ReasonConnectError, Duration: time.Millisecond},
			guard.Outcome{Error: true}, true},
		{"client went away", gone, flagged, routing.Result{Decision: service, Status: 499, Duration: time.Millisecond}, guard.Outcome{}, false},
		{"rollout chose the monolith", live, flagged, routing.Result{Decision: routing.Decision{Backend: routing.BackendMonolith}, Status: 500}, guard.Outcome{}, false},
		{"route without flag", live, &routing.Route{Label: "/api"}, routing.Result{Decision: service, Status: 500}, guard.Outcome{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := guardOutcome(c.r, c.route, c.res)
			if got != c.want || ok != c.wantOK {
				t.Errorf("got %+v, %t, want %+v, %t", got, ok, c.want, c.wantOK)
			}
		})
	}
}

// TestFlagsReloadConfiguresGuards checks that a guard added to, changed in
// or removed from the flags file is in force after the file is reloaded.
func TestFlagsReloadConfiguresGuards(t *testing.T) {
	mono := namedServer(t, "monolith", nil, nil)
	svc := namedServer(t, "user-service", nil, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "strangler.yaml")
	writeConfig(t, path, rolloutConfig(mono.URL, svc.URL))
	flagsPath := filepath.Join(dir, "flags.yaml")
	writeConfig(t, flagsPath, "flags:\n  users-migration: {percentage: 10}\n")
	srv, _, adminURL := startServerAt(t, path, e2eEnv)
	steps := []struct {
		name, flags string
		want        bool // a guard in the flag's state
	}{
		{"no guard", "flags:\n  users-migration: {percentage: 10}\n", false},
		{"guard added", "flags:\n  users-migration:\n    percentage: 10\n    guard: {window: 30s, min_requests: 5, max_error_rate: 0.1}\n", true},
		{"guard removed", "flags:\n  users-migration: {percentage: 10}\n", false},
	}
	for _, st := range steps {
		writeConfig(t, flagsPath, st.flags)
		// What SIGHUP does: read the flags file now.
		if _, err := srv.flags.tr.Store().Reload(); err != nil {
			t.Fatalf("%s: reload: %v", st.name, err)
		}
		v := getFlag(t, adminURL, "users-migration")
		if got := v.State != nil && v.State.Guard != nil; got != st.want {
			t.Errorf("%s: got guard state %t (%+v), want %t", st.name, got, v.State, st.want)
		}
	}
}

// delayedServer answers every request as user-service after waiting delay,
// before its response headers.
func delayedServer(tb testing.TB, delay time.Duration) *httptest.Server {
	tb.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		w.Header().Set("X-Served-By", "user-service")
		io.WriteString(w, "user-service")
	}))
	tb.Cleanup(s.Close)
	return s
}

// p99Flags is a flag at 100 % whose guard judges only latency: a window of
// 1s (ten slots of 100ms), at least 5 outcomes, and a p99 of at most 250ms.
// The limit is far above the fast service's 5ms: on a busy machine, under
// the race detector, a whole test process was seen to stall for 45 to 60ms,
// and with fewer than 100 outcomes in a window a single answer above the
// limit trips the guard.
const p99Flags = `flags:
  users-migration:
    percentage: 100
    guard: {window: 1s, min_requests: 5, max_p99: 250ms}
`

// p99Requests and p99Clients are the traffic of the p99 tests: requests
// sent by a few concurrent clients, each as its own user.
const (
	p99Requests = 40
	p99Clients  = 4
)

// sendBatch sends p99Requests GETs of /api/users through the proxy, as
// users batch-0 to batch-39 from p99Clients clients at once, and returns how
// many each backend (X-Served-By) answered. The clients share a transport
// of their own whose connections are closed at the end: a connection it
// dialled but never sent a request on would otherwise hold the proxy's
// shutdown for 5s (the grace the listener gives a new connection, as
// net/http does).
func sendBatch(tb testing.TB, proxyURL string) map[string]int {
	tb.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var mu sync.Mutex
	served := make(map[string]int)
	next := make(chan int)
	var wg sync.WaitGroup
	for range p99Clients {
		wg.Go(func() {
			for i := range next {
				req, err := http.NewRequest(http.MethodGet, proxyURL+"/api/users", nil)
				if err != nil {
					tb.Error(err)
					continue
				}
				req.Header.Set("X-User-ID", fmt.Sprintf("batch-%d", i))
				resp, err := client.Do(req)
				if err != nil {
					tb.Error(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					tb.Errorf("batch-%d: got status %d, want 200", i, resp.StatusCode)
				}
				mu.Lock()
				served[resp.Header.Get("X-Served-By")]++
				mu.Unlock()
			}
		})
	}
	for i := range p99Requests {
		next <- i
	}
	close(next)
	wg.Wait()
	return served
}

// waitGuardEvaluating waits until the flag's guard has evaluated a window:
// from then on every outcome is recorded in the slot of its time. An outcome
// recorded before the guard loop's first tick goes to the monitor's first
// slot, which the loop may then treat as an older or a later one.
func waitGuardEvaluating(tb testing.TB, adminURL string) {
	tb.Helper()
	waitFlag(tb, adminURL, "users-migration", nil, func(v toggles.FlagView) bool {
		return v.State != nil && v.State.Guard != nil && v.State.Guard.LastWindow != nil
	})
}

// flagsFileFlag parses the flags file in dir with the toggles package and
// returns the flag users-migration as written there.
func flagsFileFlag(tb testing.TB, dir string) toggles.Flag {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "flags.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	file, err := toggles.Parse(data)
	if err != nil {
		tb.Fatalf("flags file: %v in %q", err, data)
	}
	fl, ok := file.Flags["users-migration"]
	if !ok {
		tb.Fatalf("flags file: got no users-migration in %q", data)
	}
	return fl
}

// TestGuardTripsOnSlowService pins the max_p99 guard through the whole
// proxy: a service that answers 200, but every answer after 300ms, is slower
// than its flag's max_p99 of 250ms. Once a window holds min_requests of its
// outcomes (all of them slow, so the p99 is above the limit whatever the
// count) the guard trips: the flag goes to 0 %, in force and in the flags
// file, the trip is counted, and the next requests go to the monolith.
func TestGuardTripsOnSlowService(t *testing.T) {
	svc := delayedServer(t, 300*time.Millisecond)
	proxyURL, adminURL, dir := startGuarded(t, svc.URL, p99Flags)
	waitGuardEvaluating(t, adminURL)

	served := sendBatch(t, proxyURL)
	// The service had the first requests: at least min_requests of them
	// reached it before any window could trip.
	if served["user-service"] < 5 {
		t.Errorf("batch: got %v, want at least 5 answers of the service before the trip", served)
	}
	v := waitFlag(t, adminURL, "users-migration", nil, func(v toggles.FlagView) bool {
		return v.Percentage == 0 && v.State != nil && v.State.Guard != nil && v.State.Guard.Tripped
	})
	if g := v.State.Guard; !strings.Contains(g.Reason, "p99") || !strings.Contains(g.Reason, "> 250ms") {
		t.Errorf("guard reason: got %q, want the p99 above 250ms named", g.Reason)
	}
	if fl := flagsFileFlag(t, dir); fl.Percentage != 0 || fl.Guard == nil || fl.Guard.MaxP99 != 250*time.Millisecond {
		t.Errorf("flags file after the trip: got %+v, want percentage 0 with the guard as written", fl)
	}
	_, metrics := adminDo(t, http.MethodGet, adminURL+"/metrics", "", "")
	if want := `strangler_guard_trips_total{flag="users-migration"} 1` + "\n"; !strings.Contains(metrics, want) {
		t.Errorf("/metrics: got no %q, want one trip counted", strings.TrimSpace(want))
	}
	for i := range 50 {
		if got := servedBy(t, proxyURL+"/api/users", fmt.Sprintf("after-%d", i), nil); got != "monolith" {
			t.Fatalf("after the trip, after-%d: got %s, want monolith", i, got)
		}
	}
}

// TestGuardHoldsOnFastService is TestGuardTripsOnSlowService's
// counterpart: the same traffic to a service that answers after 5ms keeps
// the flag at 100 %. It waits for a window that holds every request of the
// batch (more than min_requests) to be evaluated, so the guard has judged
// the whole batch when the test looks.
func TestGuardHoldsOnFastService(t *testing.T) {
	svc := delayedServer(t, 5*time.Millisecond)
	proxyURL, adminURL, dir := startGuarded(t, svc.URL, p99Flags)
	waitGuardEvaluating(t, adminURL)

	if served := sendBatch(t, proxyURL); served["user-service"] != p99Requests {
		t.Errorf("batch: got %v, want all %d answered by the service", served, p99Requests)
	}
	v := waitFlag(t, adminURL, "users-migration", nil, func(v toggles.FlagView) bool {
		g := v.State.Guard // not nil: see waitGuardEvaluating
		return g.Tripped || g.LastWindow != nil && g.LastWindow.Requests == p99Requests
	})
	if g := v.State.Guard; g.Tripped || v.Percentage != 100 {
		t.Fatalf("after the batch: got percentage %v, guard %s, want 100 and holding", v.Percentage, v.State.GuardSummary)
	}
	if fl := flagsFileFlag(t, dir); fl.Percentage != 100 {
		t.Errorf("flags file after the batch: got percentage %v, want 100", fl.Percentage)
	}
	_, metrics := adminDo(t, http.MethodGet, adminURL+"/metrics", "", "")
	if want := `strangler_guard_trips_total{flag="users-migration"} 0` + "\n"; !strings.Contains(metrics, want) {
		t.Errorf("/metrics: got no %q, want no trip counted", strings.TrimSpace(want))
	}
	if got := servedBy(t, proxyURL+"/api/users", "after-0", nil); got != "user-service" {
		t.Errorf("after the batch: got %s, want user-service", got)
	}
}
