package mapping

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
}

type catalogTable struct {
	ident       Ident
	oid         uint32
	replident   byte
	columns     []catalogColumn
	uniqueKeys  [][]string // columns of valid, non-partial unique indexes
	primaryKey  []string
	columnIndex map[string]int
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
	rows, err := q.Query(ctx, `SELECT c.oid, c.relreplident FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, id.Schema, id.Name)
	if err != nil {
		return nil, fmt.Errorf("look up table %s: %w", id, err)
	}
	found := false
	for rows.Next() {
		var ident string
		if err := rows.Scan(&ct.oid, &ident); err != nil {
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
			a.attnotnull, a.atthasdef OR a.attidentity <> '', a.attgenerated <> ''
		FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, ct.oid)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", id, err)
	}
	for rows.Next() {
		var c catalogColumn
		if err := rows.Scan(&c.name, &c.typ, &c.oid, &c.notNull, &c.hasDefault, &c.generated); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read columns of %s: %w", id, err)
		}
		ct.columnIndex[c.name] = len(ct.columns)
		ct.columns = append(ct.columns, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s: %w", id, err)
	}

	rows, err = q.Query(ctx, `SELECT i.indisprimary,
			array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)
		FROM pg_index i
		WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
		ORDER BY NOT i.indisprimary, i.indexrelid`, ct.oid)
	if err != nil {
		return nil, fmt.Errorf("read indexes of %s: %w", id, err)
	}
	for rows.Next() {
		var primary bool
		var cols []string
		if err := rows.Scan(&primary, &cols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read indexes of %s: %w", id, err)
		}
		if primary {
			ct.primaryKey = cols
		}
		ct.uniqueKeys = append(ct.uniqueKeys, cols)
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

	t := &Table{Source: srcID, Target: dstID, Where: strings.TrimSpace(spec.Where), SourceReplicaIdentity: st.replident}
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
		for _, dc := range dt.columns {
			if dc.generated {
				continue
			}
			if scol, ok := st.column(dc.name); ok && !scol.generated {
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
		if c.SourceType != c.TargetType && !compatible(c.SourceType, c.TargetType) {
			add("%s: column type mismatch: source %s is %s but target %s is %s: change the target column's type or map another column",
				where, c.Source, c.SourceType, c.Target, c.TargetType)
		}
	}
	for _, dc := range dt.columns {
		if dc.generated && mappedTarget[dc.name] {
			add("%s: target column %q is generated and cannot be written: leave it out of columns", where, dc.name)
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
		if !hasUniqueSubset(st.uniqueKeys, key) {
			add("%s: key (%s) is not unique in source table %s: add a unique index on it or choose another key", where, strings.Join(key, ", "), srcID)
		}
		dstKey := make([]string, len(t.Key))
		for i, k := range t.Key {
			dstKey[i] = t.Columns[k].Target
		}
		if !hasUniqueExact(dt.uniqueKeys, dstKey) {
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
	return Column{Source: s.name, Target: d.name, SourceType: s.typ, TargetType: d.typ, SourceOID: s.oid, TargetOID: d.oid}
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
