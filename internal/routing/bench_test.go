package routing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

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

// BenchmarkScreen is what issue 16's request checks add to every request:
// the screen before routing and the header work of rewrite.
func BenchmarkScreen(b *testing.B) {
	cfg := mustConfig(b, `monolith: {url: http://127.0.0.1:1}
identity: [{header: X-User-ID}]
services:
  users: {url: http://127.0.0.1:2}
routes: [{prefix: /api/users, service: users}]
`)
	p, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Close)
	st := p.state.Load()
	req := httptest.NewRequest("GET", "/api/users/12345?x=1", nil)
	req.Header.Set("X-User-ID", "u-1")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	out := req.Header.Clone()
	ex := &exchange{st: st, route: st.table.Match(req.URL.Path)}
	b.ReportAllocs()
	for b.Loop() {
		if p.screen(req, ex) != nil {
			b.Fatal("refused")
		}
		dropUnderscores(out)
	}
}

// BenchmarkPeek is the liveness peek every reuse of a pooled upstream
// connection now pays.
func BenchmarkPeek(b *testing.B) {
	s := jsonBackend(b)
	t := newH1Transport(&http.Transport{}, strings.TrimPrefix(s.URL, "http://"), strings.TrimPrefix(s.URL, "http://"), time.Second)
	b.Cleanup(t.close)
	pc, err := t.getConn(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		pc.begin(ctx, time.Now()) // as getConn: the peek fails on a past deadline
		if !pc.alive() {
			b.Fatal("dead")
		}
	}
}
