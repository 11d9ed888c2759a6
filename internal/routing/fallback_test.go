package routing

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// failingService starts a "users" service that fails the way reason says:
// connect_error (nothing listens), timeout (headers later than the 500ms
// timeout), status_5xx (503), reset (the connection is closed after the
// request is read), or breaker_open (503, with a breaker that opens on the
// first failure, so tests send one request first to open it).
func failingService(tb testing.TB, reason string) (url string, svc *backend) {
	tb.Helper()
	switch reason {
	case "connect_error":
		return closedURL(tb), nil
	case "timeout":
		svc = newBackend(tb, "users", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		})
	case "status_5xx", "breaker_open":
		svc = newBackend(tb, "users", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "users is down")
		})
	case "reset":
		svc = newBackend(tb, "users", func(w http.ResponseWriter, r *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			}
		})
	default:
		tb.Fatalf("unknown failure %q", reason)
	}
	return svc.URL, svc
}

func fallbackConfig(mono, users, routeExtra string) string {
	return fmt.Sprintf(`monolith: {url: %s, timeout: 5s}
services:
  users:
    url: %s
    timeout: 500ms
    breaker: {consecutive_failures: 1, open_for: 1m}
routes:
  - prefix: /api/users
    service: users
%s`, mono, users, routeExtra)
}

// TestFallback covers every reason for safe and unsafe requests, and counts
// the monolith's writes: a write that may have reached the service is never
// replayed to the monolith.
func TestFallback(t *testing.T) {
	cases := []struct {
		name       string
		failure    string
		method     string
		header     http.Header
		routeExtra string
		wantStatus int
		wantBy     string
		wantReason string // fallback metric that must have been counted
	}{
		{"GET connect_error", "connect_error", "GET", nil, "", 200, "monolith", "connect_error"},
		{"GET timeout", "timeout", "GET", nil, "", 200, "monolith", "timeout"},
		{"GET status_5xx", "status_5xx", "GET", nil, "", 200, "monolith", "status_5xx"},
		{"GET reset counts as timeout", "reset", "GET", nil, "", 200, "monolith", "timeout"},
		{"GET breaker_open", "breaker_open", "GET", nil, "", 200, "monolith", "breaker_open"},
		{"POST connect_error", "connect_error", "POST", nil, "", 200, "monolith", "connect_error"},
		{"POST timeout not replayed", "timeout", "POST", nil, "", 504, "", ""},
		{"POST status_5xx gets the service's answer", "status_5xx", "POST", nil, "", 503, "users", ""},
		{"POST reset not replayed", "reset", "POST", nil, "", 502, "", ""},
		{"POST breaker_open", "breaker_open", "POST", nil, "", 200, "monolith", "breaker_open"},
		{"POST Idempotency-Key timeout", "timeout", "POST", http.Header{"Idempotency-Key": {"k1"}}, "", 200, "monolith", "timeout"},
		{"POST Idempotency-Key status_5xx", "status_5xx", "POST", http.Header{"Idempotency-Key": {"k1"}}, "", 200, "monolith", "status_5xx"},
		{"PUT replay_unsafe status_5xx", "status_5xx", "PUT", nil, "    replay_unsafe: true\n", 200, "monolith", "status_5xx"},
		{"GET status_5xx not listed", "status_5xx", "GET", nil, "    fallback: [connect_error]\n", 503, "users", ""},
		{"GET timeout not listed", "timeout", "GET", nil, "    fallback: [status_5xx]\n", 504, "", ""},
		{"GET connect_error not listed", "connect_error", "GET", nil, "    fallback: []\n", 502, "", ""},
		{"GET breaker_open not listed", "breaker_open", "GET", nil, "    fallback: [status_5xx]\n", 503, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mono := newBackend(t, "monolith", nil)
			url, svc := failingService(t, c.failure)
			tp := newTestProxy(t, fallbackConfig(mono.URL, url, c.routeExtra))
			body := ""
			if c.method != "GET" {
				body = `{"email":"a@example.com"}`
			}
			if c.failure == "breaker_open" {
				// One failure opens the breaker (a GET, which falls back).
				tp.do(t, "GET", "/api/users/0", "", nil)
				if got := tp.Status().Services[0].Breaker; got != "open" {
					t.Fatalf("breaker: got %s, want open", got)
				}
			}
			svcBefore, monoBefore := int64(0), mono.hits.Load()
			if svc != nil {
				svcBefore = svc.hits.Load()
			}

			a := tp.do(t, c.method, "/api/users/1?q=2", body, c.header)

			if a.status != c.wantStatus || a.servedBy != c.wantBy {
				t.Fatalf("got %d from %q (%q), want %d from %q", a.status, a.servedBy, a.body, c.wantStatus, c.wantBy)
			}
			monoGot := mono.hits.Load() - monoBefore
			if c.wantBy == "monolith" {
				if monoGot != 1 {
					t.Errorf("monolith requests: got %d, want 1", monoGot)
				}
				r, got := mono.lastRequest()
				if string(got) != body || r.URL.RequestURI() != "/api/users/1?q=2" {
					t.Errorf("monolith got %s %q, want /api/users/1?q=2 %q", r.URL.RequestURI(), got, body)
				}
			} else if monoGot != 0 {
				t.Errorf("monolith requests: got %d, want 0 (writes %d)", monoGot, mono.writes.Load())
			}
			if c.failure == "breaker_open" && svc.hits.Load() != svcBefore {
				t.Errorf("service requests while the breaker is open: got %d, want 0", svc.hits.Load()-svcBefore)
			}
			for _, reason := range []string{"connect_error", "timeout", "status_5xx", "breaker_open"} {
				want := 0.0
				if reason == c.wantReason {
					want = 1
				}
				if c.failure == "breaker_open" && reason == "status_5xx" {
					want = 1 // the request that opened the breaker
				}
				if got := tp.fallbacks("/api/users", reason); got != want {
					t.Errorf("fallbacks_total{reason=%s}: got %v, want %v", reason, got, want)
				}
			}
		})
	}
}

// TestFallbackLargeBodyStreams pins that a body larger than max_replay_body is
// streamed to the service and so loses the fallbacks that need a replay.
func TestFallbackLargeBodyStreams(t *testing.T) {
	cases := []struct {
		name       string
		size       int
		wantStatus int
		wantBy     string
	}{
		{"small body replayed", 1024, 200, "monolith"},
		{"large body not replayed", 1025, 503, "users"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mono := newBackend(t, "monolith", nil)
			svcURL, svc := failingService(t, "status_5xx")
			tp := newTestProxy(t, "max_replay_body: 1KiB\n"+fallbackConfig(mono.URL, svcURL, ""))
			body := strings.Repeat("x", c.size)
			a := tp.do(t, "POST", "/api/users", body, http.Header{"Idempotency-Key": {"k"}})
			if a.status != c.wantStatus || a.servedBy != c.wantBy {
				t.Fatalf("got %d from %q, want %d from %q", a.status, a.servedBy, c.wantStatus, c.wantBy)
			}
			_, got := svc.lastRequest()
			if len(got) != c.size {
				t.Errorf("service body: got %d bytes, want %d", len(got), c.size)
			}
		})
	}
}

// TestClientCancelIsNotAFailure pins that a client giving up neither counts
// against the breaker nor sends the request to the monolith.
func TestClientCancelIsNotAFailure(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	arrived := make(chan struct{}, 1)
	users := newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
	})
	tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s, timeout: 10s, breaker: {consecutive_failures: 1}}
routes: [{prefix: /api/users, service: users}]
`, mono.URL, users.URL))
	client := &http.Client{Timeout: 0}
	req, _ := http.NewRequest("GET", tp.srv.URL+"/api/users/1", nil)
	ctx, cancel := contextWithCancel(t)
	req = req.WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("request: got no error, want a cancellation")
	}
	testkit.Eventually(t, 5*time.Second, "the proxy to finish the request", func() bool {
		return testutil.ToFloat64(tp.metrics.requests.WithLabelValues("/api/users", "monolith", "499")) == 1
	})
	if got := tp.Status().Services[0].Breaker; got != "closed" {
		t.Errorf("breaker: got %s, want closed", got)
	}
	if got := mono.hits.Load(); got != 0 {
		t.Errorf("monolith requests: got %d, want 0", got)
	}
}

// TestBreakerOpensAndRecovers opens the breaker with failures, checks that
// the service is left alone while it is open, and that a probe after open_for
// closes it again.
func TestBreakerOpensAndRecovers(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	var failing atomic.Bool
	failing.Store(true)
	users := newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s, breaker: {consecutive_failures: 3, open_for: 100ms}}
routes: [{prefix: /api/users, service: users}]
`, mono.URL, users.URL))
	breaker := func() string { return tp.Status().Services[0].Breaker }
	gauge := func() float64 {
		v, err := testutil.GatherAndCount(tp.reg, "strangler_breaker_state")
		if err != nil || v != 1 {
			t.Fatalf("strangler_breaker_state series: got %d (%v), want 1", v, err)
		}
		mfs, _ := tp.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "strangler_breaker_state" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}

	for i := 0; i < 3; i++ {
		if a := tp.do(t, "GET", "/api/users/1", "", nil); a.servedBy != "monolith" {
			t.Fatalf("failing request %d: got served by %q, want monolith", i, a.servedBy)
		}
	}
	if got := breaker(); got != "open" {
		t.Fatalf("after 3 failures: got breaker %s, want open", got)
	}
	if got := gauge(); got != 2 {
		t.Errorf("strangler_breaker_state while open: got %v, want 2", got)
	}
	hits := users.hits.Load()
	tp.do(t, "GET", "/api/users/1", "", nil)
	if got := users.hits.Load() - hits; got != 0 {
		t.Errorf("service requests while open: got %d, want 0", got)
	}

	failing.Store(false)
	testkit.Eventually(t, 5*time.Second, "the breaker to close after a successful probe", func() bool {
		return tp.do(t, "GET", "/api/users/1", "", nil).servedBy == "users"
	})
	if got := breaker(); got != "closed" {
		t.Errorf("after a good probe: got breaker %s, want closed", got)
	}
	if got := gauge(); got != 0 {
		t.Errorf("strangler_breaker_state when closed: got %v, want 0", got)
	}
}

// TestHealthCheckFlips marks the service unhealthy through its health
// endpoint and checks that its requests go to the monolith, then back.
func TestHealthCheckFlips(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	var sick atomic.Bool
	users := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if sick.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		w.Header().Set("X-Served-By", "users")
	})
	tp := newTestProxy(t, fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s, health: {path: /healthz, interval: 20ms}}
routes: [{prefix: /api/users, service: users}]
`, mono.URL, users))
	healthy := func() float64 {
		mfs, _ := tp.reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "strangler_upstream_healthy" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if got := tp.do(t, "GET", "/api/users", "", nil).servedBy; got != "users" {
		t.Fatalf("healthy: got served by %q, want users", got)
	}
	testkit.Eventually(t, 5*time.Second, "the status to show the last health check", func() bool {
		return tp.Status().Services[0].LastCheck != nil
	})
	sick.Store(true)
	testkit.Eventually(t, 5*time.Second, "the service to be marked unhealthy", func() bool { return healthy() == 0 })
	if got := tp.do(t, "GET", "/api/users", "", nil).servedBy; got != "monolith" {
		t.Errorf("unhealthy: got served by %q, want monolith", got)
	}
	if got := tp.fallbacks("/api/users", "breaker_open"); got != 1 {
		t.Errorf("fallbacks_total{reason=breaker_open}: got %v, want 1", got)
	}
	sick.Store(false)
	testkit.Eventually(t, 5*time.Second, "the service to be healthy again", func() bool { return healthy() == 1 })
	if got := tp.do(t, "GET", "/api/users", "", nil).servedBy; got != "users" {
		t.Errorf("healthy again: got served by %q, want users", got)
	}
}

// TestReloadKeepsBreakerState pins that a reload keeps the breaker of a
// service whose settings did not change, and starts afresh for one that did.
func TestReloadKeepsBreakerState(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	svcURL, _ := failingService(t, "status_5xx")
	cfgText := func(timeout, extraRoute string) string {
		return fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s, timeout: %s, breaker: {consecutive_failures: 1, open_for: 1m}}
routes:
  - {prefix: /api/users, service: users}
%s`, mono.URL, svcURL, timeout, extraRoute)
	}
	tp := newTestProxy(t, cfgText("2s", ""))
	tp.do(t, "GET", "/api/users", "", nil)
	cases := []struct {
		name, cfg, want string
	}{
		{"routes changed, service unchanged", cfgText("2s", "  - {prefix: /api/more, service: users}\n"), "open"},
		{"service settings changed", cfgText("3s", ""), "closed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := tp.Apply(mustConfig(t, c.cfg)); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := tp.Status().Services[0].Breaker; got != c.want {
				t.Errorf("breaker: got %s, want %s", got, c.want)
			}
		})
	}
}
