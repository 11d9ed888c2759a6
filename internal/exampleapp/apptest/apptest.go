// Package apptest tests example applications over HTTP against real
// PostgreSQL: it starts an app's handler on a fresh database and runs the
// REST contract every resource of the example apps shares.
package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/exampleapp"
	"github.com/strangler-fig/strangler/internal/pgtest"
)

// Server is an example app served by httptest on a fresh database.
type Server struct {
	// URL is the server's base URL.
	URL string
	// DB is the app's database.
	DB *pgtest.DB
	// ServedBy is the X-Served-By value every answer must carry.
	ServedBy string
}

// Start applies app's migrations to a fresh database and serves the app on
// it until the test ends.
func Start(tb testing.TB, app exampleapp.App) *Server {
	tb.Helper()
	db := pgtest.NewDB(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	if err := app.Setup(ctx, db.Pool, logger, nil); err != nil {
		tb.Fatalf("set up %s: %v", app.Name, err)
	}
	srv := httptest.NewServer(app.Handler(db.Pool, logger))
	tb.Cleanup(srv.Close)
	return &Server{URL: srv.URL, DB: db, ServedBy: app.Name}
}

// Response is an answer read in full.
type Response struct {
	// Status is the answer's status code.
	Status int
	// Header holds the answer's headers.
	Header http.Header
	// Body is the whole body.
	Body []byte
}

// Object decodes the body as a JSON object, numbers kept as json.Number.
func (r Response) Object(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("decode answer %q: %v", r.Body, err)
	}
	return m
}

// Do sends a request with body (a string is sent as is, anything else as
// JSON, nil as no body) and checks that the answer carries X-Served-By.
func (s *Server) Do(tb testing.TB, method, path string, body any) Response {
	tb.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		data, err := json.Marshal(b)
		if err != nil {
			tb.Fatalf("encode request body: %v", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		tb.Fatalf("new request %s %s: %v", method, path, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	if got := resp.Header.Get("X-Served-By"); got != s.ServedBy {
		tb.Errorf("%s %s: X-Served-By: got %q, want %q", method, path, got, s.ServedBy)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// Expect sends a request like Do and fails the test unless the status is
// want. It returns the answer.
func (s *Server) Expect(tb testing.TB, method, path string, body any, want int) Response {
	tb.Helper()
	r := s.Do(tb, method, path, body)
	if r.Status != want {
		tb.Fatalf("%s %s: status: got %d, want %d (body %s)", method, path, r.Status, want, r.Body)
	}
	return r
}

// ExpectFieldError sends a request and checks that it is refused with
// status want and a JSON error naming field.
func (s *Server) ExpectFieldError(tb testing.TB, method, path string, body any, want int, field string) {
	tb.Helper()
	r := s.Expect(tb, method, path, body, want)
	obj := r.Object(tb)
	if got := obj["field"]; got != field {
		tb.Errorf("%s %s: error field: got %v, want %q (body %s)", method, path, got, field, r.Body)
	}
	if msg, _ := obj["error"].(string); msg == "" {
		tb.Errorf("%s %s: error message is empty (body %s)", method, path, r.Body)
	}
}

// Create posts body to path, expects 201, and returns the created object.
func (s *Server) Create(tb testing.TB, path string, body any) map[string]any {
	tb.Helper()
	return s.Expect(tb, http.MethodPost, path, body, http.StatusCreated).Object(tb)
}

// ID returns an object's id.
func ID(tb testing.TB, obj map[string]any) int64 {
	tb.Helper()
	n, ok := obj["id"].(json.Number)
	if !ok {
		tb.Fatalf("object has no numeric id: %v", obj)
	}
	id, err := n.Int64()
	if err != nil || id < 1 {
		tb.Fatalf("object id %v is not a positive integer", n)
	}
	return id
}

// CheckFields fails the test unless every field of want has the same JSON
// value in got.
func CheckFields(tb testing.TB, got, want map[string]any) {
	tb.Helper()
	for k, w := range want {
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(got[k])
		if !bytes.Equal(wj, gj) {
			tb.Errorf("field %s: got %s, want %s", k, gj, wj)
		}
	}
}
