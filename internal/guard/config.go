package guard

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/strangler-fig/strangler/internal/problem"
)

// MinWindow is the shortest window a guard accepts: a window is ten slots
// and the loop ticks every second by default.
const MinWindow = time.Second

// Config is a flag's guard as written in the flags file:
//
//	guard: {window: 60s, min_requests: 50, max_error_rate: 0.02, max_p99: 800ms}
//
// A zero MaxErrorRate or MaxP99 leaves that limit unchecked.
type Config struct {
	// Window is the span of outcomes each evaluation looks at.
	Window time.Duration `yaml:"window" json:"window"`
	// MinRequests is the fewest outcomes a window needs to decide anything.
	MinRequests int `yaml:"min_requests" json:"min_requests"`
	// MaxErrorRate trips the guard when a window's error rate is above it (0..1).
	MaxErrorRate float64 `yaml:"max_error_rate,omitempty" json:"max_error_rate,omitempty"`
	// MaxP99 trips the guard when a window's p99 latency is above it.
	MaxP99 time.Duration `yaml:"max_p99,omitempty" json:"max_p99,omitempty"`
}

// String describes the guard for people: "window 1m0s, min 50 requests,
// max error rate 0.02, max p99 800ms", leaving out the limits that are not
// set.
func (c Config) String() string {
	s := fmt.Sprintf("window %s, min %d requests", c.Window, c.MinRequests)
	if c.MaxErrorRate > 0 {
		s += ", max error rate " + strconv.FormatFloat(c.MaxErrorRate, 'f', -1, 64)
	}
	if c.MaxP99 > 0 {
		s += ", max p99 " + c.MaxP99.String()
	}
	return s
}

// Validate returns every problem of c, with field paths below path (for
// example "flags.users-migration.guard").
func (c Config) Validate(path string) []problem.Problem {
	var ps problem.List
	if c.Window < MinWindow {
		ps.Add(problem.Join(path, "window"), "%s is shorter than %s: write a duration such as 60s", c.Window, MinWindow)
	}
	if c.MinRequests < 1 {
		ps.Add(problem.Join(path, "min_requests"), "%d must be at least 1", c.MinRequests)
	}
	if math.IsNaN(c.MaxErrorRate) || c.MaxErrorRate < 0 || c.MaxErrorRate >= 1 {
		ps.Add(problem.Join(path, "max_error_rate"), "%s is out of range: a fraction from 0 (unchecked) to below 1, e.g. 0.02",
			strconv.FormatFloat(c.MaxErrorRate, 'g', -1, 64))
	}
	if c.MaxP99 < 0 {
		ps.Add(problem.Join(path, "max_p99"), "%s is negative", c.MaxP99)
	}
	if c.MaxErrorRate == 0 && c.MaxP99 == 0 {
		ps.Add(path, "sets neither max_error_rate nor max_p99, so it can never trip")
	}
	return ps
}

// configJSON is Config as the admin API writes it: durations as text.
type configJSON struct {
	Window       string  `json:"window"`
	MinRequests  int     `json:"min_requests"`
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	MaxP99       string  `json:"max_p99,omitempty"`
}

// MarshalJSON writes durations as text ("60s"), as in the flags file.
func (c Config) MarshalJSON() ([]byte, error) {
	j := configJSON{Window: c.Window.String(), MinRequests: c.MinRequests, MaxErrorRate: c.MaxErrorRate}
	if c.MaxP99 != 0 {
		j.MaxP99 = c.MaxP99.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (c *Config) UnmarshalJSON(b []byte) error {
	var j configJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	w, err := parseDuration(j.Window)
	if err != nil {
		return fmt.Errorf("guard window: %w", err)
	}
	p99, err := parseDuration(j.MaxP99)
	if err != nil {
		return fmt.Errorf("guard max_p99: %w", err)
	}
	*c = Config{Window: w, MinRequests: j.MinRequests, MaxErrorRate: j.MaxErrorRate, MaxP99: p99}
	return nil
}
