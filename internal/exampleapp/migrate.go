package exampleapp

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// setupLockKey is the advisory lock that serialises the schema set-up and
// seeding of app instances starting at once against the same database.
const setupLockKey int64 = 0x57a4_61e5_0001

// WithSetupLock runs fn on a connection holding the set-up advisory lock, so
// that instances starting together apply migrations and seed data one at a
// time.
func WithSetupLock(ctx context.Context, pool *pgxpool.Pool, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("set-up lock: acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", setupLockKey); err != nil {
		return fmt.Errorf("set-up lock: %w", err)
	}
	defer func() {
		// Unlock even when ctx is done; a failed unlock ends the session so
		// the lock is not held by a pooled connection.
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", setupLockKey); err != nil {
			_ = conn.Hijack().Close(context.WithoutCancel(ctx))
		}
	}()
	return fn(ctx, conn.Conn())
}

// Migrate applies the *.sql files at the root of fsys that are not yet
// recorded in the schema_migrations table, in name order, each in its own
// transaction together with its record. It returns the names it applied.
// The caller holds the set-up lock (see WithSetupLock); applying the same
// files again applies nothing.
func Migrate(ctx context.Context, conn *pgx.Conn, fsys fs.FS) ([]string, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("migrate: list files: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("migrate: no *.sql files found")
	}
	sort.Strings(names)
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version text PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	rows, err := conn.Query(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	have := make(map[string]bool, len(done))
	for _, v := range done {
		have[v] = true
	}

	var applied []string
	for _, name := range names {
		version := strings.TrimSuffix(path.Base(name), ".sql")
		if have[version] {
			continue
		}
		sql, err := fs.ReadFile(fsys, name)
		if err != nil {
			return applied, fmt.Errorf("migrate %s: %w", name, err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", version)
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("migrate %s: %w", name, err)
		}
		applied = append(applied, version)
	}
	return applied, nil
}

// MustSub returns the subtree dir of an embedded file system. It panics on an
// invalid dir, which is a programming error: dir is always a constant.
func MustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(fmt.Sprintf("exampleapp: embedded folder %q: %v", dir, err))
	}
	return sub
}
