package reconcile

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// mismatch is a key whose row differs, with the indexes of the differing
// columns.
type mismatch struct {
	key  []string
	cols []int
	// newer, in a two-way verification, is the side that wrote the row
	// last: sideSource or sideTarget.
	newer string
}

// diffs are the differing keys of a table, in the order found.
type diffs struct {
	missing    [][]string
	extra      [][]string
	mismatched []mismatch

	// A two-way verification (see classify) moves the rows only in the
	// target that the source never had to missingInSource, and those only
	// in the source that the target deleted to extraInSource. xmin holds,
	// by key string, the xmin of each row its repair would overwrite or
	// delete.
	twoWay          bool
	missingInSource [][]string
	extraInSource   [][]string
	xmin            map[string]string
}

func (d *diffs) count() int {
	return len(d.missing) + len(d.extra) + len(d.mismatched) + len(d.missingInSource) + len(d.extraInSource)
}

func (d *diffs) add(o diffs) {
	d.missing = append(d.missing, o.missing...)
	d.extra = append(d.extra, o.extra...)
	d.mismatched = append(d.mismatched, o.mismatched...)
	d.missingInSource = append(d.missingInSource, o.missingInSource...)
	d.extraInSource = append(d.extraInSource, o.extraInSource...)
}

// keys lists every differing key.
func (d *diffs) keys() [][]string {
	out := make([][]string, 0, d.count())
	out = append(out, d.missing...)
	out = append(out, d.extra...)
	out = append(out, d.missingInSource...)
	out = append(out, d.extraInSource...)
	for _, m := range d.mismatched {
		out = append(out, m.key)
	}
	return out
}

// keyString joins a key's column texts unambiguously.
func keyString(k []string) string {
	if len(k) == 1 {
		return k[0]
	}
	var b strings.Builder
	for _, v := range k {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}

// compareRows compares the rows of the same keys read from both sides, each
// in key order.
func compareRows(src, dst []row) diffs {
	var d diffs
	index := make(map[string]int, len(dst))
	for i, r := range dst {
		index[keyString(r.key)] = i
	}
	matched := make([]bool, len(dst))
	for _, s := range src {
		i, ok := index[keyString(s.key)]
		if !ok {
			d.missing = append(d.missing, s.key)
			continue
		}
		matched[i] = true
		var cols []int
		for c, h := range s.hashes {
			if h != dst[i].hashes[c] {
				cols = append(cols, c)
			}
		}
		if len(cols) > 0 {
			d.mismatched = append(d.mismatched, mismatch{key: s.key, cols: cols})
		}
	}
	for i, r := range dst {
		if !matched[i] {
			d.extra = append(d.extra, r.key)
		}
	}
	return d
}

// samples renders up to n keys of each kind for the report.
func (d *diffs) samples(keyCols []mapping.Column, colNames []string, n int) Samples {
	s := Samples{MissingInTarget: []Key{}, ExtraInTarget: []Key{}, Mismatched: []Mismatch{}, TwoWay: d.twoWay}
	if d.twoWay {
		s.MissingInSource, s.ExtraInSource = []Key{}, []Key{}
		for _, k := range d.missingInSource[:min(n, len(d.missingInSource))] {
			s.MissingInSource = append(s.MissingInSource, reportKey(keyCols, k))
		}
		for _, k := range d.extraInSource[:min(n, len(d.extraInSource))] {
			s.ExtraInSource = append(s.ExtraInSource, reportKey(keyCols, k))
		}
	}
	for _, k := range d.missing[:min(n, len(d.missing))] {
		s.MissingInTarget = append(s.MissingInTarget, reportKey(keyCols, k))
	}
	for _, k := range d.extra[:min(n, len(d.extra))] {
		s.ExtraInTarget = append(s.ExtraInTarget, reportKey(keyCols, k))
	}
	for _, m := range d.mismatched[:min(n, len(d.mismatched))] {
		cols := make([]string, len(m.cols))
		for i, c := range m.cols {
			cols[i] = colNames[c]
		}
		s.Mismatched = append(s.Mismatched, Mismatch{Key: reportKey(keyCols, m.key), Columns: cols, Newer: m.newer})
	}
	return s
}

// Type OIDs whose key values the report writes specially.
const (
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidTimestamp   = 1114
	oidTimestamptz = 1184
)

// reportKey turns a key's text forms into report values: integers as
// numbers, times in RFC 3339, everything else as the text PostgreSQL
// prints.
func reportKey(cols []mapping.Column, k []string) Key {
	out := make(Key, len(k))
	for i, v := range k {
		out[i] = KeyValue{Column: cols[i].Target, Value: keyValue(cols[i].TargetOID, v)}
	}
	return out
}

func keyValue(oid uint32, v string) any {
	switch oid {
	case oidInt2, oidInt4, oidInt8:
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return n
		}
	case oidTimestamptz:
		// Sessions run in UTC, so the offset is always +00.
		if t, err := time.Parse("2006-01-02 15:04:05.999999-07", v); err == nil {
			return t.UTC().Format(time.RFC3339Nano)
		}
	case oidTimestamp:
		if t, err := time.Parse("2006-01-02 15:04:05.999999", v); err == nil {
			return t.Format("2006-01-02T15:04:05.999999999")
		}
	}
	return v
}

// unnestKeys is a FROM item __datasync_u(__datasync_k0, ...) of the given
// keys, one text column per key column.
func (p *pair) unnestKeys(keys [][]string, a *args) string {
	cols := make([][]string, len(p.keyTypes))
	for _, k := range keys {
		for i, v := range k {
			cols[i] = append(cols[i], v)
		}
	}
	params := make([]string, len(cols))
	names := make([]string, len(cols))
	for i := range cols {
		params[i] = a.add(cols[i]) + "::text[]"
		names[i] = fmt.Sprintf("__datasync_k%d", i)
	}
	return "unnest(" + strings.Join(params, ", ") + ") AS __datasync_u(" + strings.Join(names, ", ") + ")"
}

// keyJoin is the condition matching side s's key columns to those of
// unnestKeys.
func (p *pair) keyJoin(s *side) string {
	conds := make([]string, len(p.keyTypes))
	for i := range conds {
		conds[i] = fmt.Sprintf("%s = __datasync_u.__datasync_k%d::%s", s.keyCols[i], i, p.keyTypes[i])
	}
	return strings.Join(conds, " AND ")
}

// joinKeys joins the given keys to side s's table.
func (p *pair) joinKeys(s *side, keys [][]string, a *args) string {
	return " JOIN " + p.unnestKeys(keys, a) + " ON " + p.keyJoin(s)
}

// fetchKeys reads the rows of the given keys from side s.
func (p *pair) fetchKeys(ctx context.Context, s *side, keys [][]string) ([]row, error) {
	var a args
	q := p.rowSelect(s) + s.from() + p.joinKeys(s, keys, &a)
	if s.filter != "" {
		q += " WHERE (" + s.filter + ")"
	}
	q += " ORDER BY " + strings.Join(s.keyCols, ", ")
	return p.scanRows(ctx, s, q, a)
}

// recheck reads every differing key again from both sides and returns the
// differences that persist.
func (p *pair) recheck(ctx context.Context, d diffs, batch int) (diffs, error) {
	var out diffs
	keys := d.keys()
	for start := 0; start < len(keys); start += batch {
		chunk := keys[start:min(start+batch, len(keys))]
		var srcRows, dstRows []row
		err := both(ctx,
			func(ctx context.Context) (err error) { srcRows, err = p.fetchKeys(ctx, p.src, chunk); return err },
			func(ctx context.Context) (err error) { dstRows, err = p.fetchKeys(ctx, p.dst, chunk); return err })
		if err != nil {
			return diffs{}, fmt.Errorf("recheck: %w", err)
		}
		out.add(compareRows(srcRows, dstRows))
	}
	return out, nil
}
