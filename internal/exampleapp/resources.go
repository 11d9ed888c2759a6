package exampleapp

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// User is a row of the users resource. Its JSON field names are the
// contract of /api/users; its db tags match the users table.
type User struct {
	ID        int64     `json:"id" db:"id"`
	Email     string    `json:"email" db:"email"`
	Username  string    `json:"username" db:"username"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
}

// RowID implements Row.
func (u User) RowID() int64 { return u.ID }

// UserInput is the body of POST and PUT /api/users; both fields are
// required. Pointers tell a missing field from an empty one.
type UserInput struct {
	Email    *string `json:"email"`
	Username *string `json:"username"`
}

// Validate implements Input.
func (in UserInput) Validate() error {
	if err := requiredText("email", in.Email, 254); err != nil {
		return err
	}
	local, domain, ok := strings.Cut(*in.Email, "@")
	if !ok || local == "" || domain == "" || strings.ContainsAny(*in.Email, " \t\r\n") || strings.Contains(domain, "@") {
		return invalid("email", "must be an email address like name@example.com, got %q", *in.Email)
	}
	return requiredText("username", in.Username, 100)
}

// Values implements Input.
func (in UserInput) Values() []any { return []any{*in.Email, *in.Username} }

// UsersTable is the users resource; the monolith and user-service store it
// in identical users tables.
func UsersTable() *Table[User] {
	return &Table[User]{
		Name:     "users",
		Select:   "id, email, username, created_at, updated_at",
		Writable: []string{"email", "username"},
		Touch:    "updated_at",
		Constraints: map[string]Constraint{
			"users_email_key": {Field: "email", Message: "a user with this email already exists"},
		},
	}
}

// Product is a row of the products resource. Its JSON field names are the
// contract of /api/products, whatever the table calls its columns.
type Product struct {
	ID         int64     `json:"id" db:"id"`
	Name       string    `json:"name" db:"name"`
	PriceCents int64     `json:"price_cents" db:"price_cents"`
	Stock      int32     `json:"stock" db:"stock"`
	UpdatedAt  time.Time `json:"updated_at" db:"updated_at"`
}

// RowID implements Row.
func (p Product) RowID() int64 { return p.ID }

// ProductInput is the body of POST and PUT /api/products; every field is
// required.
type ProductInput struct {
	Name       *string `json:"name"`
	PriceCents *int64  `json:"price_cents"`
	Stock      *int32  `json:"stock"`
}

// Validate implements Input.
func (in ProductInput) Validate() error {
	if err := requiredText("name", in.Name, 200); err != nil {
		return err
	}
	if err := requiredRange("price_cents", in.PriceCents, 0, math.MaxInt64); err != nil {
		return err
	}
	return requiredRange("stock", in.Stock, 0, math.MaxInt32)
}

// Values implements Input.
func (in ProductInput) Values() []any { return []any{*in.Name, *in.PriceCents, *in.Stock} }

// ProductsTable is the products resource stored in table name, whose
// product name column is nameColumn: products.name in the monolith,
// catalog_items.title in product-service. The JSON field is name in both.
func ProductsTable(name, nameColumn string) *Table[Product] {
	return &Table[Product]{
		Name:     name,
		Select:   fmt.Sprintf("id, %s AS name, price_cents, stock, updated_at", nameColumn),
		Writable: []string{nameColumn, "price_cents", "stock"},
		Touch:    "updated_at",
	}
}

// Order is a row of the monolith's orders resource.
type Order struct {
	ID        int64     `json:"id" db:"id"`
	UserID    int64     `json:"user_id" db:"user_id"`
	ProductID int64     `json:"product_id" db:"product_id"`
	Quantity  int32     `json:"quantity" db:"quantity"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
}

// RowID implements Row.
func (o Order) RowID() int64 { return o.ID }

// OrderInput is the body of POST and PUT /api/orders; every field is
// required, and the user and product must exist.
type OrderInput struct {
	UserID    *int64 `json:"user_id"`
	ProductID *int64 `json:"product_id"`
	Quantity  *int32 `json:"quantity"`
}

// Validate implements Input.
func (in OrderInput) Validate() error {
	if err := requiredRange("user_id", in.UserID, 1, math.MaxInt64); err != nil {
		return err
	}
	if err := requiredRange("product_id", in.ProductID, 1, math.MaxInt64); err != nil {
		return err
	}
	return requiredRange("quantity", in.Quantity, 1, 10000)
}

// Values implements Input.
func (in OrderInput) Values() []any { return []any{*in.UserID, *in.ProductID, *in.Quantity} }

// OrdersTable is the monolith's orders resource.
func OrdersTable() *Table[Order] {
	return &Table[Order]{
		Name:     "orders",
		Select:   "id, user_id, product_id, quantity, created_at",
		Writable: []string{"user_id", "product_id", "quantity"},
		Constraints: map[string]Constraint{
			"orders_user_id_fkey":    {Field: "user_id", Message: "no user has this id"},
			"orders_product_id_fkey": {Field: "product_id", Message: "no product has this id"},
		},
	}
}

func requiredText(field string, v *string, maxLen int) error {
	switch {
	case v == nil:
		return invalid(field, "is required")
	case strings.TrimSpace(*v) == "":
		return invalid(field, "must not be empty")
	case len(*v) > maxLen:
		return invalid(field, "must be at most %d bytes long, got %d", maxLen, len(*v))
	}
	return nil
}

func requiredRange[N int32 | int64](field string, v *N, lo, hi N) error {
	switch {
	case v == nil:
		return invalid(field, "is required")
	case *v < lo || *v > hi:
		return invalid(field, "must be from %d to %d, got %d", lo, hi, *v)
	}
	return nil
}

// SeedUsers adds sample users to the users table until it holds n rows. It
// never removes rows; sample emails already taken are skipped.
func SeedUsers(ctx context.Context, q Querier, n int) error {
	_, err := q.Exec(ctx, `
		WITH s AS (SELECT count(*) AS have, coalesce(max(id), 0) AS top FROM users)
		INSERT INTO users (email, username, created_at, updated_at)
		SELECT 'user' || (s.top + g) || '@example.com', 'user' || (s.top + g),
		       now() - (g || ' minutes')::interval, now() - (g || ' seconds')::interval
		FROM s, generate_series(1, $1::bigint - s.have) AS g
		ON CONFLICT (email) DO NOTHING`, n)
	if err != nil {
		return fmt.Errorf("seed users: %w", err)
	}
	return nil
}

// SeedProducts adds sample products to the monolith's products table until
// it holds n rows. It never removes rows.
func SeedProducts(ctx context.Context, q Querier, n int) error {
	_, err := q.Exec(ctx, `
		WITH s AS (SELECT count(*) AS have, coalesce(max(id), 0) AS top FROM products)
		INSERT INTO products (name, price_cents, stock, updated_at)
		SELECT 'Product ' || (s.top + g), 99 + ((s.top + g) * 137) % 10000, ((s.top + g) * 7) % 500,
		       now() - (g || ' seconds')::interval
		FROM s, generate_series(1, $1::bigint - s.have) AS g`, n)
	if err != nil {
		return fmt.Errorf("seed products: %w", err)
	}
	return nil
}
