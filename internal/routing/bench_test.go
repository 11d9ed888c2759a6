package routing

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{4, 200} {
		routes := []*Route{{Prefix: "/api/users"}, {Prefix: "/api"}}
		for i := len(routes); i < n; i++ {
			routes = append(routes, &Route{Prefix: fmt.Sprintf("/api/v1/resource%03d", i)})
		}
		table := NewTable(routes)
		paths := []struct{ name, path string }{
			{"hit", "/api/users/12345"},
			{"parent", "/api/orders/1"},
			{"miss", "/static/app.js"},
		}
		for _, p := range paths {
			b.Run(fmt.Sprintf("routes=%d/%s", n, p.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if table.Match(p.path) == nil && p.name != "miss" {
						b.Fatal("no match")
					}
				}
			})
		}
	}
}

// discardWriter is a ResponseWriter that keeps nothing, so that the
// benchmark counts the proxy's allocations, not a recorder's.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

func jsonBackend(b *testing.B) *httptest.Server {
	b.Helper()
	body := []byte(`{"id":12345,"email":"user12345@example.com","username":"user12345","created_at":"2024-01-02T03:04:05Z","updated_at":"2024-01-02T03:04:05Z","roles":["reader"],"active":true,"plan":"basic"}`)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	b.Cleanup(s.Close)
	return s
}

func serveLoop(b *testing.B, h http.Handler, path string) {
	b.Helper()
	req := httptest.NewRequest("GET", path, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	w := &discardWriter{h: make(http.Header)}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
}

// BenchmarkProxy is the full handler path (routing, rollout, breaker,
// metrics, access log off) to a real local backend.
func BenchmarkProxy(b *testing.B) {
	backend := jsonBackend(b)
	cfg := mustConfig(b, fmt.Sprintf(`access_log: false
monolith: {url: %s}
services:
  users: {url: %s}
routes: [{prefix: /api/users, service: users}]
`, backend.URL, backend.URL))
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	b.Run("service", func(b *testing.B) { serveLoop(b, p, "/api/users/12345?x=1") })
	b.Run("monolith", func(b *testing.B) { serveLoop(b, p, "/orders/1") })
}

// BenchmarkPlainReverseProxy is the baseline: httputil.ReverseProxy with
// nothing but a tuned transport.
func BenchmarkPlainReverseProxy(b *testing.B) {
	backend := jsonBackend(b)
	u, _ := url.Parse(backend.URL)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConnsPerHost: 1024},
	}
	serveLoop(b, rp, "/api/users/12345?x=1")
}
