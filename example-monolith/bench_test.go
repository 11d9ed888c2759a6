package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/strangler-fig/strangler/internal/exampleapp"
	"github.com/strangler-fig/strangler/internal/exampleapp/apptest"
)

// The monolith's own cost per request, measured end to end over HTTP and real
// PostgreSQL: the baseline the proxy's overhead is measured against.

func BenchmarkGetUser(b *testing.B) {
	s := seeded(b, 1000)
	benchGet(b, s, func(i int) string { return fmt.Sprintf("/api/users/%d", i%1000+1) })
}

func BenchmarkListUsers50(b *testing.B) {
	s := seeded(b, 1000)
	benchGet(b, s, func(i int) string { return fmt.Sprintf("/api/users?limit=50&after=%d", (i*50)%950) })
}

func BenchmarkCreateUser(b *testing.B) {
	s := start(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		s.Expect(b, http.MethodPost, "/api/users",
			map[string]any{"email": fmt.Sprintf("bench%d@example.com", i), "username": "bench"}, http.StatusCreated)
	}
}

func seeded(b *testing.B, users int) *apptest.Server {
	b.Helper()
	s := start(b)
	if err := exampleapp.SeedUsers(context.Background(), s.DB.Pool, users); err != nil {
		b.Fatal(err)
	}
	return s
}

func benchGet(b *testing.B, s *apptest.Server, path func(int) string) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer() // not the set-up
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			resp, err := http.Get(s.URL + path(i))
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("GET %s: got %d, want 200", path(i), resp.StatusCode)
				return
			}
		}
	})
}
