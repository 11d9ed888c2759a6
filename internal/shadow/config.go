package shadow

import (
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/strangler-fig/strangler/internal/problem"
)

// Config is a route's shadow traffic as written in the proxy config:
//
//	shadow: {percentage: 100, ignore_json_paths: ["$.updated_at"], ignore_headers: [Date], noise_check: true}
type Config struct {
	// Percentage of the route's eligible monolith-bound requests that are
	// copied to the service, 0 to 100.
	Percentage float64 `yaml:"percentage" json:"percentage"`
	// IgnoreJSONPaths are left out of the comparison of JSON bodies.
	IgnoreJSONPaths []string `yaml:"ignore_json_paths" json:"ignore_json_paths,omitempty"`
	// IgnoreHeaders are left out of the comparison of headers, on top of
	// DefaultIgnoredHeaders.
	IgnoreHeaders []string `yaml:"ignore_headers" json:"ignore_headers,omitempty"`
	// NoiseCheck asks the monolith twice for a sample of the copied
	// requests and stops reporting what differs between its own answers.
	NoiseCheck bool `yaml:"noise_check" json:"noise_check,omitempty"`
}

// DefaultIgnoredHeaders are never compared: they differ between any two
// servers (or any two answers) by design, or carry secrets that must not
// land in the mismatch log.
var DefaultIgnoredHeaders = []string{
	"Date", "Content-Length", "Connection", "Keep-Alive", "Transfer-Encoding",
	"Server", "X-Served-By", "X-Request-Id", "Traceparent", "Tracestate", "Set-Cookie",
}

// Validate returns every problem of c, with field paths below path (for
// example "routes[0].shadow").
func (c Config) Validate(path string) []problem.Problem {
	var ps problem.List
	if math.IsNaN(c.Percentage) || c.Percentage < 0 || c.Percentage > 100 {
		ps.Add(problem.Join(path, "percentage"), "%s is out of range 0..100", strconv.FormatFloat(c.Percentage, 'g', -1, 64))
	}
	for i, p := range c.IgnoreJSONPaths {
		if _, err := parsePattern(p); err != nil {
			ps.Add(problem.Join(path, "ignore_json_paths")+"["+strconv.Itoa(i)+"]",
				"%v: use $, .key, [\"key\"], [n] and [*], e.g. $.items[*].updated_at", err)
		}
	}
	for i, h := range c.IgnoreHeaders {
		if h == "" || strings.ContainsAny(h, " \t:\r\n") {
			ps.Add(problem.Join(path, "ignore_headers")+"["+strconv.Itoa(i)+"]", "%q is not a header name", h)
		}
	}
	return ps
}

// ignores returns what c leaves out of a comparison, DefaultIgnoredHeaders
// included. Paths that do not parse (Validate reports them) are skipped.
func (c Config) ignores() ignoreSet {
	out := ignoreSet{headers: map[string]bool{}}
	for _, p := range c.IgnoreJSONPaths {
		if pat, err := parsePattern(p); err == nil {
			out.paths = append(out.paths, pat)
		}
	}
	for _, h := range DefaultIgnoredHeaders {
		out.headers[http.CanonicalHeaderKey(h)] = true
	}
	for _, h := range c.IgnoreHeaders {
		out.headers[http.CanonicalHeaderKey(h)] = true
	}
	return out
}
