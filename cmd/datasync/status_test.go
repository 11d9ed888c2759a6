package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/backfill"
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
