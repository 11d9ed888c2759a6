package shadow

import (
	"net/http"
	"slices"
	"strings"
	"sync"
)

// DefaultNoiseObservations is how many A/A comparisons a path must differ in
// before it is noise: two, so that one odd answer does not silence a path
// for good, while a timestamp or a generated id is learned after the second
// check that sees it change.
const DefaultNoiseObservations = 2

// noise learns, from pairs of monolith answers to the same request, which
// parts of a route's answers differ on their own (the A/A baseline).
type noise struct {
	min int

	mu     sync.Mutex
	checks int            // A/A comparisons made
	seen   map[string]int // diff key → A/A comparisons it differed in
	noisy  ignoreSet      // rebuilt when a key crosses min; read-only once built
}

func newNoise(min int) *noise {
	return &noise{min: min, seen: map[string]int{}, noisy: ignoreSet{headers: map[string]bool{}}}
}

// learn counts the differences between two monolith answers.
func (n *noise) learn(diffs []Diff) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.checks++
	changed := false
	seenNow := map[string]bool{}
	for _, d := range diffs {
		if seenNow[d.key] {
			continue // one count per check, however many items differ
		}
		seenNow[d.key] = true
		n.seen[d.key]++
		if n.seen[d.key] == n.min {
			changed = true
		}
	}
	if changed {
		n.rebuild()
	}
}

// rebuild recomputes the noisy set; n.mu is held.
func (n *noise) rebuild() {
	ig := ignoreSet{headers: map[string]bool{}}
	for key, count := range n.seen {
		if count < n.min {
			continue
		}
		switch {
		case key == "status":
			ig.status = true
		case key == "body":
			ig.body = true
		case strings.HasPrefix(key, "header "):
			ig.headers[http.CanonicalHeaderKey(strings.TrimPrefix(key, "header "))] = true
		default:
			if p, err := parsePattern(key); err == nil {
				ig.paths = append(ig.paths, p)
			}
		}
	}
	n.noisy = ig
}

// set returns what has been learned to be noise.
func (n *noise) set() ignoreSet {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.noisy
}

// NoiseReport is what a route's A/A checks have learned.
type NoiseReport struct {
	// Checks counts the A/A comparisons made.
	Checks int `json:"checks"`
	// Noisy lists the paths now ignored as noise.
	Noisy []string `json:"noisy"`
	// Observed maps every path seen differing to the number of checks it
	// differed in.
	Observed map[string]int `json:"observed,omitempty"`
}

func (n *noise) report() NoiseReport {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := NoiseReport{Checks: n.checks, Noisy: []string{}, Observed: map[string]int{}}
	for k, c := range n.seen {
		r.Observed[k] = c
		if c >= n.min {
			r.Noisy = append(r.Noisy, k)
		}
	}
	slices.Sort(r.Noisy)
	return r
}

// merge returns a set that ignores what either a or b ignores.
func merge(a, b ignoreSet) ignoreSet {
	out := ignoreSet{
		paths:   append(slices.Clip(a.paths), b.paths...),
		headers: make(map[string]bool, len(a.headers)+len(b.headers)),
		status:  a.status || b.status,
		body:    a.body || b.body,
	}
	for k := range a.headers {
		out.headers[k] = true
	}
	for k := range b.headers {
		out.headers[k] = true
	}
	return out
}
