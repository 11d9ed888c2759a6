package routing

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/strangler-fig/strangler/internal/proxyconfig"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// tableCases are shared by the table tests and seed FuzzMatch.
var tablePrefixes = []string{"/api/user", "/api/users", "/api", "/static/app.js"}

// bigTable adds enough unrelated routes to prefixes to make NewTable use its
// map.
func bigTable(prefixes []string) *Table {
	var routes []*Route
	for _, p := range prefixes {
		routes = append(routes, &Route{Prefix: p})
	}
	for i := 0; len(routes) <= linearMax; i++ {
		routes = append(routes, &Route{Prefix: fmt.Sprintf("/filler/%d", i)})
	}
	return NewTable(routes)
}

func TestTableMatch(t *testing.T) {
	var routes []*Route
	for _, p := range tablePrefixes {
		routes = append(routes, &Route{Prefix: p})
	}
	for _, size := range []struct {
		name  string
		table *Table
	}{{"small", NewTable(routes)}, {"large", bigTable(tablePrefixes)}} {
		t.Run(size.name, func(t *testing.T) { testTableMatch(t, size.table) })
	}
}

func testTableMatch(t *testing.T, table *Table) {
	cases := []struct {
		name, path, want string
	}{
		{"exact", "/api/users", "/api/users"},
		{"below", "/api/users/42", "/api/users"},
		{"segment boundary", "/api/usersettings", "/api"},
		{"shorter sibling", "/api/user", "/api/user"},
		{"shorter sibling below", "/api/user/7", "/api/user"},
		{"parent only", "/api/orders", "/api"},
		{"parent exact", "/api", "/api"},
		{"trailing slash", "/api/", "/api"},
		{"no match", "/apix", ""},
		{"root", "/", ""},
		{"file", "/static/app.js", "/static/app.js"},
		{"file suffix", "/static/app.jsx", ""},
		{"empty", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := ""
			if r := table.Match(c.path); r != nil {
				got = r.Prefix
			}
			if got != c.want {
				t.Errorf("Match(%q): got %q, want %q", c.path, got, c.want)
			}
		})
	}
}

func TestTableMatchRootRoute(t *testing.T) {
	for _, table := range []*Table{NewTable([]*Route{{Prefix: "/"}, {Prefix: "/api"}}), bigTable([]string{"/", "/api"})} {
		cases := []struct{ path, want string }{
			{"/", "/"}, {"/anything", "/"}, {"/api/x", "/api"}, {"", "/"},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%d routes %s", len(table.Routes()), c.path), func(t *testing.T) {
				if got := table.Match(c.path).Prefix; got != c.want {
					t.Errorf("got %q, want %q", got, c.want)
				}
			})
		}
	}
}

// FuzzMatch checks both table layouts against the definition: the longest
// prefix that is the path or a parent of it by whole segments.
func FuzzMatch(f *testing.F) {
	for _, s := range []string{"/api/users", "/api/users/42", "/api/usersettings", "/api", "/", "", "/api/user/", "//api", "/static/app.js/x"} {
		f.Add("/api/users", s)
	}
	f.Fuzz(func(t *testing.T, prefix, path string) {
		if !strings.HasPrefix(prefix, "/") {
			return
		}
		prefixes := []string{proxyconfig.NormalizePrefix(prefix)}
		for _, p := range tablePrefixes {
			if p != prefixes[0] {
				prefixes = append(prefixes, p)
			}
		}
		var routes []*Route
		for _, p := range prefixes {
			routes = append(routes, &Route{Prefix: p})
		}
		for _, table := range []*Table{NewTable(routes), bigTable(prefixes)} {
			want := ""
			for _, r := range table.Routes() {
				p := r.Prefix
				if (p == "/" || path == p || strings.HasPrefix(path, p+"/")) && len(p) > len(want) {
					want = p
				}
			}
			got := ""
			if r := table.Match(path); r != nil {
				got = r.Prefix
			}
			if got != want {
				t.Fatalf("Match(%q) in %d routes with %q: got %q, want %q", path, len(table.Routes()), prefix, got, want)
			}
		}
	})
}

func routingConfig(monolith, users, extra string) string {
	return fmt.Sprintf(`monolith: {url: %s, timeout: 5s}
services:
  users: {url: %s, timeout: 2s}
routes:
  - prefix: /api/users
    service: users
%s`, monolith, users, extra)
}

func TestRoutingEndToEnd(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	users := newBackend(t, "users", nil)
	tp := newTestProxy(t, routingConfig(mono.URL, users.URL, `  - prefix: /api/products/
    service: users
    strip_prefix: true
  - prefix: /api/orders
    service: users
    methods: [get]
  - prefix: /api/flagged
    service: users
    flag: flagged-migration
`))
	cases := []struct {
		name, method, path, wantBy, wantBody string
	}{
		{"service", "GET", "/api/users/7?x=1&y=%2F", "users", "users GET /api/users/7?x=1&y=%2F"},
		{"service exact", "GET", "/api/users", "users", "users GET /api/users"},
		{"segment boundary to monolith", "GET", "/api/usersettings", "monolith", "monolith GET /api/usersettings"},
		{"unmatched", "GET", "/", "monolith", "monolith GET /"},
		{"strip prefix", "GET", "/api/products/9?q=a", "users", "users GET /9?q=a"},
		{"strip prefix exact", "GET", "/api/products", "users", "users GET /"},
		{"method allowed", "GET", "/api/orders/1", "users", "users GET /api/orders/1"},
		{"method not allowed", "DELETE", "/api/orders/1", "monolith", "monolith DELETE /api/orders/1"},
		{"flag without provider", "GET", "/api/flagged/1", "monolith", "monolith GET /api/flagged/1"},
		{"dot segments leave the route", "GET", "/api/users/../other", "monolith", "monolith GET /api/users/../other"},
		{"doubled slashes", "GET", "/api//users/5", "users", "users GET /api//users/5"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := tp.do(t, c.method, c.path, "", nil)
			if a.status != http.StatusOK || a.servedBy != c.wantBy || a.body != c.wantBody {
				t.Errorf("got %d %q %q, want 200 %q %q", a.status, a.servedBy, a.body, c.wantBy, c.wantBody)
			}
		})
	}
}

func TestForwardedHeaders(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	users := newBackend(t, "users", nil)
	tp := newTestProxy(t, routingConfig(mono.URL, users.URL, ""))
	const trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	t.Run("kept and set", func(t *testing.T) {
		body := strings.Repeat("b", 100000)
		a := tp.do(t, "POST", "/api/users?a=1", body, http.Header{
			"X-Request-Id":    {"req-123"},
			"Traceparent":     {trace},
			"Connection":      {"X-Drop-Me"},
			"X-Drop-Me":       {"1"},
			"X-Forwarded-For": {"203.0.113.9"},
		})
		if a.servedBy != "users" {
			t.Fatalf("served by: got %q, want users", a.servedBy)
		}
		r, got := users.lastRequest()
		checks := []struct{ name, got, want string }{
			{"body", string(got), body},
			{"query", r.URL.RawQuery, "a=1"},
			{"X-Request-Id", r.Header.Get("X-Request-Id"), "req-123"},
			{"traceparent", r.Header.Get("Traceparent"), trace},
			{"hop-by-hop", r.Header.Get("X-Drop-Me"), ""},
			{"X-Forwarded-For", r.Header.Get("X-Forwarded-For"), "203.0.113.9, 127.0.0.1"},
			{"X-Forwarded-Host", r.Header.Get("X-Forwarded-Host"), strings.TrimPrefix(tp.srv.URL, "http://")},
			{"X-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"), "http"},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: got %.80q, want %.80q", c.name, c.got, c.want)
			}
		}
	})
	t.Run("request id created", func(t *testing.T) {
		tp.do(t, "GET", "/other", "", nil)
		r, _ := mono.lastRequest()
		if id := r.Header.Get("X-Request-Id"); len(id) != 32 {
			t.Errorf("X-Request-Id: got %q, want 32 hex digits", id)
		}
	})
	t.Run("access log", func(t *testing.T) {
		tp.do(t, "GET", "/api/users/1?token=secret", "", http.Header{"Authorization": {"Bearer secret"}, "Cookie": {"sid=secret"}})
		lines := tp.log.lines(t, 3)
		line := lines[len(lines)-1]
		for _, want := range []string{`"route":"/api/users"`, `"backend":"service"`, `"status":200`, `"path":"/api/users/1"`, `"request_id":"`} {
			if !strings.Contains(line, want) {
				t.Errorf("log line %s: want it to contain %s", line, want)
			}
		}
		if strings.Contains(line, "secret") {
			t.Errorf("log line %s: got a secret, want none", line)
		}
	})
}

// TestStreamingFlushed pins that chunks of a streaming answer reach the client
// while the service is still writing.
func TestStreamingFlushed(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	release := make(chan struct{})
	users := newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		fmt.Fprint(w, "data: second\n\n")
	})
	tp := newTestProxy(t, routingConfig(mono.URL, users.URL, ""))
	resp, err := tp.srv.Client().Get(tp.srv.URL + "/api/users/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	got := make(chan string, 1)
	go func() {
		line, _ := rd.ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		if line != "data: first\n" {
			t.Errorf("first line: got %q, want %q", line, "data: first\n")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first chunk did not arrive while the service was still writing")
	}
	close(release)
	rest, _ := io.ReadAll(rd)
	if want := "\ndata: second\n\n"; string(rest) != want {
		t.Errorf("rest: got %q, want %q", rest, want)
	}
}

func TestAccessLogSwitch(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	cases := []struct {
		name      string
		setting   string
		wantLines int
	}{
		{"on by default", "", 2},
		{"off", "access_log: false\n", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tp := newTestProxy(t, c.setting+routingConfig(mono.URL, mono.URL, ""))
			tp.do(t, "GET", "/a", "", nil)
			tp.do(t, "GET", "/api/users/b", "", nil)
			if c.wantLines > 0 {
				tp.log.lines(t, c.wantLines)
			}
			// Metrics are recorded before the log line: once both requests
			// are counted, a line that was coming would be there.
			testkit.Eventually(t, 5*time.Second, "both requests counted", func() bool {
				n, _ := testutil.GatherAndCount(tp.reg, "strangler_requests_total")
				return n == 2
			})
			if got := strings.Count(tp.log.String(), "\n"); got != c.wantLines {
				t.Errorf("access log lines: got %d, want %d", got, c.wantLines)
			}
		})
	}
}

// TestAnswerBrokenMidBodyIsCounted pins that a request whose answer breaks
// off after the headers (ReverseProxy then aborts the handler) still reaches
// the metrics and the access log.
func TestAnswerBrokenMidBodyIsCounted(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	users := newBackend(t, "users", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("only part of it"))
		w.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	})
	tp := newTestProxy(t, routingConfig(mono.URL, users.URL, ""))
	resp, err := tp.srv.Client().Get(tp.srv.URL + "/api/users/1")
	if err == nil {
		io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	lines := tp.log.lines(t, 1)
	if !strings.Contains(lines[0], `"path":"/api/users/1"`) {
		t.Errorf("log line: got %s, want the broken request", lines[0])
	}
}
