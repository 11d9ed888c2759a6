package exampleapp

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is the part of a pgx pool, connection or transaction a Table uses.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Row is a table row as served in JSON. Its struct fields carry db tags that
// match the column aliases of its Table's Select list.
type Row interface {
	// RowID returns the row's primary key, the keyset pagination cursor.
	RowID() int64
}

// Input is the JSON body of a create or update request.
type Input interface {
	// Validate returns a *FieldError for the first invalid field, or nil.
	Validate() error
	// Values returns the values of the Table's Writable columns, in order.
	Values() []any
}

// Constraint says which JSON field a database constraint guards, so that a
// violation can be answered with that field's name.
type Constraint struct {
	// Field is the JSON field the constraint is about.
	Field string
	// Message is the answer's text for a violation.
	Message string
}

// PostgreSQL error codes the stores translate into answers.
const (
	codeUniqueViolation     = "23505"
	codeForeignKeyViolation = "23503"
)

// Table is a REST resource stored in one table with a bigint primary key
// named id whose default comes from a sequence or identity.
type Table[T Row] struct {
	// Name is the table's name, e.g. "users".
	Name string
	// Select is the select list that yields T's db tags, renaming columns
	// where the table and the JSON differ (e.g. "title AS name").
	Select string
	// Writable lists the columns that create and update set, in the order of
	// the Input's Values.
	Writable []string
	// Touch, if set, is a column set to now() by every update.
	Touch string
	// Constraints maps constraint names to the field they guard.
	Constraints map[string]Constraint
}

func (t *Table[T]) ident() string { return pgx.Identifier{t.Name}.Sanitize() }

// List returns up to page.Limit rows with id above page.After in id order, and
// the cursor of the next page (nil on the last page).
func (t *Table[T]) List(ctx context.Context, q Querier, page Page) ([]T, *int64, error) {
	sql := fmt.Sprintf("SELECT %s FROM %s WHERE id > $1 ORDER BY id LIMIT $2", t.Select, t.ident())
	rows, err := q.Query(ctx, sql, page.After, page.Limit+1)
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", t.Name, err)
	}
	items, err := pgx.CollectRows(rows, pgx.RowToStructByName[T])
	if err != nil {
		return nil, nil, fmt.Errorf("list %s: %w", t.Name, err)
	}
	if len(items) <= page.Limit {
		return items, nil, nil
	}
	items = items[:page.Limit]
	next := items[len(items)-1].RowID()
	return items, &next, nil
}

// Get returns the row with the given id, or ErrNotFound.
func (t *Table[T]) Get(ctx context.Context, q Querier, id int64) (T, error) {
	sql := fmt.Sprintf("SELECT %s FROM %s WHERE id = $1", t.Select, t.ident())
	return t.one(ctx, q, "get", sql, id)
}

// Create inserts a row and returns it as stored.
//
// The services' tables receive rows copied from the monolith with the
// monolith's ids, which leaves their id sequences behind the data. A create
// whose generated id is already taken therefore moves the sequence past the
// largest id and tries again, instead of failing with a bogus conflict.
func (t *Table[T]) Create(ctx context.Context, q Querier, in Input) (T, error) {
	cols := make([]string, len(t.Writable))
	params := make([]string, len(t.Writable))
	for i, c := range t.Writable {
		cols[i] = pgx.Identifier{c}.Sanitize()
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	sql := fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s) RETURNING %s",
		t.ident(), strings.Join(cols, ", "), strings.Join(params, ", "), t.Select)
	const attempts = 3
	for i := 1; ; i++ {
		row, err := t.one(ctx, q, "create", sql, in.Values()...)
		if i == attempts || !t.isPrimaryKeyClash(err) {
			return row, t.translate(err, false)
		}
		if err := t.bumpSequence(ctx, q); err != nil {
			return row, err
		}
	}
}

func (t *Table[T]) isPrimaryKeyClash(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation &&
		pgErr.ConstraintName == t.Name+"_pkey"
}

// bumpSequence moves the table's id sequence to the largest id in use.
func (t *Table[T]) bumpSequence(ctx context.Context, q Querier) error {
	sql := fmt.Sprintf(`SELECT setval(pg_get_serial_sequence($1, 'id'),
		GREATEST((SELECT max(id) FROM %s), 1))`, t.ident())
	if _, err := q.Exec(ctx, sql, t.ident()); err != nil {
		return fmt.Errorf("create %s: move id sequence past copied rows: %w", t.Name, err)
	}
	return nil
}

// Update sets the writable columns of the row with the given id and returns
// it as stored, or ErrNotFound.
func (t *Table[T]) Update(ctx context.Context, q Querier, id int64, in Input) (T, error) {
	sets := make([]string, 0, len(t.Writable)+1)
	for i, c := range t.Writable {
		sets = append(sets, fmt.Sprintf("%s = $%d", pgx.Identifier{c}.Sanitize(), i+1))
	}
	if t.Touch != "" {
		sets = append(sets, pgx.Identifier{t.Touch}.Sanitize()+" = now()")
	}
	args := append(in.Values(), id)
	sql := fmt.Sprintf("UPDATE %s SET %s WHERE id = $%d RETURNING %s",
		t.ident(), strings.Join(sets, ", "), len(args), t.Select)
	row, err := t.one(ctx, q, "update", sql, args...)
	return row, t.translate(err, false)
}

// Delete removes the row with the given id, or returns ErrNotFound.
func (t *Table[T]) Delete(ctx context.Context, q Querier, id int64) error {
	tag, err := q.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE id = $1", t.ident()), id)
	if err != nil {
		return t.translate(fmt.Errorf("delete %s %d: %w", t.Name, id, err), true)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

func (t *Table[T]) one(ctx context.Context, q Querier, op, sql string, args ...any) (T, error) {
	var zero T
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return zero, fmt.Errorf("%s %s: %w", op, t.Name, err)
	}
	row, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[T])
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return zero, ErrNotFound
	case err != nil:
		return zero, fmt.Errorf("%s %s: %w", op, t.Name, err)
	}
	return row, nil
}

// translate turns constraint violations into answers naming the field: a
// duplicate is a conflict; a reference to a missing row is a bad field, but a
// delete of a row others still reference is a conflict. Other errors, nil
// included, pass through.
func (t *Table[T]) translate(err error, deleting bool) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	c, known := t.Constraints[pgErr.ConstraintName]
	switch {
	case pgErr.Code == codeForeignKeyViolation && deleting:
		return &ConflictError{Message: fmt.Sprintf("still referenced by rows of %s; delete those first", pgErr.TableName)}
	case pgErr.Code == codeForeignKeyViolation && known:
		return &FieldError{Field: c.Field, Message: c.Message}
	case pgErr.Code == codeUniqueViolation && known:
		return &ConflictError{Field: c.Field, Message: c.Message}
	case pgErr.Code == codeUniqueViolation:
		return &ConflictError{Message: "a row with the same unique value exists"}
	}
	return err
}
