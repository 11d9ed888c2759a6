package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func newTestAdmin(tb testing.TB, token string, ready error) *httptest.Server {
	tb.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "strangler_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	s := New(Options{Gatherer: reg, Ready: func(context.Context) error { return ready }, TokenSource: "$TOKEN"})
	s.SetToken(token)
	s.HandleWrite("POST /admin/thing", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"done": "yes"})
	}))
	s.Handle("GET /admin/thing", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"thing": "1"})
	}))
	srv := httptest.NewServer(s)
	tb.Cleanup(srv.Close)
	return srv
}

func get(tb testing.TB, method, url, auth string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminAuth(t *testing.T) {
	cases := []struct {
		name       string
		token      string
		method     string
		auth       string
		wantStatus int
		wantBody   string
	}{
		{"write without token", "s3cret", "POST", "", 401, "missing bearer token"},
		{"write with basic auth", "s3cret", "POST", "Basic czNjcmV0", 401, "missing bearer token"},
		{"write with wrong token", "s3cret", "POST", "Bearer nope", 403, "wrong bearer token"},
		{"write with a longer wrong token", "s3cret", "POST", "Bearer s3cret-and-more", 403, "wrong bearer token"},
		{"write with the token", "s3cret", "POST", "Bearer s3cret", 200, `"done": "yes"`},
		{"write when no token is configured", "", "POST", "Bearer anything", 403, "set $TOKEN"},
		{"read needs no token", "s3cret", "GET", "", 200, `"thing": "1"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := newTestAdmin(t, c.token, nil)
			code, body := get(t, c.method, srv.URL+"/admin/thing", c.auth)
			if code != c.wantStatus || !strings.Contains(body, c.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", code, body, c.wantStatus, c.wantBody)
			}
		})
	}
}

func TestAdminProbes(t *testing.T) {
	cases := []struct {
		name       string
		path       string
		ready      error
		wantStatus int
		wantBody   string
	}{
		{"healthz", "/healthz", nil, 200, "ok"},
		{"readyz ready", "/readyz", nil, 200, "ready"},
		{"readyz not ready", "/readyz", errors.New("monolith: connection refused"), 503, "connection refused"},
		{"metrics", "/metrics", nil, 200, "strangler_test_total 1"},
		{"unknown", "/nope", nil, 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := newTestAdmin(t, "", c.ready)
			code, body := get(t, "GET", srv.URL+c.path, "")
			if code != c.wantStatus || !strings.Contains(body, c.wantBody) {
				t.Errorf("got %d %q, want %d containing %q", code, body, c.wantStatus, c.wantBody)
			}
		})
	}
}
