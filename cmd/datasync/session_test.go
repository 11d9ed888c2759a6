package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/cdc/cdctest"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// TestSessionSettingsDoNotLeakIntoValues pins issue 15, item 2: with
// ALTER DATABASE … SET datestyle = 'SQL, DMY' and extra_float_digits = 0
// on the source, sync's text copy and stream carried 2024-12-07 as
// 07/12/2024, which the target read as July 12, and 0.30000000000000004 as
// 0.3. Both databases get odd settings of every kind here; backfill, sync's
// copy, sync's stream and verify must all keep every value as it is.
func TestSessionSettingsDoNotLeakIntoValues(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	const schema = `CREATE TABLE %s (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, f float8, r real,
		iv interval, b bytea, arr date[]);`
	for _, db := range []*pgtest.DB{src, dst} {
		mustExec(t, db.Pool, fmt.Sprintf(schema, "filled")+fmt.Sprintf(schema, "synced"))
	}
	mustExec(t, src.Pool, `ALTER DATABASE `+src.Name+` SET datestyle = 'SQL, DMY';
		ALTER DATABASE `+src.Name+` SET extra_float_digits = 0;
		ALTER DATABASE `+src.Name+` SET timezone = 'Pacific/Chatham';
		ALTER DATABASE `+src.Name+` SET intervalstyle = 'sql_standard';
		ALTER DATABASE `+src.Name+` SET bytea_output = 'escape';`)
	mustExec(t, dst.Pool, `ALTER DATABASE `+dst.Name+` SET datestyle = 'SQL, MDY';
		ALTER DATABASE `+dst.Name+` SET extra_float_digits = 0;
		ALTER DATABASE `+dst.Name+` SET timezone = 'America/St_Johns';
		ALTER DATABASE `+dst.Name+` SET intervalstyle = 'iso_8601';
		ALTER DATABASE `+dst.Name+` SET bytea_output = 'escape';`)
	// The pools were opened before the settings: new connections get them.
	src.Pool.Reset()
	dst.Pool.Reset()

	const row = `(%d, '2024-12-07', '2024-12-07 23:59:58.123456', '2024-12-07 23:59:58.123456+00', 0.1::float8 + 0.2::float8,
		'0.1'::real / 3, '1 year 2 mons -3 days 04:05:06.789', '\x00ff5c', '{2024-12-07,2024-01-02}')`
	mustExec(t, src.Pool, "INSERT INTO filled VALUES "+fmt.Sprintf(row, 1)+", "+fmt.Sprintf(row, 2))
	mustExec(t, src.Pool, "INSERT INTO synced VALUES "+fmt.Sprintf(row, 1))

	conn := []string{"--source", src.URL, "--target", dst.URL}
	steps := []struct {
		name string
		args []string
		sql  string // run on the source after the step
	}{
		{"backfill", []string{"backfill", "--table", "filled"}, ""},
		{"sync copy", []string{"sync", "--name", "settings", "--table", "synced", "--until-caught-up"},
			"INSERT INTO synced VALUES " + fmt.Sprintf(row, 2)},
		{"sync stream", []string{"sync", "--name", "settings", "--table", "synced", "--until-caught-up"}, ""},
		{"verify", []string{"verify", "--table", "filled", "--table", "synced"}, ""},
	}
	for _, step := range steps {
		code, out, errOut := runCmd(t, append(step.args[:1:1], append(conn, step.args[1:]...)...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d, want 0\nstdout:\n%s\nstderr:\n%s", step.name, code, out, errOut)
		}
		if step.sql != "" {
			mustExec(t, src.Pool, step.sql)
		}
	}
	// Values come back in binary, whatever either session prints as text.
	for _, table := range []string{"filled", "synced"} {
		q := "SELECT * FROM " + table + " ORDER BY id"
		s, d := cdctest.Dump(t, src.Pool, q), cdctest.Dump(t, dst.Pool, q)
		if s != d {
			t.Errorf("%s: got target\n%s\nwant (source)\n%s", table, d, s)
		}
		if n := strings.Count(d, "\n"); n != 2 {
			t.Errorf("%s: got %d rows in the target, want 2", table, n)
		}
	}
	// The same in words, for the two values the issue names.
	var day string
	var f float64
	if err := dst.Pool.QueryRow(context.Background(), `SELECT to_char(d, 'YYYY-MM-DD'), f FROM synced WHERE id = 2`).Scan(&day, &f); err != nil {
		t.Fatal(err)
	}
	tenth, fifth := 0.1, 0.2 // variables: constant arithmetic would be exact
	if want := tenth + fifth; day != "2024-12-07" || f != want {
		t.Errorf("streamed row: got date %s and float %v, want 2024-12-07 and %v", day, f, want)
	}
}
