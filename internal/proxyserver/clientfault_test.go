package proxyserver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/toggles"
)

// TestClientBodyFaultsDoNotTripTheGuard pins issue 16, finding 2, through
// the whole proxy: 12 POSTs with a malformed or cut-short body tripped a
// guard set to min_requests 5, max_error_rate 0.5, and the flag was written
// to 0 %. They are answered 400 and tell the guard nothing.
func TestClientBodyFaultsDoNotTripTheGuard(t *testing.T) {
	var failing atomic.Bool
	svc := switchableServer(t, &failing)
	proxyURL, adminURL, _ := startGuarded(t, svc.URL, `flags:
  users-migration:
    percentage: 100
    guard: {window: 1s, min_requests: 5, max_error_rate: 0.5}
`)
	addr := strings.TrimPrefix(proxyURL, "http://")
	bodies := []string{
		"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
		"Content-Length: 100\r\n\r\n0123456789",
	}
	for i := range 12 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "POST /api/users HTTP/1.1\r\nHost: shop.example\r\nX-User-ID: user-%d\r\n%s", i, bodies[i%2])
		c.(*net.TCPConn).CloseWrite()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("faulty POST %d: got %v (%v), want 400", i, resp, err)
		}
		c.Close()
	}
	// Then a few good requests in the same window: the guard evaluates a
	// window that holds them, and would trip on the faulty ones were they
	// counted (12 errors of 18).
	for i := range 6 {
		req, _ := http.NewRequest(http.MethodGet, proxyURL+"/api/users", nil)
		req.Header.Set("X-User-ID", fmt.Sprintf("good-%d", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	v := waitFlag(t, adminURL, "users-migration", nil, func(v toggles.FlagView) bool {
		g := v.State.Guard
		return g != nil && (g.Tripped || g.LastWindow != nil && g.LastWindow.Requests > 0)
	})
	if g := v.State.Guard; g.Tripped || v.Percentage != 100 {
		t.Fatalf("guard: got %s at %v %%, want holding at 100 %%", v.State.GuardSummary, v.Percentage)
	}
	if w := v.State.Guard.LastWindow; w.Errors != 0 {
		t.Errorf("guard window: got %d errors of %d requests, want 0", w.Errors, w.Requests)
	}
}
