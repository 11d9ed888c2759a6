package exampleapp_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/strangler-fig/strangler/internal/exampleapp"
)

// FuzzDecodeInput checks that any request body either decodes into a valid
// input or is refused with a *FieldError naming a field, and never panics.
func FuzzDecodeInput(f *testing.F) {
	for _, seed := range []string{
		`{"email":"ann@example.com","username":"ann"}`,
		`{"name":"Lamp","price_cents":2500,"stock":4}`,
		`{"user_id":1,"product_id":1,"quantity":2}`,
		`{"x":`, `hello`, ``, `[1]`, `null`, `{"stock":3000000000}`, `{"price_cents":1.5}`,
		`{"email":"a@b"}{"email":"a@b"}`, `{"email":"a b@c","username":" "}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		check := func(name string, in interface{ Validate() error }, decode func(*http.Request) error) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			err := decode(r)
			if err == nil {
				err = in.Validate()
			}
			var fe *exampleapp.FieldError
			if err != nil && (!errors.As(err, &fe) || fe.Field == "") {
				t.Errorf("%s: body %q: got %T %v, want nil or a FieldError naming a field", name, body, err, err)
			}
		}
		w := httptest.NewRecorder()
		var u exampleapp.UserInput
		check("user", &u, func(r *http.Request) error { return exampleapp.DecodeJSON(w, r, &u) })
		var p exampleapp.ProductInput
		check("product", &p, func(r *http.Request) error { return exampleapp.DecodeJSON(w, r, &p) })
		var o exampleapp.OrderInput
		check("order", &o, func(r *http.Request) error { return exampleapp.DecodeJSON(w, r, &o) })
	})
}
