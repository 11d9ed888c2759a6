// Package cdctest holds test helpers shared by the sync's packages.
package cdctest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Dump runs query and renders its rows as text, one line per row, every
// column, so two databases can be compared row for row.
func Dump(tb testing.TB, pool *pgxpool.Pool, query string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, query)
	if err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			tb.Fatalf("%s: %v", query, err)
		}
		fmt.Fprintf(&b, "%v\n", vals)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return b.String()
}

// WaitCopied waits until the sync called name has finished its first table
// copy, so that any change made to the source from then on reaches the
// target through the change stream rather than the copy.
func WaitCopied(tb testing.TB, dst *pgxpool.Pool, name string) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		// The datasync schema may not exist yet: errors mean "not yet".
		err := dst.QueryRow(context.Background(), `SELECT count(*) FROM datasync.sync_state WHERE name = $1`, name).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sync %s did not finish its copy within 30s (last error: %v)", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
