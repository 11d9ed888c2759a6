package mapping

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrPreflight is wrapped by every error found while checking a mapping
// against the databases, before anything is written.
var ErrPreflight = errors.New("preflight failed")

// Querier is what resolving needs of a database: *pgx.Conn, *pgxpool.Pool
// and pgx.Tx all qualify.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Column is one mapped column.
type Column struct {
	// Source and Target are the column names on each side.
	Source, Target string
	// SourceType and TargetType are the types as format_type prints them.
	SourceType, TargetType string
	// SourceOID and TargetOID are the types' OIDs.
	SourceOID, TargetOID uint32
	// Key reports whether the column is part of the key.
	Key bool
	// SourceGenerated reports a source column GENERATED ALWAYS AS (…)
	// STORED: its values are in the rows, but logical replication does not
	// send them (PostgreSQL 15 and older).
	SourceGenerated bool
	// TargetIdentity is the target column's pg_attribute.attidentity: 'a'
	// GENERATED ALWAYS AS IDENTITY, 'd' BY DEFAULT, 0 for neither.
	TargetIdentity byte
}

// Table is a table mapping checked against both databases.
type Table struct {
	Source Ident
	Target Ident
	// Columns are the mapped columns in the target's column order.
	Columns []Column
	// Key holds indexes into Columns, in key order.
	Key []int
	// Where is the source row filter, or "".
	Where string
	// SourceReplicaIdentity is the source table's pg_class.relreplident:
	// 'd' default (primary key), 'f' full, 'i' index, 'n' nothing.
	SourceReplicaIdentity byte
	// SourcePartitioned reports a partitioned source table.
	SourcePartitioned bool
	// AcceptPartitionLimits is the spec's AcceptPartitionLimits.
	AcceptPartitionLimits bool
	// SourceKeyDeferrable reports that only DEFERRABLE unique constraints
	// make the key unique in the source: inside a transaction two rows may
	// share a key, so changes cannot be applied by key one at a time.
	SourceKeyDeferrable bool
	// SourcePrimaryKeyDeferrable reports a DEFERRABLE source primary key,
	// which PostgreSQL does not use as the replica identity.
	SourcePrimaryKeyDeferrable bool
}

// Overriding is " OVERRIDING SYSTEM VALUE" when a mapped target column is
// GENERATED ALWAYS AS IDENTITY, else "": the clause an INSERT into the
// target needs to write the source's values into such a column (issue 15,
// item 10). COPY writes them without it.
func (t *Table) Overriding() string {
	for _, c := range t.Columns {
		if c.TargetIdentity == 'a' {
			return " OVERRIDING SYSTEM VALUE"
		}
	}
	return ""
}

// KeyColumns returns the key columns in key order.
func (t *Table) KeyColumns() []Column {
	out := make([]Column, len(t.Key))
	for i, k := range t.Key {
		out[i] = t.Columns[k]
	}
	return out
}

// SourceExpr is the SQL expression that reads column c from the source in
// the target column's type: the quoted column, cast where the base types
// differ, so that both sides compare and copy in one type.
//
// The cast is to the base type, without the target's type modifier: an
// explicit cast to varchar(10) or numeric(5,2) would silently truncate or
// round a value, where writing it into the column fails loudly instead.
func (c Column) SourceExpr() string {
	bs, bd := baseType(c.SourceType), baseType(c.TargetType)
	if bs == bd {
		return QuoteIdent(c.Source)
	}
	return QuoteIdent(c.Source) + "::" + bd
}

// SourceSelectList is the comma-separated list of SourceExpr in column order.
func (t *Table) SourceSelectList() string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = c.SourceExpr()
	}
	return strings.Join(parts, ", ")
}

// TargetColumnList is the comma-separated quoted target columns in order.
func (t *Table) TargetColumnList() string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = QuoteIdent(c.Target)
	}
	return strings.Join(parts, ", ")
}

// SourceKeyList is the comma-separated quoted source key columns in key order.
func (t *Table) SourceKeyList() string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		parts[i] = QuoteIdent(t.Columns[k].Source)
	}
	return strings.Join(parts, ", ")
}

// TargetKeyList is the comma-separated quoted target key columns in key order.
func (t *Table) TargetKeyList() string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		parts[i] = QuoteIdent(t.Columns[k].Target)
	}
	return strings.Join(parts, ", ")
}

// SourceWhere is " WHERE (filter)" for the source filter, or "".
func (t *Table) SourceWhere() string {
	if t.Where == "" {
		return ""
	}
	return " WHERE (" + t.Where + ")"
}

// PreflightError lists every problem found with the mappings.
type PreflightError struct {
	Problems []string
}

func (e *PreflightError) Error() string {
	if len(e.Problems) == 1 {
		return e.Problems[0]
	}
	return fmt.Sprintf("%d problems:\n  %s", len(e.Problems), strings.Join(e.Problems, "\n  "))
}

func (e *PreflightError) Unwrap() error { return ErrPreflight }

// ResolveAll checks every table of cfg against both databases and returns
// the resolved mappings. All problems of all tables are reported together
// in a *PreflightError.
func ResolveAll(ctx context.Context, src, dst Querier, specs []TableSpec) ([]*Table, error) {
	var tables []*Table
	var problems []string
	for _, spec := range specs {
		t, err := Resolve(ctx, src, dst, spec)
		var pe *PreflightError
		switch {
		case errors.As(err, &pe):
			problems = append(problems, pe.Problems...)
		case err != nil:
			return nil, err
		default:
			tables = append(tables, t)
		}
	}
	if len(problems) > 0 {
		return nil, &PreflightError{Problems: problems}
	}
	return tables, nil
}

type catalogColumn struct {
	name       string
	typ        string
	oid        uint32
	notNull    bool
	hasDefault bool
	generated  bool
	identity   byte // attidentity: 'a', 'd' or 0
}

type catalogTable struct {
	ident       Ident
	oid         uint32
	replident   byte
	partitioned bool
	columns     []catalogColumn
	uniqueKeys  [][]string // columns of valid, non-partial, immediate unique indexes
	// deferrableKeys are the columns of valid, non-partial unique indexes
	// of DEFERRABLE constraints: unique at commit, not row by row, and of
	// no use to INSERT … ON CONFLICT.
	deferrableKeys       [][]string
	primaryKey           []string
	primaryKeyDeferrable bool
	columnIndex          map[string]int
}

func (ct *catalogTable) column(name string) (catalogColumn, bool) {
	i, ok := ct.columnIndex[name]
	if !ok {
		return catalogColumn{}, false
	}
	return ct.columns[i], true
}

// errNoTable marks a table that does not exist.
var errNoTable = errors.New("no such table")

func loadTable(ctx context.Context, q Querier, id Ident) (*catalogTable, error) {
	ct := &catalogTable{ident: id, columnIndex: map[string]int{}}
	rows, err := q.Query(ctx, `SELECT c.oid, c.relreplident, c.relkind = 'p' FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, id.Schema, id.Name)
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", id, err)
	}
	found := false
	for rows.Next() {
		var ident string
		if err := rows.Scan(&ct.oid, &ident, &ct.partitioned); err != nil {
			rows.Close()
			return nil, fmt.Errorf("look up table %s: %w", id, err)
		}
		if ident != "" {
			ct.replident = ident[0]
		}
		found = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up table %s: %w", id, err)
	}
	if !found {
		return nil, errNoTable
	}

	rows, err = q.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid,
			a.attnotnull, a.atthasdef OR a.attidentity <> '', a.attgenerated <> '', a.attidentity::text
		FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, ct.oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", id, err)
	}
	for rows.Next() {
		var c catalogColumn
		var identity string
		if err := rows.Scan(&c.name, &c.typ, &c.oid, &c.notNull, &c.hasDefault, &c.generated, &identity); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read columns of %s: %w", id, err)
		}
		if identity != "" {
			c.identity = identity[0]
		}
		ct.columnIndex[c.name] = len(ct.columns)
		ct.columns = append(ct.columns, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", id, err)
	}

	rows, err = q.Query(ctx, `SELECT i.indisprimary, i.indimmediate,
			array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)
		FROM pg_index i
		WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
		ORDER BY NOT i.indisprimary, i.indexrelid`, ct.oid)
	if err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", id, err)
	}
	for rows.Next() {
		var primary, immediate bool
		var cols []string
		if err := rows.Scan(&primary, &immediate, &cols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read indexes of %s: %w", id, err)
		}
		if primary {
			ct.primaryKey = cols
			ct.primaryKeyDeferrable = !immediate
		}
		if immediate {
			ct.uniqueKeys = append(ct.uniqueKeys, cols)
		} else {
			ct.deferrableKeys = append(ct.deferrableKeys, cols)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", id, err)
	}
	return ct, nil
}

// Resolve checks one table spec against both databases: both tables exist,
// the key exists and is unique on both sides, the mapped columns exist with
// compatible types, and target columns left out can be left out. Problems
// come back together in a *PreflightError, each naming the table and what
// to do.
func Resolve(ctx context.Context, src, dst Querier, spec TableSpec) (*Table, error) {
	srcID, err := ParseIdent(spec.Source)
	if err != nil {
		return nil, &PreflightError{Problems: []string{err.Error()}}
	}
	dstID, err := ParseIdent(spec.TargetName())
	if err != nil {
		return nil, &PreflightError{Problems: []string{err.Error()}}
	}
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	st, err := loadTable(ctx, src, srcID)
	if errors.Is(err, errNoTable) {
		add("source table %s does not exist in the source database: check the name (schema.table) and the --source URL", srcID)
	} else if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dt, err := loadTable(ctx, dst, dstID)
	if errors.Is(err, errNoTable) {
		add("target table %s does not exist in the target database: create it first (datasync does not create tables)", dstID)
	} else if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if st == nil || dt == nil {
		return nil, &PreflightError{Problems: problems}
	}

	t := &Table{Source: srcID, Target: dstID, Where: strings.TrimSpace(spec.Where), SourceReplicaIdentity: st.replident,
		SourcePartitioned: st.partitioned, AcceptPartitionLimits: spec.AcceptPartitionLimits, SourcePrimaryKeyDeferrable: st.primaryKeyDeferrable}
	where := fmt.Sprintf("%s → %s", srcID, dstID)

	// Columns, in the target's order.
	if len(spec.Columns) > 0 {
		for _, dc := range dt.columns {
			sc, ok := spec.Columns[dc.name]
			if !ok {
				continue
			}
			scol, ok := st.column(sc)
			if !ok {
				add("%s: column %q maps from source column %q, which %s does not have: fix columns in the config", where, dc.name, sc, srcID)
				continue
			}
			t.Columns = append(t.Columns, column(scol, dc))
		}
		for dc := range spec.Columns {
			if _, ok := dt.column(dc); !ok {
				add("%s: target column %q does not exist in %s: fix columns in the config", where, dc, dstID)
			}
		}
	} else {
		// A source column that is generated fills a plain target column
		// of its name like any other: its values are in the source rows.
		// (Left out, the target column stayed NULL and verify, not
		// comparing it, said consistent: issue 15, item 8.) A generated
		// target column computes its own values.
		for _, dc := range dt.columns {
			if dc.generated {
				continue
			}
			if scol, ok := st.column(dc.name); ok {
				t.Columns = append(t.Columns, column(scol, dc))
			}
		}
		if len(t.Columns) == 0 {
			add("%s: the tables have no column name in common: map them with columns in a --config file", where)
		}
	}
	mappedTarget := map[string]bool{}
	for _, c := range t.Columns {
		mappedTarget[c.Target] = true
		switch {
		case c.SourceType == c.TargetType:
		case !compatible(c.SourceType, c.TargetType):
			add("%s: column type mismatch: source %s is %s but target %s is %s: change the target column's type or map another column",
				where, c.Source, c.SourceType, c.Target, c.TargetType)
		case narrows(c.SourceType, c.TargetType):
			// Written into the column, a value would be rounded (numeric,
			// timestamps) or cut in silence (issue 15, item 12).
			add("%s: column %s is %s in the source but %s in the target, which cannot hold every source value (it would round or cut them): widen the target column to at least %s",
				where, c.Source, c.SourceType, c.TargetType, c.SourceType)
		}
	}
	for _, dc := range dt.columns {
		if dc.generated && mappedTarget[dc.name] {
			add("%s: target column %q is generated and cannot be written: leave it out of columns", where, dc.name)
		}
		if dc.identity == 'a' && mappedTarget[dc.name] && !slices.ContainsFunc(t.Columns, func(c Column) bool { return c.Target == dc.name && c.Source != "" && isKey(spec, st, c.Source) }) {
			add("%s: target column %q is GENERATED ALWAYS AS IDENTITY and not part of the key, so updates cannot write it: run ALTER TABLE %s ALTER COLUMN %s SET GENERATED BY DEFAULT, or leave it out of columns",
				where, dc.name, dstID.Quoted(), QuoteIdent(dc.name))
		}
		if !mappedTarget[dc.name] && dc.notNull && !dc.hasDefault && !dc.generated {
			add("%s: target column %q is NOT NULL without a default and nothing maps to it: map a source column to it or give it a default", where, dc.name)
		}
	}

	// Key.
	key := spec.Key
	if len(key) == 0 {
		key = st.primaryKey
		if len(key) == 0 {
			add("%s: source table has no primary key: name the key columns with key: [...] in the config", where)
		}
	}
	for _, k := range key {
		scol, ok := st.column(k)
		if !ok {
			add("%s: key column %q does not exist in source table %s: fix key in the config", where, k, srcID)
			continue
		}
		if !scol.notNull && !slices.Equal(key, st.primaryKey) {
			add("%s: key column %q is nullable in %s: rows with NULL keys cannot be paged or matched; choose NOT NULL key columns", where, k, srcID)
		}
		idx := slices.IndexFunc(t.Columns, func(c Column) bool { return c.Source == k })
		if idx < 0 {
			add("%s: key column %q is not among the mapped columns: add it to columns", where, k)
			continue
		}
		t.Columns[idx].Key = true
		t.Key = append(t.Key, idx)
	}
	if len(t.Key) == len(key) && len(key) > 0 {
		switch {
		case hasUniqueSubset(st.uniqueKeys, key):
		case hasUniqueSubset(st.deferrableKeys, key):
			// Unique at commit: enough to copy and compare a snapshot,
			// not to stream changes (sync's preflight refuses it).
			t.SourceKeyDeferrable = true
		default:
			add("%s: key (%s) is not unique in source table %s: add a unique index on it or choose another key", where, strings.Join(key, ", "), srcID)
		}
		dstKey := make([]string, len(t.Key))
		for i, k := range t.Key {
			dstKey[i] = t.Columns[k].Target
		}
		switch {
		case hasUniqueExact(dt.uniqueKeys, dstKey):
		case hasUniqueExact(dt.deferrableKeys, dstKey):
			// Issue 15, item 11: INSERT … ON CONFLICT cannot use a
			// deferrable constraint, so the first write would fail.
			add("%s: target table %s has a unique constraint on (%s), but it is DEFERRABLE, which INSERT … ON CONFLICT cannot use: recreate it NOT DEFERRABLE, or add CREATE UNIQUE INDEX ON %s (%s)",
				where, dstID, strings.Join(dstKey, ", "), dstID.Quoted(), quotedList(dstKey))
		default:
			add("%s: target table %s needs a unique index on exactly (%s) for idempotent writes: CREATE UNIQUE INDEX ON %s (%s)",
				where, dstID, strings.Join(dstKey, ", "), dstID.Quoted(), quotedList(dstKey))
		}
	}

	// The filter must be valid SQL over the source table.
	if t.Where != "" {
		rows, err := src.Query(ctx, "SELECT 1 FROM "+srcID.Quoted()+" WHERE ("+t.Where+") LIMIT 0")
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			add("%s: where filter %q does not work on the source table: %v", where, t.Where, err)
		}
	}
	if len(problems) > 0 {
		return nil, &PreflightError{Problems: problems}
	}
	return t, nil
}

func column(s, d catalogColumn) Column {
	return Column{Source: s.name, Target: d.name, SourceType: s.typ, TargetType: d.typ, SourceOID: s.oid, TargetOID: d.oid,
		SourceGenerated: s.generated, TargetIdentity: d.identity}
}

// isKey reports whether source column col is part of the spec's key (the
// source primary key when the spec names none).
func isKey(spec TableSpec, st *catalogTable, col string) bool {
	if len(spec.Key) > 0 {
		return slices.Contains(spec.Key, col)
	}
	return slices.Contains(st.primaryKey, col)
}

func quotedList(cols []string) string {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = QuoteIdent(c)
	}
	return strings.Join(parts, ", ")
}

func hasUniqueSubset(indexes [][]string, key []string) bool {
	for _, idx := range indexes {
		if len(idx) > 0 && !slices.ContainsFunc(idx, func(c string) bool { return !slices.Contains(key, c) }) {
			return true
		}
	}
	return false
}

func hasUniqueExact(indexes [][]string, key []string) bool {
	for _, idx := range indexes {
		if len(idx) == len(key) && !slices.ContainsFunc(idx, func(c string) bool { return !slices.Contains(key, c) }) {
			return true
		}
	}
	return false
}

// baseType strips a type modifier: "character varying(20)" → "character varying".
func baseType(t string) string {
	if i := strings.IndexByte(t, '('); i >= 0 {
		return strings.TrimSpace(t[:i]) + t[strings.IndexByte(t, ')')+1:]
	}
	return t
}

// widening lists source → target type changes that never lose a value.
var widening = map[[2]string]bool{
	{"smallint", "integer"}:         true,
	{"smallint", "bigint"}:          true,
	{"integer", "bigint"}:           true,
	{"smallint", "numeric"}:         true,
	{"integer", "numeric"}:          true,
	{"bigint", "numeric"}:           true,
	{"real", "double precision"}:    true,
	{"character varying", "text"}:   true,
	{"character", "text"}:           true,
	{"text", "character varying"}:   true,
	{"json", "jsonb"}:               true,
	{"character varying", "citext"}: true,
	{"text", "citext"}:              true,
}

// compatible reports whether a source column of type s may fill a target
// column of type d: the same base type (a type modifier may differ), or a
// widening that keeps every value.
func compatible(s, d string) bool {
	bs, bd := baseType(s), baseType(d)
	return bs == bd || widening[[2]string{bs, bd}]
}

// typeModifiers returns the numbers in a type's modifier, "numeric(12,4)" →
// [12 4], and nil for a type printed without one.
func typeModifiers(t string) []int {
	open := strings.IndexByte(t, '(')
	end := strings.IndexByte(t, ')')
	if open < 0 || end < open {
		return nil
	}
	var out []int
	for _, part := range strings.Split(t[open+1:end], ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return nil
		}
		out = append(out, n)
	}
	return out
}

// integerDigits is how many decimal digits the integer types need.
var integerDigits = map[string]int{"smallint": 5, "integer": 10, "bigint": 19}

// timePrecision are the types whose modifier is a count of fractional
// digits of seconds, 6 when absent.
var timePrecision = map[string]bool{
	"timestamp without time zone": true, "timestamp with time zone": true,
	"time without time zone": true, "time with time zone": true, "interval": true,
}

// narrows reports whether a target column of type d, compatible with source
// type s, may still not hold every value of s because of its type
// modifier: a shorter varchar, fewer numeric digits, fewer fractional
// digits of a timestamp. The server rounds such values on assignment, or
// cuts them, without an error.
func narrows(s, d string) bool {
	bs, bd := baseType(s), baseType(d)
	bs, _ = strings.CutSuffix(bs, "[]")
	bd, _ = strings.CutSuffix(bd, "[]")
	ms, md := typeModifiers(s), typeModifiers(d)
	if md == nil {
		return false // the target is unbounded
	}
	if digits, ok := integerDigits[bs]; ok && bd == "numeric" {
		scale := 0
		if len(md) > 1 {
			scale = md[1]
		}
		return md[0]-scale < digits
	}
	if bs != bd {
		return ms == nil // text → varchar(n) and the like
	}
	switch {
	case ms == nil && !timePrecision[bs]:
		return true
	case bs == "numeric":
		sp, ss := ms[0], 0
		if len(ms) > 1 {
			ss = ms[1]
		}
		dp, ds := md[0], 0
		if len(md) > 1 {
			ds = md[1]
		}
		return ds < ss || dp-ds < sp-ss
	case timePrecision[bs]:
		sp := 6
		if ms != nil {
			sp = ms[0]
		}
		return md[0] < sp
	case bs == "character varying" || bs == "character" || bs == "bit varying":
		return md[0] < ms[0]
	default:
		// bit(n) and modifiers of other types: only the same one holds
		// the same values.
		return !slices.Equal(ms, md)
	}
}
