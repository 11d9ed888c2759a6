package exampleapp

import (
	"embed"
	"log/slog"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations holds each app's schema in a folder named after the app.
//
//go:embed migrations
var migrations embed.FS

// Monolith is the legacy app: users, products and orders in one database
// (schema: migrations/monolith), with SEED_USERS and SEED_PRODUCTS.
func Monolith() App {
	return App{
		Name:        "monolith",
		Summary:     "the legacy app of the Strangler demo (users, products, orders)",
		DefaultAddr: "127.0.0.1:8000",
		Migrations:  MustSub(migrations, "migrations/monolith"),
		Routes: func(mux *http.ServeMux, pool *pgxpool.Pool, logger *slog.Logger) {
			Mount[User, UserInput](mux, "/api/users", pool, UsersTable(), logger)
			Mount[Product, ProductInput](mux, "/api/products", pool, ProductsTable("products", "name"), logger)
			Mount[Order, OrderInput](mux, "/api/orders", pool, OrdersTable(), logger)
		},
		Seeds: []Seed{
			{Env: "SEED_USERS", Run: SeedUsers},
			{Env: "SEED_PRODUCTS", Run: SeedProducts},
		},
	}
}

// UserService is the new users service: /api/users from a users table with
// the monolith's columns (schema: migrations/user-service), so datasync
// copies it without a mapping.
func UserService() App {
	return App{
		Name:        "user-service",
		Summary:     "the users service of the Strangler demo",
		DefaultAddr: "127.0.0.1:8001",
		Migrations:  MustSub(migrations, "migrations/user-service"),
		Routes: func(mux *http.ServeMux, pool *pgxpool.Pool, logger *slog.Logger) {
			Mount[User, UserInput](mux, "/api/users", pool, UsersTable(), logger)
		},
	}
}

// ProductService is the new products service: /api/products with the
// monolith's JSON, stored in catalog_items with a title column where the
// monolith has products.name (schema: migrations/product-service).
func ProductService() App {
	return App{
		Name:        "product-service",
		Summary:     "the products service of the Strangler demo",
		DefaultAddr: "127.0.0.1:8002",
		Migrations:  MustSub(migrations, "migrations/product-service"),
		Routes: func(mux *http.ServeMux, pool *pgxpool.Pool, logger *slog.Logger) {
			Mount[Product, ProductInput](mux, "/api/products", pool, ProductsTable("catalog_items", "title"), logger)
		},
	}
}
