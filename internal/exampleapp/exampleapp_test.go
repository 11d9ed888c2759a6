package exampleapp_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-fig/strangler/internal/exampleapp"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func migrate(tb testing.TB, db *pgtest.DB, fsys fstest.MapFS) ([]string, error) {
	tb.Helper()
	var applied []string
	err := exampleapp.WithSetupLock(context.Background(), db.Pool, func(ctx context.Context, conn *pgx.Conn) error {
		var err error
		applied, err = exampleapp.Migrate(ctx, conn, fsys)
		return err
	})
	return applied, err
}

func file(sql string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(sql)} }

func TestMigrate(t *testing.T) {
	db := pgtest.NewDB(t)
	v1 := fstest.MapFS{
		"001_a.sql": file("CREATE TABLE a (id int); CREATE TABLE b (id int);"),
		"README.md": file("not a migration"),
	}
	v2 := fstest.MapFS{
		"001_a.sql": v1["001_a.sql"],
		"002_c.sql": file("CREATE TABLE c (id int);"),
		"010_d.sql": file("ALTER TABLE c ADD COLUMN d text;"),
	}
	steps := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{name: "first", fsys: v1, want: "001_a"},
		{name: "again", fsys: v1, want: ""},
		{name: "new files in order", fsys: v2, want: "002_c,010_d"},
		{name: "all again", fsys: v2, want: ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			applied, err := migrate(t, db, st.fsys)
			if err != nil {
				t.Fatalf("migrate: %v", err)
			}
			if got := strings.Join(applied, ","); got != st.want {
				t.Errorf("applied: got %q, want %q", got, st.want)
			}
		})
	}
	if _, err := db.Pool.Exec(context.Background(), "INSERT INTO c (id, d) VALUES (1, 'x')"); err != nil {
		t.Errorf("schema after migrations: %v", err)
	}
}

func TestMigrateFailureIsNotRecorded(t *testing.T) {
	db := pgtest.NewDB(t)
	fsys := fstest.MapFS{
		"001_ok.sql":  file("CREATE TABLE ok (id int);"),
		"002_bad.sql": file("CREATE TABLE half (id int); CREATE TABLE broken (id nosuchtype);"),
	}
	applied, err := migrate(t, db, fsys)
	if err == nil || !strings.Contains(err.Error(), "migrate 002_bad.sql") {
		t.Fatalf("migrate: got error %v, want one naming 002_bad.sql", err)
	}
	if got := strings.Join(applied, ","); got != "001_ok" {
		t.Errorf("applied: got %q, want %q", got, "001_ok")
	}
	var half bool
	if err := db.Pool.QueryRow(context.Background(), "SELECT to_regclass('half') IS NOT NULL").Scan(&half); err != nil {
		t.Fatal(err)
	}
	if half {
		t.Errorf("a failed migration left table half behind")
	}
	fsys["002_bad.sql"] = file("CREATE TABLE half (id int);")
	if applied, err := migrate(t, db, fsys); err != nil || strings.Join(applied, ",") != "002_bad" {
		t.Errorf("migrate after fixing the file: got %v, %v; want [002_bad], nil", applied, err)
	}
}

func TestMigrateWithoutFiles(t *testing.T) {
	db := pgtest.NewDB(t)
	_, err := migrate(t, db, fstest.MapFS{"x.txt": file("")})
	if err == nil || !strings.Contains(err.Error(), "no *.sql files") {
		t.Errorf("migrate: got error %v, want one saying no *.sql files", err)
	}
}

func TestParsePage(t *testing.T) {
	cases := []struct {
		name      string
		query     string
		want      exampleapp.Page
		wantField string
	}{
		{name: "defaults", query: "", want: exampleapp.Page{Limit: exampleapp.DefaultLimit}},
		{name: "both", query: "limit=10&after=42", want: exampleapp.Page{Limit: 10, After: 42}},
		{name: "largest limit", query: "limit=1000", want: exampleapp.Page{Limit: 1000}},
		{name: "limit too large", query: "limit=1001", wantField: "limit"},
		{name: "limit zero", query: "limit=0", wantField: "limit"},
		{name: "limit words", query: "limit=all", wantField: "limit"},
		{name: "after zero", query: "after=0", want: exampleapp.Page{Limit: exampleapp.DefaultLimit}},
		{name: "after negative", query: "after=-5", wantField: "after"},
		{name: "after overflow", query: "after=99999999999999999999", wantField: "after"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/api/x?"+tc.query, nil)
			got, err := exampleapp.ParsePage(r)
			if tc.wantField != "" {
				fe, ok := err.(*exampleapp.FieldError)
				if !ok || fe.Field != tc.wantField {
					t.Fatalf("error: got %v, want a FieldError for %s", err, tc.wantField)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, nil", got, err, tc.want)
			}
		})
	}
}

func TestHealthFailsWithoutDatabase(t *testing.T) {
	db := pgtest.NewDB(t)
	app := exampleapp.App{Name: "probe", Migrations: fstest.MapFS{"001.sql": file("SELECT 1;")}}
	srv := httptest.NewServer(app.Handler(db.Pool, slog.New(slog.DiscardHandler)))
	defer srv.Close()

	check := func(want int) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET /health: got %d, want %d", resp.StatusCode, want)
		}
		if got := resp.Header.Get("X-Served-By"); got != "probe" {
			t.Errorf("X-Served-By: got %q, want probe", got)
		}
	}
	check(http.StatusOK)
	db.Pool.Close()
	check(http.StatusServiceUnavailable)
}
