package routing

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-fig/strangler/internal/testkit"
)

// countingServer is a backend that counts the connections it accepts.
func countingServer(tb testing.TB, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	tb.Helper()
	var conns atomic.Int64
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	tb.Cleanup(s.Close)
	return s, &conns
}

func h1Config(mono, svc string) string { return h1ConfigTimeout(mono, svc, "2s") }

func h1ConfigTimeout(mono, svc, timeout string) string {
	return fmt.Sprintf(`monolith: {url: %s}
services:
  users: {url: %s, timeout: %s}
routes: [{prefix: /api/users, service: users}]
`, mono, svc, timeout)
}

// TestH1ConnectionReuse checks which answers leave the pooled connection
// reusable.
func TestH1ConnectionReuse(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	svc, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/users/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/api/users/chunked":
			w.Write([]byte("part one "))
			w.(http.Flusher).Flush()
			w.Write([]byte("part two"))
		case "/api/users/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		default:
			io.WriteString(w, "hello")
		}
	})
	tp := newTestProxy(t, h1Config(mono.URL, svc.URL))
	cases := []struct {
		name      string
		method    string
		path      string
		wantBody  string
		wantConns int64         // new upstream connections this request may open
		idle      time.Duration // how long the pooled connection idles first
	}{
		{"first GET dials", "GET", "/api/users/1", "hello", 1, 0},
		{"second GET reuses", "GET", "/api/users/2", "hello", 0, 0},
		{"reuses after idling past its deadline", "GET", "/api/users/2", "hello", 0, 2 * watchGrace},
		{"HEAD reuses", "HEAD", "/api/users/3", "", 0, 0},
		{"204 reuses", "GET", "/api/users/empty", "", 0, 0},
		{"chunked reuses", "GET", "/api/users/chunked", "part one part two", 0, 0},
		{"Connection: close is honoured", "GET", "/api/users/close", "bye", 0, 0},
		{"after close a new one", "GET", "/api/users/4", "hello", 1, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			time.Sleep(c.idle)
			before := conns.Load()
			a := tp.do(t, c.method, c.path, "", nil)
			if a.status/100 != 2 || a.body != c.wantBody {
				t.Fatalf("got %d %q, want 2xx %q", a.status, a.body, c.wantBody)
			}
			if got := conns.Load() - before; got != c.wantConns {
				t.Errorf("new upstream connections: got %d, want %d", got, c.wantConns)
			}
		})
	}
}

// TestH1UpstreamClosedIdleConnection pins that a pooled connection the
// upstream closed while idle does not fail the next request.
func TestH1UpstreamClosedIdleConnection(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	svc, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	tp := newTestProxy(t, h1Config(mono.URL, svc.URL))
	for _, method := range []string{"GET", "DELETE", "GET"} {
		t.Run(method, func(t *testing.T) {
			tp.do(t, "GET", "/api/users/warm", "", nil)
			svc.CloseClientConnections()
			before := conns.Load()
			a := tp.do(t, method, "/api/users/1", "", nil)
			if a.status != http.StatusOK || a.servedBy != "" || a.body != "ok" {
				t.Fatalf("got %d %q from %q, want 200 \"ok\" from the service", a.status, a.body, a.servedBy)
			}
			if got := conns.Load() - before; got != 1 {
				t.Errorf("new upstream connections: got %d, want 1", got)
			}
		})
	}
	if got := tp.fallbacks("/api/users", "timeout") + tp.fallbacks("/api/users", "connect_error"); got != 0 {
		t.Errorf("fallbacks: got %v, want 0", got)
	}
}

// TestH1TimeoutStopsAtHeaders pins that the upstream timeout covers waiting
// for the headers only: a body that streams for longer is not cut.
func TestH1TimeoutStopsAtHeaders(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		for i := 0; i < 5; i++ {
			fmt.Fprintf(w, "tick %d\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(150 * time.Millisecond) // 750ms in all, the timeout is 300ms
		}
	})
	tp := newTestProxy(t, h1ConfigTimeout(mono.URL, svc, "300ms"))
	a := tp.do(t, "GET", "/api/users/stream", "", nil)
	if a.status != http.StatusOK || strings.Count(a.body, "tick") != 5 {
		t.Errorf("got %d %q, want 200 with 5 ticks", a.status, a.body)
	}
}

// TestH1RemovedUpstreamClosesConnections pins that a service dropped by a
// reload does not keep pooled connections open.
func TestH1RemovedUpstreamClosesConnections(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	var open atomic.Int64
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	tp := newTestProxy(t, h1Config(mono.URL, s.URL))
	tp.do(t, "GET", "/api/users/1", "", nil)
	if got := open.Load(); got != 1 {
		t.Fatalf("open connections to the service: got %d, want 1", got)
	}
	if err := tp.Apply(mustConfig(t, fmt.Sprintf("monolith: {url: %s}\n", mono.URL))); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the service's connection to close", func() bool { return open.Load() == 0 })
}

// echoUpgrade switches the connection to the "echo" protocol and echoes
// one line.
func echoUpgrade(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "echo" {
		http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	brw.Flush()
	line, _ := brw.ReadString('\n')
	brw.WriteString("echo: " + line)
	brw.Flush()
}

// TestUpgradePassesThrough pins that an Upgrade request (WebSocket and the
// like) reaches its backend and the two ends talk over the switched
// connection: to the service, and to the monolith on a shadowed route
// (whose answers are otherwise teed for comparison).
func TestUpgradePassesThrough(t *testing.T) {
	cases := []struct {
		name     string
		shadow   string
		toMono   bool
		upgraded string // which backend upgrades
	}{
		{"to the service", "", false, "service"},
		{"to the monolith of a shadowed route", ", shadow: {percentage: 100}", true, "monolith"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plain := newBackend(t, "plain", nil)
			upgrader := httptestServer(t, echoUpgrade)
			mono, svc := plain.URL, upgrader
			if c.upgraded == "monolith" {
				mono, svc = upgrader, plain.URL
			}
			cfg := strings.Replace(h1Config(mono, svc), "service: users}", "service: users"+c.shadow+"}", 1)
			tp := newTestProxy(t, cfg, func(o *Options) {
				if c.toMono {
					o.Rollout = RolloutFunc(func(*http.Request, *Route) Decision { return Decision{Backend: BackendMonolith} })
				}
			})
			conn, err := net.Dial("tcp", strings.TrimPrefix(tp.srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprint(conn, "GET /api/users/socket HTTP/1.1\r\nHost: proxy\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status: got %d, want 101", resp.StatusCode)
			}
			fmt.Fprint(conn, "hello\n")
			got, err := br.ReadString('\n')
			if err != nil || got != "echo: hello\n" {
				t.Errorf("over the upgraded connection: got %q (%v), want %q", got, err, "echo: hello\n")
			}
		})
	}
}

// TestH1SlowAnswers pins the header timeout on both sides of watchGrace,
// the time an exchange waits before it watches its client: an answer slower
// than watchGrace but within the timeout comes from the service, and a
// timeout shorter than watchGrace still cuts a late answer.
func TestH1SlowAnswers(t *testing.T) {
	cases := []struct {
		name     string
		timeout  string
		delay    time.Duration
		servedBy string
	}{
		{"slower than the grace, within the timeout", "5s", 3 * watchGrace, ""},
		{"timeout shorter than the grace", "20ms", 5 * time.Second, "monolith"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mono := newBackend(t, "monolith", nil)
			svc := httptestServer(t, func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-time.After(c.delay):
				case <-r.Context().Done():
				}
				io.WriteString(w, "slow")
			})
			tp := newTestProxy(t, h1ConfigTimeout(mono.URL, svc, c.timeout))
			for i := 0; i < 2; i++ { // a fresh connection, then a pooled one
				a := tp.do(t, "GET", "/api/users/1", "", nil)
				if a.status != http.StatusOK || a.servedBy != c.servedBy {
					t.Fatalf("request %d: got %d from %q, want 200 from %q", i, a.status, a.servedBy, c.servedBy)
				}
			}
		})
	}
}

// TestH1BytesAfterAnswerDropConnection pins that a connection with bytes
// after the end of an answer is not pooled: they would be read as the next
// request's answer.
func TestH1BytesAfterAnswerDropConnection(t *testing.T) {
	mono := newBackend(t, "monolith", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
				}
			}()
		}
	}()
	tp := newTestProxy(t, h1Config(mono.URL, "http://"+ln.Addr().String()))
	for i := 0; i < 3; i++ {
		a := tp.do(t, "GET", "/api/users/1", "", nil)
		if a.status != http.StatusOK || a.body != "ok" || a.servedBy != "" {
			t.Fatalf("request %d: got %d %q from %q, want 200 \"ok\" from the service", i, a.status, a.body, a.servedBy)
		}
	}
}
