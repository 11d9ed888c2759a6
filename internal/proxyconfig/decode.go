package proxyconfig

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/strangler-fig/strangler/internal/problem"
)

// Duration is a time.Duration written as a Go duration string ("2s", "500ms").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError("want a duration such as 2s or 500ms")
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeError(fmt.Sprintf("invalid duration %q: want a number with a unit, such as 2s or 500ms", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// typeError lets yaml.v3 go on decoding the rest of the file after a bad
// value, the way it does for its own type errors.
func typeError(msg string) error { return &yaml.TypeError{Errors: []string{msg}} }

// Size is a number of bytes, written as an integer or with a unit: 512KiB,
// 1MiB, 1GiB (also KB, MB, GB as powers of 1000).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseSize parses a byte count such as "1MiB" or "4096".
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q: want bytes such as 65536, 512KiB or 1MiB", s)
	}
	return Size(n * mult), nil
}

// UnmarshalYAML parses a byte count.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError("want a size such as 65536, 512KiB or 1MiB")
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return typeError(err.Error())
	}
	*s = v
	return nil
}

// Decode reads YAML from r on top of c. Unknown keys and values of the wrong
// type are reported all at once, with field path and line, as a
// *ValidationError; a file that is not YAML at all gives a plain error.
func (c *Config) Decode(r io.Reader) error {
	var root yaml.Node
	if err := yaml.NewDecoder(r).Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &ValidationError{Problems: []Problem{{Path: "(file)", Message: "empty configuration: at least monolith.url is needed"}}}
		}
		return &ValidationError{Problems: []Problem{located(problem.FromYAMLError("(file)", err))}}
	}
	if c.lines == nil {
		c.lines = make(map[string]int)
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var probs []Problem
	for _, p := range problem.CheckYAML(doc, reflect.TypeOf(c).Elem(), c.lines) {
		probs = append(probs, located(p))
	}
	// Decode even when walk found problems: yaml.v3 fills in what it can, so
	// that Validate does not report keys the file does set.
	err := doc.Decode(c)
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
		return &ValidationError{Problems: probs}
	}
	if err != nil {
		// CheckYAML checks every leaf, so this is a case it does not know
		// about.
		return &ValidationError{Problems: []Problem{located(problem.FromYAMLError("(file)", err))}}
	}
	return nil
}

func located(p problem.Located) Problem {
	return Problem{Path: p.Path, Line: p.Line, Message: p.Message}
}
