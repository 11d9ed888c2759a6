package toggles

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseDesignExample(t *testing.T) {
	f, err := Parse([]byte(designFlags))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	fl := f.Flags["users-migration"]
	if got, want := fl.Percentage, 25.0; got != want {
		t.Errorf("percentage: got %v, want %v", got, want)
	}
	if got, want := fl.SegmentPercentages["employees"], 100.0; got != want {
		t.Errorf("segment_percentages.employees: got %v, want %v", got, want)
	}
	if got, want := time.Duration(fl.Guard.MaxP99), 800*time.Millisecond; got != want {
		t.Errorf("guard.max_p99: got %v, want %v", got, want)
	}
	if got, want := time.Duration(fl.Ramp.Interval), 10*time.Minute; got != want {
		t.Errorf("ramp.interval: got %v, want %v", got, want)
	}
	if got, want := string(*f.Segments["beta"].Equals), "true"; got != want {
		t.Errorf("segments.beta.equals: got %q, want %q", got, want)
	}
}

func TestEnabledDefaultsToTrue(t *testing.T) {
	f, err := Parse([]byte("flags:\n  a: {percentage: 5}\n  b: {percentage: 5, enabled: false}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if !f.Flags["a"].IsEnabled() {
		t.Errorf("a without enabled: got disabled, want enabled")
	}
	if f.Flags["b"].IsEnabled() {
		t.Errorf("b with enabled: false: got enabled, want disabled")
	}
}

func TestEqualsAcceptsBooleanAndString(t *testing.T) {
	f, err := Parse([]byte("segments:\n  a: {claim: beta, equals: true}\n  b: {claim: beta, equals: \"true\"}\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	claims := map[string]any{"beta": true}
	for _, name := range []string{"a", "b"} {
		if !f.Segments[name].Matches(claims, nil) {
			t.Errorf("segment %s over beta=true: got no match, want match", name)
		}
	}
}

func TestDecodeIsStrict(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"unknown flag key", "flags:\n  a:\n    percentage: 5\n    percent: 6\n", "line 4: flags.a.percent: unknown key; known keys here: enabled, percentage,"},
		{"unknown top-level key", "flag:\n  a: {}\n", "line 1: flag: unknown key; known keys here: segments, flags"},
		{"wrong type", "flags:\n  a:\n    percentage: lots\n", "line 3: flags.a.percentage: cannot unmarshal"},
		{"bad duration", "flags:\n  a:\n    guard: {window: soon}\n", "line 3: flags.a.guard.window: cannot unmarshal !!str `soon` into time.Duration"},
		{"duplicate flag", "flags:\n  a: {}\n  a: {}\n", "already defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Decode: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestParseReportsEveryProblemAtOnce pins that an unknown key or a value of
// the wrong type does not hide the flags file's other problems: validate
// lists them all, in line order, each with its field path.
func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	const in = `flags:
  users-migration:
    percentage: 150
    colour: red
    segments: [nobody]
  other:
    guard: {window: soon, min_requests: 5, max_error_rate: 0.1}
`
	_, err := Parse([]byte(in))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Parse: got %v, want an error wrapping ErrInvalid", err)
	}
	want := []string{
		"line 3: flags.users-migration.percentage: 150 is out of range 0..100",
		"line 4: flags.users-migration.colour: unknown key; known keys here: enabled, percentage,",
		`line 5: flags.users-migration.segments[0]: segment "nobody" is not defined under segments`,
		"line 7: flags.other.guard.window: cannot unmarshal !!str `soon` into time.Duration",
	}
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("problems: got %d:\n%s\nwant %d", len(got), err, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("problem %d: got %q, want it to start with %q", i, got[i], w)
		}
	}
}

func TestValidateNamesEveryProblem(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"percentage out of range", "flags:\n  users-migration: {percentage: 150}\n",
			[]string{"flags.users-migration.percentage: 150 is out of range 0..100"}},
		{"negative percentage", "flags:\n  a: {percentage: -1}\n",
			[]string{"flags.a.percentage: -1 is out of range 0..100"}},
		{"three decimals", "flags:\n  a: {percentage: 1.005}\n",
			[]string{"flags.a.percentage: 1.005 has more than two decimals"}},
		{"undefined segment", "flags:\n  a: {segments: [staff]}\n",
			[]string{`flags.a.segments[0]: segment "staff" is not defined under segments`}},
		{"segment percentage of an unlisted segment", "segments:\n  s: {header: X, equals: y}\nflags:\n  a: {segment_percentages: {s: 200}}\n",
			[]string{`flags.a.segment_percentages.s: segment "s" is not in this flag's segments`, "flags.a.segment_percentages.s: 200 is out of range 0..100"}},
		{"user in both lists", "flags:\n  a: {include_users: [u1], exclude_users: [u1]}\n",
			[]string{`flags.a.include_users: "u1" is also in exclude_users`}},
		{"segment without a test", "segments:\n  s: {claim: email}\n",
			[]string{"segments.s: set one of equals, prefix, suffix or in"}},
		{"segment with claim and header", "segments:\n  s: {claim: email, header: X, equals: a}\n",
			[]string{"segments.s: set only one of claim or header"}},
		{"bad flag key", "flags:\n  \"a b\": {}\n",
			[]string{`flags.a b: flag key "a b" must be`}},
		{"guard and ramp", "flags:\n  a:\n    guard: {window: 0s, min_requests: -1, max_error_rate: 2}\n    ramp: {steps: [5, 1], interval: 0s}\n",
			[]string{"flags.a.guard.window: 0s is shorter than 1s", "flags.a.guard.min_requests: -1 must be at least 1",
				"flags.a.guard.max_error_rate: 2 is out of range", "flags.a.ramp.steps[1]: 1 is not above the step before it",
				"flags.a.ramp.interval: 0s is shorter than 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var verr *ValidationError
			if !errors.As(err, &verr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse: got %v, want a *ValidationError wrapping ErrInvalid", err)
			}
			if got, want := len(verr.Problems), len(tt.want); got != want {
				t.Fatalf("problems: got %d (%v), want %d", got, verr, want)
			}
			for i, w := range tt.want {
				if got := verr.Problems[i].String(); !strings.HasPrefix(got, w) {
					t.Errorf("problem %d: got %q, want it to start with %q", i, got, w)
				}
			}
		})
	}
}

func TestEncodeRoundTrips(t *testing.T) {
	f, err := Parse([]byte(designFlags))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var b strings.Builder
	if err := f.Encode(&b); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	g, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatalf("Parse of encoded file: %v\n%s", err, b.String())
	}
	if got, want := g.Flags["users-migration"].Guard.Window, f.Flags["users-migration"].Guard.Window; got != want {
		t.Errorf("guard.window after round trip: got %v, want %v", got, want)
	}
	if got, want := string(*g.Segments["beta"].Equals), "true"; got != want {
		t.Errorf("segments.beta.equals after round trip: got %q, want %q", got, want)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(designFlags))
	f.Add([]byte("flags:\n  a: {percentage: 5}\n"))
	f.Add([]byte("segments:\n  s: {claim: beta, equals: true}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		if _, err := NewSnapshot(file); err != nil {
			t.Fatalf("NewSnapshot of a valid file: %v", err)
		}
	})
}

func TestParseProblemsCarryLines(t *testing.T) {
	const in = `segments:
  s: {claim: email}
flags:
  users.v2:
    percentage: 150
    segments:
      - s
      - nope
  other: {percentage: 1.234}
`
	_, err := Parse([]byte(in))
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("Parse: got %v, want a *ValidationError", err)
	}
	want := map[string]int{
		"segments.s":                 2,
		"flags.other.percentage":     9,
		"flags.users.v2.percentage":  5,
		"flags.users.v2.segments[1]": 8,
	}
	if len(verr.Problems) != len(want) {
		t.Fatalf("problems: got %v, want %d", verr, len(want))
	}
	for _, p := range verr.Problems {
		if got, ok := want[p.Path]; !ok || p.Line != got {
			t.Errorf("%s: got line %d, want %d", p.Path, p.Line, want[p.Path])
		}
	}
	// validate prints the error: each problem shows its line.
	if msg, w := err.Error(), "line 5: flags.users.v2.percentage: 150 is out of range"; !strings.Contains(msg, w) {
		t.Errorf("error: got %q, want it to contain %q", msg, w)
	}
}
