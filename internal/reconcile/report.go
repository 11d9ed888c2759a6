package reconcile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Report is the outcome of a verification, in the JSON form fixed by
// DESIGN.md.
type Report struct {
	// Consistent is true when every table is (after repair, if any).
	Consistent bool `json:"consistent"`
	// StartedAt is when the verification began.
	StartedAt time.Time `json:"started_at"`
	// DurationSeconds is how long the whole verification took.
	DurationSeconds float64 `json:"duration_seconds"`
	// Tables holds one entry per table, in the order given.
	Tables []TableReport `json:"tables"`
}

// TableReport is the outcome for one table. Counts and samples are what was
// found; Repaired is what was fixed; Consistent describes the state after
// repair.
type TableReport struct {
	Source          string  `json:"source"`
	Target          string  `json:"target"`
	Consistent      bool    `json:"consistent"`
	SourceRows      int64   `json:"source_rows"`
	TargetRows      int64   `json:"target_rows"`
	MissingInTarget int64   `json:"missing_in_target"`
	ExtraInTarget   int64   `json:"extra_in_target"`
	Mismatched      int64   `json:"mismatched"`
	Samples         Samples `json:"samples"`
	Repaired        int64   `json:"repaired"`

	// TwoWay reports a two-way verification (Options.TwoWay): only then
	// do the two kinds below exist, and only then are they in the JSON
	// report and the metrics.
	TwoWay bool `json:"-"`
	// MissingInSource counts rows only in the target that the service
	// wrote: the source never had them.
	MissingInSource int64 `json:"-"`
	// ExtraInSource counts rows only in the source that came from the
	// target, which has deleted them since.
	ExtraInSource int64 `json:"-"`

	// Duration is how long the table took; it feeds the duration metric.
	Duration time.Duration `json:"-"`
	// Plan is what repair did or, in a dry run, would do; nil without
	// repair.
	Plan *RepairPlan `json:"-"`
}

// Samples lists up to MaxSamples keys of each kind of difference.
type Samples struct {
	MissingInTarget []Key      `json:"missing_in_target"`
	ExtraInTarget   []Key      `json:"extra_in_target"`
	Mismatched      []Mismatch `json:"mismatched"`
	// MissingInSource and ExtraInSource are listed by two-way
	// verifications only.
	MissingInSource []Key `json:"-"`
	ExtraInSource   []Key `json:"-"`
	// TwoWay puts the two lists above in the JSON form.
	TwoWay bool `json:"-"`
}

// MarshalJSON writes the table's report; a two-way one also has the counts
// missing_in_source and extra_in_source.
func (t TableReport) MarshalJSON() ([]byte, error) {
	type plain TableReport // without this method
	if !t.TwoWay {
		return json.Marshal(plain(t))
	}
	t.Samples.TwoWay = true
	return json.Marshal(struct {
		plain
		MissingInSource int64 `json:"missing_in_source"`
		ExtraInSource   int64 `json:"extra_in_source"`
	}{plain(t), t.MissingInSource, t.ExtraInSource})
}

// MarshalJSON writes the samples; two-way ones also list missing_in_source
// and extra_in_source.
func (s Samples) MarshalJSON() ([]byte, error) {
	type plain Samples // without this method
	if !s.TwoWay {
		return json.Marshal(plain(s))
	}
	orEmpty := func(k []Key) []Key {
		if k == nil {
			return []Key{}
		}
		return k
	}
	return json.Marshal(struct {
		plain
		MissingInSource []Key `json:"missing_in_source"`
		ExtraInSource   []Key `json:"extra_in_source"`
	}{plain(s), orEmpty(s.MissingInSource), orEmpty(s.ExtraInSource)})
}

// Mismatch is a row present on both sides with different values.
type Mismatch struct {
	Key Key `json:"key"`
	// Columns are the target names of the columns that differ.
	Columns []string `json:"columns"`
	// Newer, in a two-way verification, names the side that wrote the row
	// last ("source" or "target"): repair copies it to the other side.
	Newer string `json:"newer,omitempty"`
}

// KeyValue is one column of a key. Value is an int64 for integer columns and
// a string otherwise (times in RFC 3339).
type KeyValue struct {
	Column string
	Value  any
}

// Key is a row's key, in key order. It marshals to a JSON object of key
// column (target name) → value.
type Key []KeyValue

// MarshalJSON writes the key as an object, keeping the key order.
func (k Key) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, kv := range k {
		if i > 0 {
			b.WriteByte(',')
		}
		name, err := json.Marshal(kv.Column)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(kv.Value)
		if err != nil {
			return nil, err
		}
		b.Write(name)
		b.WriteByte(':')
		b.Write(val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// String formats the key for people: id=17 or tenant=a,n=2.
func (k Key) String() string {
	parts := make([]string, len(k))
	for i, kv := range k {
		parts[i] = fmt.Sprintf("%s=%v", kv.Column, kv.Value)
	}
	return strings.Join(parts, ",")
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteSummary writes a short readable summary: one block per table with
// its counts, sample keys and, with repair, what was (or would be) done.
func (r *Report) WriteSummary(w io.Writer) error {
	var b strings.Builder
	for _, t := range r.Tables {
		state := "consistent"
		switch {
		case !t.Consistent:
			state = "DIFFERENT"
		case t.Plan != nil && !t.Plan.DryRun:
			state = "consistent after repair"
		}
		name := t.Source
		if t.Target != t.Source {
			name = t.Source + " → " + t.Target
		}
		fmt.Fprintf(&b, "%s: %s (source %d rows, target %d rows, %.2fs)\n", name, state, t.SourceRows, t.TargetRows, t.Duration.Seconds())
		if t.MissingInTarget+t.ExtraInTarget+t.Mismatched+t.MissingInSource+t.ExtraInSource > 0 {
			fmt.Fprintf(&b, "  missing in target: %d%s\n", t.MissingInTarget, keyList(t.Samples.MissingInTarget, t.MissingInTarget))
			fmt.Fprintf(&b, "  extra in target:   %d%s\n", t.ExtraInTarget, keyList(t.Samples.ExtraInTarget, t.ExtraInTarget))
			if t.TwoWay {
				fmt.Fprintf(&b, "  missing in source: %d%s\n", t.MissingInSource, keyList(t.Samples.MissingInSource, t.MissingInSource))
				fmt.Fprintf(&b, "  extra in source:   %d%s\n", t.ExtraInSource, keyList(t.Samples.ExtraInSource, t.ExtraInSource))
			}
			keys := make([]Key, len(t.Samples.Mismatched))
			for i, m := range t.Samples.Mismatched {
				keys[i] = m.Key
			}
			fmt.Fprintf(&b, "  mismatched:        %d%s\n", t.Mismatched, keyList(keys, t.Mismatched))
			for i, m := range t.Samples.Mismatched {
				if i == 5 {
					break
				}
				newer := ""
				if m.Newer != "" {
					newer = " (" + m.Newer + " wrote last)"
				}
				fmt.Fprintf(&b, "    %s: %s%s\n", m.Key, strings.Join(m.Columns, ", "), newer)
			}
		}
		if p := t.Plan; p != nil {
			verb := "repaired"
			if p.DryRun {
				verb = "dry run, would repair"
			}
			fmt.Fprintf(&b, "  %s: insert %d, update %d, delete %d", verb, p.Inserted, p.Updated, p.Deleted)
			if t.TwoWay {
				fmt.Fprintf(&b, " in the target; insert %d, update %d, delete %d in the source", p.SourceInserted, p.SourceUpdated, p.SourceDeleted)
			}
			if p.Skipped > 0 {
				fmt.Fprintf(&b, "; %d skipped (held by a running sync, or written again since the comparison)", p.Skipped)
			}
			b.WriteString("\n")
		}
	}
	state := "consistent"
	if !r.Consistent {
		state = "differences found"
	}
	fmt.Fprintf(&b, "%s: %d table(s) in %.2fs\n", state, len(r.Tables), r.DurationSeconds)
	_, err := io.WriteString(w, b.String())
	return err
}

func keyList(keys []Key, total int64) string {
	if len(keys) == 0 {
		return ""
	}
	const show = 5
	parts := make([]string, 0, show)
	for i, k := range keys {
		if i == show {
			break
		}
		parts = append(parts, k.String())
	}
	more := ""
	if total > int64(len(parts)) {
		more = fmt.Sprintf(", … %d more", total-int64(len(parts)))
	}
	return " (" + strings.Join(parts, "; ") + more + ")"
}
