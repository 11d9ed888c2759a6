package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func TestNewDBIsFreshAndLogical(t *testing.T) {
	ctx := context.Background()
	a := NewDB(t)
	b := NewDB(t)
	if a.Name == b.Name {
		t.Fatalf("got the same database twice: %s", a.Name)
	}
	if _, err := a.Pool.Exec(ctx, "CREATE TABLE only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("got %d tables named only_in_a in the second database, want 0", n)
	}
	var level string
	if err := a.Pool.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != "logical" {
		t.Fatalf("got wal_level %q, want logical", level)
	}
	// A logical slot must not keep the database from being dropped at cleanup.
	if _, err := a.Pool.Exec(ctx, "SELECT pg_create_logical_replication_slot('s_'||current_database(), 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
}

func TestClusterRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	c := NewCluster(t)
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if v != 42 {
		t.Fatalf("got %d, want 42", v)
	}
}
