package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Default periods between two updates.
const (
	DefaultBarEvery  = 200 * time.Millisecond
	DefaultJSONEvery = 5 * time.Second
)

// barWidth is the number of cells of the bar itself.
const barWidth = 28

// Options configure a Reporter.
type Options struct {
	// Out receives the updates; nil means io.Discard.
	Out io.Writer
	// Terminal selects a redrawn progress bar instead of JSON lines.
	Terminal bool
	// Label names what is being counted, e.g. a table.
	Label string
	// Total is the expected number of rows; 0 when unknown. An estimate is
	// fine: the bar never shows more than 100%.
	Total int64
	// Initial is the number of rows already done before this run (a resumed
	// copy). They count towards the total, not towards the rate.
	Initial int64
	// Every is the period between updates; 0 means DefaultBarEvery on a
	// terminal and DefaultJSONEvery otherwise.
	Every time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Snapshot is the state of a Reporter at one moment.
type Snapshot struct {
	Label string
	// Rows is the number of rows done, Initial included.
	Rows int64
	// Total is the expected number of rows, 0 when unknown.
	Total int64
	// Elapsed is the time since the Reporter was created.
	Elapsed time.Duration
	// RowsPerSecond is the rate of this run (Initial excluded).
	RowsPerSecond float64
	// ETA is the estimated time left, or -1 when unknown.
	ETA time.Duration
}

// Percent is the share of Total done, capped at 100, or -1 when the total is
// unknown.
func (s Snapshot) Percent() float64 {
	if s.Total <= 0 {
		return -1
	}
	return min(100, 100*float64(s.Rows)/float64(s.Total))
}

// Summary is what a finished Reporter counted.
type Summary struct {
	Label string `json:"label"`
	// Rows counts the rows done in this run (Initial excluded).
	Rows          int64   `json:"rows"`
	Seconds       float64 `json:"seconds"`
	RowsPerSecond float64 `json:"rows_per_second"`
}

// String is the summary as one human-readable line.
func (s Summary) String() string {
	label := ""
	if s.Label != "" {
		label = s.Label + ": "
	}
	return fmt.Sprintf("%s%d rows in %.1fs (%.0f rows/s)", label, s.Rows, s.Seconds, s.RowsPerSecond)
}

// Reporter counts rows and prints progress. Its methods are safe for
// concurrent use.
type Reporter struct {
	opts  Options
	start time.Time
	rows  atomic.Int64
	total atomic.Int64

	mu       sync.Mutex // serialises writes to opts.Out and guards the fields below
	finished bool
	stop     chan struct{}
	stopped  chan struct{}
}

// New returns a Reporter; it prints nothing until Start, Report or Finish.
func New(opts Options) *Reporter {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Every <= 0 {
		opts.Every = DefaultJSONEvery
		if opts.Terminal {
			opts.Every = DefaultBarEvery
		}
	}
	r := &Reporter{opts: opts, start: opts.Now()}
	r.rows.Store(opts.Initial)
	r.total.Store(opts.Total)
	return r
}

// Start prints an update every Options.Every until Finish. Calling it twice
// has no effect.
func (r *Reporter) Start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop != nil || r.finished {
		return
	}
	r.stop = make(chan struct{})
	r.stopped = make(chan struct{})
	go r.loop(r.stop, r.stopped)
}

func (r *Reporter) loop(stop <-chan struct{}, stopped chan<- struct{}) {
	defer close(stopped)
	t := time.NewTicker(r.opts.Every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.Report()
		}
	}
}

// Add counts n more rows done.
func (r *Reporter) Add(n int64) { r.rows.Add(n) }

// SetTotal changes the expected number of rows, e.g. once it is known.
func (r *Reporter) SetTotal(n int64) { r.total.Store(n) }

// Snapshot returns the current counts, rate and estimate.
func (r *Reporter) Snapshot() Snapshot {
	elapsed := r.opts.Now().Sub(r.start)
	s := Snapshot{Label: r.opts.Label, Rows: r.rows.Load(), Total: r.total.Load(), Elapsed: elapsed, ETA: -1}
	if elapsed > 0 {
		s.RowsPerSecond = float64(s.Rows-r.opts.Initial) / elapsed.Seconds()
	}
	if s.Total > 0 && s.RowsPerSecond > 0 {
		left := max(0, s.Total-s.Rows)
		s.ETA = time.Duration(float64(left) / s.RowsPerSecond * float64(time.Second))
	}
	return s
}

// Report prints one update now. After Finish it does nothing.
func (r *Reporter) Report() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return
	}
	r.write(r.Snapshot(), false)
}

// Finish stops the periodic updates, prints the final line and returns the
// summary. Later calls return the same summary without printing.
func (r *Reporter) Finish() Summary {
	r.mu.Lock()
	stop, stopped := r.stop, r.stopped
	r.stop = nil
	r.mu.Unlock()
	if stop != nil {
		close(stop)
		<-stopped
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.Snapshot()
	if !r.finished {
		r.finished = true
		r.write(s, true)
	}
	return Summary{Label: s.Label, Rows: s.Rows - r.opts.Initial, Seconds: s.Elapsed.Seconds(), RowsPerSecond: s.RowsPerSecond}
}

// write prints s; the caller holds r.mu. Write errors are ignored: progress
// must never fail the work it describes.
func (r *Reporter) write(s Snapshot, final bool) {
	if r.opts.Terminal {
		line := "\r" + Bar(s) + "\x1b[K"
		if final {
			line += "\n"
		}
		_, _ = io.WriteString(r.opts.Out, line)
		return
	}
	b, err := json.Marshal(lineOf(s, r.opts.Now(), final))
	if err != nil {
		return
	}
	_, _ = r.opts.Out.Write(append(b, '\n'))
}

// Line is one JSON progress line.
type Line struct {
	Time           string   `json:"time"`
	Label          string   `json:"label,omitempty"`
	Rows           int64    `json:"rows"`
	Total          int64    `json:"total,omitempty"`
	Percent        *float64 `json:"percent,omitempty"`
	RowsPerSecond  float64  `json:"rows_per_second"`
	ElapsedSeconds float64  `json:"elapsed_seconds"`
	ETASeconds     *float64 `json:"eta_seconds,omitempty"`
	Done           bool     `json:"done,omitempty"`
}

func lineOf(s Snapshot, now time.Time, final bool) Line {
	l := Line{
		Time:           now.UTC().Format(time.RFC3339),
		Label:          s.Label,
		Rows:           s.Rows,
		Total:          s.Total,
		RowsPerSecond:  round1(s.RowsPerSecond),
		ElapsedSeconds: round1(s.Elapsed.Seconds()),
		Done:           final,
	}
	if p := s.Percent(); p >= 0 {
		p = round1(p)
		l.Percent = &p
	}
	if s.ETA >= 0 && !final {
		e := round1(s.ETA.Seconds())
		l.ETASeconds = &e
	}
	return l
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// Bar renders s as one line without control characters, e.g.
//
//	public.users [#############>-------------]  48.2% 964000/2000000 512000 rows/s ETA 2s
//
// With an unknown total it shows the count and the rate only.
func Bar(s Snapshot) string {
	var b strings.Builder
	if s.Label != "" {
		b.WriteString(s.Label)
		b.WriteByte(' ')
	}
	if p := s.Percent(); p >= 0 {
		filled := int(p / 100 * barWidth)
		b.WriteByte('[')
		b.WriteString(strings.Repeat("#", filled))
		if filled < barWidth {
			b.WriteByte('>')
			b.WriteString(strings.Repeat("-", barWidth-filled-1))
		}
		fmt.Fprintf(&b, "] %5.1f%% %d/%d", p, s.Rows, s.Total)
	} else {
		fmt.Fprintf(&b, "%d rows", s.Rows)
	}
	fmt.Fprintf(&b, " %.0f rows/s", s.RowsPerSecond)
	if s.ETA >= 0 {
		fmt.Fprintf(&b, " ETA %s", s.ETA.Round(time.Second))
	}
	return b.String()
}
