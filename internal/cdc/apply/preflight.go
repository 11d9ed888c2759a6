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
		WHERE i.indrelid = $1::regclass AND CASE $2 WHEN 'd' THEN i.indisprimary AND i.indimmediate WHEN 'i' THEN i.indisreplident ELSE false END`,
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
	case len(cols) == 0 && t.SourcePrimaryKeyDeferrable:
		// Issue 15, item 11: PostgreSQL does not use a deferrable primary
		// key as the replica identity.
		what = "has REPLICA IDENTITY DEFAULT and a DEFERRABLE primary key, which PostgreSQL does not use as replica identity (once published, the application's updates and deletes would fail)"
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
// logical decoding, a replica identity that carries each table's key, and
// none of the mappings a change stream cannot keep equal (see
// streamProblems). It returns the replica identity columns per table (nil
// under FULL).
func Preflight(ctx context.Context, src *pgxpool.Pool, tables []*mapping.Table) (map[*mapping.Table][]string, error) {
	if err := checkWalLevel(ctx, src); err != nil {
		return nil, err
	}
	out := map[*mapping.Table][]string{}
	problems := streamProblems(tables)
	for _, t := range tables {
		if t.SourceKeyDeferrable {
			continue // streamProblems named it; no replica identity fixes it
		}
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

// streamProblems lists the mappings that a copy and a change stream cannot
// keep equal, each naming the table and what to do. backfill and verify
// read consistent snapshots and take them; only sync refuses them.
func streamProblems(tables []*mapping.Table) []string {
	var problems []string
	targets := map[string][]string{}
	var sources []string
	for _, t := range tables {
		src := t.Source.String()
		if _, ok := targets[src]; !ok {
			sources = append(sources, src)
		}
		targets[src] = append(targets[src], t.Target.String())
	}
	for _, src := range sources {
		// Issue 15, item 6: both targets were copied, but the stream
		// reached only one of them.
		if dsts := targets[src]; len(dsts) > 1 {
			problems = append(problems, fmt.Sprintf(
				"source table %s is mapped to %d target tables (%s → %s): a sync streams a source table to one target only: run one sync per target, each with its own --name",
				src, len(dsts), src, strings.Join(dsts, ", "+src+" → ")))
		}
	}
	for _, t := range tables {
		where := t.Source.String() + " → " + t.Target.String()
		if t.SourceKeyDeferrable {
			// Issue 15, item 5: UPDATE t SET id = 3 - id swaps two keys
			// inside one transaction; applied change by change, the first
			// change overwrites the second row and a row is lost.
			problems = append(problems, fmt.Sprintf(
				"%s: the key (%s) is unique in the source only through a DEFERRABLE constraint, so inside a transaction two rows may share a key value (a key swap such as UPDATE … SET id = 3 - id), which changes applied one by one cannot reproduce: recreate the constraint NOT DEFERRABLE, or set key: to columns with a unique index that is not deferrable",
				where, t.SourceKeyList()))
		}
		for _, c := range t.Columns {
			if c.SourceGenerated {
				// Issue 15, item 8: pgoutput (PostgreSQL 15 and older)
				// sends no generated column, so the stream would leave the
				// target column as the copy wrote it, or NULL.
				problems = append(problems, fmt.Sprintf(
					"%s: source column %q is a generated column, which logical replication does not send, so target column %q would never follow its changes: make target column %q GENERATED ALWAYS AS (the same expression) STORED, which leaves it out of the mapping, or list the other columns in columns: in a --config file",
					where, c.Source, c.Target, c.Target))
			}
		}
		if t.SourcePartitioned && !t.AcceptPartitionLimits {
			// Issue 15, item 4: with publish_via_partition_root the server
			// publishes no TRUNCATE of a single partition, and DETACH and
			// ATTACH are DDL, never published at all.
			problems = append(problems, fmt.Sprintf(
				"%s: source table %s is partitioned, and logical replication does not carry TRUNCATE of a single partition, DETACH PARTITION, or ATTACH PARTITION of a partition that holds rows: the target would keep or miss those rows in silence: to sync it anyway, accept these limits with --accept-partition-limits (or accept_partition_limits: true on the table in --config) and run datasync verify --repair after any such change",
				where, t.Source))
		}
	}
	return problems
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
		// SET … = DEFAULT is allowed for every column, identity and
		// generated ones included: SET id = id is refused for GENERATED
		// ALWAYS AS IDENTITY (issue 15, item 10).
		k := mapping.QuoteIdent(t.KeyColumns()[0].Source)
		for _, probe := range []string{
			"UPDATE " + t.Source.Quoted() + " SET " + k + " = DEFAULT WHERE false",
			"DELETE FROM " + t.Source.Quoted() + " WHERE false",
		} {
			if _, err := tx.Exec(ctx, probe); err != nil {
				msg := fmt.Sprintf("source table %s: once published, PostgreSQL would refuse the application's updates and deletes (%v): run ALTER TABLE %s REPLICA IDENTITY FULL, or give it a replica identity that covers the published columns",
					t.Source, err, t.Source.Quoted())
				if t.Where != "" {
					msg = fmt.Sprintf("source table %s: with this where filter PostgreSQL would refuse the application's updates and deletes (%v): filter only on replica identity columns, or run ALTER TABLE %s REPLICA IDENTITY FULL",
						t.Source, err, t.Source.Quoted())
				}
				return &mapping.PreflightError{Problems: []string{msg}}
			}
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create publication %s: %w", pub, err)
	}
	return nil
}
