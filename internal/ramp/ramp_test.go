package ramp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/problem"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// fileStore is a flags store over a JSON file of flag → percentage, as each
// replica would have its own store over one shared flags file. Every set is
// appended to an audit file as "flag percentage unix-nanos".
type fileStore struct {
	path  string
	audit string
	now   func() time.Time
}

func newFileStore(dir string, now func() time.Time) *fileStore {
	return &fileStore{path: filepath.Join(dir, "flags.json"), audit: filepath.Join(dir, "audit.log"), now: now}
}

func (s *fileStore) load() (map[string]float64, error) {
	m := map[string]float64{}
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	return m, json.Unmarshal(data, &m)
}

func (s *fileStore) Percentage(flag string) (float64, bool) {
	m, err := s.load()
	if err != nil {
		return 0, false
	}
	p, ok := m[flag]
	return p, ok
}

func (s *fileStore) SetPercentage(_ context.Context, flag string, p float64, _ string) error {
	m, err := s.load()
	if err != nil {
		return err
	}
	m[flag] = p
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := writeAtomic(s.path, data); err != nil {
		return err
	}
	f, err := os.OpenFile(s.audit, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "%s %s %d %d\n", flag, fmtPct(p), s.now().UnixNano(), os.Getpid())
	return err
}

type auditEntry struct {
	flag string
	pct  float64
	at   time.Time
	pid  int
}

func readAudit(tb testing.TB, dir string) []auditEntry {
	tb.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	var out []auditEntry
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var e auditEntry
		var nanos int64
		if _, err := fmt.Sscanf(line, "%s %g %d %d", &e.flag, &e.pct, &nanos, &e.pid); err != nil {
			tb.Fatalf("audit line %q: %v", line, err)
		}
		e.at = time.Unix(0, nanos).UTC()
		out = append(out, e)
	}
	return out
}

func auditPercentages(entries []auditEntry) []float64 {
	var out []float64
	for _, e := range entries {
		out = append(out, e.pct)
	}
	return out
}

var usersRamp = Config{Steps: []float64{1, 5, 25, 50, 100}, Interval: time.Minute}

// replica is one controller over the shared files in dir.
func newReplica(tb testing.TB, dir string, clock *fakeClock, holding func(string) bool) (*Controller, *fileStore) {
	tb.Helper()
	store := newFileStore(dir, clock.Now)
	c, err := New(Options{Store: store, FlagsFile: filepath.Join(dir, "flags.yaml"), Now: clock.Now, Holding: holding})
	if err != nil {
		tb.Fatal(err)
	}
	c.Configure(map[string]Config{"users-migration": usersRamp})
	return c, store
}

// checkSchedule checks that usersRamp took each step once, on the minute.
func checkSchedule(tb testing.TB, entries []auditEntry) {
	tb.Helper()
	if got, want := auditPercentages(entries), usersRamp.Steps; !slices.Equal(got, want) {
		tb.Fatalf("got steps %v, want %v", got, want)
	}
	for i, e := range entries {
		if want := t0.Add(time.Duration(i+1) * usersRamp.Interval); !e.at.Equal(want) {
			tb.Errorf("step %d (%s%%): got at %s, want at %s", i+1, fmtPct(e.pct), e.at.Format(time.TimeOnly), want.Format(time.TimeOnly))
		}
	}
}

func tick(tb testing.TB, c *Controller) {
	tb.Helper()
	if err := c.Tick(context.Background()); err != nil {
		tb.Fatalf("Tick: %v", err)
	}
}

func TestTwoReplicasAdvanceOncePerInterval(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{now: t0}
	a, store := newReplica(t, dir, clock, nil)
	b, _ := newReplica(t, dir, clock, nil)
	if err := store.SetPercentage(context.Background(), "users-migration", 0, "start"); err != nil {
		t.Fatal(err)
	}
	for range 8 * 6 { // eight minutes in 10 s ticks, both replicas at once
		var wg sync.WaitGroup
		for _, c := range []*Controller{a, b} {
			wg.Go(func() { tick(t, c) })
		}
		wg.Wait()
		clock.Add(10 * time.Second)
	}
	checkSchedule(t, readAudit(t, dir)[1:]) // the first entry is the test's own start
	st, ok, err := a.State("users-migration")
	if err != nil || !ok || !st.Done || st.LastStep != 100 {
		t.Fatalf("got state %+v (ok %v, err %v), want done at 100", st, ok, err)
	}
}

func TestTrippedRampStopsUntilResumed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := &fakeClock{now: t0}
	c, store := newReplica(t, dir, clock, nil)
	other, _ := newReplica(t, dir, clock, nil)
	if err := store.SetPercentage(ctx, "users-migration", 0, "start"); err != nil {
		t.Fatal(err)
	}
	for range 3 { // start, 1 %, 5 %
		tick(t, c)
		clock.Add(time.Minute)
	}
	if p, _ := store.Percentage("users-migration"); p != 5 {
		t.Fatalf("before the trip got %v%%, want 5%%", p)
	}
	// What the proxy's trip callback does.
	if err := store.SetPercentage(ctx, "users-migration", 0, "guard"); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx, "users-migration", "error rate 0.5 > 0.02 over 1m0s (100 requests)"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		tick(t, c)
		tick(t, other)
		clock.Add(time.Minute)
	}
	if p, _ := store.Percentage("users-migration"); p != 0 {
		t.Fatalf("stopped ramp: got %v%%, want 0%%", p)
	}
	st, _, err := other.State("users-migration")
	if err != nil || !st.Stopped || !strings.HasPrefix(st.StoppedReason, "error rate 0.5") || st.StoppedAt.IsZero() {
		t.Fatalf("got state %+v (err %v), want stopped with the trip's reason", st, err)
	}
	if err := other.Resume(ctx, "users-migration"); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(ctx, "users-migration"); !errors.Is(err, ErrNotStopped) {
		t.Fatalf("resuming twice: got %v, want ErrNotStopped", err)
	}
	tick(t, c)
	if p, _ := store.Percentage("users-migration"); p != 1 {
		t.Fatalf("first tick after resume: got %v%%, want 1%%", p)
	}
	clock.Add(30 * time.Second)
	tick(t, c)
	if p, _ := store.Percentage("users-migration"); p != 1 {
		t.Fatalf("half an interval after resume: got %v%%, want 1%%", p)
	}
	clock.Add(30 * time.Second)
	tick(t, other)
	if p, _ := store.Percentage("users-migration"); p != 5 {
		t.Fatalf("one interval after resume: got %v%%, want 5%%", p)
	}
}

func TestRampStopsWhenLoweredByHand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := &fakeClock{now: t0}
	c, store := newReplica(t, dir, clock, nil)
	if err := store.SetPercentage(ctx, "users-migration", 0, "start"); err != nil {
		t.Fatal(err)
	}
	for range 4 { // start, 1, 5, 25
		tick(t, c)
		clock.Add(time.Minute)
	}
	if err := store.SetPercentage(ctx, "users-migration", 5, "operator"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		tick(t, c)
		clock.Add(time.Minute)
	}
	if p, _ := store.Percentage("users-migration"); p != 5 {
		t.Fatalf("got %v%%, want the operator's 5%%", p)
	}
	st, _, _ := c.State("users-migration")
	if want := "percentage lowered by hand from 25 to 5"; !st.Stopped || st.StoppedReason != want {
		t.Fatalf("got state %+v, want stopped: %q", st, want)
	}
}

func TestRampWaitsWhileNotHolding(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clock := &fakeClock{now: t0}
	var mu sync.Mutex
	holding := false
	c, store := newReplica(t, dir, clock, func(string) bool { mu.Lock(); defer mu.Unlock(); return holding })
	if err := store.SetPercentage(ctx, "users-migration", 0, "start"); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		tick(t, c)
		clock.Add(time.Minute)
	}
	if p, _ := store.Percentage("users-migration"); p != 0 {
		t.Fatalf("not holding: got %v%%, want 0%%", p)
	}
	mu.Lock()
	holding = true
	mu.Unlock()
	tick(t, c)
	if p, _ := store.Percentage("users-migration"); p != 1 {
		t.Fatalf("holding again: got %v%%, want 1%%", p)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{name: "valid", cfg: usersRamp},
		{name: "empty", cfg: Config{Interval: time.Minute}, want: []string{"r.steps"}},
		{name: "bad steps and interval", cfg: Config{Steps: []float64{5, 5, 101, 0.001}, Interval: time.Millisecond},
			want: []string{"r.steps[1]", "r.steps[2]", "r.steps[3]", "r.interval"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := problem.Paths(tc.cfg.Validate("r"))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got problems at %v, want at %v", tc.cfg.Validate("r"), tc.want)
			}
		})
	}
}

// The helper process: a second replica, in its own process, ticking the
// shared files in lockstep with the test: it reads "tick" on stdin, ticks at
// its fake time, moves its clock 10 s on and answers "ticked".
const helperEnv = "RAMP_TEST_HELPER_DIR"

func TestHelperReplicaProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("only runs as the helper of TestTwoProcessesAdvanceOncePerInterval")
	}
	clock := &fakeClock{now: t0}
	c, _ := newReplica(t, dir, clock, nil)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		tick(t, c)
		clock.Add(10 * time.Second)
		fmt.Println("ticked")
	}
}

func TestTwoProcessesAdvanceOncePerInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	clock := &fakeClock{now: t0}
	c, store := newReplica(t, dir, clock, nil)
	if err := store.SetPercentage(context.Background(), "users-migration", 0, "start"); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperReplicaProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	toHelper, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	fromHelper, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	answers := bufio.NewScanner(fromHelper)
	for range 8 * 6 { // eight minutes in 10 s ticks, both processes at once
		if _, err := io.WriteString(toHelper, "tick\n"); err != nil {
			t.Fatalf("to helper: %v\n%s", err, stderr.String())
		}
		tick(t, c)
		clock.Add(10 * time.Second)
		for answers.Scan() && answers.Text() != "ticked" {
		}
		if answers.Err() != nil {
			t.Fatalf("from helper: %v", answers.Err())
		}
	}
	toHelper.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, stderr.String())
	}
	entries := readAudit(t, dir)[1:]
	checkSchedule(t, entries)
	byUs := 0
	for _, e := range entries {
		if e.pid == os.Getpid() {
			byUs++
		}
	}
	t.Logf("steps taken: %d by this process, %d by the helper", byUs, len(entries)-byUs)
}
