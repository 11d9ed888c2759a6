package mapping

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func exec(tb testing.TB, db *pgtest.DB, sql string) {
	tb.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	src := pgtest.NewDB(t)
	dst := pgtest.NewDB(t)
	exec(t, src, `
		CREATE TABLE users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, username text NOT NULL,
			created_at timestamptz, legacy_flags int);
		CREATE TABLE products (id bigint PRIMARY KEY, name text NOT NULL, price_cents int, stock int, deleted_at timestamptz);
		CREATE TABLE nokey (a int, b int);
		CREATE TABLE composite (tenant text NOT NULL, n int NOT NULL, v text, PRIMARY KEY (tenant, n));
		CREATE TABLE typed (id int PRIMARY KEY, v text);
		CREATE TABLE narrowed (id int PRIMARY KEY, code varchar(3), amount int);`)
	exec(t, dst, `
		CREATE TABLE users (id bigint PRIMARY KEY, username text NOT NULL, email text NOT NULL, created_at timestamptz);
		CREATE TABLE catalog_items (id bigint PRIMARY KEY, title text, price_cents bigint, stock int, note text NOT NULL DEFAULT '');
		CREATE TABLE nokey (a int, b int);
		CREATE TABLE composite (n int NOT NULL, tenant text NOT NULL, v text, UNIQUE (tenant, n));
		CREATE TABLE nounique (id bigint, email text);
		CREATE TABLE typed (id int PRIMARY KEY, v int);
		CREATE TABLE required (id bigint PRIMARY KEY, must text NOT NULL);
		CREATE TABLE narrowed (id bigint PRIMARY KEY, code varchar(5), amount numeric(12,2));`)

	t.Run("same name, common columns in target order", func(t *testing.T) {
		tb, err := Resolve(ctx, src.Pool, dst.Pool, TableSpec{Source: "users"})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tb.TargetColumnList(), `"id", "username", "email", "created_at"`; got != want {
			t.Fatalf("got columns %s, want %s", got, want)
		}
		if got, want := tb.SourceKeyList(), `"id"`; got != want {
			t.Fatalf("got key %s, want %s", got, want)
		}
		if tb.SourceReplicaIdentity != 'd' {
			t.Fatalf("got replica identity %q, want 'd'", tb.SourceReplicaIdentity)
		}
	})
	t.Run("rename table and columns, widen a type, filter", func(t *testing.T) {
		tb, err := Resolve(ctx, src.Pool, dst.Pool, TableSpec{
			Source: "public.products", Target: "catalog_items",
			Columns: map[string]string{"id": "id", "title": "name", "price_cents": "price_cents", "stock": "stock"},
			Where:   "deleted_at IS NULL",
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tb.SourceSelectList(), `"id", "name", "price_cents"::bigint, "stock"`; got != want {
			t.Fatalf("got select list %s, want %s", got, want)
		}
		if got, want := tb.SourceWhere(), " WHERE (deleted_at IS NULL)"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	// Regression: a cast to numeric(12,2) would round a value in silence
	// (and one to varchar(5) cut it); only the base type may be cast to.
	t.Run("casts leave out the target's type modifier", func(t *testing.T) {
		tb, err := Resolve(ctx, src.Pool, dst.Pool, TableSpec{Source: "narrowed"})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tb.SourceSelectList(), `"id"::bigint, "code", "amount"::numeric`; got != want {
			t.Fatalf("got select list %s, want %s", got, want)
		}
	})
	t.Run("composite key in key order", func(t *testing.T) {
		tb, err := Resolve(ctx, src.Pool, dst.Pool, TableSpec{Source: "composite"})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tb.TargetKeyList(), `"tenant", "n"`; got != want {
			t.Fatalf("got key %s, want %s", got, want)
		}
		if got, want := len(tb.KeyColumns()), 2; got != want {
			t.Fatalf("got %d key columns, want %d", got, want)
		}
	})

	problems := []struct {
		name string
		spec TableSpec
		want []string // substrings of the error
	}{
		{"unknown source", TableSpec{Source: "nope"}, []string{"source table public.nope does not exist"}},
		{"unknown target", TableSpec{Source: "users", Target: "missing"}, []string{"target table public.missing does not exist"}},
		{"no primary key", TableSpec{Source: "nokey"}, []string{"no primary key", "key: [...]"}},
		{"key not unique in source", TableSpec{Source: "nokey", Key: []string{"a"}}, []string{"not unique in source", "is nullable"}},
		{"missing key column", TableSpec{Source: "users", Key: []string{"uid"}}, []string{`key column "uid" does not exist`}},
		{"target without unique index", TableSpec{Source: "users", Target: "nounique"}, []string{"CREATE UNIQUE INDEX ON \"public\".\"nounique\" (\"id\")"}},
		{"type mismatch", TableSpec{Source: "typed"}, []string{"column type mismatch: source v is text but target v is integer"}},
		{"unknown mapped columns", TableSpec{Source: "products", Target: "catalog_items", Columns: map[string]string{"id": "id", "title": "title", "nope": "name"}},
			[]string{`maps from source column "title"`, `target column "nope" does not exist`}},
		{"required target column unmapped", TableSpec{Source: "users", Target: "required"}, []string{`target column "must" is NOT NULL without a default`}},
		{"bad filter", TableSpec{Source: "users", Where: "no_such_column = 1"}, []string{"where filter", "no_such_column"}},
	}
	for _, tc := range problems {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(ctx, src.Pool, dst.Pool, tc.spec)
			if !errors.Is(err, ErrPreflight) {
				t.Fatalf("got error %v, want a preflight error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q, want it to contain %q", err, w)
				}
			}
		})
	}

	t.Run("ResolveAll reports every table's problems", func(t *testing.T) {
		_, err := ResolveAll(ctx, src.Pool, dst.Pool, []TableSpec{{Source: "nope"}, {Source: "users"}, {Source: "typed"}})
		var pe *PreflightError
		if !errors.As(err, &pe) {
			t.Fatalf("got %v, want *PreflightError", err)
		}
		if got, want := len(pe.Problems), 3; got != want {
			t.Fatalf("got %d problems (%v), want %d", got, pe.Problems, want)
		}
	})
}

func TestParseIdent(t *testing.T) {
	cases := []struct {
		in      string
		want    Ident
		wantErr bool
	}{
		{in: "users", want: Ident{"public", "users"}},
		{in: "Sales.Users", want: Ident{"sales", "users"}},
		{in: `"My Schema"."Odd""Name"`, want: Ident{"My Schema", `Odd"Name`}},
		{in: "a.b.c", wantErr: true},
		{in: "", wantErr: true},
		{in: `"open`, wantErr: true},
		{in: "a.", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseIdent(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseIdent(f *testing.F) {
	for _, s := range []string{"users", "Sales.Users", `"My Schema"."Odd""Name"`, "a.b.c", `"open`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdent(s)
		if err != nil {
			return
		}
		back, err := ParseIdent(id.Quoted())
		if err != nil || back != id {
			t.Fatalf("%q: quoted form %s parses to %+v, %v", s, id.Quoted(), back, err)
		}
	})
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"MONOLITH_DATABASE_URL": "postgres://m/db", "USERS_DATABASE_URL": "postgres://u/db"}
	getenv := func(k string) string { return env[k] }
	cfg, err := Parse(strings.NewReader(`
source: ${MONOLITH_DATABASE_URL}
target: ${USERS_DATABASE_URL}
tables:
  - source: public.users
    key: [id]
    columns: {id: id, email: email}
    where: "deleted_at IS NULL"
  - source: products
    target: catalog_items
`), getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != "postgres://m/db" || cfg.Target != "postgres://u/db" {
		t.Fatalf("got source %q target %q, want the expanded URLs", cfg.Source, cfg.Target)
	}
	if got, want := cfg.Tables[1].TargetName(), "catalog_items"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	bad := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key with line", "source: x\ntarget: y\ntables:\n  - source: users\n    colums: {}\n", []string{"line 5", "colums"}},
		{"unset env var", "source: ${NOPE}\ntarget: y\n", []string{"source: environment variable NOPE is not set"}},
		{"missing source table and duplicate target", "tables:\n  - target: a\n  - source: b\n  - source: b\n",
			[]string{"tables[0].source: is required", "tables[2].target: public.b is already the target of tables[1]"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.yaml), getenv)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want a config error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestFlagsPrecedence(t *testing.T) {
	env := map[string]string{EnvSource: "postgres://env-src", EnvTarget: "postgres://env-dst"}
	getenv := func(k string) string { return env[k] }
	f := &Flags{Target: "postgres://flag-dst", Tables: []string{"users", "products:catalog_items"}}
	cfg, err := f.Load(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != "postgres://env-src" || cfg.Target != "postgres://flag-dst" {
		t.Fatalf("got source %q target %q, want env source and flag target", cfg.Source, cfg.Target)
	}
	if got, want := cfg.Tables[1].Target, "catalog_items"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	_, err = (&Flags{}).Load(func(string) string { return "" })
	for _, w := range []string{"--source", "--target", "--table"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("got %v, want an error naming %s", err, w)
		}
	}
}

func TestLoadConnectionsNeedsNoTables(t *testing.T) {
	env := map[string]string{EnvSource: "postgres://env-src"}
	f := &Flags{Target: "postgres://flag-dst"}
	cfg, err := f.LoadConnections(func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("got %v, want no error without tables", err)
	}
	if cfg.Source != "postgres://env-src" || cfg.Target != "postgres://flag-dst" {
		t.Fatalf("got source %q target %q, want env source and flag target", cfg.Source, cfg.Target)
	}
	if _, err := f.Load(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "--table") {
		t.Fatalf("Load: got %v, want an error naming --table", err)
	}
	_, err = (&Flags{}).LoadConnections(func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "--source") || strings.Contains(err.Error(), "--table") {
		t.Fatalf("got %v, want an error naming --source and not --table", err)
	}
}
