package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"strings"
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

// TestClusterSettings checks what issue 2 asks of the shared cluster: fsync
// off, room for the slots and wal senders the sync tests open, a loopback
// listener only, and, under root, a server that runs as the postgres user.
func TestClusterSettings(t *testing.T) {
	ctx := context.Background()
	db := NewDB(t)
	if shared == nil {
		t.Skipf("%s is set: that server's settings are its owner's", EnvURL)
	}
	settings := []struct {
		name string
		ok   func(string) bool
		want string
	}{
		{"fsync", func(v string) bool { return v == "off" }, "off"},
		{"listen_addresses", func(v string) bool { return v == "127.0.0.1" }, "127.0.0.1"},
		{"max_replication_slots", atLeast(20), "20 or more"},
		{"max_wal_senders", atLeast(20), "20 or more"},
	}
	for _, s := range settings {
		var v string
		if err := db.Pool.QueryRow(ctx, "SELECT current_setting($1)", s.name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if !s.ok(v) {
			t.Errorf("%s: got %s, want %s", s.name, v, s.want)
		}
	}
	if os.Geteuid() != 0 {
		return
	}
	pid, err := postmasterPID(shared)
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	var uid string
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				uid = f[0]
			}
		}
	}
	if uid != pg.Uid {
		t.Errorf("postmaster %d runs as uid %s, want the postgres user's %s", pid, uid, pg.Uid)
	}
}

func atLeast(n int) func(string) bool {
	return func(v string) bool {
		got, err := strconv.Atoi(v)
		return err == nil && got >= n
	}
}
