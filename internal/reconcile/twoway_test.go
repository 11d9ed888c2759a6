package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// twoWayCluster starts a cluster of the test's own with
// track_commit_timestamp on (it needs a restart) and returns pools to a
// source and a target database in it.
func twoWayCluster(tb testing.TB, ddl string) (c *pgtest.Cluster, srcDB, dstDB *pgtest.DB, src, dst *pgxpool.Pool) {
	tb.Helper()
	ctx := context.Background()
	c = pgtest.NewTwoWayCluster(tb)
	srcDB, dstDB = c.NewDB(tb), c.NewDB(tb)
	for _, d := range []struct {
		db   *pgtest.DB
		pool **pgxpool.Pool
	}{{srcDB, &src}, {dstDB, &dst}} {
		p, err := Connect(ctx, d.db.URL)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(p.Close)
		*d.pool = p
		execSQL(tb, p, ddl)
	}
	return c, srcDB, dstDB, src, dst
}

// writeAs runs sqls in one transaction on a new session of url: under
// replication origin origin (as the sync's apply session would), or as a
// plain application write when origin is "".
func writeAs(tb testing.TB, url, origin string, sqls ...string) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if origin != "" {
		if _, err := conn.Exec(ctx, `SELECT pg_replication_origin_create($1)
			WHERE NOT EXISTS (SELECT FROM pg_replication_origin WHERE roname = $1)`, origin); err != nil {
			tb.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_replication_origin_session_setup($1)", origin); err != nil {
			tb.Fatal(err)
		}
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, q := range sqls {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("%v: %v", sqls, err)
	}
}

func rowsOf(tb testing.TB, pool *pgxpool.Pool) []string {
	tb.Helper()
	rows, err := pool.Query(context.Background(), "SELECT id || ':' || email FROM users ORDER BY id")
	if err != nil {
		tb.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestTwoWayVerifyClassifiesByLastWriter pins issue 13's two-way verify: a
// row the service wrote and the monolith never had is missing_in_source,
// never extra_in_target, and repair copies it to the source instead of
// deleting it; each other difference goes toward the side that wrote last.
func TestTwoWayVerifyClassifiesByLastWriter(t *testing.T) {
	ctx := context.Background()
	_, srcDB, dstDB, src, dst := twoWayCluster(t, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)`)
	toTarget, toSource := "datasync_tw_to_target", "datasync_tw_to_source"
	monolith := func(sqls ...string) { writeAs(t, srcDB.URL, "", sqls...) }
	service := func(sqls ...string) { writeAs(t, dstDB.URL, "", sqls...) }
	syncToTarget := func(sqls ...string) { writeAs(t, dstDB.URL, toTarget, sqls...) }
	syncToSource := func(sqls ...string) { writeAs(t, srcDB.URL, toSource, sqls...) }

	// 1: the monolith's row, synced: equal.
	monolith("INSERT INTO users VALUES (1, 'one')")
	syncToTarget("INSERT INTO users VALUES (1, 'one')")
	// 2: the service's row, not synced yet: missing in the source.
	service("INSERT INTO users VALUES (2, 'service')")
	// 3: the monolith's row, synced, then deleted by the monolith: extra
	// in the target.
	monolith("INSERT INTO users VALUES (3, 'three')")
	syncToTarget("INSERT INTO users VALUES (3, 'three')")
	monolith("DELETE FROM users WHERE id = 3")
	// 4: the monolith's row, not synced yet: missing in the target.
	monolith("INSERT INTO users VALUES (4, 'four')")
	// 5: the service's row, synced, then deleted by the service: extra in
	// the source.
	service("INSERT INTO users VALUES (5, 'five')")
	syncToSource("INSERT INTO users VALUES (5, 'five')")
	service("DELETE FROM users WHERE id = 5")
	// 6: synced, then changed by the service: the target wrote last.
	monolith("INSERT INTO users VALUES (6, 'six')")
	syncToTarget("INSERT INTO users VALUES (6, 'six')")
	service("UPDATE users SET email = 'six by service' WHERE id = 6")
	// 7: synced, then changed by the monolith: the source wrote last.
	monolith("INSERT INTO users VALUES (7, 'seven')")
	syncToTarget("INSERT INTO users VALUES (7, 'seven')")
	monolith("UPDATE users SET email = 'seven by monolith' WHERE id = 7")
	// 8: the service's row synced to the source, then changed by the
	// monolith, later than the service wrote: the source wrote last.
	service("INSERT INTO users VALUES (8, 'eight')")
	syncToSource("INSERT INTO users VALUES (8, 'eight')")
	monolith("UPDATE users SET email = 'eight by monolith' WHERE id = 8")
	// 9: the monolith changed its row before the sync applied an older
	// version of it, which commits later: the copy is not a newer write,
	// the source wrote last.
	monolith("INSERT INTO users VALUES (9, 'nine')", "UPDATE users SET email = 'nine v2' WHERE id = 9")
	syncToTarget("INSERT INTO users VALUES (9, 'nine v1')")

	tables, err := mapping.ResolveAll(ctx, src, dst, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, src, dst, tables, Options{TwoWay: true, Name: "tw"})
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Tables[0]
	if !tr.TwoWay {
		t.Fatal("got a one-way table report")
	}
	for _, c := range []struct {
		kind string
		got  []Key
		want []string
	}{
		{"missing_in_target", tr.Samples.MissingInTarget, []string{"id=4"}},
		{"extra_in_target", tr.Samples.ExtraInTarget, []string{"id=3"}},
		{"missing_in_source", tr.Samples.MissingInSource, []string{"id=2"}},
		{"extra_in_source", tr.Samples.ExtraInSource, []string{"id=5"}},
	} {
		if got := keyStrings(c.got); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.kind, got, c.want)
		}
	}
	var newer []string
	for _, m := range tr.Samples.Mismatched {
		newer = append(newer, m.Key.String()+":"+m.Newer)
	}
	slices.Sort(newer)
	if want := []string{"id=6:target", "id=7:source", "id=8:source", "id=9:source"}; !slices.Equal(newer, want) {
		t.Errorf("got mismatched %v, want %v", newer, want)
	}
	if got := [5]int64{tr.MissingInTarget, tr.ExtraInTarget, tr.MissingInSource, tr.ExtraInSource, tr.Mismatched}; got != [5]int64{1, 1, 1, 1, 4} {
		t.Errorf("got counts (missing/extra in target, missing/extra in source, mismatched) %v, want [1 1 1 1 4]", got)
	}

	// The report and the metrics carry the new kinds.
	var b strings.Builder
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Tables []struct {
			MissingInSource *int64 `json:"missing_in_source"`
			ExtraInSource   *int64 `json:"extra_in_source"`
			Samples         struct {
				MissingInSource []map[string]any `json:"missing_in_source"`
			} `json:"samples"`
		} `json:"tables"`
	}
	if err := json.Unmarshal([]byte(b.String()), &parsed); err != nil {
		t.Fatal(err)
	}
	if pt := parsed.Tables[0]; pt.MissingInSource == nil || *pt.MissingInSource != 1 || pt.ExtraInSource == nil || *pt.ExtraInSource != 1 ||
		len(pt.Samples.MissingInSource) != 1 || pt.Samples.MissingInSource[0]["id"] != float64(2) {
		t.Errorf("got report %s, want missing_in_source 1 with id 2 and extra_in_source 1", b.String())
	}
	path := t.TempDir() + "/verify.prom"
	if err := WriteTextfile(path, rep.Registry(time.Now())); err != nil {
		t.Fatal(err)
	}
	if prom := readFile(t, path); !strings.Contains(prom, `datasync_verify_differences{kind="missing_in_source",table="public.users"} 1`) {
		t.Errorf("got metrics\n%s\nwant missing_in_source 1", prom)
	}

	// A --name with no origins is refused: nothing could be told to be
	// the sync's copy.
	_, err = Verify(ctx, src, dst, tables, Options{TwoWay: true, Name: "other"})
	if !errors.Is(err, ErrTwoWay) || !strings.Contains(err.Error(), "datasync_other_to_") {
		t.Errorf("got %v for an unknown --name, want ErrTwoWay naming the missing origin", err)
	}

	// A plain repair beside this two-way sync is refused.
	_, err = Verify(ctx, src, dst, tables, Options{Repair: true, Name: "tw"})
	if !errors.Is(err, ErrTwoWay) {
		t.Errorf("got one-way repair error %v, want ErrTwoWay", err)
	}

	// Repair goes toward the side that wrote last, and never deletes the
	// service's row 2.
	rep, err = Verify(ctx, src, dst, tables, Options{TwoWay: true, Name: "tw", Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	tr = rep.Tables[0]
	if got, want := *tr.Plan, (RepairPlan{Inserted: 1, Updated: 3, Deleted: 1, SourceInserted: 1, SourceUpdated: 1, SourceDeleted: 1}); got != want {
		t.Errorf("got plan %+v, want %+v", got, want)
	}
	if !tr.Consistent {
		t.Errorf("got inconsistent after repair")
	}
	want := []string{"1:one", "2:service", "4:four", "6:six by service", "7:seven by monolith", "8:eight by monolith", "9:nine v2"}
	if got := rowsOf(t, src); !slices.Equal(got, want) {
		t.Errorf("got source rows %v, want %v", got, want)
	}
	if got := rowsOf(t, dst); !slices.Equal(got, want) {
		t.Errorf("got target rows %v, want %v", got, want)
	}
	// The repair wrote into each side under the sync's origin of that
	// direction, so the sync does not send it back.
	for _, c := range []struct {
		pool   *pgxpool.Pool
		id     int
		origin string
	}{{src, 2, toSource}, {src, 6, toSource}, {dst, 4, toTarget}, {dst, 7, toTarget}} {
		var name string
		err := c.pool.QueryRow(ctx, `SELECT coalesce(o.roname, '') FROM users u
			CROSS JOIN LATERAL pg_xact_commit_timestamp_origin(u.xmin) w
			LEFT JOIN pg_replication_origin o ON o.roident = w.roident WHERE u.id = $1`, c.id).Scan(&name)
		if err != nil {
			t.Fatal(err)
		}
		if name != c.origin {
			t.Errorf("row %d: got last writer origin %q, want %q", c.id, name, c.origin)
		}
	}

	// A second repair finds nothing to do.
	rep, err = Verify(ctx, src, dst, tables, Options{TwoWay: true, Name: "tw", Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if tr := rep.Tables[0]; tr.Repaired != 0 || !tr.Consistent {
		t.Errorf("second repair: got repaired %d consistent %v, want 0 true", tr.Repaired, tr.Consistent)
	}
}

// TestTwoWayRepairLeavesRowsWrittenSinceAlone: a row classified as the
// sync's copy that the monolith deleted (extra in the target) is updated by
// the service before the repair gets to it. It is the service's row now:
// the repair must not delete it, nor overwrite a row the service changed
// after the comparison.
func TestTwoWayRepairLeavesRowsWrittenSinceAlone(t *testing.T) {
	ctx := context.Background()
	_, srcDB, dstDB, src, dst := twoWayCluster(t, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)`)
	toTarget := "datasync_tw_to_target"
	execSQL(t, src, "SELECT pg_replication_origin_create('datasync_tw_to_source')")
	writeAs(t, srcDB.URL, "", "INSERT INTO users VALUES (1, 'one'), (2, 'two')")
	writeAs(t, dstDB.URL, toTarget, "INSERT INTO users VALUES (1, 'one'), (2, 'two')")
	writeAs(t, srcDB.URL, "", "DELETE FROM users WHERE id = 1", "UPDATE users SET email = 'two by monolith' WHERE id = 2")

	tables, err := mapping.ResolveAll(ctx, src, dst, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{TwoWay: true, Name: "tw", Repair: true, beforeRepair: func(context.Context) {
		writeAs(t, dstDB.URL, "", "UPDATE users SET email = 'one by service' WHERE id = 1",
			"UPDATE users SET email = 'two by service' WHERE id = 2")
	}}
	rep, err := Verify(ctx, src, dst, tables, opts)
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Tables[0]
	if got := [2]int64{tr.ExtraInTarget, tr.Mismatched}; got != [2]int64{1, 1} {
		t.Errorf("got found (extra in target, mismatched) %v, want [1 1]", got)
	}
	if tr.Repaired != 0 || tr.Plan.Skipped != 2 {
		t.Errorf("got repaired %d skipped %d, want 0 2", tr.Repaired, tr.Plan.Skipped)
	}
	var sum strings.Builder
	if err := rep.WriteSummary(&sum); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(sum.String(), "; 2 skipped (held by a running sync, or written again since the comparison)") {
		t.Errorf("got summary %q, want the 2 rows skipped", sum.String())
	}
	if got, want := rowsOf(t, dst), []string{"1:one by service", "2:two by service"}; !slices.Equal(got, want) {
		t.Errorf("got target rows %v, want %v (the service's writes kept)", got, want)
	}
}

// TestTwoWayVerifyNeedsCommitTimestamps: without track_commit_timestamp
// there is no last writer to go by: refuse, naming the setting.
func TestTwoWayVerifyNeedsCommitTimestamps(t *testing.T) {
	p := newDBPair(t, `CREATE TABLE users (id int PRIMARY KEY)`, `CREATE TABLE users (id int PRIMARY KEY)`)
	ctx := context.Background()
	tables, err := mapping.ResolveAll(ctx, p.src, p.dst, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Verify(ctx, p.src, p.dst, tables, Options{TwoWay: true})
	if !errors.Is(err, ErrTwoWay) || !strings.Contains(err.Error(), "track_commit_timestamp") {
		t.Errorf("got %v, want ErrTwoWay naming track_commit_timestamp", err)
	}
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
