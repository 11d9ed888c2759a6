package backfill

import (
	"fmt"
	"strings"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// Key values travel as their text forms (what the type's output function
// prints) and go back into SQL as typed literals, 'text'::type, which
// round-trips every type with a text input function: integers, uuid, text,
// timestamps, numeric.

// keyRow renders a key as a row of typed literals: ('42'::bigint, 'a'::text).
func keyRow(vals, types []string) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = mapping.QuoteLiteral(v) + "::" + types[i]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// keyAttr returns an attribute of each key column, in key order.
func keyAttr(t *mapping.Table, attr func(mapping.Column) string) []string {
	out := make([]string, len(t.Key))
	for i, c := range t.KeyColumns() {
		out[i] = attr(c)
	}
	return out
}

func sourceKeyTypes(t *mapping.Table) []string {
	return keyAttr(t, func(c mapping.Column) string { return c.SourceType })
}

func targetKeyTypes(t *mapping.Table) []string {
	return keyAttr(t, func(c mapping.Column) string { return c.TargetType })
}

// keyRange is the condition for keys after lower (exclusive) and up to upper
// (inclusive, or exclusive when !inclusive); nil bounds are open. The row
// comparison (a, b) > (x, y) is the one a btree index on (a, b) serves.
func keyRange(keyList string, types []string, lower, upper []string, inclusive bool) []string {
	var conds []string
	if lower != nil {
		conds = append(conds, "("+keyList+") > "+keyRow(lower, types))
	}
	if upper != nil {
		op := " < "
		if inclusive {
			op = " <= "
		}
		conds = append(conds, "("+keyList+")"+op+keyRow(upper, types))
	}
	return conds
}

// sourceCopySQL reads the next batch of at most limit rows, in key order, as
// a binary COPY stream of the target's column types.
func sourceCopySQL(t *mapping.Table, lower, upper []string, inclusive bool, limit int) string {
	conds := keyRange(t.SourceKeyList(), sourceKeyTypes(t), lower, upper, inclusive)
	if t.Where != "" {
		conds = append([]string{"(" + t.Where + ")"}, conds...)
	}
	q := "SELECT " + t.SourceSelectList() + " FROM " + t.Source.Quoted()
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += fmt.Sprintf(" ORDER BY %s LIMIT %d", t.SourceKeyList(), limit)
	return "COPY (" + q + ") TO STDOUT (FORMAT binary)"
}

// targetCopySQL writes a binary COPY stream of the mapped columns into
// table (the target, or a staging table with the same columns).
func targetCopySQL(t *mapping.Table, table string) string {
	return "COPY " + table + " (" + t.TargetColumnList() + ") FROM STDIN (FORMAT binary)"
}

// probeSQL finds the first key the target already holds after lower and up
// to upper: rows before it can be copied straight in.
func probeSQL(t *mapping.Table, lower, upper []string) string {
	cols := make([]string, len(t.Key))
	for i, c := range t.KeyColumns() {
		cols[i] = mapping.QuoteIdent(c.Target) + "::text"
	}
	q := "SELECT " + strings.Join(cols, ", ") + " FROM " + t.Target.Quoted()
	if conds := keyRange(t.TargetKeyList(), targetKeyTypes(t), lower, upper, true); len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	return q + " ORDER BY " + t.TargetKeyList() + " LIMIT 1"
}

// stageTable is the per-transaction staging table of the upsert path.
const stageTable = "pg_temp.datasync_stage"

func stageSQL(t *mapping.Table) string {
	return "CREATE TEMP TABLE datasync_stage ON COMMIT DROP AS SELECT " + t.TargetColumnList() +
		" FROM " + t.Target.Quoted() + " WITH NO DATA"
}

// noEquality lists types without an equality operator: their values are
// compared by their text forms.
var noEquality = map[string]bool{
	"json": true, "xml": true, "point": true, "line": true, "lseg": true,
	"box": true, "path": true, "polygon": true, "circle": true,
}

// upsertSQL moves the staged rows into the target: new keys are inserted,
// existing rows updated only where some column differs, so a row already
// equal to the source is not touched (its xmin stays).
func upsertSQL(t *mapping.Table) string {
	q := "INSERT INTO " + t.Target.Quoted() + " AS t (" + t.TargetColumnList() + ")" + t.Overriding() + " SELECT " +
		t.TargetColumnList() + " FROM " + stageTable + " ON CONFLICT (" + t.TargetKeyList() + ") DO "
	var set, mine, theirs []string
	for _, c := range t.Columns {
		if c.Key {
			continue
		}
		col := mapping.QuoteIdent(c.Target)
		set = append(set, col+" = EXCLUDED."+col)
		m, e := "t."+col, "EXCLUDED."+col
		if noEquality[c.TargetType] {
			m, e = m+"::text", e+"::text"
		}
		mine, theirs = append(mine, m), append(theirs, e)
	}
	if len(set) == 0 {
		return q + "NOTHING"
	}
	return q + "UPDATE SET " + strings.Join(set, ", ") +
		" WHERE (" + strings.Join(mine, ", ") + ") IS DISTINCT FROM (" + strings.Join(theirs, ", ") + ")"
}
