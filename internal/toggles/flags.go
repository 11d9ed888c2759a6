package toggles

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/strangler-fig/strangler/internal/guard"
	"github.com/strangler-fig/strangler/internal/problem"
	"github.com/strangler-fig/strangler/internal/ramp"
)

// File is the flags file: the rollout state operators change. Its YAML form
// is fixed by DESIGN.md; unknown keys are rejected.
type File struct {
	// Segments are named rules over a request's verified JWT claims and
	// headers.
	Segments map[string]Segment `yaml:"segments,omitempty"`
	// Flags are the rollout flags by key.
	Flags map[string]Flag `yaml:"flags,omitempty"`
}

// Flag is one rollout flag.
type Flag struct {
	// Enabled is the kill switch: false sends everyone to the monolith.
	// Nil means true.
	Enabled *bool `yaml:"enabled,omitempty"`
	// Percentage is the share of eligible users sent to the service,
	// 0..100 with at most two decimals.
	Percentage float64 `yaml:"percentage"`
	// IncludeUsers always go to the service (unless excluded or disabled).
	IncludeUsers []string `yaml:"include_users,omitempty"`
	// ExcludeUsers always go to the monolith.
	ExcludeUsers []string `yaml:"exclude_users,omitempty"`
	// Segments, when set, make only members of these segments eligible.
	Segments []string `yaml:"segments,omitempty"`
	// SegmentPercentages gives a segment its own percentage.
	SegmentPercentages map[string]float64 `yaml:"segment_percentages,omitempty"`
	// Guard is the automatic rollback rule, run by package guard.
	Guard *guard.Config `yaml:"guard,omitempty"`
	// Ramp is the automatic ramp, run by package ramp.
	Ramp *ramp.Config `yaml:"ramp,omitempty"`
}

// IsEnabled reports whether the flag is enabled; an omitted enabled is true.
func (f Flag) IsEnabled() bool { return f.Enabled == nil || *f.Enabled }

// Clone returns a deep copy of f.
func (f Flag) Clone() Flag {
	c := f
	if f.Enabled != nil {
		e := *f.Enabled
		c.Enabled = &e
	}
	c.IncludeUsers = slices.Clone(f.IncludeUsers)
	c.ExcludeUsers = slices.Clone(f.ExcludeUsers)
	c.Segments = slices.Clone(f.Segments)
	c.SegmentPercentages = maps.Clone(f.SegmentPercentages)
	if f.Guard != nil {
		g := *f.Guard
		c.Guard = &g
	}
	if f.Ramp != nil {
		r := *f.Ramp
		r.Steps = slices.Clone(f.Ramp.Steps)
		c.Ramp = &r
	}
	return c
}

// Segment is a named rule over a verified JWT claim or a request header.
// Exactly one of Claim and Header names the value; exactly one of Equals,
// Prefix, Suffix and In tests it.
//
// A header-based segment is only as trustworthy as the header: any client
// can send X-Beta-Tester: true unless something in front of the proxy strips
// or sets it. Use claims of a verified JWT for anything that matters.
type Segment struct {
	Claim  string   `yaml:"claim,omitempty" json:"claim,omitempty"`   // a verified JWT claim
	Header string   `yaml:"header,omitempty" json:"header,omitempty"` // a request header
	Equals *Scalar  `yaml:"equals,omitempty" json:"equals,omitempty"` // the value is exactly this
	Prefix string   `yaml:"prefix,omitempty" json:"prefix,omitempty"` // the value starts with this
	Suffix string   `yaml:"suffix,omitempty" json:"suffix,omitempty"` // the value ends with this
	In     []string `yaml:"in,omitempty" json:"in,omitempty"`         // the value is one of these
}

// Scalar is a YAML scalar kept as its text, so `equals: true` and
// `equals: "true"` mean the same.
type Scalar string

// UnmarshalYAML accepts any scalar.
func (s *Scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a single value (string, number or boolean)", n.Line)
	}
	*s = Scalar(n.Value)
	return nil
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid")

// Problem is one validation problem.
type Problem struct {
	// Path is the field path, e.g. flags.users-migration.percentage.
	Path string
	// Message says what is wrong and, where it helps, what to do.
	Message string
	// Line is the line of the file the path leads to, 0 when unknown.
	Line int
}

// String formats the problem as "path: message".
func (p Problem) String() string { return p.Path + ": " + p.Message }

// ValidationError lists every problem found. It wraps ErrInvalid.
type ValidationError struct {
	Problems []Problem // Parse: in line order; Validate: segments, then flags, by name
}

// Error lists the problems, one a line, each after its line in the file
// where known ("line 5: flags.a.percentage: ..."), as the proxy config's
// problems are.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
		if p.Line > 0 {
			lines[i] = "line " + strconv.Itoa(p.Line) + ": " + lines[i]
		}
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// problems collects validation problems.
type problems []Problem

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// addAll adds the problems another package's Validate found.
func (ps *problems) addAll(found []problem.Problem) {
	for _, p := range found {
		*ps = append(*ps, Problem{Path: p.Path, Message: p.Message})
	}
}

// err returns nil or a *ValidationError.
func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// Decode reads a flags file strictly: unknown keys, duplicate keys and
// values of the wrong type are errors naming their line. An empty input is
// a file with no flags. Decode does not validate; call Validate.
func Decode(r io.Reader) (*File, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decode flags file: %w", err)
	}
	f, ps, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	return f, nil
}

// decode reads data into a File, as much of it as it can, and returns the
// unknown keys and values of the wrong type as problems with their field
// path and line, all at once. An error means data is not YAML at all.
func decode(data []byte) (*File, problems, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, nil, fmt.Errorf("decode flags file: %w", err)
	}
	f := &File{}
	if len(root.Content) == 0 {
		return f, nil, nil
	}
	var ps problems
	for _, p := range problem.CheckYAML(&root, reflect.TypeOf(f).Elem(), nil) {
		ps = append(ps, Problem{Path: p.Path, Message: p.Message, Line: p.Line})
	}
	// Decode even when CheckYAML found problems: yaml.v3 fills in what it
	// can, so that Validate does not report keys the file does set.
	if err := root.Decode(f); err != nil && len(ps) == 0 {
		// CheckYAML checks every key and leaf, so this is what it does not
		// look at, such as a key given twice.
		p := problem.FromYAMLError("(file)", err)
		ps = append(ps, Problem{Path: p.Path, Message: p.Message, Line: p.Line})
	}
	return f, ps, nil
}

// Parse decodes and validates a flags file, and reports every problem at
// once, in line order: unknown keys, values of the wrong type and values
// out of range, each with its field path and line.
func Parse(data []byte) (*File, error) {
	f, ps, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		var verr *ValidationError
		if !errors.As(err, &verr) {
			return nil, err
		}
		addLines(data, verr.Problems)
		unread := make(map[string]bool, len(ps))
		for _, p := range ps {
			unread[p.Path] = true
		}
		for _, p := range verr.Problems {
			// A value that could not be read is zero in f: judging it
			// again would only repeat the problem.
			if !unread[p.Path] {
				ps = append(ps, p)
			}
		}
	}
	if len(ps) == 0 {
		return f, nil
	}
	// Problems without a line (a path the file does not hold) go last.
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(lineKey(a), lineKey(b)) })
	return nil, ps.err()
}

func lineKey(p Problem) int {
	if p.Line == 0 {
		return math.MaxInt
	}
	return p.Line
}

// Encode writes f as YAML.
func (f *File) Encode(w io.Writer) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return fmt.Errorf("encode flags file: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encode flags file: %w", err)
	}
	return nil
}

// Clone returns a deep copy of f.
func (f *File) Clone() *File {
	c := &File{Segments: make(map[string]Segment, len(f.Segments)), Flags: make(map[string]Flag, len(f.Flags))}
	for k, s := range f.Segments {
		s.In = slices.Clone(s.In)
		c.Segments[k] = s
	}
	for k, fl := range f.Flags {
		c.Flags[k] = fl.Clone()
	}
	return c
}

// nameRE is what flag keys and segment names may look like: safe in a URL
// path, a metric label and a shell argument.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate returns every problem in f with its field path, as a
// *ValidationError wrapping ErrInvalid, or nil.
func (f *File) Validate() error {
	var ps problems
	for _, name := range slices.Sorted(maps.Keys(f.Segments)) {
		validateSegment(&ps, "segments."+name, name, f.Segments[name])
	}
	for _, key := range slices.Sorted(maps.Keys(f.Flags)) {
		validateFlag(&ps, "flags."+key, key, f.Flags[key], f.Segments)
	}
	return ps.err()
}

func validateSegment(ps *problems, path, name string, s Segment) {
	if !nameRE.MatchString(name) {
		ps.add(path, "segment name %q must be letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	switch {
	case s.Claim == "" && s.Header == "":
		ps.add(path, "set one of claim or header")
	case s.Claim != "" && s.Header != "":
		ps.add(path, "set only one of claim or header")
	}
	if s.In != nil && len(s.In) == 0 {
		ps.add(path+".in", "is empty: list at least one value")
	}
	switch tests := countSet(s.Equals != nil, s.Prefix != "", s.Suffix != "", s.In != nil); {
	case tests == 0:
		ps.add(path, "set one of equals, prefix, suffix or in")
	case tests > 1:
		ps.add(path, "set only one of equals, prefix, suffix or in")
	}
}

func validateFlag(ps *problems, path, key string, f Flag, segments map[string]Segment) {
	if !nameRE.MatchString(key) {
		ps.add(path, "flag key %q must be letters, digits, '.', '_' or '-', starting with a letter or digit", key)
	}
	validatePercentage(ps, path+".percentage", f.Percentage)
	validateUsers(ps, path+".include_users", f.IncludeUsers)
	validateUsers(ps, path+".exclude_users", f.ExcludeUsers)
	for _, u := range f.IncludeUsers {
		if slices.Contains(f.ExcludeUsers, u) {
			ps.add(path+".include_users", "%q is also in exclude_users: keep it in one list", u)
		}
	}
	for i, s := range f.Segments {
		p := fmt.Sprintf("%s.segments[%d]", path, i)
		if _, ok := segments[s]; !ok {
			ps.add(p, "segment %q is not defined under segments", s)
		}
		if slices.Index(f.Segments, s) != i {
			ps.add(p, "segment %q is listed twice", s)
		}
	}
	for _, s := range slices.Sorted(maps.Keys(f.SegmentPercentages)) {
		p := path + ".segment_percentages." + s
		if !slices.Contains(f.Segments, s) {
			ps.add(p, "segment %q is not in this flag's segments: add it there or remove this entry", s)
		}
		validatePercentage(ps, p, f.SegmentPercentages[s])
	}
	if g := f.Guard; g != nil {
		ps.addAll(g.Validate(path + ".guard"))
	}
	if r := f.Ramp; r != nil {
		ps.addAll(r.Validate(path + ".ramp"))
	}
}

func validatePercentage(ps *problems, path string, p float64) {
	switch {
	case math.IsNaN(p) || p < 0 || p > 100:
		ps.add(path, "%s is out of range 0..100", formatNumber(p))
	case math.Abs(p*100-math.Round(p*100)) > 1e-6:
		ps.add(path, "%s has more than two decimals", formatNumber(p))
	}
}

func validateUsers(ps *problems, path string, users []string) {
	for i, u := range users {
		if strings.TrimSpace(u) == "" {
			ps.add(fmt.Sprintf("%s[%d]", path, i), "is empty")
		}
	}
}

// countSet counts the fields that are set.
func countSet(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

// formatNumber writes a float the way a person typed it: 150, 12.5.
func formatNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
