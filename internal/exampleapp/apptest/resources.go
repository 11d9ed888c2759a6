package apptest

import (
	"context"
	"fmt"
	"net/http"
	"testing"
)

// Users is the /api/users collection, served alike by the monolith and
// user-service.
func Users() Resource {
	return Resource{
		Path: "/api/users",
		Valid: func(i int) map[string]any {
			return map[string]any{"email": fmt.Sprintf("person%d@example.com", i), "username": fmt.Sprintf("person %d", i)}
		},
		Invalid: []InvalidCase{
			{Name: "email missing", Body: `{"username":"ann"}`, Field: "email"},
			{Name: "email empty", Body: `{"email":" ","username":"ann"}`, Field: "email"},
			{Name: "email without at", Body: `{"email":"ann.example.com","username":"ann"}`, Field: "email"},
			{Name: "email with a space", Body: `{"email":"ann smith@example.com","username":"ann"}`, Field: "email"},
			{Name: "email a number", Body: `{"email":5,"username":"ann"}`, Field: "email"},
			{Name: "username missing", Body: `{"email":"ann@example.com"}`, Field: "username"},
			{Name: "username empty", Body: `{"email":"ann@example.com","username":""}`, Field: "username"},
			{Name: "username null", Body: `{"email":"ann@example.com","username":null}`, Field: "username"},
		},
		Touched: "updated_at",
	}
}

// Products is the /api/products collection, served alike by the monolith and
// product-service.
func Products() Resource {
	return Resource{
		Path: "/api/products",
		Valid: func(i int) map[string]any {
			return map[string]any{"name": fmt.Sprintf("Widget %d", i), "price_cents": 100*i + 99, "stock": 3 * i}
		},
		Invalid: []InvalidCase{
			{Name: "name missing", Body: `{"price_cents":100,"stock":1}`, Field: "name"},
			{Name: "name empty", Body: `{"name":"","price_cents":100,"stock":1}`, Field: "name"},
			{Name: "price missing", Body: `{"name":"a","stock":1}`, Field: "price_cents"},
			{Name: "price negative", Body: `{"name":"a","price_cents":-1,"stock":1}`, Field: "price_cents"},
			{Name: "price a string", Body: `{"name":"a","price_cents":"100","stock":1}`, Field: "price_cents"},
			{Name: "price a fraction", Body: `{"name":"a","price_cents":1.5,"stock":1}`, Field: "price_cents"},
			{Name: "stock missing", Body: `{"name":"a","price_cents":100}`, Field: "stock"},
			{Name: "stock negative", Body: `{"name":"a","price_cents":100,"stock":-3}`, Field: "stock"},
			{Name: "stock too large", Body: `{"name":"a","price_cents":100,"stock":3000000000}`, Field: "stock"},
		},
		Touched: "updated_at",
	}
}

// RunUserConflicts checks that a duplicate email is refused with 409 naming
// the email field, on create and on update, and changes nothing.
func RunUserConflicts(t *testing.T, start func(testing.TB) *Server) {
	t.Helper()
	s := start(t)
	first := s.Create(t, "/api/users", map[string]any{"email": "ann@example.com", "username": "ann"})
	second := s.Create(t, "/api/users", map[string]any{"email": "bob@example.com", "username": "bob"})
	cases := []struct {
		name, method, path string
	}{
		{name: "create", method: http.MethodPost, path: "/api/users"},
		{name: "update", method: http.MethodPut, path: fmt.Sprintf("/api/users/%d", ID(t, second))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"email": "ann@example.com", "username": "someone else"}
			s.ExpectFieldError(t, tc.method, tc.path, body, http.StatusConflict, "email")
		})
	}
	got := s.Expect(t, http.MethodGet, fmt.Sprintf("/api/users/%d", ID(t, second)), nil, http.StatusOK).Object(t)
	CheckFields(t, got, map[string]any{"email": "bob@example.com", "username": "bob"})
	// Same email, own row: not a conflict.
	s.Expect(t, http.MethodPut, fmt.Sprintf("/api/users/%d", ID(t, first)),
		map[string]any{"email": "ann@example.com", "username": "ann 2"}, http.StatusOK)
}

// RunCopiedIDs checks that creates keep working after rows were copied into
// the app's table with explicit ids (as datasync does), which leaves the id
// sequence behind the data. insert copies rows with ids 1 to 5 when given
// those ids.
func RunCopiedIDs(t *testing.T, start func(testing.TB) *Server, r Resource, insert string) {
	t.Helper()
	s := start(t)
	ctx := context.Background()
	for id := 1; id <= 5; id++ {
		if _, err := s.DB.Pool.Exec(ctx, insert, id); err != nil {
			t.Fatalf("copy row %d: %v", id, err)
		}
	}
	for i, want := range []int64{6, 7} {
		body := r.Valid(100 + i)
		created := s.Create(t, r.Path, body)
		CheckFields(t, created, body)
		if got := ID(t, created); got != want {
			t.Errorf("id of create %d after copied rows 1..5: got %d, want %d", i+1, got, want)
		}
	}
	if ids, _ := listAll(t, s, r.Path, 0); len(ids) != 7 {
		t.Errorf("rows: got %d, want 7", len(ids))
	}
}
