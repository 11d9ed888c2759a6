package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/backfill"
	"github.com/strangler-fig/strangler/internal/cdc/apply"
	"github.com/strangler-fig/strangler/internal/mapping"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// cancelledBackfill copies the first two batches of ten rows of table and
// is then cancelled, like a backfill killed part way.
func cancelledBackfill(tb testing.TB, src, dst *pgtest.DB, table string) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tables, err := mapping.ResolveAll(ctx, src.Pool, dst.Pool, []mapping.TableSpec{{Source: table}})
	if err != nil {
		tb.Fatalf("resolve %s: %v", table, err)
	}
	batches := 0
	opts := backfill.Options{Source: src.Pool, Target: dst.Pool, BatchSize: 10, OnBatch: func(backfill.BatchEvent) {
		if batches++; batches == 2 {
			cancel()
		}
	}}
	if _, err := backfill.Run(ctx, opts, tables); !errors.Is(err, context.Canceled) {
		tb.Fatalf("backfill %s: got error %v, want context.Canceled", table, err)
	}
}

func TestStatusBackfillProgress(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	ddl := `CREATE TABLE users (id int PRIMARY KEY, v text); CREATE TABLE items (id int PRIMARY KEY, v text);`
	execSQL(t, src.Pool, ddl+`INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 50) i;
		INSERT INTO items SELECT i, 'i' || i FROM generate_series(1, 40) i; ANALYZE items;`)
	execSQL(t, dst.Pool, ddl)
	conn := []string{"--source", src.URL, "--target", dst.URL}
	status := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out, errOut := runCmd(t, append(append([]string{"status"}, conn...), args...)...)
		if code != 0 {
			t.Fatalf("status %v: got exit %d, want 0; stderr:\n%s", args, code, errOut)
		}
		return out
	}

	t.Run("neither backfill nor sync", func(t *testing.T) {
		out := status(t)
		for _, want := range []string{"no sync named datasync", "no backfill checkpoints"} {
			if !strings.Contains(out, want) {
				t.Errorf("got %q, want it to contain %q", out, want)
			}
		}
		if strings.Contains(out, "lag") {
			t.Errorf("got %q, want no slot lag without a sync", out)
		}
	})

	if code, _, errOut := runCmd(t, append([]string{"backfill", "--table", "users"}, conn...)...); code != 0 {
		t.Fatalf("backfill users: exit %d: %s", code, errOut)
	}
	cancelledBackfill(t, src, dst, "items")

	tests := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
	}{
		{name: "after a backfill and a cancelled one", want: []string{
			"no sync named datasync",
			"backfill public.items  in progress: 20 of ~40 rows (50%), 0/1 ranges done, updated ",
			"backfill public.users  done: 50 rows, 1/1 ranges done, updated ",
		}},
		{name: "one table", args: []string{"--table", "items"}, want: []string{"backfill public.items"}, notWant: []string{"public.users"}},
		{name: "renamed table is its target", args: []string{"--table", "old:users"}, want: []string{"backfill public.users"}, notWant: []string{"public.items"}},
		{name: "another sync name", args: []string{"--name", "users"}, want: []string{"no sync named users", "backfill public.users"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := status(t, tc.args...)
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("got %q, want it to contain %q", out, want)
				}
			}
			for _, no := range tc.notWant {
				if strings.Contains(out, no) {
					t.Errorf("got %q, want no %q", out, no)
				}
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		var got struct {
			SyncFound  bool `json:"sync_found"`
			SlotExists bool `json:"slot_exists"`
			Backfill   []struct {
				Name          string `json:"name"`
				Target        string `json:"target"`
				RowsCopied    int64  `json:"rows_copied"`
				Ranges        int    `json:"ranges"`
				RangesDone    int    `json:"ranges_done"`
				Done          bool   `json:"done"`
				EstimatedRows *int64 `json:"estimated_rows"`
				UpdatedAt     string `json:"updated_at"`
			} `json:"backfill"`
		}
		out := status(t, "--json")
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("status --json: %v\n%s", err, out)
		}
		if got.SyncFound || got.SlotExists {
			t.Errorf("got sync_found %t, slot_exists %t, want false and false", got.SyncFound, got.SlotExists)
		}
		if len(got.Backfill) != 2 {
			t.Fatalf("got %d backfilled tables, want 2:\n%s", len(got.Backfill), out)
		}
		items, users := got.Backfill[0], got.Backfill[1]
		if items.Target != "public.items" || items.Name != "backfill" || items.RowsCopied != 20 || items.Done ||
			items.RangesDone != 0 || items.Ranges != 1 || items.EstimatedRows == nil || *items.EstimatedRows != 40 || items.UpdatedAt == "" {
			t.Errorf("items: got %+v, want public.items, 20 rows of an estimated 40, 0/1 ranges, not done", items)
		}
		if users.Target != "public.users" || users.RowsCopied != 50 || !users.Done || users.RangesDone != 1 ||
			users.EstimatedRows == nil || *users.EstimatedRows != 50 {
			t.Errorf("users: got %+v, want public.users, 50 of 50 rows, done", users)
		}
	})
}

func TestStatusCleanupMissingDatabase(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "status without databases", args: []string{"status"}, want: []string{"--source", "--target"}},
		{name: "status without a target", args: []string{"status", "--source", "postgres://127.0.0.1:1/x"}, want: []string{"no target database: pass --target"}},
		{name: "cleanup without a source", args: []string{"cleanup", "--name", "x", "--target", "postgres://127.0.0.1:1/x"}, want: []string{"no source database: pass --source"}},
		{name: "status with a missing config", args: []string{"status", "--config", "/nonexistent/datasync.yaml"}, want: []string{"/nonexistent/datasync.yaml"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.args...)
			if code != exitError {
				t.Fatalf("exit code: got %d, want %d", code, exitError)
			}
			for _, want := range tc.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr: got %q, want it to contain %q", errOut, want)
				}
			}
		})
	}
}

// Every command that names a sync rejects a name that cannot name a slot,
// before connecting anywhere, and says what a name may hold.
func TestSyncNameChecked(t *testing.T) {
	env := map[string]string{"DATASYNC_SOURCE": "postgres://127.0.0.1:1/none", "DATASYNC_TARGET": "postgres://127.0.0.1:1/none"}
	for _, cmd := range []string{"sync", "status", "cleanup"} {
		r := runDatasync(t, env, cmd, "--name", "Users-Sync")
		if r.code != 2 || !strings.Contains(r.errOut, `--name "Users-Sync": use lower-case letters, digits and _`) {
			t.Errorf("%s --name Users-Sync: got exit %d, stderr %q; want exit 2 naming --name", cmd, r.code, r.errOut)
		}
	}
}

// A two-way sync's objects, made by hand on both sides as two-way sync
// makes them: status lists each (text and JSON), cleanup drops them all,
// a second cleanup finds nothing, and status then says so.
func TestStatusCleanupTwoWay(t *testing.T) {
	src, dst := pgtest.NewDB(t), pgtest.NewDB(t)
	const name = "tw_hand"
	ddl := `CREATE TABLE users (id bigserial PRIMARY KEY, email text);`
	state := `CREATE SCHEMA datasync; CREATE TABLE datasync.sync_state (name text PRIMARY KEY, applied_lsn pg_lsn NOT NULL,
		last_commit_time timestamptz, updated_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE datasync.sync_tables (name text, target_table text, copied_lsn pg_lsn NOT NULL, copied_rows bigint NOT NULL,
		copied_at timestamptz NOT NULL DEFAULT now(), mapping text, PRIMARY KEY (name, target_table));`
	execSQL(t, src.Pool, ddl+state+`INSERT INTO users (email) VALUES ('a'), ('b');
		CREATE PUBLICATION datasync_tw_hand FOR TABLE users;
		INSERT INTO datasync.sync_state (name, applied_lsn) VALUES ('tw_hand_to_source', '0/10')`)
	execSQL(t, src.Pool, `SELECT pg_create_logical_replication_slot('datasync_tw_hand', 'pgoutput')`)
	execSQL(t, src.Pool, `SELECT pg_replication_origin_create('datasync_tw_hand_to_source')`)
	execSQL(t, dst.Pool, ddl+state+`INSERT INTO users (id, email) VALUES (1, 'a'), (2, 'b');
		CREATE PUBLICATION datasync_tw_hand_to_source FOR TABLE users;
		INSERT INTO datasync.sync_state (name, applied_lsn) VALUES ('tw_hand', '0/20')`)
	execSQL(t, dst.Pool, `SELECT pg_create_logical_replication_slot('datasync_tw_hand_to_source', 'pgoutput')`)
	execSQL(t, dst.Pool, `SELECT pg_replication_origin_create('datasync_tw_hand_to_target')`)
	execSQL(t, dst.Pool, `SELECT pg_replication_origin_advance('datasync_tw_hand_to_target', '0/1234')`)
	// Origins belong to the cluster, which the test's databases share
	// with other tests: they go even when the test fails half way.
	t.Cleanup(func() {
		for _, o := range []string{"datasync_tw_hand_to_source", "datasync_tw_hand_to_target"} {
			_, _ = dst.Pool.Exec(context.Background(), `SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = $1`, o)
		}
	})
	ctx := context.Background()
	tables, err := mapping.ResolveAll(ctx, src.Pool, dst.Pool, []mapping.TableSpec{{Source: "users"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply.EnsureDisjointKeys(ctx, src.Pool, dst.Pool, tables, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	conn := []string{"--source", src.URL, "--target", dst.URL, "--name", name}
	cmd := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out, errOut := runCmd(t, append(args, conn...)...)
		if code != 0 {
			t.Fatalf("%v: got exit %d, want 0; stderr:\n%s", args, code, errOut)
		}
		return out
	}

	out := squeeze(cmd(t, "status"))
	for _, want := range []string{
		"slot datasync_tw_hand (inactive, wal_status reserved)",
		"publication datasync_tw_hand (exists)",
		"reverse slot datasync_tw_hand_to_source on the target (inactive, wal_status reserved)",
		"reverse publication datasync_tw_hand_to_source on the target (exists)",
		"reverse lag ",
		"origin datasync_tw_hand_to_target in the target's cluster: applied up to 0/1234 of the other side's WAL",
		"origin datasync_tw_hand_to_source in the source's cluster: nothing applied yet",
		"key headroom public.users.id (source) 4503599627370493 values left: public.users_id_seq hands out 3 next, its range ends at 4503599627370495",
		"key headroom public.users.id (target) 9218868437227405312 values left: public.users_id_seq hands out 4503599627370496 next, its range ends at 9223372036854775807",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status: got\n%s\nwant it to contain %q", out, want)
		}
	}

	var js struct {
		SyncFound         bool `json:"sync_found"`
		TwoWay            bool `json:"two_way"`
		PublicationExists bool `json:"publication_exists"`
		Reverse           struct {
			Slot              string `json:"slot"`
			SlotExists        bool   `json:"slot_exists"`
			Publication       string `json:"publication"`
			PublicationExists bool   `json:"publication_exists"`
		} `json:"reverse"`
		Origins []struct {
			Name      string `json:"name"`
			Database  string `json:"database"`
			Exists    bool   `json:"exists"`
			RemoteLSN string `json:"remote_lsn"`
		} `json:"origins"`
		KeyHeadroom []struct {
			Database string `json:"database"`
			Left     int64  `json:"left"`
		} `json:"key_headroom"`
	}
	if err := json.Unmarshal([]byte(cmd(t, "status", "--json")), &js); err != nil {
		t.Fatal(err)
	}
	if !js.SyncFound || !js.TwoWay || !js.PublicationExists || !js.Reverse.SlotExists || !js.Reverse.PublicationExists ||
		js.Reverse.Slot != "datasync_tw_hand_to_source" || js.Reverse.Publication != "datasync_tw_hand_to_source" {
		t.Errorf("status --json: got %+v, want a two-way sync with both slots and publications", js)
	}
	// The repair origins come after the sync's; this hand-made sync has
	// none, as one from before them.
	if len(js.Origins) != 4 || js.Origins[0].Name != "datasync_tw_hand_to_target" || !js.Origins[0].Exists || js.Origins[0].Database != "target" ||
		js.Origins[0].RemoteLSN != "0/1234" || js.Origins[1].Name != "datasync_tw_hand_to_source" || !js.Origins[1].Exists || js.Origins[1].Database != "source" ||
		js.Origins[2].Name != "datasync_tw_hand_to_target_repair" || js.Origins[2].Exists || js.Origins[2].Database != "target" ||
		js.Origins[3].Name != "datasync_tw_hand_to_source_repair" || js.Origins[3].Exists || js.Origins[3].Database != "source" {
		t.Errorf("origins: got %+v, want both of the sync's, to_target applied up to 0/1234, then both repair origins, missing", js.Origins)
	}
	if len(js.KeyHeadroom) != 2 || js.KeyHeadroom[1].Left != 1<<63-1-1<<52+1 {
		t.Errorf("key headroom: got %+v, want the source's and the target's, 2^63 - 2^52 left on the target", js.KeyHeadroom)
	}

	out = cmd(t, "cleanup")
	for _, want := range []string{
		"dropped replication slot datasync_tw_hand on the source\n",
		"dropped replication slot datasync_tw_hand_to_source on the target\n",
		"dropped publication datasync_tw_hand on the source\n",
		"dropped publication datasync_tw_hand_to_source on the target\n",
		"dropped replication origin datasync_tw_hand_to_target in the target's cluster\n",
		"dropped replication origin datasync_tw_hand_to_source in the target's cluster\n", // one cluster in this test
		"dropped checkpoints of tw_hand in the target's datasync schema\n",
		"dropped checkpoints of tw_hand_to_source in the source's datasync schema\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cleanup: got\n%s\nwant it to contain %q", out, want)
		}
	}
	for _, c := range []struct {
		db    *pgtest.DB
		query string
	}{
		{src, `SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'datasync_tw_hand%'`},
		{src, `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'datasync_tw_hand%'`},
		{dst, `SELECT count(*) FROM pg_publication WHERE pubname LIKE 'datasync_tw_hand%'`},
		{src, `SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'datasync_tw_hand%'`},
		{src, `SELECT count(*) FROM datasync.sync_state`},
		{dst, `SELECT count(*) FROM datasync.sync_state`},
	} {
		var n int
		if err := c.db.Pool.QueryRow(ctx, c.query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s after cleanup: got %d, want 0", c.query, n)
		}
	}
	if out := cmd(t, "cleanup"); !strings.Contains(out, "nothing to drop") {
		t.Errorf("second cleanup: got %q, want nothing to drop", out)
	}
	if out := squeeze(cmd(t, "status")); !strings.Contains(out, "no sync named tw_hand") || strings.Contains(out, "origin") ||
		!strings.Contains(out, "key headroom public.users.id (target)") {
		t.Errorf("status after cleanup: got\n%s\nwant no sync, no origin, and the key ranges that stay", out)
	}
}

// squeeze collapses the runs of spaces tabwriter pads columns with.
func squeeze(s string) string {
	return regexp.MustCompile(` {2,}`).ReplaceAllString(s, " ")
}
