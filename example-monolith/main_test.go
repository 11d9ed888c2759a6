package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/exampleapp"
	"github.com/strangler-fig/strangler/internal/exampleapp/apptest"
	"github.com/strangler-fig/strangler/internal/pgtest"
	"github.com/strangler-fig/strangler/internal/testkit"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func start(tb testing.TB) *apptest.Server { return apptest.Start(tb, exampleapp.Monolith()) }

func TestUsersContract(t *testing.T) { apptest.RunContract(t, start, apptest.Users()) }

func TestProductsContract(t *testing.T) { apptest.RunContract(t, start, apptest.Products()) }

func TestDuplicateEmailConflict(t *testing.T) { apptest.RunUserConflicts(t, start) }

// startWithCustomer starts the monolith with user 1 and product 1, which
// every order of the orders contract refers to.
func startWithCustomer(tb testing.TB) *apptest.Server {
	tb.Helper()
	s := start(tb)
	u := s.Create(tb, "/api/users", map[string]any{"email": "ann@example.com", "username": "ann"})
	p := s.Create(tb, "/api/products", map[string]any{"name": "Lamp", "price_cents": 2500, "stock": 9})
	if apptest.ID(tb, u) != 1 || apptest.ID(tb, p) != 1 {
		tb.Fatalf("ids of the first user and product: got %d and %d, want 1 and 1", apptest.ID(tb, u), apptest.ID(tb, p))
	}
	return s
}

func orders() apptest.Resource {
	return apptest.Resource{
		Path: "/api/orders",
		Valid: func(i int) map[string]any {
			return map[string]any{"user_id": 1, "product_id": 1, "quantity": i}
		},
		Invalid: []apptest.InvalidCase{
			{Name: "user missing", Body: `{"product_id":1,"quantity":1}`, Field: "user_id"},
			{Name: "user zero", Body: `{"user_id":0,"product_id":1,"quantity":1}`, Field: "user_id"},
			{Name: "user unknown", Body: `{"user_id":77,"product_id":1,"quantity":1}`, Field: "user_id"},
			{Name: "product missing", Body: `{"user_id":1,"quantity":1}`, Field: "product_id"},
			{Name: "product unknown", Body: `{"user_id":1,"product_id":77,"quantity":1}`, Field: "product_id"},
			{Name: "product a string", Body: `{"user_id":1,"product_id":"1","quantity":1}`, Field: "product_id"},
			{Name: "quantity missing", Body: `{"user_id":1,"product_id":1}`, Field: "quantity"},
			{Name: "quantity zero", Body: `{"user_id":1,"product_id":1,"quantity":0}`, Field: "quantity"},
			{Name: "quantity too large", Body: `{"user_id":1,"product_id":1,"quantity":10001}`, Field: "quantity"},
		},
	}
}

func TestOrdersContract(t *testing.T) { apptest.RunContract(t, startWithCustomer, orders()) }

// A user or product that orders refer to cannot be deleted: 409, and both
// rows stay.
func TestDeleteReferencedRowConflict(t *testing.T) {
	s := startWithCustomer(t)
	s.Create(t, "/api/orders", map[string]any{"user_id": 1, "product_id": 1, "quantity": 2})
	for _, path := range []string{"/api/users/1", "/api/products/1"} {
		t.Run(path, func(t *testing.T) {
			r := s.Expect(t, http.MethodDelete, path, nil, http.StatusConflict)
			if msg, _ := r.Object(t)["error"].(string); msg == "" {
				t.Errorf("got no error message in %s", r.Body)
			}
			s.Expect(t, http.MethodGet, path, nil, http.StatusOK)
		})
	}
}

func TestMigrationsTwice(t *testing.T) {
	s := start(t) // applies the migrations once
	ctx := context.Background()
	s.Create(t, "/api/users", map[string]any{"email": "ann@example.com", "username": "ann"})
	if err := exampleapp.Monolith().Setup(ctx, s.DB.Pool, discard(), nil); err != nil {
		t.Fatalf("second set-up: %v", err)
	}
	var versions int
	if err := s.DB.Pool.QueryRow(ctx, "SELECT count(*) FROM schema_migrations").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != 1 {
		t.Errorf("schema_migrations rows: got %d, want 1", versions)
	}
	s.Expect(t, http.MethodGet, "/api/users/1", nil, http.StatusOK)
}

func TestConcurrentStartsShareOneSchema(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	// Start from an empty database again, then let several instances set it
	// up at once, seeding included.
	if _, err := s.DB.Pool.Exec(ctx, "DROP TABLE orders, products, users, schema_migrations"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			errs[i] = exampleapp.Monolith().Setup(ctx, s.DB.Pool, discard(), map[string]int{"SEED_USERS": 30, "SEED_PRODUCTS": 10})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("set-up %d: %v", i, err)
		}
	}
	checkCount(t, s, "users", 30)
	checkCount(t, s, "products", 10)
}

func TestSeeds(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	s.Create(t, "/api/users", map[string]any{"email": "ann@example.com", "username": "ann"})
	steps := []struct {
		name            string
		counts          map[string]int
		users, products int
	}{
		{name: "first start", counts: map[string]int{"SEED_USERS": 20, "SEED_PRODUCTS": 5}, users: 20, products: 5},
		{name: "same counts again", counts: map[string]int{"SEED_USERS": 20, "SEED_PRODUCTS": 5}, users: 20, products: 5},
		{name: "more users only", counts: map[string]int{"SEED_USERS": 35}, users: 35, products: 5},
		{name: "fewer removes nothing", counts: map[string]int{"SEED_USERS": 3, "SEED_PRODUCTS": 1}, users: 35, products: 5},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := exampleapp.Monolith().Setup(ctx, s.DB.Pool, discard(), st.counts); err != nil {
				t.Fatalf("set-up: %v", err)
			}
			checkCount(t, s, "users", st.users)
			checkCount(t, s, "products", st.products)
		})
	}
	// Seeded rows are served like any other.
	got := s.Expect(t, http.MethodGet, "/api/products?limit=2", nil, http.StatusOK).Object(t)
	if items, _ := got["items"].([]any); len(items) != 2 {
		t.Errorf("products page: got %d items, want 2", len(items))
	}
}

// The whole program: settings from the environment, seeding, serving on a
// real listener, and a clean stop when its context ends (as on SIGTERM).
func TestRunServesAndStops(t *testing.T) {
	db := pgtest.NewDB(t)
	addr := testkit.FreeAddr(t)
	env := map[string]string{"DATABASE_URL": db.URL, "ADDR": addr, "SEED_USERS": "12", "SEED_PRODUCTS": "3"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- exampleapp.Monolith().Run(ctx, nil, func(k string) string { return env[k] }, &logs) }()

	s := &apptest.Server{URL: "http://" + addr, DB: db, ServedBy: "monolith"}
	waitHealthy(t, s.URL, done)
	got := s.Expect(t, http.MethodGet, "/api/users?limit=1000", nil, http.StatusOK).Object(t)
	if items, _ := got["items"].([]any); len(items) != 12 {
		t.Errorf("seeded users served: got %d, want 12", len(items))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after stop: got %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s of its context ending")
	}
	if _, err := http.Get(s.URL + "/health"); err == nil {
		t.Errorf("server still answers after stop")
	}
}

func TestRunBadSettings(t *testing.T) {
	db := pgtest.NewDB(t)
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "no database", env: map[string]string{}, want: "DATABASE_URL is not set"},
		{name: "bad seed", env: map[string]string{"DATABASE_URL": db.URL, "SEED_USERS": "many"}, want: `SEED_USERS must be a row count (a non-negative integer), got "many"`},
		{name: "negative seed", env: map[string]string{"DATABASE_URL": db.URL, "SEED_PRODUCTS": "-1"}, want: `SEED_PRODUCTS must be a row count`},
		{name: "unknown flag", env: map[string]string{"DATABASE_URL": db.URL}, args: []string{"--port=1"}, want: "flag provided but not defined: -port"},
		{name: "stray argument", env: map[string]string{"DATABASE_URL": db.URL}, args: []string{"serve"}, want: `unexpected arguments ["serve"]`},
		{name: "unreachable database", env: map[string]string{"DATABASE_URL": "postgres://nobody:secret-pw@127.0.0.1:1/x?connect_timeout=2"}, want: "connect to database"},
		{name: "address taken", env: map[string]string{"DATABASE_URL": db.URL, "ADDR": takenAddr(t)}, want: "set ADDR to a free address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := exampleapp.Monolith().Run(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out)
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("Run: got error %v, want one containing %q", err, tc.want)
			}
			if bytes.Contains([]byte(err.Error()+out.String()), []byte("secret-pw")) {
				t.Errorf("the database password was printed: %v %s", err, out.String())
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	err := exampleapp.Monolith().Run(context.Background(), []string{"-h"}, func(string) string { return "" }, &out)
	if err == nil || err.Error() != "flag: help requested" {
		t.Errorf("Run -h: got error %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"DATABASE_URL", "ADDR", "127.0.0.1:8000", "SEED_USERS", "SEED_PRODUCTS", "Example:"} {
		if !bytes.Contains(out.Bytes(), []byte(want)) {
			t.Errorf("help text lacks %q:\n%s", want, out.String())
		}
	}
}

func checkCount(tb testing.TB, s *apptest.Server, table string, want int) {
	tb.Helper()
	var n int
	if err := s.DB.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		tb.Fatalf("count %s: %v", table, err)
	}
	if n != want {
		tb.Errorf("rows in %s: got %d, want %d", table, n, want)
	}
}

// takenAddr returns an address a listener holds until the test ends.
func takenAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// waitHealthy polls /health until it answers 200, Run fails, or a deadline.
func waitHealthy(tb testing.TB, base string, done <-chan error) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			tb.Fatalf("Run ended before serving: %v", err)
		default:
		}
		if resp, err := http.Get(base + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("%s/health did not answer 200 within 30s", base)
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
