package proxyserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// slowService answers /api/slow after 2 s (sooner if its client goes away)
// and every other path at once, with X-Served-By: a.
func slowService(tb testing.TB) *httptest.Server {
	tb.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/slow" {
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("X-Served-By", "a")
		io.WriteString(w, "a")
	}))
	tb.Cleanup(s.Close)
	return s
}

// fastPathConfig is config with a breaker that opens on the service's first
// failure, a timeout well past the slow service's, and server.http1_fast_path
// as given.
func fastPathConfig(mono, svc string, fastPath bool) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
access_log: false
admin: {listen: 127.0.0.1:0}
server: {http1_fast_path: %t}
monolith: {url: %s}
services:
  a: {url: %s, timeout: 10s, breaker: {consecutive_failures: 1}}
routes:
  - {prefix: /api, service: a}
`, fastPath, mono, svc)
}

// metricLine returns the line of the metrics text that starts with name and
// holds every label given, or "" when there is none.
func metricLine(metrics, name string, labels ...string) string {
next:
	for line := range strings.SplitSeq(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		return line
	}
	return ""
}

// TestClientGoneThroughTheProxy checks that a client that gives up on a slow
// service is counted as 499 and is no failure of the service: its breaker,
// which opens on one failure, stays closed, and the next request goes to the
// service. With and without the HTTP/1.1 fast path.
func TestClientGoneThroughTheProxy(t *testing.T) {
	t.Parallel()
	for _, fastPath := range []bool{true, false} {
		t.Run(fmt.Sprintf("http1_fast_path=%t", fastPath), func(t *testing.T) {
			t.Parallel()
			mono := namedServer(t, "monolith", nil, nil)
			svc := slowService(t)
			srv, proxyURL, adminURL := startServer(t, fastPathConfig(mono.URL, svc.URL, fastPath), nil)

			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+"/api/slow", nil)
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("slow request: got %d, want the client to give up", resp.StatusCode)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("slow request: got %v, want %v", err, context.DeadlineExceeded)
			}

			var metrics string
			testkit.Eventually(t, 5*time.Second, "the request counted as 499", func() bool {
				_, metrics = adminDo(t, http.MethodGet, adminURL+"/metrics", "", "")
				return strings.HasSuffix(metricLine(metrics, "strangler_requests_total", `code="499"`, `route="/api"`), " 1")
			})
			for _, line := range strings.Split(metrics, "\n") {
				if strings.HasPrefix(line, "strangler_requests_total{") && !strings.Contains(line, `code="499"`) {
					t.Errorf("metrics: got %q, want the request counted as 499 only", line)
				}
			}
			if line := metricLine(metrics, "strangler_breaker_state", `service="a"`); !strings.HasSuffix(line, " 0") {
				t.Errorf("metrics: got %q, want the breaker of a closed (0)", line)
			}
			if got := srv.Proxy().Status().Services[0].Breaker; got != "closed" {
				t.Errorf("breaker: got %s, want closed", got)
			}
			if got := servedBy(t, proxyURL+"/api/next", "", nil); got != "a" {
				t.Errorf("next request: got served by %s, want a", got)
			}
		})
	}
}

// TestServesWithoutFastPath is a smoke test of server.http1_fast_path: false,
// where net/http's server serves alone: plain requests, a request with a
// body and Expect: 100-continue, and HTTP/1.0, on one configuration.
func TestServesWithoutFastPath(t *testing.T) {
	t.Parallel()
	mono := namedServer(t, "monolith", nil, nil)
	svc := slowService(t)
	_, proxyURL, _ := startServer(t, fastPathConfig(mono.URL, svc.URL, false), nil)
	for i := range 3 {
		if got := servedBy(t, proxyURL+"/api/x", "", nil); got != "a" {
			t.Errorf("request %d to /api: got served by %s, want a", i, got)
		}
		if got := servedBy(t, proxyURL+"/other", "", nil); got != "monolith" {
			t.Errorf("request %d to /other: got served by %s, want monolith", i, got)
		}
	}

	raw := []struct{ name, request string }{
		{"Expect: 100-continue", "POST /api/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"},
		{"HTTP/1.0", "GET /api/y HTTP/1.0\r\nHost: x\r\n\r\n"},
	}
	for _, r := range raw {
		c, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, r.request); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		for err == nil && resp.StatusCode == http.StatusContinue {
			resp, err = http.ReadResponse(br, nil)
		}
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK || string(b) != "a" {
			t.Errorf("%s: got %d %q (%v), want 200 %q", r.name, resp.StatusCode, b, err, "a")
		}
	}
}
