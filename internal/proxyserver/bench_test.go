package proxyserver

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// discardWriter keeps nothing, so that the benchmark counts the proxy's
// allocations, not a recorder's.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

// BenchmarkHandler is the full request path of a server built from a
// config file (routing, rollout, guard, breaker, metrics; access log off)
// to real local backends: without a flag, and with a guarded flag at 50 %
// and header identity, with 64 users in turn (half of them on each
// backend).
func BenchmarkHandler(b *testing.B) {
	body := []byte(`{"id":12345,"email":"user12345@example.com","username":"user12345","created_at":"2024-01-02T03:04:05Z","roles":["reader"],"active":true}`)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(backend.Close)
	cases := []struct {
		name, route string
	}{
		{"no flag", "{prefix: /api/users, service: users}"},
		{"flag at 50%", "{prefix: /api/users, service: users, flag: users-migration}"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			cfg := fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0}
monolith: {url: %s}
services: {users: {url: %s}}
identity: [{header: X-User-ID}]
flags_file: flags.yaml
routes: [%s]
`, backend.URL, backend.URL, c.route)
			writeConfig(b, filepath.Join(dir, "strangler.yaml"), cfg)
			writeConfig(b, filepath.Join(dir, "flags.yaml"), `flags:
  users-migration:
    percentage: 50
    guard: {window: 60s, min_requests: 50, max_error_rate: 0.5}
`)
			srv, err := New(Options{
				ConfigPath: filepath.Join(dir, "strangler.yaml"),
				Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
				Getenv:     os.Getenv,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				srv.Proxy().Close()
				srv.closeFlags()
			})
			reqs := make([]*http.Request, 64)
			for i := range reqs {
				reqs[i] = httptest.NewRequest(http.MethodGet, "/api/users/12345", nil)
				reqs[i].RemoteAddr = "127.0.0.1:40000"
				reqs[i].Header.Set("X-User-ID", fmt.Sprintf("user-%d", i))
			}
			h := srv.Proxy()
			w := &discardWriter{h: make(http.Header)}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, reqs[i%len(reqs)])
				i++
			}
		})
	}
}
