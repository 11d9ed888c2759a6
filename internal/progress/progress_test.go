package progress

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func decodeLines(tb testing.TB, out string) []Line {
	tb.Helper()
	var lines []Line
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		var l Line
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			tb.Fatalf("line %q is not JSON: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines
}

func TestJSONLines(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Out: &out, Label: "public.users", Total: 1000, Initial: 100, Now: c.Now})
	r.Add(400)
	c.advance(2 * time.Second)
	r.Report()
	r.Add(500)
	c.advance(2 * time.Second)
	sum := r.Finish()

	lines := decodeLines(t, out.String())
	if got, want := len(lines), 2; got != want {
		t.Fatalf("got %d lines, want %d:\n%s", got, want, out.String())
	}
	first, last := lines[0], lines[1]
	if got, want := first.Rows, int64(500); got != want {
		t.Errorf("first line: got rows %d, want %d", got, want)
	}
	if first.Percent == nil || *first.Percent != 50 {
		t.Errorf("first line: got percent %v, want 50", first.Percent)
	}
	if got, want := first.RowsPerSecond, 200.0; got != want {
		t.Errorf("first line: got %v rows/s, want %v (the initial rows excluded)", got, want)
	}
	if first.ETASeconds == nil || *first.ETASeconds != 2.5 {
		t.Errorf("first line: got ETA %v, want 2.5 s", first.ETASeconds)
	}
	if first.Done {
		t.Errorf("first line: got done, want not done")
	}
	if !last.Done || last.Rows != 1000 || last.ETASeconds != nil {
		t.Errorf("last line: got %+v, want done with 1000 rows and no ETA", last)
	}
	if got, want := last.Time, "2026-01-02T03:04:09Z"; got != want {
		t.Errorf("last line: got time %s, want %s", got, want)
	}
	want := Summary{Label: "public.users", Rows: 900, Seconds: 4, RowsPerSecond: 225}
	if sum != want {
		t.Errorf("got summary %+v, want %+v", sum, want)
	}
	if got, want := sum.String(), "public.users: 900 rows in 4.0s (225 rows/s)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestFinishPrintsOnce(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Out: &out, Now: c.Now})
	r.Add(3)
	c.advance(time.Second)
	first := r.Finish()
	r.Report()
	r.Add(5)
	second := r.Finish()
	if got, want := strings.Count(out.String(), "\n"), 1; got != want {
		t.Fatalf("got %d lines, want %d:\n%s", got, want, out.String())
	}
	if first.Rows != 3 || second.Rows != 8 {
		t.Fatalf("got summaries %+v then %+v, want 3 then 8 rows", first, second)
	}
}

func TestBar(t *testing.T) {
	tests := []struct {
		name string
		s    Snapshot
		want string
	}{
		{
			name: "half way",
			s:    Snapshot{Label: "t", Rows: 50, Total: 100, RowsPerSecond: 10, ETA: 5 * time.Second},
			want: "t [##############>-------------]  50.0% 50/100 10 rows/s ETA 5s",
		},
		{
			name: "nothing yet, unknown rate",
			s:    Snapshot{Rows: 0, Total: 10, ETA: -1},
			want: "[>---------------------------]   0.0% 0/10 0 rows/s",
		},
		{
			name: "estimate exceeded",
			s:    Snapshot{Rows: 120, Total: 100, RowsPerSecond: 7.4, ETA: 0},
			want: "[############################] 100.0% 120/100 7 rows/s ETA 0s",
		},
		{
			name: "unknown total",
			s:    Snapshot{Label: "x", Rows: 42, RowsPerSecond: 21, ETA: -1},
			want: "x 42 rows 21 rows/s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Bar(tt.s); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestTerminalRedrawsOneLine(t *testing.T) {
	c := newClock()
	var out bytes.Buffer
	r := New(Options{Out: &out, Terminal: true, Label: "t", Total: 4, Now: c.Now})
	r.Add(2)
	c.advance(time.Second)
	r.Report()
	r.Add(2)
	r.Finish()
	got := out.String()
	if n := strings.Count(got, "\r"); n != 2 {
		t.Errorf("got %d carriage returns, want 2: %q", n, got)
	}
	if !strings.HasSuffix(got, "\x1b[K\n") || strings.Count(got, "\n") != 1 {
		t.Errorf("got %q, want one final newline after the last redraw", got)
	}
	if !strings.Contains(got, "100.0% 4/4") {
		t.Errorf("got %q, want the final bar at 100%%", got)
	}
}

// TestConcurrentAdds runs the background loop while many goroutines add, so
// that the race detector sees every path.
func TestConcurrentAdds(t *testing.T) {
	var out testkit.Buffer
	r := New(Options{Out: &out, Every: time.Millisecond})
	r.Start()
	r.Start()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				r.Add(1)
			}
		})
	}
	wg.Wait()
	sum := r.Finish()
	if got, want := sum.Rows, int64(8000); got != want {
		t.Fatalf("got %d rows, want %d", got, want)
	}
	lines := decodeLines(t, out.String())
	if last := lines[len(lines)-1]; !last.Done || last.Rows != 8000 {
		t.Fatalf("got last line %+v, want done with 8000 rows", last)
	}
}
