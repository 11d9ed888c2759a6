package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
)

// checkWalLevel fails unless the source runs with wal_level=logical.
func checkWalLevel(ctx context.Context, src *pgxpool.Pool) error {
	var level string
	if err := src.QueryRow(ctx, `SHOW wal_level`).Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return &mapping.PreflightError{Problems: []string{fmt.Sprintf(
			"source wal_level is %q, but sync needs logical decoding: set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart the source server", level)}}
	}
	return nil
}

// replicaIdentityColumns returns the columns the source sends as the old key
// of updates and deletes: nil for REPLICA IDENTITY FULL (the whole row), and
// a problem naming the ALTER TABLE to run when the identity cannot carry the
// mapping's key.
func replicaIdentityColumns(ctx context.Context, src *pgxpool.Pool, t *mapping.Table) (cols []string, problem string, err error) {
	if t.SourceReplicaIdentity == 'f' {
		return nil, "", nil
	}
	rows, err := src.Query(ctx, `SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
		WHERE i.indrelid = $1::regclass AND CASE $2 WHEN 'd' THEN i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END`,
		t.Source.Quoted(), string(t.SourceReplicaIdentity))
	if err != nil {
		return nil, "", fmt.Errorf("read replica identity of %s: %w", t.Source, err)
	}
	cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, "", fmt.Errorf("read replica identity of %s: %w", t.Source, err)
	}
	var missing []string
	for _, k := range t.KeyColumns() {
		if !slices.Contains(cols, k.Source) {
			missing = append(missing, k.Source)
		}
	}
	if len(cols) > 0 && len(missing) == 0 {
		return cols, "", nil
	}
	var what string
	switch {
	case t.SourceReplicaIdentity == 'n':
		what = "has REPLICA IDENTITY NOTHING"
	case len(cols) == 0:
		what = "has REPLICA IDENTITY DEFAULT but no primary key"
	default:
		what = fmt.Sprintf("has a replica identity (%s) that does not include key column(s) %s",
			strings.Join(cols, ", "), strings.Join(missing, ", "))
	}
	fix := "ALTER TABLE " + t.Source.Quoted() + " REPLICA IDENTITY FULL"
	if idx, err := uniqueIndexOnKey(ctx, src, t); err != nil {
		return nil, "", err
	} else if idx != "" {
		fix = "ALTER TABLE " + t.Source.Quoted() + " REPLICA IDENTITY USING INDEX " + mapping.QuoteIdent(idx) + " (or " + fix + ")"
	}
	return nil, fmt.Sprintf("source table %s %s, so its updates and deletes cannot be replicated by key: run %s", t.Source, what, fix), nil
}

// uniqueIndexOnKey names a unique index usable as replica identity whose
// columns are exactly the key, "" when there is none.
func uniqueIndexOnKey(ctx context.Context, src *pgxpool.Pool, t *mapping.Table) (string, error) {
	var key []string
	for _, k := range t.KeyColumns() {
		key = append(key, k.Source)
	}
	var name string
	err := src.QueryRow(ctx, `SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indisvalid AND i.indimmediate
			AND i.indpred IS NULL AND i.indexprs IS NULL
			AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
				WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k)
			AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) AND NOT a.attnotnull)
		ORDER BY ic.relname LIMIT 1`, t.Source.Quoted(), key).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look for a unique index on the key of %s: %w", t.Source, err)
	}
	return name, nil
}

// Preflight checks what sync needs of the source beyond the mapping:
// logical decoding, and a replica identity that carries each table's key.
// It returns the replica identity columns per table (nil under FULL).
func Preflight(ctx context.Context, src *pgxpool.Pool, tables []*mapping.Table) (map[*mapping.Table][]string, error) {
	if err := checkWalLevel(ctx, src); err != nil {
		return nil, err
	}
	out := map[*mapping.Table][]string{}
	var problems []string
	for _, t := range tables {
		cols, problem, err := replicaIdentityColumns(ctx, src, t)
		if err != nil {
			return nil, err
		}
		if problem != "" {
			problems = append(problems, problem)
		}
		out[t] = cols
	}
	if len(problems) > 0 {
		return nil, &mapping.PreflightError{Problems: problems}
	}
	return out, nil
}

// publicationTableSQL is the table part of ALTER PUBLICATION … ADD TABLE:
// the table, its column list (the mapped columns and the replica identity,
// which PostgreSQL requires; none under REPLICA IDENTITY FULL, which needs
// every column) and its row filter.
func publicationTableSQL(t *mapping.Table, identity []string) string {
	s := t.Source.Quoted()
	if t.SourceReplicaIdentity != 'f' {
		var cols []string
		for _, c := range t.Columns {
			cols = append(cols, c.Source)
		}
		for _, c := range identity {
			if !slices.Contains(cols, c) {
				cols = append(cols, c)
			}
		}
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = mapping.QuoteIdent(c)
		}
		s += " (" + strings.Join(quoted, ", ") + ")"
	}
	if t.Where != "" {
		s += " WHERE (" + t.Where + ")"
	}
	return s
}

// ensurePublication creates the publication if missing and adds the tables
// it lacks; the tables in replace are dropped from it and added again with
// their current column list and row filter. Before committing it runs an UPDATE and a DELETE matching no row
// on each added table: PostgreSQL refuses those when the row filter or
// column list uses columns outside the replica identity, and would refuse
// the application's own writes in the same way, so such a publication is
// never left behind.
func ensurePublication(ctx context.Context, src *pgxpool.Pool, pub string, tables []*mapping.Table, identity map[*mapping.Table][]string, replace map[*mapping.Table]bool) error {
	tx, err := src.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, pub).Scan(&exists); err != nil {
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	if !exists {
		// Changes to a partitioned table's partitions are published as
		// changes to the table itself, the one the mapping names.
		if _, err := tx.Exec(ctx, "CREATE PUBLICATION "+mapping.QuoteIdent(pub)+" WITH (publish_via_partition_root = true)"); err != nil {
			return fmt.Errorf("create publication %s: %w", pub, err)
		}
	}
	for _, t := range tables {
		var in bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables
			WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`, pub, t.Source.Schema, t.Source.Name).Scan(&in); err != nil {
			return fmt.Errorf("create publication %s: %w", pub, err)
		}
		if in && !replace[t] {
			continue
		}
		if in {
			if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+mapping.QuoteIdent(pub)+" DROP TABLE "+t.Source.Quoted()); err != nil {
				return fmt.Errorf("replace %s in publication %s: %w", t.Source, pub, err)
			}
		}
		if _, err := tx.Exec(ctx, "ALTER PUBLICATION "+mapping.QuoteIdent(pub)+" ADD TABLE "+publicationTableSQL(t, identity[t])); err != nil {
			return &mapping.PreflightError{Problems: []string{fmt.Sprintf("publish source table %s: %v", t.Source, err)}}
		}
		k := mapping.QuoteIdent(t.KeyColumns()[0].Source)
		for _, probe := range []string{
			"UPDATE " + t.Source.Quoted() + " SET " + k + " = " + k + " WHERE false",
			"DELETE FROM " + t.Source.Quoted() + " WHERE false",
		} {
			if _, err := tx.Exec(ctx, probe); err != nil {
				return &mapping.PreflightError{Problems: []string{fmt.Sprintf(
					"source table %s: with this where filter PostgreSQL would refuse the application's updates and deletes (%v): filter only on replica identity columns, or run ALTER TABLE %s REPLICA IDENTITY FULL",
					t.Source, err, t.Source.Quoted())}}
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	return nil
}
