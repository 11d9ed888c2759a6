package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/strangler-fig/strangler/internal/exampleapp"
	"github.com/strangler-fig/strangler/internal/exampleapp/apptest"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func start(tb testing.TB) *apptest.Server { return apptest.Start(tb, exampleapp.ProductService()) }

func TestProductsContract(t *testing.T) { apptest.RunContract(t, start, apptest.Products()) }

func TestCreateAfterCopiedRows(t *testing.T) {
	apptest.RunCopiedIDs(t, start, apptest.Products(),
		`INSERT INTO catalog_items (id, title, price_cents, stock) VALUES ($1, 'copied', 100, 1)`)
}

// The service keeps the monolith's JSON (name) over its own column (title),
// both ways.
func TestNameIsStoredAsTitle(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	created := s.Create(t, "/api/products", map[string]any{"name": "Lamp", "price_cents": 2500, "stock": 4})
	var title string
	if err := s.DB.Pool.QueryRow(ctx, "SELECT title FROM catalog_items WHERE id = $1", apptest.ID(t, created)).Scan(&title); err != nil {
		t.Fatalf("read catalog_items: %v", err)
	}
	if title != "Lamp" {
		t.Errorf("catalog_items.title: got %q, want %q", title, "Lamp")
	}

	if _, err := s.DB.Pool.Exec(ctx, "INSERT INTO catalog_items (id, title, price_cents, stock) VALUES (40, 'Chair', 9900, 2)"); err != nil {
		t.Fatalf("insert catalog_items: %v", err)
	}
	got := s.Expect(t, http.MethodGet, fmt.Sprintf("/api/products/%d", 40), nil, http.StatusOK).Object(t)
	apptest.CheckFields(t, got, map[string]any{"id": 40, "name": "Chair", "price_cents": 9900, "stock": 2})
	if _, ok := got["title"]; ok {
		t.Errorf("answer has a title field: %v; want only name", got)
	}
}
