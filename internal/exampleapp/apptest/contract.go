package apptest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Resource describes a REST collection for RunContract.
type Resource struct {
	// Path is the collection's path, e.g. "/api/users".
	Path string
	// Valid returns the i-th valid create/update body; bodies with distinct
	// i must not clash on unique fields.
	Valid func(i int) map[string]any
	// Invalid lists bodies refused with 400 naming a field, beyond the
	// contract's own malformed-JSON cases.
	Invalid []InvalidCase
	// Touched, if set, is a timestamp field every update moves forward.
	Touched string
}

// InvalidCase is a body that must be refused with 400 naming Field.
type InvalidCase struct {
	// Name names the subtest.
	Name string
	// Body is the raw request body.
	Body string
	// Field is the field the 400 answer must name.
	Field string
}

// RunContract checks the REST contract of one collection on a fresh server
// per subtest made by start (the subtests run in parallel): create, read, list with keyset pagination,
// update, delete, 400 naming the field, 404 for unknown ids.
func RunContract(t *testing.T, start func(testing.TB) *Server, r Resource) {
	t.Helper()

	t.Run("create and get", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		body := r.Valid(1)
		resp := s.Expect(t, http.MethodPost, r.Path, body, http.StatusCreated)
		created := resp.Object(t)
		CheckFields(t, created, body)
		id := ID(t, created)
		if got, want := resp.Header.Get("Location"), fmt.Sprintf("%s/%d", r.Path, id); got != want {
			t.Errorf("Location: got %q, want %q", got, want)
		}
		got := s.Expect(t, http.MethodGet, fmt.Sprintf("%s/%d", r.Path, id), nil, http.StatusOK).Object(t)
		CheckFields(t, got, created)
	})

	t.Run("list pages", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		var want []int64
		for i := range 7 {
			want = append(want, ID(t, s.Create(t, r.Path, r.Valid(i+1))))
		}
		cases := []struct {
			name  string
			limit int
			pages []int
		}{
			{name: "limit 3", limit: 3, pages: []int{3, 3, 1}},
			{name: "limit 7", limit: 7, pages: []int{7}},
			{name: "limit 1", limit: 1, pages: []int{1, 1, 1, 1, 1, 1, 1}},
			{name: "default limit", limit: 0, pages: []int{7}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				got, sizes := listAll(t, s, r.Path, tc.limit)
				if fmt.Sprint(sizes) != fmt.Sprint(tc.pages) {
					t.Errorf("page sizes: got %v, want %v", sizes, tc.pages)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("ids: got %v, want %v", got, want)
				}
			})
		}
		t.Run("after the last id", func(t *testing.T) {
			page := listPage(t, s, fmt.Sprintf("%s?after=%d", r.Path, want[len(want)-1]))
			if len(page.Items) != 0 || page.NextAfter != nil {
				t.Errorf("got %d items and next_after %v, want none and null", len(page.Items), page.NextAfter)
			}
		})
	})

	t.Run("update", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		created := s.Create(t, r.Path, r.Valid(1))
		id := ID(t, created)
		item := fmt.Sprintf("%s/%d", r.Path, id)
		body := r.Valid(2)
		updated := s.Expect(t, http.MethodPut, item, body, http.StatusOK).Object(t)
		CheckFields(t, updated, body)
		if got := ID(t, updated); got != id {
			t.Errorf("id after update: got %d, want %d", got, id)
		}
		if r.Touched != "" {
			before, after := timeField(t, created, r.Touched), timeField(t, updated, r.Touched)
			if !after.After(before) {
				t.Errorf("%s after update: got %v, want later than %v", r.Touched, after, before)
			}
		}
		CheckFields(t, s.Expect(t, http.MethodGet, item, nil, http.StatusOK).Object(t), updated)
	})

	t.Run("delete", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		keep := ID(t, s.Create(t, r.Path, r.Valid(1)))
		item := fmt.Sprintf("%s/%d", r.Path, ID(t, s.Create(t, r.Path, r.Valid(2))))
		if resp := s.Expect(t, http.MethodDelete, item, nil, http.StatusNoContent); len(resp.Body) != 0 {
			t.Errorf("delete answer body: got %q, want none", resp.Body)
		}
		s.Expect(t, http.MethodGet, item, nil, http.StatusNotFound)
		s.Expect(t, http.MethodDelete, item, nil, http.StatusNotFound)
		if ids, _ := listAll(t, s, r.Path, 0); fmt.Sprint(ids) != fmt.Sprint([]int64{keep}) {
			t.Errorf("ids after delete: got %v, want [%d]", ids, keep)
		}
	})

	t.Run("unknown id", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		item := r.Path + "/999999"
		for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
			var body any
			if method == http.MethodPut {
				body = r.Valid(1)
			}
			resp := s.Expect(t, method, item, body, http.StatusNotFound)
			if msg, _ := resp.Object(t)["error"].(string); msg == "" {
				t.Errorf("%s %s: got no error message in %s", method, item, resp.Body)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		item := fmt.Sprintf("%s/%d", r.Path, ID(t, s.Create(t, r.Path, r.Valid(1))))
		valid, _ := json.Marshal(r.Valid(2))
		cases := []struct {
			name, method, path, body, field string
		}{
			{name: "malformed JSON", method: http.MethodPost, path: r.Path, body: `{"x":`, field: "body"},
			{name: "not JSON", method: http.MethodPost, path: r.Path, body: `hello`, field: "body"},
			{name: "empty body", method: http.MethodPost, path: r.Path, body: ``, field: "body"},
			{name: "array body", method: http.MethodPost, path: r.Path, body: `[1]`, field: "body"},
			{name: "two objects", method: http.MethodPost, path: r.Path, body: string(valid) + string(valid), field: "body"},
			{name: "malformed JSON on update", method: http.MethodPut, path: item, body: `{`, field: "body"},
			{name: "id not a number", method: http.MethodGet, path: r.Path + "/abc", field: "id"},
			{name: "id zero", method: http.MethodDelete, path: r.Path + "/0", field: "id"},
			{name: "update id not a number", method: http.MethodPut, path: r.Path + "/x1", body: string(valid), field: "id"},
			{name: "limit zero", method: http.MethodGet, path: r.Path + "?limit=0", field: "limit"},
			{name: "limit too large", method: http.MethodGet, path: r.Path + "?limit=100000", field: "limit"},
			{name: "limit not a number", method: http.MethodGet, path: r.Path + "?limit=ten", field: "limit"},
			{name: "after negative", method: http.MethodGet, path: r.Path + "?after=-1", field: "after"},
			{name: "after not a number", method: http.MethodGet, path: r.Path + "?after=abc", field: "after"},
		}
		for _, c := range r.Invalid {
			cases = append(cases, struct{ name, method, path, body, field string }{
				name: "create " + c.Name, method: http.MethodPost, path: r.Path, body: c.Body, field: c.Field})
			cases = append(cases, struct{ name, method, path, body, field string }{
				name: "update " + c.Name, method: http.MethodPut, path: item, body: c.Body, field: c.Field})
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var body any
				if tc.method != http.MethodGet && tc.method != http.MethodDelete {
					body = tc.body
				}
				s.ExpectFieldError(t, tc.method, tc.path, body, http.StatusBadRequest, tc.field)
			})
		}
		if ids, _ := listAll(t, s, r.Path, 0); len(ids) != 1 {
			t.Errorf("rows after refused requests: got %d, want 1", len(ids))
		}
	})

	t.Run("health and unknown paths", func(t *testing.T) {
		t.Parallel()
		s := start(t)
		health := s.Expect(t, http.MethodGet, "/health", nil, http.StatusOK).Object(t)
		if health["status"] != "ok" {
			t.Errorf("health status: got %v, want ok", health["status"])
		}
		// Errors are JSON everywhere, also where no route matches.
		for _, req := range []struct {
			method, path string
			want         int
		}{
			{http.MethodGet, "/no/such/path", http.StatusNotFound},
			{http.MethodPatch, r.Path, http.StatusMethodNotAllowed},
		} {
			resp := s.Expect(t, req.method, req.path, "{}", req.want)
			if msg, _ := resp.Object(t)["error"].(string); msg == "" {
				t.Errorf("%s %s: want a JSON error, got body %s", req.method, req.path, resp.Body)
			}
		}
	})
}

type page struct {
	Items     []map[string]any `json:"items"`
	NextAfter *json.Number     `json:"next_after"`
}

func listPage(tb testing.TB, s *Server, path string) page {
	tb.Helper()
	resp := s.Expect(tb, http.MethodGet, path, nil, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Errorf("GET %s: Content-Type: got %q, want application/json", path, ct)
	}
	var p page
	dec := json.NewDecoder(strings.NewReader(string(resp.Body)))
	dec.UseNumber()
	if err := dec.Decode(&p); err != nil {
		tb.Fatalf("GET %s: decode %s: %v", path, resp.Body, err)
	}
	if p.Items == nil {
		tb.Fatalf("GET %s: got no items array in %s", path, resp.Body)
	}
	return p
}

// listAll follows next_after from the first page to the last and returns the
// ids seen and the size of each page. limit 0 leaves the limit unset.
func listAll(tb testing.TB, s *Server, path string, limit int) (ids []int64, sizes []int) {
	tb.Helper()
	after := ""
	for range 100 {
		q := []string{}
		if limit > 0 {
			q = append(q, fmt.Sprintf("limit=%d", limit))
		}
		if after != "" {
			q = append(q, "after="+after)
		}
		u := path
		if len(q) > 0 {
			u += "?" + strings.Join(q, "&")
		}
		p := listPage(tb, s, u)
		sizes = append(sizes, len(p.Items))
		for _, it := range p.Items {
			ids = append(ids, ID(tb, it))
		}
		if p.NextAfter == nil {
			return ids, sizes
		}
		if last := ids[len(ids)-1]; p.NextAfter.String() != fmt.Sprint(last) {
			tb.Fatalf("GET %s: next_after: got %s, want the last id %d", u, p.NextAfter, last)
		}
		after = p.NextAfter.String()
	}
	tb.Fatalf("GET %s: more than 100 pages; next_after does not advance", path)
	return nil, nil
}

func timeField(tb testing.TB, obj map[string]any, field string) time.Time {
	tb.Helper()
	s, _ := obj[field].(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatalf("field %s: got %v, want an RFC 3339 time", field, obj[field])
	}
	return ts
}
