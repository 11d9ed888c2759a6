package apply

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/cdc"
	"github.com/strangler-fig/strangler/internal/mapping"
)

// ErrSchemaDrift is wrapped by errors about a source table whose published
// columns no longer fit the mapping.
var ErrSchemaDrift = errors.New("source schema changed")

// DriftError names the table whose definition no longer fits the mapping,
// and how.
type DriftError struct {
	// Table is the source table.
	Table string
	// Change describes what changed, such as `column "email" is gone`.
	Change string
}

// Error says what changed and what to do.
func (e *DriftError) Error() string {
	return fmt.Sprintf("source table %s changed: %s; the sync stopped before applying it: update the mapping (and the target table), then run sync again", e.Table, e.Change)
}

// Unwrap returns ErrSchemaDrift.
func (e *DriftError) Unwrap() error { return ErrSchemaDrift }

// plan applies the changes of one source relation (as described by one
// Relation message) to its mapped target table.
type plan struct {
	table *mapping.Table
	rel   *cdc.Relation
	// pos[i] is the index in rel.Columns of table.Columns[i].
	pos []int
	// upsert inserts a row or overwrites the row with its key.
	upsert string
	// delete deletes by key, the key values as the last parameters.
	delete string
	// updates caches UPDATE statements by which columns are set.
	updates map[string]string
}

// compile checks a Relation against the mapping and prepares the statements.
func compile(t *mapping.Table, rel *cdc.Relation) (*plan, error) {
	p := &plan{table: t, rel: rel, pos: make([]int, len(t.Columns)), updates: map[string]string{}}
	byName := make(map[string]int, len(rel.Columns))
	for i, c := range rel.Columns {
		byName[c.Name] = i
	}
	for i, c := range t.Columns {
		j, ok := byName[c.Source]
		if !ok {
			return nil, &DriftError{Table: t.Source.String(), Change: fmt.Sprintf("mapped column %q is no longer published (dropped or renamed)", c.Source)}
		}
		if got := rel.Columns[j].TypeOID; c.SourceOID != 0 && got != c.SourceOID {
			return nil, &DriftError{Table: t.Source.String(), Change: fmt.Sprintf("column %q changed type from %s (oid %d) to oid %d", c.Source, c.SourceType, c.SourceOID, got)}
		}
		p.pos[i] = j
	}

	target := t.Target.Quoted()
	vals := make([]string, len(t.Columns))
	var sets []string
	for i, c := range t.Columns {
		vals[i] = param(i+1, c)
		if !c.Key {
			q := mapping.QuoteIdent(c.Target)
			sets = append(sets, q+" = EXCLUDED."+q)
		}
	}
	p.upsert = "INSERT INTO " + target + " (" + t.TargetColumnList() + ")" + t.Overriding() + " VALUES (" + strings.Join(vals, ", ") +
		") ON CONFLICT (" + t.TargetKeyList() + ") DO "
	if len(sets) == 0 {
		p.upsert += "NOTHING"
	} else {
		p.upsert += "UPDATE SET " + strings.Join(sets, ", ")
	}
	p.delete = "DELETE FROM " + target + " WHERE " + p.keyCondition(1)
	return p, nil
}

// param is the placeholder for a value sent as text and read as the target
// column's type.
//
// A value reaches the target as its source type's text. Where a built-in
// source type is widened (real to double precision, char(n) to text), the
// text is read as the source type first and then cast, as the first copy
// and backfill convert it: read straight as the target type, '0.1' of a
// real would become the double 0.1, not 0.10000000149011612, and 'ab  ' of
// a char(4) would keep its padding, so streamed rows would differ from
// copied ones. Types of the source's own (enums, domains) may not exist in
// the target and are read as the target type.
func param(n int, c mapping.Column) string {
	src, dst := mapping.CastType(c.SourceType), mapping.CastType(c.TargetType)
	if c.SourceType != "" && src != dst && c.SourceOID != 0 && c.SourceOID < firstUserOID {
		return fmt.Sprintf("$%d::text::%s::%s", n, src, dst)
	}
	return fmt.Sprintf("$%d::text::%s", n, dst)
}

// firstUserOID is PostgreSQL's FirstNormalObjectId: OIDs below it are
// built into every database.
const firstUserOID = 16384

// keyCondition matches the key, its values numbered from first.
func (p *plan) keyCondition(first int) string {
	conds := make([]string, len(p.table.Key))
	for i, k := range p.table.Key {
		c := p.table.Columns[k]
		conds[i] = mapping.QuoteIdent(c.Target) + " = " + param(first+i, c)
	}
	return strings.Join(conds, " AND ")
}

// text converts a tuple value to a statement argument.
func text(v cdc.Value) (any, error) {
	switch v.Kind {
	case cdc.ValueNull:
		return nil, nil
	case cdc.ValueText:
		return string(v.Data), nil
	default:
		return nil, fmt.Errorf("value of kind %q where text was expected: %w", v.Kind, cdc.ErrMalformed)
	}
}

// row returns the mapped columns' values of a tuple.
func (p *plan) row(tup cdc.Tuple) ([]any, error) {
	args := make([]any, len(p.pos))
	for i, j := range p.pos {
		v, err := text(tup[j])
		if err != nil {
			return nil, fmt.Errorf("%s column %s: %w", p.table.Source, p.table.Columns[i].Source, err)
		}
		args[i] = v
	}
	return args, nil
}

// key returns the key values of a tuple.
func (p *plan) key(tup cdc.Tuple) ([]any, error) {
	args := make([]any, len(p.table.Key))
	for i, k := range p.table.Key {
		v := tup[p.pos[k]]
		if v.Kind == cdc.ValueUnchanged {
			return nil, fmt.Errorf("%s: key column %s was not sent (unchanged TOAST value): %w", p.table.Source, p.table.Columns[k].Source, cdc.ErrMalformed)
		}
		a, err := text(v)
		if err != nil {
			return nil, fmt.Errorf("%s key column %s: %w", p.table.Source, p.table.Columns[k].Source, err)
		}
		if a == nil {
			return nil, fmt.Errorf("%s: key column %s is NULL in the change: the replica identity does not carry it", p.table.Source, p.table.Columns[k].Source)
		}
		args[i] = a
	}
	return args, nil
}

// queue adds the statements of one change to b.
func (p *plan) queue(b *pgx.Batch, c *cdc.Change) error {
	switch c.Op {
	case cdc.OpInsert:
		args, err := p.row(c.New)
		if err != nil {
			return err
		}
		b.Queue(p.upsert, args...)
	case cdc.OpDelete:
		args, err := p.key(c.Old)
		if err != nil {
			return err
		}
		b.Queue(p.delete, args...)
	case cdc.OpUpdate:
		return p.queueUpdate(b, c)
	default:
		return fmt.Errorf("queue %s on %s: not a row change", c.Op, p.table.Source)
	}
	return nil
}

// queueUpdate applies an update. Without unchanged TOAST values the new row
// is complete: it is upserted (after deleting the old key when the key
// changed), which also repairs a row missing in the target. Otherwise the
// columns that were sent are SET on the row found by its old key, leaving
// the unchanged ones as they are.
func (p *plan) queueUpdate(b *pgx.Batch, c *cdc.Change) error {
	newKey, err := p.key(c.New)
	if err != nil && c.OldKind == 0 {
		return err
	}
	oldKey := newKey
	if c.OldKind != 0 {
		if oldKey, err = p.key(c.Old); err != nil {
			return err
		}
	}
	var unchanged []int
	for i, j := range p.pos {
		if c.New[j].Kind == cdc.ValueUnchanged {
			unchanged = append(unchanged, i)
		}
	}
	if len(unchanged) == 0 {
		args, err := p.row(c.New)
		if err != nil {
			return err
		}
		if newKey == nil || !equalArgs(oldKey, newKey) {
			b.Queue(p.delete, oldKey...)
		}
		b.Queue(p.upsert, args...)
		return nil
	}
	var sets []string
	var args []any
	var mask strings.Builder
	sameKey := newKey != nil && equalArgs(oldKey, newKey)
	for i, j := range p.pos {
		v := c.New[j]
		if v.Kind == cdc.ValueUnchanged {
			mask.WriteByte('u')
			continue
		}
		if sameKey && p.table.Columns[i].Key {
			// The WHERE already holds it; and a GENERATED ALWAYS AS
			// IDENTITY column may not be SET at all, even to itself.
			mask.WriteByte('k')
			continue
		}
		mask.WriteByte('s')
		a, err := text(v)
		if err != nil {
			return fmt.Errorf("%s column %s: %w", p.table.Source, p.table.Columns[i].Source, err)
		}
		args = append(args, a)
		sets = append(sets, mapping.QuoteIdent(p.table.Columns[i].Target)+" = "+param(len(args), p.table.Columns[i]))
	}
	sql, ok := p.updates[mask.String()]
	if !ok {
		if len(sets) == 0 {
			sql = "SELECT 1 WHERE false" // nothing mapped was sent
		} else {
			sql = "UPDATE " + p.table.Target.Quoted() + " SET " + strings.Join(sets, ", ") + " WHERE " + p.keyCondition(len(args)+1)
		}
		p.updates[mask.String()] = sql
	}
	if len(sets) == 0 {
		b.Queue(sql)
		return nil
	}
	b.Queue(sql, append(args, oldKey...)...)
	return nil
}

func equalArgs(a, b []any) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
