package toggles

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Rule names the rule that decided a flag evaluation. The values are
// bounded, so they are safe as metric labels.
type Rule string

// The rules, in the order they are tried.
const (
	RuleNotFound    Rule = "flag_not_found" // no such flag: the monolith
	RuleNoUser      Rule = "no_user"        // no user id: the monolith
	RuleDisabled    Rule = "disabled"       // the kill switch: the monolith
	RuleExcluded    Rule = "excluded"       // in exclude_users: the monolith
	RuleIncluded    Rule = "included"       // in include_users: the service
	RuleNotEligible Rule = "not_eligible"   // the flag has segments and the user is in none
	RuleSplit       Rule = "split"          // the bucket decided
)

// Result is the outcome of evaluating a flag for a user.
type Result struct {
	// Service is true when the user goes to the service.
	Service bool
	// Rule is the rule that decided.
	Rule Rule
	// Segment is the segment whose percentage applied (RuleSplit only),
	// empty when the flag's own percentage applied.
	Segment string
	// Bucket is the user's bucket (0..BucketCount-1) for RuleSplit and
	// RuleNotEligible.
	Bucket uint32
	// Threshold is the number of buckets in (RuleSplit only).
	Threshold uint32
}

// Snapshot is one immutable, compiled state of the flags file. Reads need
// no lock.
type Snapshot struct {
	file     *File
	flags    map[string]*compiledFlag
	revision int64 // set by the store before the snapshot is put in force
}

// Revision is the snapshot's revision: in fleet mode the store's revision,
// shared by every replica; with a flags file a count of the contents this
// process has put in force (1 for the first). 0 for a snapshot no store
// has put in force.
func (s *Snapshot) Revision() int64 { return s.revision }

type compiledFlag struct {
	enabled   bool
	threshold uint32
	include   map[string]struct{}
	exclude   map[string]struct{}
	segments  []compiledSegment
}

type compiledSegment struct {
	name      string
	rule      Segment
	threshold uint32
	ownPct    bool
}

// NewSnapshot compiles a validated file. It returns an error when f is not
// valid.
func NewSnapshot(f *File) (*Snapshot, error) {
	if f == nil {
		f = &File{}
	}
	if err := f.Validate(); err != nil {
		return nil, fmt.Errorf("compile flags: %w", err)
	}
	f = f.Clone()
	s := &Snapshot{file: f, flags: make(map[string]*compiledFlag, len(f.Flags))}
	for key, fl := range f.Flags {
		c := &compiledFlag{
			enabled:   fl.IsEnabled(),
			threshold: Threshold(fl.Percentage),
			include:   setOf(fl.IncludeUsers),
			exclude:   setOf(fl.ExcludeUsers),
		}
		for _, name := range fl.Segments {
			rule := f.Segments[name]
			rule.Header = headerName(rule.Header)
			cs := compiledSegment{name: name, rule: rule, threshold: c.threshold}
			if p, ok := fl.SegmentPercentages[name]; ok {
				cs.threshold, cs.ownPct = Threshold(p), true
			}
			c.segments = append(c.segments, cs)
		}
		s.flags[key] = c
	}
	return s, nil
}

// headerName is the canonical form of a header name ("" stays "").
func headerName(h string) string { return http.CanonicalHeaderKey(h) }

func setOf(xs []string) map[string]struct{} {
	if len(xs) == 0 {
		return nil
	}
	m := make(map[string]struct{}, len(xs))
	for _, x := range xs {
		m[x] = struct{}{}
	}
	return m
}

// File returns a deep copy of the file this snapshot was compiled from.
func (s *Snapshot) File() *File { return s.file.Clone() }

// Flag returns a copy of the flag with this key.
func (s *Snapshot) Flag(key string) (Flag, bool) {
	f, ok := s.file.Flags[key]
	if !ok {
		return Flag{}, false
	}
	return f.Clone(), true
}

// FlagKeys returns the flag keys in order.
func (s *Snapshot) FlagKeys() []string { return slices.Sorted(maps.Keys(s.file.Flags)) }

// Has reports whether the flag exists.
func (s *Snapshot) Has(key string) bool {
	_, ok := s.flags[key]
	return ok
}

// AppendMemberships appends to dst the names of the flag's segments that
// the subject belongs to, judged on verified JWT claims and request
// headers, and returns the extended slice. Only the segments the flag
// names are tried. Pass a stack buffer as dst to avoid allocating.
func (s *Snapshot) AppendMemberships(dst []string, flagKey string, claims map[string]any, h http.Header) []string {
	f := s.flags[flagKey]
	if f == nil {
		return dst
	}
	for i := range f.segments {
		if f.segments[i].rule.Matches(claims, h) {
			dst = append(dst, f.segments[i].name)
		}
	}
	return dst
}

// Evaluate applies DESIGN.md's rollout rules: the service iff the flag is
// enabled and the user is not excluded and (included, or eligible and the
// bucket is below the percentage that applies). inSegments names the
// segments the user belongs to; a user in several of a flag's segments is
// judged by the first of them the flag lists.
func (s *Snapshot) Evaluate(flagKey, userID string, inSegments []string) Result {
	f := s.flags[flagKey]
	switch {
	case f == nil:
		return Result{Rule: RuleNotFound}
	case userID == "":
		return Result{Rule: RuleNoUser}
	case !f.enabled:
		return Result{Rule: RuleDisabled}
	}
	if _, ok := f.exclude[userID]; ok {
		return Result{Rule: RuleExcluded}
	}
	if _, ok := f.include[userID]; ok {
		return Result{Service: true, Rule: RuleIncluded}
	}
	b := Bucket(flagKey, userID)
	if len(f.segments) == 0 {
		return Result{Service: b < f.threshold, Rule: RuleSplit, Bucket: b, Threshold: f.threshold}
	}
	// The first of the flag's segments the user is in decides, as in the
	// flagd export, where each segment is one branch of an "if".
	for i := range f.segments {
		cs := &f.segments[i]
		if !slices.Contains(inSegments, cs.name) {
			continue
		}
		r := Result{Service: b < cs.threshold, Rule: RuleSplit, Bucket: b, Threshold: cs.threshold}
		if cs.ownPct {
			r.Segment = cs.name
		}
		return r
	}
	return Result{Rule: RuleNotEligible, Bucket: b}
}

// EvaluateFor evaluates the flag for an identity, working out its segment
// memberships from its claims and the request headers h. It is Evaluate
// without the OpenFeature client, for explaining a decision.
func (s *Snapshot) EvaluateFor(flagKey string, id Identity, h http.Header) Result {
	return s.Evaluate(flagKey, id.UserID, s.AppendMemberships(nil, flagKey, id.Claims, h))
}

// Explain says in a sentence why the result sends the user where it does.
func (r Result) Explain() string {
	side := "the monolith"
	if r.Service {
		side = "the service"
	}
	switch r.Rule {
	case RuleNotFound:
		return "the flag is not in the flags file: " + side
	case RuleNoUser:
		return "the request has no user id: " + side
	case RuleDisabled:
		return "the flag is disabled: " + side
	case RuleExcluded:
		return "the user is in exclude_users: " + side
	case RuleIncluded:
		return "the user is in include_users: " + side
	case RuleNotEligible:
		return "the user is in none of the flag's segments: " + side
	}
	of := "the flag's percentage"
	if r.Segment != "" {
		of = "segment " + r.Segment + "'s own percentage"
	}
	cmp := "below"
	if !r.Service {
		cmp = "not below"
	}
	return fmt.Sprintf("bucket %d is %s %d (%s%%, %s): %s",
		r.Bucket, cmp, r.Threshold, formatNumber(float64(r.Threshold)/100), of, side)
}

// Matches reports whether a subject with these verified claims and request
// headers is in the segment. A claim that is a string, boolean or number is
// compared by its text; a claim that is a list matches when any element
// does. A missing claim or header never matches.
func (s Segment) Matches(claims map[string]any, h http.Header) bool {
	if s.Header != "" {
		vs, ok := h[s.Header] // the canonical name, as compiled snapshots hold
		if !ok {
			vs = h.Values(s.Header)
		}
		for _, v := range vs {
			if s.matchText(v) {
				return true
			}
		}
		return false
	}
	v, ok := claims[s.Claim]
	if !ok {
		return false
	}
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if t, ok := claimText(e); ok && s.matchText(t) {
				return true
			}
		}
		return false
	}
	t, ok := claimText(v)
	return ok && s.matchText(t)
}

func (s Segment) matchText(v string) bool {
	switch {
	case s.Equals != nil:
		return v == string(*s.Equals)
	case s.Prefix != "":
		return strings.HasPrefix(v, s.Prefix)
	case s.Suffix != "":
		return strings.HasSuffix(v, s.Suffix)
	default:
		return slices.Contains(s.In, v)
	}
}

// claimText renders a scalar JWT claim as text.
func claimText(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case bool:
		return strconv.FormatBool(t), true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	case int64:
		return strconv.FormatInt(t, 10), true
	case int:
		return strconv.Itoa(t), true
	}
	return "", false
}
