package shadow

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMismatchHandler(t *testing.T) {
	service := newJSONServer(t, func(int) string { return `{"id": 1, "title": "Lamp"}` })
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := newFixture(t, Options{KeepMismatches: 2, Now: func() time.Time { return at }},
		Route{Name: "products", Config: Config{Percentage: 100}, Service: mustURL(t, service.URL), Monolith: mustURL(t, service.URL)},
		Route{Name: "users", Config: Config{Percentage: 100}, Service: mustURL(t, service.URL), Monolith: mustURL(t, service.URL)},
	)
	for _, p := range []string{"/p/1", "/p/2", "/p/3"} {
		f.s.Submit("products", Request{Method: "GET", Path: p}, jsonAnswer(`{"id": 1, "name": "Lamp"}`))
		f.s.Wait()
	}
	admin := httptest.NewServer(f.s.Handler())
	defer admin.Close()

	type listing struct {
		Routes []RouteReport `json:"routes"`
	}
	for _, tc := range []struct {
		name       string
		method     string
		query      string
		wantStatus int
		wantRoutes string // route:paths of its mismatches, newest first
	}{
		{name: "one route, newest first, two kept", method: "GET", query: "?route=products", wantStatus: 200, wantRoutes: "products:/p/3,/p/2"},
		{name: "every route", method: "GET", wantStatus: 200, wantRoutes: "products:/p/3,/p/2 users:"},
		{name: "unknown route", method: "GET", query: "?route=nope", wantStatus: 404},
		{name: "writes are refused", method: "POST", wantStatus: 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, admin.URL+"/admin/shadow/mismatches"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("got status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if tc.wantStatus != 200 {
				return
			}
			var got listing
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			var routes []string
			for _, r := range got.Routes {
				var paths []string
				for _, m := range r.Mismatches {
					paths = append(paths, m.Path)
				}
				routes = append(routes, r.Route+":"+strings.Join(paths, ","))
			}
			if s := strings.Join(routes, " "); s != tc.wantRoutes {
				t.Fatalf("got %s, want %s", s, tc.wantRoutes)
			}
			if m := got.Routes[0].Mismatches[0]; len(m.Diffs) != 2 || m.Diffs[0].Path != "$.name" || !m.At.Equal(at) {
				t.Fatalf("got mismatch %+v, want diffs at $.name and $.title, at %s", m, at)
			}
		})
	}
}
